/* The console page's elements by name, and small helpers that change them only when a value changed. */

export const $ = (id) => document.getElementById(id);
export const body = document.body;

export const dom = {
  stateBadge: $('state-badge'),
  envBadge: $('env-badge'),
  replayBadge: $('replay-badge'),
  replayOf: $('replay-of'),
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
  marketFilter: $('market-filter'),
  marketsRange: $('markets-range'),
  marketsPrev: $('markets-prev'),
  marketsNext: $('markets-next'),
  marketForm: $('market-form'),
  marketInput: $('market-input'),
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

export function setText(node, value) {
  if (node && node.textContent !== value) node.textContent = value;
}

export function setData(node, key, value) {
  if (node && node.dataset[key] !== value) node.dataset[key] = value;
}

export function el(tag, className, content) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (content !== undefined) node.textContent = content;
  return node;
}

export function flash(node, kind) {
  if (!node) return;
  node.classList.remove('flash', 'flash-up', 'flash-down');
  void node.offsetWidth; // restart the animation
  node.classList.add(kind || 'flash');
}
