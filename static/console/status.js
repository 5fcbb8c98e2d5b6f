/* The trader's picture: state badge and track, session, health, metrics and the shards table, from its events. */

import { DASH, fmtAge, fmtDuration, fmtInt, fmtRate, isNum, obj, parseTime, text, toNum } from './format.js';
import { body, dom, el, setData, setText } from './dom.js';
import { pushEntries, setShardTagging, transitionEntry } from './log.js';
import { noteMarketsTotal } from './markets.js';

const STATUS_STALE_MS = 5000;
const TRADING_STEPS = ['trading_client_connect', 'kalshi_data_sync', 'trading_ready'];

const trader = {
  currentState: body.dataset.state || '',
  visited: new Set(),
  lastTransitionAt: null, // server time (ms) of the latest transition
  stateSince: null, // { base: seconds, at: browser ms }
  lastStatusAt: null, // browser ms of the latest trader_status
  lastMessageTime: null, // ms, from metrics.last_message_time
  stale: null,
  primary: null, // the session (shard) the header, state track and metrics follow
  shards: new Map(), // session id -> { state, health, total, at }
  trades: Boolean(dom.stateTrack && dom.stateTrack.dataset.trading === 'true'), // as the server rendered it
};

// ------------------------------------------------------------------ header

export function setState(name) {
  const state = typeof name === 'string' ? name : '';
  trader.currentState = state;
  setData(dom.stateBadge, 'state', state);
  setText(dom.stateBadge, state || 'no session');
  if (dom.stateBadge) dom.stateBadge.title = state ? `Trader state: ${state}` : 'No session has run yet';
  setData(body, 'state', state);
  if (state) trader.visited.add(state);
  renderTrack();
  updateTitle();
}

function renderTrack() {
  if (!dom.stateTrack) return;
  // The trading steps show for a trader that trades (its status says so, or it has been in one of them).
  const trades = trader.trades || TRADING_STEPS.some((step) => trader.visited.has(step));
  setData(dom.stateTrack, 'trading', trades ? 'true' : 'false');
  for (const li of dom.stateTrack.querySelectorAll('[data-step]')) {
    const step = li.dataset.step;
    li.classList.toggle('is-current', step === trader.currentState);
    li.classList.toggle('is-visited', step !== trader.currentState && trader.visited.has(step));
  }
}

function updateTitle() {
  const env = dom.envBadge ? dom.envBadge.dataset.env || '' : '';
  const parts = ['Trader V3', trader.currentState || 'no session'];
  if (env) parts.push(env);
  document.title = parts.join(' · ');
}

function setSession(id) {
  const value = isNum(id) || (typeof id === 'string' && id !== '') ? String(id) : '';
  setData(body, 'sessionId', value);
  setText(dom.sessionId, value || DASH);
  // The session's own page: its transitions and charts from the recording, its admin page and export.
  if (dom.sessionLink) {
    if (value) dom.sessionLink.setAttribute('href', `/v3/sessions/${encodeURIComponent(value)}`);
    else dom.sessionLink.removeAttribute('href');
  }
}

function setEnvironment(env) {
  if (typeof env !== 'string' || env === '' || !dom.envBadge) return;
  setData(dom.envBadge, 'env', env);
  setText(dom.envBadge, env);
  updateTitle();
}

/** A session replaying a recording says which one; a live session hides the badge. */
function setReplay(replayOf) {
  if (!dom.replayBadge) return;
  const replaying = isNum(replayOf);
  dom.replayBadge.hidden = !replaying;
  setText(dom.replayOf, replaying ? String(replayOf) : '');
}

function setExchange(status) {
  const s = typeof status === 'string' ? status : '';
  setData(dom.exchange, 'status', s);
  setText(dom.exchangeText, s || DASH);
}

function setHealth(health) {
  const h = obj(health);
  const status = typeof h.status === 'string' ? h.status : '';
  const reason = typeof h.reason === 'string' ? h.reason : '';
  setData(dom.health, 'health', status);
  setText(dom.healthText, status || DASH);
  if (dom.health) dom.health.title = reason || (status ? `Trader health: ${status}` : '');
  setText(dom.healthReason, reason);
  if (dom.healthReason) dom.healthReason.title = reason;

  const m = dom.m.health;
  if (m) {
    setData(m, 'health', status);
    m.textContent = status || DASH;
    if (reason) m.appendChild(el('span', 'reason', reason));
    m.title = reason;
  }
}

// ------------------------------------------------------------------ metrics

function applyMetrics(metrics) {
  const m = obj(metrics);
  setText(dom.m.marketsConnected, fmtInt(m.markets_connected));
  setText(dom.m.snapshots, fmtInt(m.snapshots_received));
  setText(dom.m.deltas, fmtInt(m.deltas_received));
  setText(dom.m.uptime, fmtDuration(m.connection_uptime));
  setText(dom.m.mps, fmtRate(m.messages_per_second));
  setText(dom.m.dps, fmtRate(m.deltas_per_second));
  setText(dom.m.gaps, fmtInt(m.gaps_detected));
  setText(dom.m.resyncs, fmtInt(m.resyncs));
  setText(dom.m.reconnects, fmtInt(m.reconnects));
  setText(dom.m.dropped, fmtInt(m.dropped_events));
  setText(dom.m.duplicates, fmtInt(m.duplicates_ignored));
  setText(dom.m.malformed, fmtInt(m.malformed_frames));
  // The recording path: rows waiting, committed, the last batch's write time, retries, oldest waiting row.
  const recording = m.recorder_queued !== undefined;
  const latency = toNum(m.recorder_write_latency_ms);
  setText(dom.m.recQueued, fmtInt(m.recorder_queued));
  setText(dom.m.recWritten, fmtInt(m.recorder_written));
  setText(dom.m.recLatency, latency === null ? DASH : `${latency.toFixed(1)} ms`);
  setText(dom.m.recRetries, fmtInt(m.recorder_retries));
  setText(dom.m.recOldest, recording ? fmtDuration(m.recorder_oldest_unwritten_age ?? 0) : DASH);
  setExchange(m.ws_connection_status);
  trader.lastMessageTime = parseTime(m.last_message_time);
}

// ------------------------------------------------------------------ shards

/** Whether an event of this session drives the header; the first session seen, or one that takes over
 * when the followed shard shut down or went quiet. Events without a session id (older traders) do. */
function followsPrimary(id) {
  if (!isNum(id) || trader.primary === id) return true;
  const primary = trader.shards.get(trader.primary);
  const gone = !primary || primary.state === 'shutdown' || Date.now() - primary.at > STATUS_STALE_MS;
  if (trader.primary !== null && !gone) return false;
  trader.primary = id;
  renderShards();
  return true;
}

function noteShard(id, update) {
  if (!isNum(id)) return;
  const shard = trader.shards.get(id) || { state: '', health: null, total: null, at: 0 };
  if (typeof update.state === 'string') shard.state = update.state;
  if (update.health !== undefined) shard.health = obj(update.health);
  if (isNum(update.total)) shard.total = update.total;
  shard.at = Date.now();
  trader.shards.set(id, shard);
  setShardTagging(trader.shards.size > 1);
  renderShards();
  countMarkets();
}

/** The markets the live shards watch (a shard that shut down counts only while it is the only one). */
function countMarkets() {
  let total = null;
  for (const shard of trader.shards.values()) {
    if (shard.total === null || (shard.state === 'shutdown' && trader.shards.size > 1)) continue;
    total = (total || 0) + shard.total;
  }
  if (total !== null) noteMarketsTotal(total);
}

// With several traders (scaled mode) a table shows each shard; with one it stays hidden.
function renderShards() {
  if (!dom.shardsPanel || !dom.shardsBody) return;
  dom.shardsPanel.hidden = trader.shards.size < 2;
  const rows = [];
  for (const [id, shard] of [...trader.shards].sort((a, b) => a[0] - b[0])) {
    const tr = el('tr', 'shard-row');
    tr.dataset.session = String(id);
    tr.dataset.state = shard.state;
    tr.classList.toggle('is-primary', id === trader.primary);
    const health = obj(shard.health);
    tr.append(
      el('td', 'col-session', String(id)),
      el('td', 'col-state', shard.state || DASH),
      el('td', 'col-health', text(health.status)),
      el('td', 'col-count', shard.total === null ? DASH : fmtInt(shard.total)),
    );
    tr.title = text(health.reason);
    rows.push(tr);
  }
  dom.shardsBody.replaceChildren(...rows);
}

// ------------------------------------------------------------------ events

/** A ``state_transition``; returns its log line (a replay collects them, a live one is shown at once). */
export function onTransition(data, options) {
  const d = obj(data);
  const replay = options && options.replay;
  if (!followsPrimary(d.session_id)) {
    noteShard(d.session_id, { state: d.to_state });
    const entry = transitionEntry(d);
    if (!replay) pushEntries([entry]);
    return entry;
  }
  const ts = parseTime(d.timestamp);
  if (typeof d.from_state === 'string' && d.from_state) trader.visited.add(d.from_state);
  if (typeof d.to_state === 'string') {
    if (ts !== null) trader.lastTransitionAt = Math.max(trader.lastTransitionAt || 0, ts);
    setState(d.to_state);
    const now = Date.now();
    trader.stateSince = { base: 0, at: replay && ts !== null ? Math.min(ts, now) : now };
  }
  const entry = transitionEntry(d);
  if (!replay) pushEntries([entry]);
  return entry;
}

/** A ``trader_status``: counts and metrics (the books come as orderbooks events and pages). Returns whether
 * the page follows its trader (the rest of the status, its trading block, is then for the page too). */
export function onStatus(data, options) {
  const d = obj(data);
  const replay = options && options.replay;
  const now = Date.now();
  const ts = parseTime(d.timestamp);
  const metrics = obj(d.metrics);
  noteShard(d.session_id, { state: d.state, health: d.health, total: metrics.markets_total });
  if (!followsPrimary(d.session_id)) return false;
  const trades = obj(d.trading).enabled === true;
  if (trades !== trader.trades) {
    trader.trades = trades;
    renderTrack();
  }
  // A replayed status may be old (the trader may be down): date it by its own timestamp.
  trader.lastStatusAt = replay && ts !== null ? Math.min(ts, now) : now;

  if (typeof d.state === 'string' && (trader.lastTransitionAt === null || ts === null || ts >= trader.lastTransitionAt)) {
    if (d.state !== trader.currentState) setState(d.state);
    const tis = toNum(d.time_in_state);
    trader.stateSince = tis === null ? null : { base: tis, at: trader.lastStatusAt };
  }
  if (d.session_id !== undefined) setSession(d.session_id);
  setEnvironment(d.environment);
  setHealth(d.health);
  applyMetrics(metrics);
  if (!isNum(d.session_id) && isNum(metrics.markets_total)) noteMarketsTotal(metrics.markets_total);
  return true;
}

/** A ``history_replay`` starts the picture again: its session, every shard, the header from scratch. */
export function resetFromReplay(session, shards) {
  for (const node of Object.values(dom.m)) setText(node, DASH);
  setHealth(null);
  setExchange('');
  setText(dom.stateElapsed, DASH);
  trader.lastStatusAt = null;
  trader.lastMessageTime = null;
  trader.stateSince = null;
  trader.visited = new Set();
  trader.trades = false;
  trader.lastTransitionAt = null;
  trader.shards.clear();
  trader.primary = session && isNum(session.id) ? session.id : null;
  for (const shard of shards) {
    const sh = obj(shard);
    const info = obj(sh.session);
    const ended = typeof info.status === 'string' && info.status !== 'running';
    noteShard(info.id, { state: ended ? 'shutdown' : sh.state, health: sh.health, total: info.markets_total });
  }
  setShardTagging(trader.shards.size > 1);
  setSession(session ? session.id : null);
  if (session) setEnvironment(session.environment);
  setReplay(session ? session.replay_of : null);
  setState(session && typeof session.current_state === 'string' ? session.current_state : '');
}

// ------------------------------------------------------------------ clock

/** Called by the page clock: status freshness (the trader can be down while the web app is up) and time in state. */
export function tickStatus(now, connected, openedAt) {
  const ref = trader.lastStatusAt !== null ? trader.lastStatusAt : openedAt;
  const stale = !connected || ref === null || now - ref > STATUS_STALE_MS;
  if (stale !== trader.stale) {
    trader.stale = stale;
    setData(dom.traderStatus, 'stale', stale ? 'true' : 'false');
    body.classList.toggle('is-trader-stale', stale);
  }
  if (stale) {
    let note = 'no status';
    if (!connected) note = 'offline';
    else if (trader.lastStatusAt !== null) note = `no status for ${fmtDuration((now - trader.lastStatusAt) / 1000)}`;
    setText(dom.traderStale, note);
  }

  // time in state ticks locally between statuses (frozen once status goes stale)
  if (trader.stateSince !== null) {
    const limit = trader.lastStatusAt !== null ? STATUS_STALE_MS : Infinity;
    const elapsed = Math.min(Math.max(0, now - trader.stateSince.at), limit);
    const value = fmtDuration(trader.stateSince.base + elapsed / 1000);
    setText(dom.m.timeInState, value);
    setText(dom.stateElapsed, value);
  } else {
    setText(dom.m.timeInState, DASH);
    setText(dom.stateElapsed, DASH);
  }
  setText(dom.m.lastMessage, trader.lastMessageTime === null ? DASH : fmtAge(now - trader.lastMessageTime));
}

export function currentState() {
  return trader.currentState;
}
