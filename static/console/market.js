/* The watched market: its depth ladder, its best bid/ask over the session, and the trader's message rate. */

import { DASH, arr, cents, clock, isNum, isObj, obj, parseTime, text, toNum } from './format.js';
import { $, body, el, setText } from './dom.js';
import { drawChart } from './charts.js';

const MAX_POINTS = 3000; // live points kept per chart; older ones are dropped
const LADDER_DEPTH = 5;

const ui = {
  ticker: $('market-ticker'),
  note: $('market-note'),
  ladder: $('ladder-body'),
  priceChart: $('price-chart'),
  rateChart: $('rate-chart'),
  lastChange: $('market-last-change'),
};

const watch = {
  ticker: null,
  send: () => false,
  points: [], // [epoch ms, bid number | null, ask number | null, bid text, ask text]
  rates: [], // [epoch ms, messages per second]
  rateSession: null, // the session whose statuses feed the rate chart
  lastChange: null, // epoch ms of the watched book's last change
  dirty: false,
  ladderUpdates: 0,
};

export function watchedTicker() {
  return watch.ticker;
}

function markRows() {
  for (const tr of document.querySelectorAll('#markets-body tr.market-row')) {
    tr.classList.toggle('is-watched', tr.dataset.ticker === watch.ticker);
  }
}

/** Follow ``ticker``: ask the server for its levels and history, and draw nothing stale meanwhile. */
export function watchMarket(ticker) {
  if (typeof ticker !== 'string' || ticker === '') return;
  if (ticker !== watch.ticker) {
    watch.ticker = ticker;
    watch.points = [];
    watch.lastChange = null;
    renderLadder(null);
    setText(ui.note, 'loading…');
    watch.dirty = true;
  }
  setText(ui.ticker, ticker);
  body.dataset.watched = ticker;
  markRows();
  watch.send({ type: 'watch_market', market: ticker });
}

/** After a reconnect the new socket follows no market yet: ask again for the one on screen. */
export function rewatch() {
  if (watch.ticker !== null) watchMarket(watch.ticker);
}

/** The rows on the page changed: keep the highlight, and watch the first row when nothing is watched. */
export function onRows(tickers) {
  if (watch.ticker === null && tickers.length) watchMarket(tickers[0]);
  else markRows();
}

function point(t, d) {
  const bid = isObj(d.yes_bid) ? d.yes_bid.price : null;
  const ask = isObj(d.yes_ask) ? d.yes_ask.price : null;
  return [t, toNum(bid), toNum(ask), text(bid), text(ask)];
}

function addPoint(p) {
  const last = watch.points.length ? watch.points[watch.points.length - 1] : null;
  if (last && last[0] > p[0]) return; // an older copy of the book
  if (last && last[3] === p[3] && last[4] === p[4]) return; // the top did not move
  watch.points.push(p);
  if (watch.points.length > MAX_POINTS) watch.points.splice(0, watch.points.length - MAX_POINTS);
  watch.dirty = true;
}

/** ``market_history``: the book as last written and the prices from the recording, before the live ones. */
export function onMarketHistory(data) {
  const d = obj(data);
  if (d.market_ticker !== watch.ticker) return;
  const recorded = arr(d.points)
    .filter((p) => Array.isArray(p) && isNum(p[0]))
    .map((p) => [p[0], toNum(p[1]), toNum(p[2]), text(p[1]), text(p[2])]);
  const lastRecorded = recorded.length ? recorded[recorded.length - 1][0] : -Infinity;
  watch.points = [...recorded, ...watch.points.filter((p) => p[0] > lastRecorded)];
  const notes = [];
  if (d.session_id === null) notes.push('no trader watches it');
  else if (d.from_start === false) notes.push('chart from the latest part of the recording');
  else if (d.to_end === false) notes.push('chart from the start of the recording, then live');
  setText(ui.note, notes.join('; '));
  if (isObj(d.book)) applyWatchedBook(d.book);
  watch.dirty = true;
}

/** A book of the watched market from an ``orderbooks`` event (with its levels) or from history. */
export function applyWatchedBook(book) {
  const d = obj(book);
  if (d.market_ticker !== watch.ticker) return;
  const t = parseTime(d.updated_at) ?? Date.now();
  if (d.yes_bids !== undefined || d.yes_asks !== undefined) renderLadder(d);
  if (parseTime(d.updated_at) !== null) watch.lastChange = t;
  addPoint(point(t, d));
}

function levelRow(side, level, widest) {
  const l = obj(level);
  const size = toNum(l.size);
  const tr = el('tr', `ladder-row ladder-${side}`);
  tr.dataset.side = side;
  const bid = el('td', 'ladder-size ladder-bid-size', side === 'bid' ? text(l.size) : '');
  const price = el('td', 'ladder-price', text(l.price));
  price.title = cents(l.price) || '';
  const ask = el('td', 'ladder-size ladder-ask-size', side === 'ask' ? text(l.size) : '');
  // A bar behind the size shows it against the largest level on screen.
  const cell = side === 'bid' ? bid : ask;
  if (size !== null && widest > 0) cell.style.setProperty('--w', `${Math.round((size / widest) * 100)}%`);
  tr.append(bid, price, ask);
  return tr;
}

function renderLadder(book) {
  if (!ui.ladder) return;
  if (book === null) {
    const empty = el('tr', 'ladder-empty');
    const td = el('td', '', DASH);
    td.colSpan = 3;
    empty.appendChild(td);
    ui.ladder.replaceChildren(empty);
    return;
  }
  const bids = arr(book.yes_bids).slice(0, LADDER_DEPTH);
  const asks = arr(book.yes_asks).slice(0, LADDER_DEPTH);
  const widest = Math.max(0, ...[...bids, ...asks].map((l) => toNum(obj(l).size) ?? 0));
  const rows = [];
  for (const level of [...asks].reverse()) rows.push(levelRow('ask', level, widest));
  const spread = el('tr', 'ladder-spread');
  const td = el('td', '', `spread ${text(book.spread)}`);
  td.colSpan = 3;
  spread.appendChild(td);
  rows.push(spread);
  for (const level of bids) rows.push(levelRow('bid', level, widest));
  ui.ladder.replaceChildren(...rows);
  watch.ladderUpdates += 1;
  body.dataset.ladderUpdates = String(watch.ladderUpdates);
}

// ------------------------------------------------------------------ message rate

/** The replay's session and its recorded rates: the rate chart follows that session's statuses. */
export function resetRates(sessionId, rates) {
  watch.rateSession = isNum(sessionId) ? sessionId : null;
  watch.rates = arr(rates).filter((r) => Array.isArray(r) && isNum(r[0]) && isNum(r[1])).map((r) => [r[0], r[1]]);
  watch.dirty = true;
}

/** A ``trader_status``: one more point of the message rate. */
export function noteStatus(data) {
  const d = obj(data);
  if (watch.rateSession !== null && isNum(d.session_id) && d.session_id !== watch.rateSession) return;
  const rate = toNum(obj(d.metrics).messages_per_second);
  const t = parseTime(d.timestamp);
  if (rate === null || t === null) return;
  const last = watch.rates.length ? watch.rates[watch.rates.length - 1][0] : -Infinity;
  if (t <= last) return;
  watch.rates.push([t, rate]);
  if (watch.rates.length > MAX_POINTS) watch.rates.splice(0, watch.rates.length - MAX_POINTS);
  watch.dirty = true;
}

// ------------------------------------------------------------------ drawing

const priceText = (v) => `${(v * 100).toFixed(1)}¢`;
const rateText = (v) => (v >= 1000 ? `${Math.round(v / 100) / 10}k` : String(Math.round(v)));

/** Called by the page clock: redraw the charts when something changed (at most once a tick). */
export function tickMarket(now) {
  if (watch.lastChange !== null) setText(ui.lastChange, `last change ${clock(watch.lastChange)}`);
  else setText(ui.lastChange, '');
  if (!watch.dirty) return;
  watch.dirty = false;
  if (ui.priceChart) {
    drawChart(
      ui.priceChart,
      [
        { name: 'bid', step: true, points: watch.points.map((p) => [p[0], p[1]]) },
        { name: 'ask', step: true, points: watch.points.map((p) => [p[0], p[2]]) },
      ],
      { yText: priceText, tMax: now, marker: watch.lastChange === null ? undefined : { t: watch.lastChange } },
    );
  }
  if (ui.rateChart) drawChart(ui.rateChart, [{ name: 'rate', step: false, points: watch.rates }], { yText: rateText });
}

/** Bind row clicks (a click on a row watches its market); ``send`` puts a message on the socket. */
export function bindMarket(send) {
  watch.send = send;
  const rows = $('markets-body');
  if (rows) {
    rows.addEventListener('click', (ev) => {
      const target = ev.target instanceof Element ? ev.target : null;
      if (!target || target.closest('button')) return;
      const row = target.closest('tr.market-row');
      if (row && row.dataset.ticker) watchMarket(row.dataset.ticker);
    });
  }
}
