/* The trading panel from the status's trading block, its Cancel buttons and kill switch, and their replies. */

import { DASH, arr, clock, freeText, isNum, isObj, obj, text } from './format.js';
import { $, el, setData, setText } from './dom.js';
import { say } from './log.js';

const CONFIRM_MS = 10000; // an unanswered confirm step closes by itself
const COUNTERS = [
  ['orders_placed', 'placed'],
  ['orders_amended', 'amended'],
  ['orders_filled', 'filled'],
  ['orders_cancelled', 'cancelled'],
  ['orders_rejected', 'rejected'],
  ['orders_refused', 'refused'],
  ['fills', 'fills'],
  ['maker_fills', 'maker'],
  ['taker_fills', 'taker'],
  ['account_syncs', 'account syncs'],
  ['kill_switch', 'kill switch'],
  ['strategy_failures', 'strategy failures'],
];

const ui = {
  panel: $('trading-panel'),
  ready: $('trading-ready'),
  strategyName: $('strategy-name'),
  strategyState: $('strategy-state'),
  strategyParams: $('strategy-params'),
  strategyError: $('strategy-error'),
  killed: $('trading-killed'),
  reply: $('trading-reply'),
  money: $('trading-money'),
  kill: $('kill-switch'),
  confirm: $('kill-confirm'),
  confirmYes: $('kill-confirm-yes'),
  confirmNo: $('kill-confirm-no'),
  ordersBody: $('orders-body'),
  ordersCount: $('orders-count'),
  positionsBody: $('positions-body'),
  positionsCount: $('positions-count'),
  fillsBody: $('fills-body'),
  counters: $('trading-counters'),
  refusals: $('trading-refusals'),
};

const trading = {
  send: () => false,
  session: null, // the session whose trading the panel shows: requests go there
  confirmTimer: null,
  cancelling: new Set(), // order ids whose cancel was sent and not answered
  statuses: 0, // trading statuses shown, for tests to wait on
};

// ------------------------------------------------------------------ small renderers

/** "-0.300000" -> "-$0.30"; the dollar string keeps its exactness (no float): cents are cut, not rounded,
 * and the full figure is the title. */
function dollars(v) {
  if (typeof v !== 'string') return DASH;
  const m = /^(-?)(\d+)(?:\.(\d*))?$/.exec(v.trim());
  if (!m) return text(v);
  const whole = m[2].replace(/\B(?=(\d{3})+(?!\d))/g, ',');
  const cents = (m[3] || '').padEnd(2, '0').slice(0, 2);
  const negative = m[1] === '-' && /[1-9]/.test(m[2] + (m[3] || ''));
  return `${negative ? '-' : ''}$${whole}.${cents}`;
}

function sign(v) {
  if (typeof v !== 'string' || !/[1-9]/.test(v)) return '';
  return v.trim().startsWith('-') ? 'down' : 'up';
}

function sideText(side) {
  if (side === 'bid') return 'buy YES';
  if (side === 'ask') return 'sell YES';
  return text(side);
}

function setMoney(node, value) {
  setText(node, dollars(value));
  node.title = typeof value === 'string' ? `$${value}` : 'not known yet';
  if (node.dataset.signed === 'true') setData(node, 'sign', sign(value));
}

function cell(tr, index) {
  return tr.children[index];
}

/** Keep ``tbody``'s rows in step with ``items`` by key: rows are updated in place (a button being pressed
 * survives a status), new ones made, gone ones removed, order kept. */
function syncRows(tbody, items, keyOf, create, update, emptyText, columns) {
  if (!tbody) return;
  const existing = new Map();
  for (const tr of tbody.querySelectorAll('tr[data-key]')) existing.set(tr.dataset.key, tr);
  const rows = [];
  for (const item of items) {
    const key = keyOf(item);
    let tr = existing.get(key);
    if (tr) existing.delete(key);
    else {
      tr = create(item);
      tr.dataset.key = key;
    }
    update(tr, item);
    rows.push(tr);
  }
  if (rows.length === 0) {
    const empty = el('tr', 'trading-empty');
    const td = el('td', '', emptyText);
    td.colSpan = columns;
    empty.appendChild(td);
    rows.push(empty);
  }
  // Only a changed order touches the DOM, so a row under the pointer is not re-created.
  const same = rows.length === tbody.children.length && rows.every((tr, i) => tbody.children[i] === tr);
  if (!same) tbody.replaceChildren(...rows);
}

function rowOf(className, columns) {
  const tr = el('tr', className);
  for (const name of columns) tr.appendChild(el('td', name ? `col-${name}` : '', DASH));
  return tr;
}

// ------------------------------------------------------------------ orders

const ORDER_COLUMNS = ['ticker', 'side', 'price', 'filled', 'status', 'text', 'id', 'cancel'];

function orderKey(o) {
  return freeText(o.order_id) || freeText(o.client_order_id);
}

function createOrder(o) {
  const tr = rowOf('order-row', ORDER_COLUMNS);
  const button = el('button', 'btn cancel-order', 'Cancel');
  button.type = 'button';
  cell(tr, 7).replaceChildren(button);
  button.addEventListener('click', () => cancelOrder(tr.dataset.key, tr));
  return tr;
}

function updateOrder(tr, o) {
  const id = orderKey(o);
  tr.dataset.orderId = id;
  tr.dataset.side = freeText(o.side);
  setText(cell(tr, 0), text(o.ticker));
  setText(cell(tr, 1), sideText(o.side));
  setText(cell(tr, 2), text(o.yes_price));
  setText(cell(tr, 3), `${text(o.fill_count)} / ${text(o.initial_count)}`);
  setText(cell(tr, 4), text(o.status));
  setText(cell(tr, 5), text(o.strategy));
  setText(cell(tr, 6), id || DASH);
  cell(tr, 6).title = `order ${text(o.order_id)} · client ${text(o.client_order_id)} · ${text(o.time_in_force)}`;
  const pending = trading.cancelling.has(id);
  const button = tr.querySelector('button.cancel-order');
  if (button) {
    button.disabled = pending || !id;
    setText(button, pending ? 'Cancelling…' : 'Cancel');
    button.title = `Cancel ${sideText(o.side)} ${text(o.remaining_count)} ${text(o.ticker)} at ${text(o.yes_price)}`;
  }
  setData(tr, 'cancelling', pending ? 'true' : 'false');
}

function cancelOrder(id, tr) {
  if (!id || trading.cancelling.has(id)) return;
  const message = { type: 'cancel_order', order_id: id };
  if (isNum(trading.session)) message.session = trading.session;
  if (!trading.send(message)) {
    showReply('error', `Order ${id} not cancelled: the console is offline`);
    return;
  }
  trading.cancelling.add(id);
  setData(tr, 'cancelling', 'true');
  const button = tr.querySelector('button.cancel-order');
  if (button) {
    button.disabled = true;
    setText(button, 'Cancelling…');
  }
  showReply('info', `Cancel of order ${id} sent`);
}

// ------------------------------------------------------------------ positions and fills

const POSITION_COLUMNS = ['ticker', 'position', 'cost', 'mark', 'unrealized', 'realized', 'fees'];

function updatePosition(tr, p) {
  setText(cell(tr, 0), text(p.ticker));
  setText(cell(tr, 1), text(p.position));
  setData(cell(tr, 1), 'sign', sign(p.position));
  setText(cell(tr, 2), dollars(p.cost));
  setText(cell(tr, 3), text(p.mark_price)); // no mark without a two-sided book
  setText(cell(tr, 4), dollars(p.unrealized_pnl));
  setData(cell(tr, 4), 'sign', sign(p.unrealized_pnl));
  setText(cell(tr, 5), dollars(p.realized_pnl));
  setData(cell(tr, 5), 'sign', sign(p.realized_pnl));
  setText(cell(tr, 6), dollars(p.fees_paid));
}

const FILL_COLUMNS = ['time', 'ticker', 'side', 'price', 'count', 'fee', 'liquidity'];

function updateFill(tr, f) {
  setText(cell(tr, 0), isNum(f.ts_ms) ? clock(f.ts_ms) : DASH);
  setText(cell(tr, 1), text(f.ticker));
  setText(cell(tr, 2), sideText(f.side));
  setText(cell(tr, 3), text(f.yes_price));
  setText(cell(tr, 4), text(f.count));
  setText(cell(tr, 5), dollars(f.fee));
  setText(cell(tr, 6), f.is_taker === true ? 'taker' : f.is_taker === false ? 'maker' : DASH);
  setData(tr, 'liquidity', f.is_taker === true ? 'taker' : 'maker');
}

// ------------------------------------------------------------------ counters, strategy, money

function renderCounts(node, entries, emptyText) {
  if (!node) return;
  const items = entries.map(([label, value]) => {
    const div = el('div', 'count-item');
    div.append(el('dt', '', label), el('dd', '', text(value)));
    return div;
  });
  if (items.length === 0) items.push(el('div', 'counts-empty', emptyText));
  const key = JSON.stringify(entries);
  if (node.dataset.key !== key) {
    node.dataset.key = key;
    node.replaceChildren(...items);
  }
}

function renderStrategy(s, killed) {
  const name = freeText(s.name) || freeText(s.path);
  setText(ui.strategyName, name || 'no strategy');
  if (ui.strategyName) ui.strategyName.title = freeText(s.path);
  const state = freeText(s.state);
  setText(ui.strategyState, state || DASH);
  setData(ui.strategyState, 'state', state);
  const params = Object.entries(obj(s.params)).map(([k, v]) => `${k}=${freeText(v)}`);
  setText(ui.strategyParams, params.length ? params.join(' ') : '');
  if (ui.strategyParams) ui.strategyParams.title = params.join('\n');
  const error = freeText(s.error);
  if (ui.strategyError) {
    ui.strategyError.hidden = !error;
    setText(ui.strategyError, error);
  }
  if (ui.killed) {
    ui.killed.hidden = !killed;
    setText(ui.killed, killed ? `Kill switch pulled: ${killed}. No new orders for the rest of this session.` : '');
  }
}

// ------------------------------------------------------------------ the status

/** The trading block of the followed trader's status (``{"enabled": false}`` hides the panel). */
export function onTrading(block, sessionId) {
  if (!ui.panel) return;
  const t = obj(block);
  const enabled = t.enabled === true;
  ui.panel.hidden = !enabled;
  setData(document.body, 'trading', enabled ? 'true' : 'false');
  if (!enabled) return;
  if (isNum(sessionId)) trading.session = sessionId;
  const killed = freeText(t.killed);
  setData(ui.panel, 'killed', killed ? 'true' : 'false');
  setText(ui.ready, killed ? 'killed' : t.ready === true ? 'ready' : 'not ready');
  setData(ui.ready, 'ready', killed ? 'killed' : t.ready === true ? 'true' : 'false');
  renderStrategy(obj(t.strategy), killed);

  if (ui.money) for (const dd of ui.money.querySelectorAll('dd[data-money]')) setMoney(dd, t[dd.dataset.money]);

  const orders = arr(t.open_orders).filter(isObj);
  const total = isNum(t.open_orders_total) ? t.open_orders_total : orders.length;
  const open = new Set(orders.map(orderKey));
  for (const id of trading.cancelling) if (!open.has(id)) trading.cancelling.delete(id);
  syncRows(ui.ordersBody, orders, orderKey, createOrder, updateOrder, 'No open orders.', ORDER_COLUMNS.length);
  setText(ui.ordersCount, total > orders.length ? `${orders.length} of ${total}` : String(total));
  setData(ui.ordersBody, 'total', String(total));

  const positions = arr(t.positions).filter(isObj);
  syncRows(
    ui.positionsBody,
    positions,
    (p) => freeText(p.ticker),
    () => rowOf('position-row', POSITION_COLUMNS),
    updatePosition,
    'No positions.',
    POSITION_COLUMNS.length,
  );
  setText(ui.positionsCount, String(positions.length));

  syncRows(
    ui.fillsBody,
    arr(t.recent_fills).filter(isObj),
    (f) => freeText(f.trade_id),
    () => rowOf('fill-row', FILL_COLUMNS),
    updateFill,
    'No fills yet.',
    FILL_COLUMNS.length,
  );

  const counters = obj(t.counters);
  renderCounts(
    ui.counters,
    COUNTERS.filter(([key]) => counters[key] !== undefined).map(([key, label]) => [label, counters[key]]),
    DASH,
  );
  renderCounts(
    ui.refusals,
    Object.entries(obj(t.refusals)).sort((a, b) => a[0].localeCompare(b[0])),
    'none',
  );
  if (ui.refusals) {
    const limits = obj(t.limits);
    ui.refusals.title = Object.entries(limits)
      .map(([rule, limit]) => `${rule}: ${freeText(limit)}`)
      .join('\n');
  }
  trading.statuses += 1;
  setData(ui.panel, 'statuses', String(trading.statuses));
}

// ------------------------------------------------------------------ replies

function showReply(level, message) {
  if (!ui.reply) return;
  ui.reply.hidden = false;
  setData(ui.reply, 'level', level);
  setText(ui.reply, message);
}

export function isTradingAction(action) {
  return action === 'cancel_order' || action === 'kill_switch';
}

export function onTradingSent(data) {
  const d = obj(data);
  const who = isNum(d.session_id) ? `session ${d.session_id}` : 'the trader';
  if (d.action === 'kill_switch') say('warning', `KILL SWITCH: sent to ${who}; waiting for its answer`);
  else say('info', `CANCEL: order ${freeText(d.order_id)} sent to ${who}; waiting for its answer`);
}

/** A trader's answer to a cancel or a kill switch: the panel's reply line and a console line. */
export function onTradingResult(data) {
  const d = obj(data);
  const who = isNum(d.session_id) ? `session ${d.session_id}` : 'the trader';
  const error = d.error !== undefined ? freeText(d.error) : '';
  let level = 'info';
  let message;
  if (d.action === 'kill_switch') {
    if (error) {
      level = 'error';
      message = `Kill switch: ${who} answered: ${error}`;
    } else {
      level = 'warning';
      message = `Kill switch pulled on ${who}: ${isNum(d.cancelled) ? d.cancelled : DASH} order(s) cancelled`;
    }
  } else {
    const id = freeText(d.order_id);
    trading.cancelling.delete(id);
    const order = obj(d.order);
    if (error) {
      level = 'error';
      message = `Order ${id} not cancelled: ${error}`;
    } else {
      message = `Order ${id} ${order.status === 'canceled' ? 'cancelled' : `ended ${text(order.status)}`}`;
      if (order.reason) message += ` (${freeText(order.reason)})`;
    }
    const tr = ui.ordersBody ? ui.ordersBody.querySelector(`tr[data-key="${CSS.escape(id)}"]`) : null;
    if (tr && error) updateOrderButton(tr);
  }
  showReply(level, message);
  say(level, `${d.action === 'kill_switch' ? 'KILL SWITCH' : 'CANCEL'}: ${message}`);
}

/** A server error about a trading request (bad input, no trader, not allowed, no answer). */
export function onTradingError(data) {
  const d = obj(data);
  showReply('error', freeText(d.message));
  if (d.action === 'cancel_order') {
    // Which cancel failed is not always known (a refusal before sending): every pending one may be pressed again.
    trading.cancelling.clear();
    if (ui.ordersBody) for (const tr of ui.ordersBody.querySelectorAll('tr[data-key]')) updateOrderButton(tr);
  }
}

function updateOrderButton(tr) {
  const button = tr.querySelector('button.cancel-order');
  const pending = trading.cancelling.has(tr.dataset.key);
  setData(tr, 'cancelling', pending ? 'true' : 'false');
  if (!button) return;
  button.disabled = pending;
  setText(button, pending ? 'Cancelling…' : 'Cancel');
}

// ------------------------------------------------------------------ kill switch

function closeConfirm() {
  if (trading.confirmTimer !== null) clearTimeout(trading.confirmTimer);
  trading.confirmTimer = null;
  if (ui.confirm) ui.confirm.hidden = true;
  if (ui.kill) ui.kill.hidden = false;
}

function openConfirm() {
  if (!ui.confirm || !ui.kill) return;
  ui.kill.hidden = true;
  ui.confirm.hidden = false;
  if (ui.confirmNo) ui.confirmNo.focus();
  trading.confirmTimer = setTimeout(closeConfirm, CONFIRM_MS);
}

function pullKillSwitch() {
  closeConfirm();
  const message = { type: 'kill_switch' };
  if (isNum(trading.session)) message.session = trading.session;
  if (!trading.send(message)) showReply('error', 'Kill switch not sent: the console is offline');
  else showReply('warning', 'Kill switch sent');
}

/** Bind the kill switch and its confirm step; ``send`` puts a message on the socket. */
export function bindTrading(send) {
  trading.send = send;
  if (ui.kill) ui.kill.addEventListener('click', openConfirm);
  if (ui.confirmNo) ui.confirmNo.addEventListener('click', closeConfirm);
  if (ui.confirmYes) ui.confirmYes.addEventListener('click', pullKillSwitch);
}
