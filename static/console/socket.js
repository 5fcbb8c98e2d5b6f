/* The /v3/ws connection: connect, reconnect with back-off and jitter, ping, and give up on a silent socket. */

import { isNum } from './format.js';
import { body, dom, setData, setText } from './dom.js';
import { say } from './log.js';

const PING_MS = 15000;
const IDLE_TIMEOUT_MS = 45000;
const BACKOFF_MIN_MS = 500;
const BACKOFF_MAX_MS = 10000;

const sock = {
  ws: null,
  state: 'connecting',
  attempt: 0,
  retryTimer: null,
  retryAt: null,
  pingTimer: null,
  pingSentAt: null,
  openedAt: null,
  lastRecvAt: null,
  unloading: false,
  onMessage: () => {},
};

export function socketState() {
  return sock.state;
}

/** Browser ms when the current socket opened, or null while there is none. */
export function socketOpenedAt() {
  return sock.openedAt;
}

export function wsPath() {
  const p = body.dataset.wsPath;
  return typeof p === 'string' && p !== '' ? p : '/v3/ws';
}

function wsUrl() {
  const path = wsPath();
  if (/^wss?:\/\//i.test(path)) return path;
  const scheme = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
  return `${scheme}//${window.location.host}${path.startsWith('/') ? '' : '/'}${path}`;
}

/** Send one JSON message; false when there is no open socket to send it on. */
export function send(message) {
  const ws = sock.ws;
  if (!ws || ws.readyState !== WebSocket.OPEN) return false;
  try {
    ws.send(JSON.stringify(message));
    return true;
  } catch (_err) {
    return false; // the close handler takes care of it
  }
}

function setSocket(state, detail) {
  sock.state = state;
  setData(dom.socket, 'socket', state);
  setData(body, 'socket', state);
  setText(dom.socketText, state);
  setText(dom.socketDetail, detail || '');
}

function nextDelay() {
  const base = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** Math.min(sock.attempt, 10));
  sock.attempt += 1;
  const jittered = base * (0.8 + Math.random() * 0.4);
  return Math.round(Math.min(BACKOFF_MAX_MS, jittered));
}

function stopPing() {
  if (sock.pingTimer !== null) clearInterval(sock.pingTimer);
  sock.pingTimer = null;
  sock.pingSentAt = null;
}

function sendPing() {
  if (send({ type: 'ping' })) sock.pingSentAt = Date.now();
}

export function onPong() {
  if (sock.pingSentAt !== null && dom.socket) {
    dom.socket.title = `Browser connection to ${wsPath()} · round trip ${Date.now() - sock.pingSentAt} ms`;
    sock.pingSentAt = null;
  }
}

function connect() {
  if (sock.unloading) return;
  if (sock.retryTimer !== null) clearTimeout(sock.retryTimer);
  sock.retryTimer = null;
  sock.retryAt = null;
  setSocket('connecting');
  let ws;
  try {
    ws = new WebSocket(wsUrl());
  } catch (_err) {
    socketLost(null);
    return;
  }
  sock.ws = ws;
  ws.onopen = () => {
    if (sock.ws !== ws) return;
    sock.openedAt = Date.now();
    sock.lastRecvAt = sock.openedAt;
    setSocket('connected');
    stopPing();
    sock.pingTimer = setInterval(sendPing, PING_MS);
  };
  ws.onmessage = (ev) => {
    if (sock.ws !== ws) return;
    sock.lastRecvAt = Date.now();
    sock.attempt = 0;
    sock.onMessage(ev.data);
  };
  ws.onclose = (ev) => {
    if (sock.ws !== ws) return;
    socketLost(ev);
  };
  ws.onerror = () => {
    /* a close event follows */
  };
}

function socketLost(ev) {
  const wasOpen = sock.openedAt !== null;
  const ws = sock.ws;
  sock.ws = null;
  sock.openedAt = null;
  stopPing();
  if (ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
    try {
      ws.close();
    } catch (_err) {
      /* already closed */
    }
  }
  if (sock.unloading) return;
  const delay = nextDelay();
  sock.retryAt = Date.now() + delay;
  setSocket('disconnected', retryText());
  if (wasOpen) {
    const code = ev && isNum(ev.code) ? ` (code ${ev.code})` : '';
    say('warning', `CONNECTION LOST: ${wsPath()}${code}; reconnecting`);
  }
  sock.retryTimer = setTimeout(connect, delay);
}

function retryText() {
  if (sock.retryAt === null) return '';
  return `retry in ${Math.max(0, (sock.retryAt - Date.now()) / 1000).toFixed(1)}s`;
}

function reconnectNow() {
  if (sock.state === 'disconnected' && sock.retryTimer !== null) {
    sock.attempt = 0;
    connect();
  }
}

/** Called by the page clock: the retry countdown, and a silent socket (no pongs, no statuses) is dead. */
export function tickSocket(now) {
  if (sock.state === 'disconnected') setText(dom.socketDetail, retryText());
  if (sock.ws && sock.openedAt !== null && sock.lastRecvAt !== null && now - sock.lastRecvAt > IDLE_TIMEOUT_MS) {
    socketLost(null);
  }
}

/** Open the socket and keep it open; every text frame received goes to ``onMessage``. */
export function startSocket(onMessage) {
  sock.onMessage = onMessage;
  window.addEventListener('online', reconnectNow);
  document.addEventListener('visibilitychange', () => {
    if (document.visibilityState === 'visible') reconnectNow();
  });
  window.addEventListener('pagehide', () => {
    sock.unloading = true;
    if (sock.ws) {
      try {
        sock.ws.close(1000);
      } catch (_err) {
        /* ignore */
      }
    }
  });
  window.addEventListener('pageshow', (ev) => {
    if (ev.persisted) {
      sock.unloading = false;
      sock.ws = null;
      connect();
    }
  });
  connect();
}
