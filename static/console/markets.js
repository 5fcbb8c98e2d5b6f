/* The market table: one page of markets from the server (filter box, pager), kept live from orderbooks events. */

import { DASH, arr, cents, fmtAge, fmtInt, freeText, isNum, isObj, obj, parseTime, text, toNum } from './format.js';
import { body, dom, el, flash, setText } from './dom.js';
import { say } from './log.js';
import { applyWatchedBook, onRows, watchedTicker } from './market.js';

const FILTER_DEBOUNCE_MS = 250;
const PAGE_ANSWER_MS = 5000; // a page request unanswered this long is given up on
const COLUMNS = ['ticker', 'bid', 'ask', 'spread', 'seq', 'stale', 'age'];

const view = {
  filter: '',
  offset: 0,
  limit: 50,
  total: null, // markets matching the filter, from the last page
  marketsTotal: null, // every watched market, as the latest statuses count them
  pageMarketsTotal: null, // every watched market, as the last page counted them
  askedAt: null, // browser ms of the page request not answered yet
  rows: new Map(), // ticker -> row record, only the rows on the page
  send: () => false,
  filterTimer: null,
  pages: 0, // pages received, for tests to wait on
};

// ------------------------------------------------------------------ rows

function createRow(ticker) {
  const tr = el('tr', 'market-row');
  tr.dataset.ticker = ticker;
  tr.dataset.stale = '';
  for (const name of [...COLUMNS, 'remove']) tr.appendChild(el('td', `col-${name}`, name === 'ticker' ? ticker : DASH));
  const remove = el('button', 'remove-market', '×');
  remove.type = 'button';
  remove.title = `Stop watching ${ticker}`;
  tr.querySelector('.col-remove').replaceChildren(remove);
  return tr;
}

function recordFor(tr) {
  const cells = {};
  for (const name of COLUMNS) cells[name] = tr.querySelector(`.col-${name}`);
  return { tr, cells, vals: {}, sid: null, seq: null, updatedAt: null };
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

/** Show one book (the BOOK shape of orderbooks events and markets pages) in its row. */
function applyBook(rec, d, animate) {
  // Drop an older copy of the same subscription (e.g. a page read before a newer event arrived).
  const sid = isNum(d.sid) || typeof d.sid === 'string' ? d.sid : null;
  const seq = toNum(d.seq);
  if (sid !== null && sid === rec.sid && seq !== null && rec.seq !== null && seq < rec.seq) return;

  const first = Object.keys(rec.vals).length === 0;
  const changed = (key, value) => {
    const was = rec.vals[key];
    rec.vals[key] = value;
    return was !== value;
  };

  if (changed('bid', quoteKey(d.yes_bid))) {
    renderQuote(rec.cells.bid, d.yes_bid, animate && !first ? rec.bid || null : undefined);
  }
  rec.bid = isObj(d.yes_bid) ? d.yes_bid : null;

  if (changed('ask', quoteKey(d.yes_ask))) {
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

// ------------------------------------------------------------------ the page

function updateMeta() {
  if (dom.marketsEmpty) {
    dom.marketsEmpty.hidden = view.rows.size > 0;
    setText(dom.marketsEmpty.firstElementChild, view.filter ? `No market matches “${view.filter}”.` : 'No markets yet.');
  }
  if (view.marketsTotal !== null) setText(dom.marketsCount, fmtInt(view.marketsTotal));
  const total = view.total;
  if (total === null) {
    setText(dom.marketsRange, '');
  } else {
    const first = total === 0 ? 0 : view.offset + 1;
    const last = view.offset + view.rows.size;
    const matching = view.filter ? ` matching “${view.filter}”` : '';
    setText(dom.marketsRange, `${fmtInt(first)}–${fmtInt(last)} of ${fmtInt(total)}${matching}`);
  }
  if (dom.marketsPrev) dom.marketsPrev.disabled = view.offset === 0;
  if (dom.marketsNext) dom.marketsNext.disabled = total === null || view.offset + view.limit >= total;
}

/** Ask the server for the page the filter and pager point at (again, when markets came or went). */
export function requestPage() {
  if (view.send({ type: 'request_markets', filter: view.filter, offset: view.offset, limit: view.limit })) {
    view.askedAt = Date.now();
  }
}

/** A ``markets_page`` reply: show its rows, unless the reader has moved on since it was asked for. */
export function onMarketsPage(data) {
  const d = obj(data);
  if (d.filter !== view.filter || d.offset !== view.offset) return;
  view.askedAt = null;
  const total = toNum(d.total);
  view.total = total;
  if (total !== null && total > 0 && view.offset >= total) {
    // markets went away under the last page: show the last one there is
    view.offset = Math.max(0, Math.floor((total - 1) / view.limit) * view.limit);
    requestPage();
    return;
  }
  if (isNum(d.markets_total)) {
    view.pageMarketsTotal = d.markets_total;
    if (view.marketsTotal === null) view.marketsTotal = d.markets_total;
  }
  const rows = new Map();
  const order = [];
  for (const book of arr(d.markets)) {
    const b = obj(book);
    const ticker = typeof b.market_ticker === 'string' && b.market_ticker !== '' ? b.market_ticker : null;
    if (ticker === null || rows.has(ticker)) continue;
    const rec = view.rows.get(ticker) || recordFor(createRow(ticker));
    applyBook(rec, b, false);
    rows.set(ticker, rec);
    order.push(rec.tr);
  }
  for (const [ticker, rec] of view.rows) if (!rows.has(ticker)) rec.tr.remove();
  view.rows = rows;
  if (dom.marketsBody) dom.marketsBody.replaceChildren(...order, ...(dom.marketsEmpty ? [dom.marketsEmpty] : []));
  view.pages += 1;
  body.dataset.marketsPages = String(view.pages);
  updateMeta();
  onRows([...rows.keys()]);
}

/** An ``orderbooks`` batch: only the rows on the page change, and the watched market's ladder and chart. */
export function onOrderbooks(data) {
  const watched = watchedTicker();
  for (const book of arr(obj(data).books)) {
    const b = obj(book);
    const rec = typeof b.market_ticker === 'string' ? view.rows.get(b.market_ticker) : undefined;
    if (rec) applyBook(rec, b, true);
    if (watched !== null && b.market_ticker === watched) applyWatchedBook(b); // on screen or not
  }
}

/** The number of watched markets, from the statuses' metrics. While it differs from the count the last page
 * was read with, markets came or went (the rows the page reads may lag the status): the page is read again. */
export function noteMarketsTotal(total) {
  if (!isNum(total)) return;
  view.marketsTotal = total;
  updateMeta();
  const waiting = view.askedAt !== null && Date.now() - view.askedAt < PAGE_ANSWER_MS;
  if (!waiting && view.pageMarketsTotal !== null && view.pageMarketsTotal !== total) requestPage();
}

export function tickMarkets(now) {
  for (const rec of view.rows.values()) {
    if (rec.updatedAt !== null) setText(rec.cells.age, fmtAge(now - rec.updatedAt));
  }
}

function setFilter(value) {
  const filter = value.trim();
  if (filter === view.filter) return;
  view.filter = filter;
  view.offset = 0;
  requestPage();
}

function movePage(step) {
  const offset = Math.max(0, view.offset + step * view.limit);
  if (offset === view.offset || (step > 0 && view.total !== null && offset >= view.total)) return;
  view.offset = offset;
  requestPage();
}

// ------------------------------------------------------------------ market control

function sendControl(type, markets) {
  if (markets.length) view.send({ type, markets });
}

export function onControlSent(data) {
  const d = obj(data);
  const verb = d.action === 'remove_markets' ? 'remove' : 'add';
  const markets = arr(d.markets).map(freeText).join(', ');
  const who = isNum(d.session_id) ? `session ${d.session_id}` : 'the trader';
  say('info', `MARKETS: asked ${who} to ${verb} ${markets}; waiting for its answer`);
}

/** What a trader actually did with a request: done, refused (with the exchange's reason), or still pending. */
export function onControlResult(data) {
  const d = obj(data);
  const removing = d.action === 'remove_markets';
  const who = isNum(d.session_id) ? `session ${d.session_id}` : 'the console server';
  let said = false;
  const line = (level, message) => {
    say(level, message);
    said = true;
  };
  if (d.error !== undefined) line('warning', `MARKETS: ${who} refused the request: ${freeText(d.error)}`);
  const done = arr(removing ? d.removed : d.added).map(freeText);
  if (done.length) line('info', `MARKETS: ${who} ${removing ? 'removed' : 'added'} ${done.join(', ')}`);
  for (const [ticker, reason] of Object.entries(obj(d.refused))) {
    line('warning', `MARKETS: ${freeText(ticker)} not ${removing ? 'removed' : 'added'}: ${freeText(reason)}`);
  }
  const pending = arr(d.pending).map(freeText);
  if (pending.length) line('warning', `MARKETS: the exchange has not answered yet for ${pending.join(', ')}`);
  if (!said) say('info', `MARKETS: ${who} answered: nothing to change`);
  if (done.length) requestPage();
}

// ------------------------------------------------------------------ wiring

/** Bind the filter box, the pager and the add/remove controls; ``send`` puts a message on the socket. */
export function bindMarkets(send) {
  view.send = send;
  const size = toNum(dom.marketsBody && dom.marketsBody.dataset.pageSize);
  if (size !== null && size > 0) view.limit = size;
  // The rows the server rendered are the first page until the socket brings a fresh one.
  if (dom.marketsBody) {
    for (const tr of dom.marketsBody.querySelectorAll('tr.market-row[data-ticker]')) {
      if (!view.rows.has(tr.dataset.ticker)) view.rows.set(tr.dataset.ticker, recordFor(tr));
      else tr.remove();
    }
  }
  const total = toNum(dom.marketsCount && dom.marketsCount.dataset.total);
  if (total !== null) view.marketsTotal = view.pageMarketsTotal = total;
  updateMeta();
  onRows([...view.rows.keys()]); // the first row is watched from the start; the socket asks once it opens

  if (dom.marketFilter) {
    dom.marketFilter.value = '';
    dom.marketFilter.addEventListener('input', () => {
      // one request once typing pauses, not one per key (requests are rate-limited by the server)
      if (view.filterTimer !== null) clearTimeout(view.filterTimer);
      view.filterTimer = setTimeout(() => {
        view.filterTimer = null;
        setFilter(dom.marketFilter.value);
      }, FILTER_DEBOUNCE_MS);
    });
  }
  if (dom.marketsPrev) dom.marketsPrev.addEventListener('click', () => movePage(-1));
  if (dom.marketsNext) dom.marketsNext.addEventListener('click', () => movePage(1));
  if (dom.marketForm && dom.marketInput) {
    dom.marketForm.addEventListener('submit', (ev) => {
      ev.preventDefault();
      const markets = dom.marketInput.value.split(/[\s,]+/).map((t) => t.trim()).filter(Boolean);
      sendControl('add_markets', markets);
      dom.marketInput.value = '';
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
