/* The console's entry point: dispatches each /v3/ws message to its panel and runs the page clock. */

import { arr, freeText, isNum, isObj, obj, parseTime } from './format.js';
import { body } from './dom.js';
import { bindLog, clearConsole, consoleEntry, makeEntry, pushEntries, say } from './log.js';
import {
  bindMarkets,
  onControlResult,
  onControlSent,
  onMarketsPage,
  onOrderbooks,
  requestPage,
  tickMarkets,
} from './markets.js';
import { bindMarket, noteStatus, onMarketHistory, resetRates, rewatch, tickMarket } from './market.js';
import { onPong, send, socketOpenedAt, socketState, startSocket, tickSocket } from './socket.js';
import { currentState, onStatus, onTransition, resetFromReplay, setState, tickStatus } from './status.js';
import { bindTrading, isTradingAction, onTrading, onTradingError, onTradingResult, onTradingSent } from './trading.js';

const TICK_MS = 250;

const page = {
  lastSeqs: new Map(), // origin (one per trader process) -> last live event seq
  missed: 0,
  replays: 0,
};

/** Merge two timestamp-ordered lists into one ordered list (stable; undated items keep their place). */
function mergeByTime(a, b) {
  const out = [];
  let i = 0;
  let j = 0;
  while (i < a.length && j < b.length) {
    const ta = a[i].ts;
    const tb = b[j].ts;
    if (ta === null || tb === null || ta <= tb) out.push(a[i++]);
    else out.push(b[j++]);
  }
  while (i < a.length) out.push(a[i++]);
  while (j < b.length) out.push(b[j++]);
  return out;
}

function onReplay(data) {
  page.lastSeqs.clear(); // the replay covers whatever happened while this page was away
  const d = obj(data);
  clearConsole();
  const session = isObj(d.session) ? d.session : null;
  resetFromReplay(session, arr(d.shards));

  const transitions = arr(d.transitions).map((t) => ({ ts: parseTime(obj(t).timestamp), t }));
  const events = arr(d.console).map((c) => ({ ts: parseTime(obj(c).timestamp), c }));
  const entries = [];
  for (const item of mergeByTime(transitions, events)) {
    entries.push(item.t !== undefined ? onTransition(item.t, { replay: true }) : consoleEntry(item.c));
  }
  if (session && typeof session.current_state === 'string' && session.current_state) {
    setState(session.current_state);
  }
  const followed = isObj(d.status) && onStatus(d.status, { replay: true });
  onTrading(followed ? d.status.trading : null, followed ? d.status.session_id : null);
  pushEntries(entries);
  resetRates(session ? session.id : null, d.rates);
  requestPage(); // the books of the rows on screen, and the rows themselves
  rewatch(); // a new socket follows no market until asked
  page.replays += 1;
  body.dataset.replayed = String(page.replays);
  tick();
}

function onServerError(data) {
  const d = obj(data);
  const message = freeText(d.message) || 'unknown error';
  pushEntries([makeEntry({ level: 'warning', kind: 'error', ts: Date.now(), parts: [`SERVER ERROR: ${message}`] })]);
  if (isTradingAction(d.action)) onTradingError(d);
}

// Control replies: markets go to the market table, cancels and the kill switch to the trading panel.
const controlSent = (d) => (isTradingAction(d.action) ? onTradingSent(d) : onControlSent(d));
const controlResult = (d) => (isTradingAction(d.action) ? onTradingResult(d) : onControlResult(d));

const HANDLERS = new Map([
  ['history_replay', onReplay],
  ['state_transition', (d) => onTransition(d, { replay: false })],
  [
    'trader_status',
    (d) => {
      if (onStatus(d, { replay: false })) onTrading(d.trading, d.session_id);
      noteStatus(d);
    },
  ],
  ['orderbooks', onOrderbooks],
  ['market_history', onMarketHistory],
  ['markets_page', onMarketsPage],
  ['console', (d) => pushEntries([consoleEntry(d)])],
  ['error', onServerError],
  ['pong', onPong],
  ['control_sent', controlSent],
  ['control_result', controlResult],
]);

// The trader numbers every live event; a jump means the channel layer dropped some on the way here.
function countMissed(seq, origin) {
  if (!isNum(seq)) return;
  const key = typeof origin === 'string' ? origin : '';
  const last = page.lastSeqs.has(key) ? page.lastSeqs.get(key) : null;
  if (last !== null && seq > last + 1) {
    const missed = seq - last - 1;
    page.missed += missed;
    say('warning', `MISSED ${missed} live event(s) (${page.missed} in all); rows catch up on the next update`);
  }
  page.lastSeqs.set(key, seq); // a lower number means the trader restarted: start counting again
}

function handleMessage(msg) {
  if (!isObj(msg) || typeof msg.type !== 'string') return;
  countMissed(msg.seq, msg.origin);
  const handler = HANDLERS.get(msg.type);
  if (!handler) return;
  try {
    handler(obj(msg.data));
  } catch (err) {
    if (window.console) window.console.warn('trader console: could not render', msg.type, err);
  }
}

function handleRaw(raw) {
  if (typeof raw !== 'string') return;
  let msg;
  try {
    msg = JSON.parse(raw);
  } catch (_err) {
    return;
  }
  handleMessage(msg);
}

function tick() {
  const now = Date.now();
  tickStatus(now, socketState() === 'connected', socketOpenedAt());
  tickMarkets(now);
  tickMarket(now);
  tickSocket(now);
}

bindLog();
bindMarkets(send);
bindMarket(send);
bindTrading(send);
setState(currentState());
setInterval(tick, TICK_MS);
tick();
startSocket(handleRaw);

// Small hook for tests and debugging: feed a message as if it came from the socket.
window.TraderConsole = Object.freeze({
  handleMessage,
  get socketState() {
    return socketState();
  },
});
