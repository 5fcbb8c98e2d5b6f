/* Trader V3 live console: renders the /v3/ws stream. */
(() => {
  'use strict';

  // ---------------------------------------------------------------- constants

  const DASH = '—';
  const MAX_LINES = 1000;
  const TICK_MS = 250;
  const PING_MS = 15000;
  const STATUS_STALE_MS = 5000;
  const IDLE_TIMEOUT_MS = 45000;
  const BACKOFF_MIN_MS = 500;
  const BACKOFF_MAX_MS = 10000;
  const CONTEXT_INDENT = ' '.repeat(11); // width of "[HH:MM:SS] "
  const LEVELS = new Set(['debug', 'info', 'warning', 'error']);
  const FILTERS = new Set(['all', 'info', 'warning', 'error']);
  const FILTER_KEY = 'traderV3.console.filter';

  // ---------------------------------------------------------------- helpers

  const $ = (id) => document.getElementById(id);
  const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
  const obj = (v) => (isObj(v) ? v : {});
  const arr = (v) => (Array.isArray(v) ? v : []);
  const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
  const pad2 = (n) => String(n).padStart(2, '0');
  const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

  function toNum(v) {
    if (isNum(v)) return v;
    if (typeof v === 'string' && v.trim() !== '') {
      const n = Number(v);
      if (Number.isFinite(n)) return n;
    }
    return null;
  }

  /** Display text for a scalar; anything missing or odd becomes a dash. */
  function text(v) {
    if (typeof v === 'string') return v === '' ? DASH : v;
    if (isNum(v)) return String(v);
    if (typeof v === 'boolean') return String(v);
    return DASH;
  }

  /** Free text from the server (messages): keep whatever was sent, readable. */
  function freeText(v) {
    if (typeof v === 'string') return v;
    if (v === null || v === undefined) return '';
    if (typeof v === 'number' || typeof v === 'boolean') return String(v);
    try {
      return JSON.stringify(v);
    } catch (_err) {
      return String(v);
    }
  }

  function fmtInt(v) {
    const n = toNum(v);
    return n === null ? DASH : intFmt.format(Math.round(n));
  }

  function fmtRate(v) {
    const n = toNum(v);
    if (n === null) return DASH;
    return n >= 1000 ? intFmt.format(Math.round(n)) : n.toFixed(1);
  }

  /** Seconds -> "45.2s", "12m 03s", "2h 05m 09s", "3d 04h 10m". */
  function fmtDuration(v) {
    let n = toNum(v);
    if (n === null) return DASH;
    if (n < 0) n = 0;
    if (n < 59.95) return `${n.toFixed(1)}s`;
    const total = Math.floor(n);
    const s = total % 60;
    const m = Math.floor(total / 60) % 60;
    const h = Math.floor(total / 3600) % 24;
    const d = Math.floor(total / 86400);
    if (total < 3600) return `${m}m ${pad2(s)}s`;
    if (total < 86400) return `${h}h ${pad2(m)}m ${pad2(s)}s`;
    return `${d}d ${pad2(h)}h ${pad2(m)}m`;
  }

  function fmtAge(ms) {
    if (!isNum(ms)) return DASH;
    return `${fmtDuration(Math.max(0, ms) / 1000)} ago`;
  }

  /** ISO 8601 -> epoch ms, or null. Extra fractional digits are trimmed for portability. */
  function parseTime(v) {
    if (typeof v !== 'string' || v === '') return null;
    const norm = v.trim().replace(/(\.\d{3})\d+/, '$1');
    const ms = Date.parse(norm);
    return Number.isFinite(ms) ? ms : null;
  }

  function clock(ms) {
    if (!isNum(ms)) return '--:--:--';
    const d = new Date(ms);
    return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
  }

  /** "0.4200" -> "42.00¢" by moving the decimal point; no float arithmetic. */
  function cents(price) {
    if (typeof price !== 'string') return null;
    const m = /^(\d+)(?:\.(\d*))?$/.exec(price.trim());
    if (!m) return null;
    const frac = (m[2] || '').padEnd(2, '0');
    const whole = (m[1] + frac.slice(0, 2)).replace(/^0+(?=\d)/, '');
    const rest = frac.slice(2).padEnd(2, '0');
    return `${whole}.${rest}¢`;
  }

  function setText(el, value) {
    if (el && el.textContent !== value) el.textContent = value;
  }

  function setData(el, key, value) {
    if (el && el.dataset[key] !== value) el.dataset[key] = value;
  }

  function el(tag, className, content) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (content !== undefined) node.textContent = content;
    return node;
  }

  function flash(node, kind) {
    if (!node) return;
    node.classList.remove('flash', 'flash-up', 'flash-down');
    void node.offsetWidth; // restart the animation
    node.classList.add(kind || 'flash');
  }

  // ---------------------------------------------------------------- DOM

  const body = document.body;
  const dom = {
    stateBadge: $('state-badge'),
    envBadge: $('env-badge'),
    sessionId: $('session-id'),
    socket: $('socket-indicator'),
    socketText: $('socket-text'),
    socketDetail: $('socket-detail'),
    traderStatus: $('trader-status'),
    traderStale: $('trader-stale'),
    exchange: $('exchange-status'),
    exchangeText: $('exchange-status-text'),
    health: $('health-badge'),
    healthText: $('health-text'),
    healthReason: $('health-reason'),
    stateTrack: $('state-track'),
    stateElapsed: $('state-elapsed'),
    shardsPanel: $('shards-panel'),
    shardsBody: $('shards-body'),
    marketsBody: $('markets-body'),
    marketsEmpty: $('markets-empty'),
    marketsCount: $('markets-count'),
    console: $('console'),
    filter: $('console-filter'),
    pause: $('console-pause'),
    clear: $('console-clear'),
    newLines: $('console-new-lines'),
    m: {
      marketsConnected: $('metric-markets-connected'),
      uptime: $('metric-uptime'),
      snapshots: $('metric-snapshots'),
      deltas: $('metric-deltas'),
      lastMessage: $('metric-last-message'),
      timeInState: $('metric-time-in-state'),
      mps: $('metric-messages-per-second'),
      dps: $('metric-deltas-per-second'),
      gaps: $('metric-gaps'),
      resyncs: $('metric-resyncs'),
      reconnects: $('metric-reconnects'),
      dropped: $('metric-dropped'),
      duplicates: $('metric-duplicates'),
      malformed: $('metric-malformed'),
      recQueued: $('metric-recorder-queued'),
      recWritten: $('metric-recorder-written'),
      recLatency: $('metric-recorder-latency'),
      recRetries: $('metric-recorder-retries'),
      recOldest: $('metric-recorder-oldest'),
      health: $('metric-health'),
    },
  };

  // ---------------------------------------------------------------- state

  const S = {
    lastSeqs: new Map(), // origin (one per trader process) -> last live event seq
    missed: 0,
    ws: null,
    socketState: 'connecting',
    attempt: 0,
    retryTimer: null,
    retryAt: null,
    pingTimer: null,
    pingSentAt: null,
    openedAt: null,
    lastRecvAt: null,
    everConnected: false,
    unloading: false,
    replays: 0,

    currentState: body.dataset.state || '',
    visited: new Set(),
    lastTransitionAt: null, // server time (ms) of the latest transition
    stateSince: null, // { base: seconds, at: browser ms }
    lastStatusAt: null, // browser ms of the latest trader_status
    lastMessageTime: null, // ms, from metrics.last_message_time
    traderStale: null,

    primary: null, // the session (shard) the header, state track and metrics follow
    shards: new Map(), // session id -> { state, health, tickers, at }

    markets: new Map(), // ticker -> row record
    paused: false,
    pending: [],
    stick: true,
    unseen: 0,
  };

  // ---------------------------------------------------------------- header

  function setState(name) {
    const state = typeof name === 'string' ? name : '';
    S.currentState = state;
    setData(dom.stateBadge, 'state', state);
    setText(dom.stateBadge, state || 'no session');
    if (dom.stateBadge) dom.stateBadge.title = state ? `Trader state: ${state}` : 'No session has run yet';
    setData(body, 'state', state);
    if (state) S.visited.add(state);
    renderTrack();
    updateTitle();
  }

  function renderTrack() {
    if (!dom.stateTrack) return;
    for (const li of dom.stateTrack.querySelectorAll('[data-step]')) {
      const step = li.dataset.step;
      li.classList.toggle('is-current', step === S.currentState);
      li.classList.toggle('is-visited', step !== S.currentState && S.visited.has(step));
    }
  }

  function updateTitle() {
    const env = dom.envBadge ? dom.envBadge.dataset.env || '' : '';
    const parts = ['Trader V3', S.currentState || 'no session'];
    if (env) parts.push(env);
    document.title = parts.join(' · ');
  }

  function setSession(id) {
    const value = isNum(id) || (typeof id === 'string' && id !== '') ? String(id) : '';
    setData(body, 'sessionId', value);
    setText(dom.sessionId, value || DASH);
  }

  function setEnvironment(env) {
    if (typeof env !== 'string' || env === '' || !dom.envBadge) return;
    setData(dom.envBadge, 'env', env);
    setText(dom.envBadge, env);
    updateTitle();
  }

  function setSocket(state, detail) {
    S.socketState = state;
    setData(dom.socket, 'socket', state);
    setData(body, 'socket', state);
    setText(dom.socketText, state);
    setText(dom.socketDetail, detail || '');
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

  // ---------------------------------------------------------------- metrics

  function resetMetrics() {
    for (const node of Object.values(dom.m)) setText(node, DASH);
    setHealth(null);
    setExchange('');
    setText(dom.stateElapsed, DASH);
    S.lastStatusAt = null;
    S.lastMessageTime = null;
    S.stateSince = null;
  }

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
    S.lastMessageTime = parseTime(m.last_message_time);
  }

  // ---------------------------------------------------------------- markets

  function createRow(ticker) {
    const tr = el('tr', 'market-row');
    tr.dataset.ticker = ticker;
    tr.dataset.stale = '';
    const names = ['ticker', 'bid', 'ask', 'spread', 'seq', 'stale', 'age', 'remove'];
    for (const name of names) tr.appendChild(el('td', `col-${name}`, name === 'ticker' ? ticker : DASH));
    const remove = el('button', 'remove-market', '×');
    remove.type = 'button';
    remove.title = `Stop watching ${ticker}`;
    tr.querySelector('.col-remove').replaceChildren(remove);
    return tr;
  }

  function recordFor(tr) {
    const cells = {};
    for (const name of ['ticker', 'bid', 'ask', 'spread', 'seq', 'stale', 'age']) {
      cells[name] = tr.querySelector(`.col-${name}`);
    }
    return { tr, cells, vals: {}, sid: null, seq: null, updatedAt: null };
  }

  function ensureRow(ticker) {
    let rec = S.markets.get(ticker);
    if (rec) return rec;
    const tr = createRow(ticker);
    let before = null;
    for (const [other, r] of S.markets) {
      if (other > ticker && (!before || other < before.dataset.ticker)) before = r.tr;
    }
    if (dom.marketsBody) dom.marketsBody.insertBefore(tr, before || dom.marketsEmpty || null);
    rec = recordFor(tr);
    S.markets.set(ticker, rec);
    updateMarketsMeta();
    return rec;
  }

  function clearMarkets() {
    for (const rec of S.markets.values()) rec.tr.remove();
    S.markets.clear();
    updateMarketsMeta();
  }

  function updateMarketsMeta() {
    if (dom.marketsEmpty) dom.marketsEmpty.hidden = S.markets.size > 0;
    setText(dom.marketsCount, String(S.markets.size));
  }

  function renderQuote(td, quote, prev) {
    const q = isObj(quote) ? quote : null;
    const price = q && typeof q.price === 'string' && q.price !== '' ? q.price : null;
    const size = q ? text(q.size) : DASH;
    td.textContent = '';
    if (!q) {
      td.textContent = DASH;
      td.removeAttribute('title');
      return;
    }
    td.appendChild(el('span', 'px', price === null ? text(q.price) : price));
    td.appendChild(el('span', 'x', ' × '));
    td.appendChild(el('span', 'sz', size));
    const c = cents(price);
    td.title = c ? `${c} × ${size}` : '';
    if (prev === undefined) return;
    const prevPrice = isObj(prev) && typeof prev.price === 'string' ? toNum(prev.price) : null;
    const nowPrice = toNum(price);
    let kind = 'flash';
    if (prevPrice !== null && nowPrice !== null && nowPrice !== prevPrice) {
      kind = nowPrice > prevPrice ? 'flash-up' : 'flash-down';
    }
    flash(td, kind);
  }

  function quoteKey(q) {
    return isObj(q) ? `${text(q.price)}|${text(q.size)}` : DASH;
  }

  function applyBook(data, options) {
    const d = obj(data);
    const ticker = typeof d.market_ticker === 'string' && d.market_ticker !== '' ? d.market_ticker : null;
    if (!ticker) return;
    const animate = !(options && options.initial);
    const rec = ensureRow(ticker);

    // Drop an older copy of the same subscription (e.g. a status snapshot arriving after a newer book).
    const sid = isNum(d.sid) || typeof d.sid === 'string' ? d.sid : null;
    const seq = toNum(d.seq);
    if (sid !== null && sid === rec.sid && seq !== null && rec.seq !== null && seq < rec.seq) return;

    const first = Object.keys(rec.vals).length === 0;
    const changed = (key, value) => {
      const was = rec.vals[key];
      rec.vals[key] = value;
      return was !== value;
    };

    const bidKey = quoteKey(d.yes_bid);
    if (changed('bid', bidKey)) {
      renderQuote(rec.cells.bid, d.yes_bid, animate && !first ? rec.bid || null : undefined);
    }
    rec.bid = isObj(d.yes_bid) ? d.yes_bid : null;

    const askKey = quoteKey(d.yes_ask);
    if (changed('ask', askKey)) {
      renderQuote(rec.cells.ask, d.yes_ask, animate && !first ? rec.ask || null : undefined);
    }
    rec.ask = isObj(d.yes_ask) ? d.yes_ask : null;

    const spread = text(d.spread);
    if (changed('spread', spread)) {
      setText(rec.cells.spread, spread);
      if (animate && !first) flash(rec.cells.spread);
    }

    const seqText = seq === null ? DASH : String(d.seq);
    if (changed('seq', seqText)) setText(rec.cells.seq, seqText);

    const stale = d.stale === true ? 'true' : d.stale === false ? 'false' : '';
    if (changed('stale', stale)) {
      const td = rec.cells.stale;
      if (td) {
        td.textContent = '';
        if (stale === 'true') td.appendChild(el('span', 'tag tag-stale', 'stale'));
        else if (stale === 'false') td.appendChild(el('span', 'tag tag-live', 'live'));
        else td.textContent = DASH;
      }
      rec.tr.dataset.stale = stale;
      rec.tr.classList.toggle('is-stale', stale === 'true');
    }

    if (sid !== null) rec.sid = sid;
    if (seq !== null) rec.seq = seq;
    const updatedAt = parseTime(d.updated_at);
    if (updatedAt !== null) rec.updatedAt = updatedAt;
    setText(rec.cells.age, rec.updatedAt === null ? DASH : fmtAge(Date.now() - rec.updatedAt));
  }

  // ---------------------------------------------------------------- console

  function makeEntry(opts) {
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

  /** "[session 12] " before every line while several shards report, so each line says whose it is. */
  function shardTag(d) {
    const id = d.session_id;
    return S.shards.size > 1 && isNum(id) ? `[session ${id}] ` : '';
  }

  function transitionEntry(data) {
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

  function consoleEntry(data) {
    const d = obj(data);
    return makeEntry({
      level: d.level,
      kind: 'event',
      ts: parseTime(d.timestamp),
      parts: [shardTag(d) + freeText(d.message)],
      context: d.context,
    });
  }

  function systemEntry(level, message) {
    return makeEntry({ level, kind: 'system', ts: Date.now(), parts: [message] });
  }

  function atBottom() {
    const c = dom.console;
    return !c || c.scrollHeight - c.scrollTop - c.clientHeight < 24;
  }

  function scrollToBottom() {
    if (!dom.console) return;
    dom.console.scrollTop = dom.console.scrollHeight;
    S.stick = true;
    S.unseen = 0;
    updateNewLines();
  }

  function updateNewLines() {
    if (!dom.newLines) return;
    dom.newLines.hidden = S.unseen === 0;
    setText(dom.newLines, S.unseen > 0 ? `↓ new lines (${S.unseen > 999 ? '999+' : S.unseen})` : '↓ new lines');
  }

  function updatePauseButton() {
    if (!dom.pause) return;
    dom.pause.setAttribute('aria-pressed', S.paused ? 'true' : 'false');
    setText(dom.pause, S.paused ? `Resume${S.pending.length ? ` (${S.pending.length})` : ''}` : 'Pause');
    if (dom.console) dom.console.classList.toggle('is-paused', S.paused);
  }

  function renderEntries(entries) {
    const c = dom.console;
    if (!c || entries.length === 0) return;
    const list = entries.length > MAX_LINES ? entries.slice(-MAX_LINES) : entries;
    const stick = S.stick;
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
      S.unseen += list.length;
      updateNewLines();
    }
  }

  function pushEntries(entries) {
    if (entries.length === 0) return;
    if (S.paused) {
      for (const e of entries) S.pending.push(e);
      if (S.pending.length > MAX_LINES) S.pending.splice(0, S.pending.length - MAX_LINES);
      updatePauseButton();
      return;
    }
    renderEntries(entries);
  }

  function clearConsole() {
    if (dom.console) dom.console.textContent = '';
    S.pending = [];
    S.unseen = 0;
    S.stick = true;
    updateNewLines();
    updatePauseButton();
  }

  function setPaused(paused) {
    S.paused = paused;
    if (!paused && S.pending.length) {
      const pending = S.pending;
      S.pending = [];
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
    if (S.stick) scrollToBottom();
  }

  // ---------------------------------------------------------------- messages

  function onTransition(data, options) {
    const d = obj(data);
    const replay = options && options.replay;
    if (!followsPrimary(d.session_id)) {
      noteShard(d.session_id, { state: d.to_state });
      const entry = transitionEntry(d);
      if (!replay) pushEntries([entry]);
      return entry;
    }
    const ts = parseTime(d.timestamp);
    if (typeof d.from_state === 'string' && d.from_state) S.visited.add(d.from_state);
    if (typeof d.to_state === 'string') {
      if (ts !== null) S.lastTransitionAt = Math.max(S.lastTransitionAt || 0, ts);
      setState(d.to_state);
      const now = Date.now();
      S.stateSince = { base: 0, at: replay && ts !== null ? Math.min(ts, now) : now };
    }
    const entry = transitionEntry(d);
    if (!replay) pushEntries([entry]);
    return entry;
  }

  function onStatus(data, options) {
    const d = obj(data);
    const replay = options && options.replay;
    const now = Date.now();
    const ts = parseTime(d.timestamp);
    const tickers = arr(d.markets).map((b) => obj(b).market_ticker);
    noteShard(d.session_id, { state: d.state, health: d.health, tickers });
    if (!followsPrimary(d.session_id)) {
      pruneMarkets();
      for (const book of arr(d.markets)) applyBook(book, { initial: replay });
      return;
    }
    // A replayed status may be old (the trader may be down): date it by its own timestamp.
    S.lastStatusAt = replay && ts !== null ? Math.min(ts, now) : now;

    if (typeof d.state === 'string' && (S.lastTransitionAt === null || ts === null || ts >= S.lastTransitionAt)) {
      if (d.state !== S.currentState) setState(d.state);
      const tis = toNum(d.time_in_state);
      S.stateSince = tis === null ? null : { base: tis, at: S.lastStatusAt };
    }
    if (d.session_id !== undefined) setSession(d.session_id);
    setEnvironment(d.environment);
    setHealth(d.health);
    applyMetrics(d.metrics);
    if (Array.isArray(d.markets)) pruneMarkets();
    for (const book of arr(d.markets)) applyBook(book, { initial: replay });
    tick();
  }

  // ---------------------------------------------------------------- shards

  /** Whether an event of this session drives the header; the first session seen, or one that takes over
   * when the followed shard shut down or went quiet. Events without a session id (older traders) do. */
  function followsPrimary(id) {
    if (!isNum(id) || S.primary === id) return true;
    const primary = S.shards.get(S.primary);
    const gone = !primary || primary.state === 'shutdown' || Date.now() - primary.at > STATUS_STALE_MS;
    if (S.primary !== null && !gone) return false;
    S.primary = id;
    renderShards();
    return true;
  }

  function noteShard(id, update) {
    if (!isNum(id)) return;
    const shard = S.shards.get(id) || { state: '', health: null, tickers: null, at: 0 };
    if (typeof update.state === 'string') shard.state = update.state;
    if (update.health !== undefined) shard.health = obj(update.health);
    if (update.tickers !== undefined) shard.tickers = update.tickers;
    shard.at = Date.now();
    S.shards.set(id, shard);
    renderShards();
  }

  // With several traders (scaled mode) a table shows each shard; with one it stays hidden.
  function renderShards() {
    if (!dom.shardsPanel || !dom.shardsBody) return;
    dom.shardsPanel.hidden = S.shards.size < 2;
    const rows = [];
    for (const [id, shard] of [...S.shards].sort((a, b) => a[0] - b[0])) {
      const tr = el('tr', 'shard-row');
      tr.dataset.session = String(id);
      tr.dataset.state = shard.state;
      tr.classList.toggle('is-primary', id === S.primary);
      const health = obj(shard.health);
      tr.append(
        el('td', 'col-session', String(id)),
        el('td', 'col-state', shard.state || DASH),
        el('td', 'col-health', text(health.status)),
        el('td', 'col-count', shard.tickers ? String(shard.tickers.length) : DASH),
      );
      tr.title = text(health.reason);
      rows.push(tr);
    }
    dom.shardsBody.replaceChildren(...rows);
  }

  // Rows of markets no trader watches any more (removed at runtime, or their shard stopped) leave the table.
  function pruneMarkets() {
    const live = new Set();
    let known = false;
    for (const shard of S.shards.values()) {
      if (shard.tickers === null) continue;
      known = true;
      if (shard.state !== 'shutdown' || S.shards.size === 1) for (const t of shard.tickers) live.add(t);
    }
    if (!known) return;
    for (const [ticker, rec] of S.markets) {
      if (!live.has(ticker)) {
        rec.tr.remove();
        S.markets.delete(ticker);
      }
    }
    updateMarketsMeta();
  }

  // ---------------------------------------------------------------- market control

  function sendControl(type, markets) {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN || !markets.length) return;
    ws.send(JSON.stringify({ type, markets }));
  }

  function onControlSent(data) {
    const d = obj(data);
    const verb = d.action === 'remove_markets' ? 'remove' : 'add';
    const markets = arr(d.markets).map(freeText).join(', ');
    const who = isNum(d.session_id) ? `session ${d.session_id}` : 'the trader';
    pushEntries([systemEntry('info', `MARKETS: asked ${who} to ${verb} ${markets}; waiting for its answer`)]);
  }

  // What a trader actually did with a request: done, refused (with the exchange's reason), or still pending.
  function onControlResult(data) {
    const d = obj(data);
    const removing = d.action === 'remove_markets';
    const who = isNum(d.session_id) ? `session ${d.session_id}` : 'the console server';
    const entries = [];
    if (d.error !== undefined) entries.push(systemEntry('warning', `MARKETS: ${who} refused the request: ${freeText(d.error)}`));
    const done = arr(removing ? d.removed : d.added).map(freeText);
    if (done.length) entries.push(systemEntry('info', `MARKETS: ${who} ${removing ? 'removed' : 'added'} ${done.join(', ')}`));
    for (const [ticker, reason] of Object.entries(obj(d.refused))) {
      entries.push(systemEntry('warning', `MARKETS: ${freeText(ticker)} not ${removing ? 'removed' : 'added'}: ${freeText(reason)}`));
    }
    const pending = arr(d.pending).map(freeText);
    if (pending.length) {
      entries.push(systemEntry('warning', `MARKETS: the exchange has not answered yet for ${pending.join(', ')}`));
    }
    if (!entries.length) entries.push(systemEntry('info', `MARKETS: ${who} answered: nothing to change`));
    pushEntries(entries);
  }

  function bindMarketControls() {
    const form = $('market-form');
    const input = $('market-input');
    if (form && input) {
      form.addEventListener('submit', (ev) => {
        ev.preventDefault();
        const markets = input.value.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
        sendControl('add_markets', markets);
        input.value = '';
      });
    }
    if (dom.marketsBody) {
      dom.marketsBody.addEventListener('click', (ev) => {
        const button = ev.target instanceof Element ? ev.target.closest('button.remove-market') : null;
        const row = button ? button.closest('tr.market-row') : null;
        if (row && row.dataset.ticker) sendControl('remove_markets', [row.dataset.ticker]);
      });
    }
  }

  function onBook(data) {
    applyBook(data, { initial: false });
  }

  function onConsole(data) {
    pushEntries([consoleEntry(data)]);
  }

  function onServerError(data) {
    const d = obj(data);
    const message = freeText(d.message) || 'unknown error';
    pushEntries([makeEntry({ level: 'warning', kind: 'error', ts: Date.now(), parts: [`SERVER ERROR: ${message}`] })]);
  }

  function onPong() {
    if (S.pingSentAt !== null && dom.socket) {
      dom.socket.title = `Browser connection to ${wsPath()} · round trip ${Date.now() - S.pingSentAt} ms`;
      S.pingSentAt = null;
    }
  }

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
    S.lastSeqs.clear(); // the replay covers whatever happened while this page was away
    const d = obj(data);
    clearConsole();
    clearMarkets();
    resetMetrics();
    S.visited = new Set();
    S.lastTransitionAt = null;

    const session = isObj(d.session) ? d.session : null;
    S.shards.clear();
    S.primary = session && isNum(session.id) ? session.id : null;
    for (const shard of arr(d.shards)) {
      const sh = obj(shard);
      const info = obj(sh.session);
      const ended = typeof info.status === 'string' && info.status !== 'running';
      noteShard(info.id, { state: ended ? 'shutdown' : sh.state, health: sh.health, tickers: arr(info.markets) });
    }
    setSession(session ? session.id : null);
    if (session) setEnvironment(session.environment);
    for (const ticker of arr(session && session.markets)) {
      if (typeof ticker === 'string' && ticker !== '') ensureRow(ticker);
    }
    setState(session && typeof session.current_state === 'string' ? session.current_state : '');

    const transitions = arr(d.transitions).map((t) => ({ ts: parseTime(obj(t).timestamp), t }));
    const events = arr(d.console).map((c) => ({ ts: parseTime(obj(c).timestamp), c }));
    const entries = [];
    for (const item of mergeByTime(transitions, events)) {
      entries.push(item.t !== undefined ? onTransition(item.t, { replay: true }) : consoleEntry(item.c));
    }
    if (session && typeof session.current_state === 'string' && session.current_state) {
      setState(session.current_state);
    }

    for (const book of arr(d.orderbooks)) applyBook(book, { initial: true });
    if (isObj(d.status)) onStatus(d.status, { replay: true });

    pushEntries(entries);
    S.replays += 1;
    body.dataset.replayed = String(S.replays);
    tick();
  }

  const HANDLERS = new Map([
    ['history_replay', onReplay],
    ['state_transition', (d) => onTransition(d, { replay: false })],
    ['trader_status', (d) => onStatus(d, { replay: false })],
    ['orderbook', onBook],
    ['console', onConsole],
    ['error', onServerError],
    ['pong', onPong],
    ['control_sent', onControlSent],
    ['control_result', onControlResult],
  ]);

  // The trader numbers every live event; a jump means the channel layer dropped some on the way here.
  function countMissed(seq, origin) {
    if (!isNum(seq)) return;
    const key = typeof origin === 'string' ? origin : '';
    const last = S.lastSeqs.has(key) ? S.lastSeqs.get(key) : null;
    if (last !== null && seq > last + 1) {
      const missed = seq - last - 1;
      S.missed += missed;
      pushEntries([systemEntry('warning', `MISSED ${missed} live event(s) (${S.missed} in all); rows catch up on the next update`)]);
    }
    S.lastSeqs.set(key, seq); // a lower number means the trader restarted: start counting again
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

  // ---------------------------------------------------------------- socket

  function wsPath() {
    const p = body.dataset.wsPath;
    return typeof p === 'string' && p !== '' ? p : '/v3/ws';
  }

  function wsUrl() {
    const path = wsPath();
    if (/^wss?:\/\//i.test(path)) return path;
    const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    return `${scheme}//${window.location.host}${path.startsWith('/') ? '' : '/'}${path}`;
  }

  function nextDelay() {
    const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(S.attempt, 10));
    S.attempt += 1;
    const jittered = base * (0.8 + Math.random() * 0.4);
    return Math.round(Math.min(BACKOFF_MAX_MS, jittered));
  }

  function stopPing() {
    if (S.pingTimer !== null) clearInterval(S.pingTimer);
    S.pingTimer = null;
    S.pingSentAt = null;
  }

  function sendPing() {
    const ws = S.ws;
    if (!ws || ws.readyState !== WebSocket.OPEN) return;
    try {
      ws.send(JSON.stringify({ type: 'ping' }));
      S.pingSentAt = Date.now();
    } catch (_err) {
      /* the close handler takes care of it */
    }
  }

  function connect() {
    if (S.unloading) return;
    if (S.retryTimer !== null) clearTimeout(S.retryTimer);
    S.retryTimer = null;
    S.retryAt = null;
    setSocket('connecting');
    let ws;
    try {
      ws = new WebSocket(wsUrl());
    } catch (_err) {
      socketLost(null);
      return;
    }
    S.ws = ws;
    ws.onopen = () => {
      if (S.ws !== ws) return;
      S.openedAt = Date.now();
      S.lastRecvAt = S.openedAt;
      S.everConnected = true;
      setSocket('connected');
      stopPing();
      S.pingTimer = setInterval(sendPing, PING_MS);
    };
    ws.onmessage = (ev) => {
      if (S.ws !== ws) return;
      S.lastRecvAt = Date.now();
      S.attempt = 0;
      handleRaw(ev.data);
    };
    ws.onclose = (ev) => {
      if (S.ws !== ws) return;
      socketLost(ev);
    };
    ws.onerror = () => {
      /* a close event follows */
    };
  }

  function socketLost(ev) {
    const wasOpen = S.openedAt !== null;
    const ws = S.ws;
    S.ws = null;
    S.openedAt = null;
    stopPing();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try {
        ws.close();
      } catch (_err) {
        /* already closed */
      }
    }
    if (S.unloading) return;
    const delay = nextDelay();
    S.retryAt = Date.now() + delay;
    setSocket('disconnected', retryText());
    if (wasOpen) {
      const code = ev && isNum(ev.code) ? ` (code ${ev.code})` : '';
      pushEntries([systemEntry('warning', `CONNECTION LOST: ${wsPath()}${code}; reconnecting`)]);
    }
    S.retryTimer = setTimeout(connect, delay);
  }

  function retryText() {
    if (S.retryAt === null) return '';
    return `retry in ${Math.max(0, (S.retryAt - Date.now()) / 1000).toFixed(1)}s`;
  }

  function reconnectNow() {
    if (S.socketState === 'disconnected' && S.retryTimer !== null) {
      S.attempt = 0;
      connect();
    }
  }

  // ---------------------------------------------------------------- clock

  function tick() {
    const now = Date.now();

    // trader status freshness (the trader can be down while the web app is up)
    const ref = S.lastStatusAt !== null ? S.lastStatusAt : S.openedAt;
    const stale = S.socketState !== 'connected' || ref === null || now - ref > STATUS_STALE_MS;
    if (stale !== S.traderStale) {
      S.traderStale = stale;
      setData(dom.traderStatus, 'stale', stale ? 'true' : 'false');
      body.classList.toggle('is-trader-stale', stale);
    }
    if (stale) {
      let note = 'no status';
      if (S.socketState !== 'connected') note = 'offline';
      else if (S.lastStatusAt !== null) note = `no status for ${fmtDuration((now - S.lastStatusAt) / 1000)}`;
      setText(dom.traderStale, note);
    }

    // time in state ticks locally between statuses (frozen once status goes stale)
    if (S.stateSince !== null) {
      const elapsed = Math.min(Math.max(0, now - S.stateSince.at), S.lastStatusAt !== null ? STATUS_STALE_MS : Infinity);
      const value = fmtDuration(S.stateSince.base + elapsed / 1000);
      setText(dom.m.timeInState, value);
      setText(dom.stateElapsed, value);
    } else {
      setText(dom.m.timeInState, DASH);
      setText(dom.stateElapsed, DASH);
    }

    setText(dom.m.lastMessage, S.lastMessageTime === null ? DASH : fmtAge(now - S.lastMessageTime));

    for (const rec of S.markets.values()) {
      if (rec.updatedAt !== null) setText(rec.cells.age, fmtAge(now - rec.updatedAt));
    }

    if (S.socketState === 'disconnected') setText(dom.socketDetail, retryText());

    // a silent socket (no pongs, no statuses) is dead even if the browser has not noticed
    if (S.ws && S.openedAt !== null && S.lastRecvAt !== null && now - S.lastRecvAt > IDLE_TIMEOUT_MS) {
      socketLost(null);
    }
  }

  // ---------------------------------------------------------------- wiring

  function adoptServerRows() {
    if (!dom.marketsBody) return;
    for (const tr of dom.marketsBody.querySelectorAll('tr.market-row[data-ticker]')) {
      const ticker = tr.dataset.ticker;
      if (ticker && !S.markets.has(ticker)) S.markets.set(ticker, recordFor(tr));
      else tr.remove();
    }
    updateMarketsMeta();
  }

  function init() {
    adoptServerRows();
    setState(S.currentState);

    let saved = 'all';
    try {
      saved = window.localStorage.getItem(FILTER_KEY) || 'all';
    } catch (_err) {
      /* storage unavailable */
    }
    setFilter(saved);

    if (dom.filter) dom.filter.addEventListener('change', () => setFilter(dom.filter.value));
    if (dom.pause) dom.pause.addEventListener('click', () => setPaused(!S.paused));
    if (dom.clear) dom.clear.addEventListener('click', clearConsole);
    if (dom.newLines) dom.newLines.addEventListener('click', scrollToBottom);
    bindMarketControls();
    if (dom.console) {
      dom.console.addEventListener(
        'scroll',
        () => {
          S.stick = atBottom();
          if (S.stick && S.unseen) {
            S.unseen = 0;
            updateNewLines();
          }
        },
        { passive: true },
      );
    }

    window.addEventListener('online', reconnectNow);
    document.addEventListener('visibilitychange', () => {
      if (document.visibilityState === 'visible') reconnectNow();
    });
    window.addEventListener('pagehide', () => {
      S.unloading = true;
      if (S.ws) {
        try {
          S.ws.close(1000);
        } catch (_err) {
          /* ignore */
        }
      }
    });
    window.addEventListener('pageshow', (ev) => {
      if (ev.persisted) {
        S.unloading = false;
        S.ws = null;
        connect();
      }
    });

    setInterval(tick, TICK_MS);
    tick();
    connect();
  }

  // Small hook for tests and debugging: feed a message as if it came from the socket.
  window.TraderConsole = Object.freeze({
    handleMessage,
    get socketState() {
      return S.socketState;
    },
  });

  init();
})();
