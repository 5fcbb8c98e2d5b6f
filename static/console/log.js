/* The console log panel: formatted lines, the level filter, pause, and the "new lines" button. */

import { DASH, clock, freeText, isNum, obj, parseTime } from './format.js';
import { dom, el, setData, setText } from './dom.js';

const MAX_LINES = 1000;
const CONTEXT_INDENT = ' '.repeat(11); // width of "[HH:MM:SS] "
const LEVELS = new Set(['debug', 'info', 'warning', 'error']);
const FILTERS = new Set(['all', 'info', 'warning', 'error']);
const FILTER_KEY = 'traderV3.console.filter';

const log = {
  paused: false,
  pending: [],
  stick: true,
  unseen: 0,
  tagShards: false, // several shards report: each line says whose it is
};

/** While several shards report, every line starts with "[session 12] ". */
export function setShardTagging(on) {
  log.tagShards = on;
}

export function makeEntry(opts) {
  const level = LEVELS.has(opts.level) ? opts.level : 'info';
  const entry = el('div', 'log-entry');
  entry.dataset.level = level;
  entry.dataset.kind = opts.kind || 'event';
  entry.appendChild(el('span', 'log-time', `[${clock(opts.ts)}] `));
  const line = el('span', 'log-text');
  for (const part of opts.parts) {
    if (typeof part === 'string') line.appendChild(document.createTextNode(part));
    else line.appendChild(part);
  }
  entry.appendChild(line);
  if (typeof opts.context === 'string' && opts.context.trim() !== '') {
    entry.appendChild(el('div', 'log-context', `${CONTEXT_INDENT}Context: ${opts.context}`));
  }
  return entry;
}

function shardTag(d) {
  const id = d.session_id;
  return log.tagShards && isNum(id) ? `[session ${id}] ` : '';
}

export function transitionEntry(data) {
  const d = obj(data);
  const from = typeof d.from_state === 'string' && d.from_state ? d.from_state : DASH;
  const to = typeof d.to_state === 'string' && d.to_state ? d.to_state : DASH;
  const stateSpan = (name) => {
    const span = el('span', 'st', name);
    span.dataset.state = name;
    return span;
  };
  return makeEntry({
    level: to === 'error' ? 'error' : 'info',
    kind: 'transition',
    ts: parseTime(d.timestamp),
    parts: [shardTag(d), 'STATE TRANSITION: ', stateSpan(from), ' → ', stateSpan(to)],
    context: d.context,
  });
}

// Trading lines of the trader's console, by how the line starts: each kind has its own look.
const TRADE_KINDS = [
  [/^FILL\b/, 'fill'],
  [/^ORDER FILLED\b/, 'fill'],
  [/^ORDER (?:REJECTED|UNKNOWN)\b/, 'rejected'],
  [/^ORDER\b/, 'order'],
  [/^REFUSED\b/, 'refused'],
  [/^KILL SWITCH\b/, 'kill'],
  [/^CONTROL: kill switch\b/, 'kill'],
  [/^CONTROL: cancel order\b/, 'order'],
  [/^STRATEGY\b/, 'strategy'],
  [/^(?:TRADING|ACCOUNT|POSITIONS)\b/, 'account'],
];

/** The trading kind of a console line ('' for the others). */
export function tradeKind(message) {
  for (const [pattern, kind] of TRADE_KINDS) if (pattern.test(message)) return kind;
  return '';
}

export function consoleEntry(data) {
  const d = obj(data);
  const message = freeText(d.message);
  const entry = makeEntry({
    level: d.level,
    kind: 'event',
    ts: parseTime(d.timestamp),
    parts: [shardTag(d) + message],
    context: d.context,
  });
  const trade = tradeKind(message);
  if (trade) entry.dataset.trade = trade;
  return entry;
}

export function systemEntry(level, message) {
  return makeEntry({ level, kind: 'system', ts: Date.now(), parts: [message] });
}

function atBottom() {
  const c = dom.console;
  return !c || c.scrollHeight - c.scrollTop - c.clientHeight < 24;
}

function scrollToBottom() {
  if (!dom.console) return;
  dom.console.scrollTop = dom.console.scrollHeight;
  log.stick = true;
  log.unseen = 0;
  updateNewLines();
}

function updateNewLines() {
  if (!dom.newLines) return;
  dom.newLines.hidden = log.unseen === 0;
  setText(dom.newLines, log.unseen > 0 ? `↓ new lines (${log.unseen > 999 ? '999+' : log.unseen})` : '↓ new lines');
}

function updatePauseButton() {
  if (!dom.pause) return;
  dom.pause.setAttribute('aria-pressed', log.paused ? 'true' : 'false');
  setText(dom.pause, log.paused ? `Resume${log.pending.length ? ` (${log.pending.length})` : ''}` : 'Pause');
  if (dom.console) dom.console.classList.toggle('is-paused', log.paused);
}

function renderEntries(entries) {
  const c = dom.console;
  if (!c || entries.length === 0) return;
  const list = entries.length > MAX_LINES ? entries.slice(-MAX_LINES) : entries;
  const stick = log.stick;
  const frag = document.createDocumentFragment();
  for (const e of list) frag.appendChild(e);
  c.appendChild(frag);

  const heightBefore = c.scrollHeight;
  let excess = c.childElementCount - MAX_LINES;
  while (excess > 0 && c.firstElementChild) {
    c.firstElementChild.remove();
    excess -= 1;
  }
  if (stick) {
    scrollToBottom();
  } else {
    // keep the lines the reader is looking at in place while old ones are trimmed
    c.scrollTop -= heightBefore - c.scrollHeight;
    log.unseen += list.length;
    updateNewLines();
  }
}

export function pushEntries(entries) {
  if (entries.length === 0) return;
  if (log.paused) {
    for (const e of entries) log.pending.push(e);
    if (log.pending.length > MAX_LINES) log.pending.splice(0, log.pending.length - MAX_LINES);
    updatePauseButton();
    return;
  }
  renderEntries(entries);
}

/** One line the console itself writes (not the trader): connection changes, market requests. */
export function say(level, message) {
  pushEntries([systemEntry(level, message)]);
}

export function clearConsole() {
  if (dom.console) dom.console.textContent = '';
  log.pending = [];
  log.unseen = 0;
  log.stick = true;
  updateNewLines();
  updatePauseButton();
}

function setPaused(paused) {
  log.paused = paused;
  if (!paused && log.pending.length) {
    const pending = log.pending;
    log.pending = [];
    renderEntries(pending);
  }
  updatePauseButton();
}

function setFilter(value) {
  const f = FILTERS.has(value) ? value : 'all';
  setData(dom.console, 'filter', f);
  if (dom.filter && dom.filter.value !== f) dom.filter.value = f;
  try {
    window.localStorage.setItem(FILTER_KEY, f);
  } catch (_err) {
    /* storage unavailable */
  }
  if (log.stick) scrollToBottom();
}

export function bindLog() {
  let saved = 'all';
  try {
    saved = window.localStorage.getItem(FILTER_KEY) || 'all';
  } catch (_err) {
    /* storage unavailable */
  }
  setFilter(saved);
  if (dom.filter) dom.filter.addEventListener('change', () => setFilter(dom.filter.value));
  if (dom.pause) dom.pause.addEventListener('click', () => setPaused(!log.paused));
  if (dom.clear) dom.clear.addEventListener('click', clearConsole);
  if (dom.newLines) dom.newLines.addEventListener('click', scrollToBottom);
  if (dom.console) {
    dom.console.addEventListener(
      'scroll',
      () => {
        log.stick = atBottom();
        if (log.stick && log.unseen) {
          log.unseen = 0;
          updateNewLines();
        }
      },
      { passive: true },
    );
  }
}
