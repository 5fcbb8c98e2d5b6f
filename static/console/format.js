/* Formatting and parsing of the values the server sends: text for the page, never touching the DOM. */

export const DASH = '—';

export const isObj = (v) => v !== null && typeof v === 'object' && !Array.isArray(v);
export const obj = (v) => (isObj(v) ? v : {});
export const arr = (v) => (Array.isArray(v) ? v : []);
export const isNum = (v) => typeof v === 'number' && Number.isFinite(v);
const pad2 = (n) => String(n).padStart(2, '0');
const intFmt = new Intl.NumberFormat('en-US', { maximumFractionDigits: 0 });

export function toNum(v) {
  if (isNum(v)) return v;
  if (typeof v === 'string' && v.trim() !== '') {
    const n = Number(v);
    if (Number.isFinite(n)) return n;
  }
  return null;
}

/** Display text for a scalar; anything missing or odd becomes a dash. */
export function text(v) {
  if (typeof v === 'string') return v === '' ? DASH : v;
  if (isNum(v)) return String(v);
  if (typeof v === 'boolean') return String(v);
  return DASH;
}

/** Free text from the server (messages): keep whatever was sent, readable. */
export function freeText(v) {
  if (typeof v === 'string') return v;
  if (v === null || v === undefined) return '';
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  try {
    return JSON.stringify(v);
  } catch (_err) {
    return String(v);
  }
}

export function fmtInt(v) {
  const n = toNum(v);
  return n === null ? DASH : intFmt.format(Math.round(n));
}

export function fmtRate(v) {
  const n = toNum(v);
  if (n === null) return DASH;
  return n >= 1000 ? intFmt.format(Math.round(n)) : n.toFixed(1);
}

/** Seconds -> "45.2s", "12m 03s", "2h 05m 09s", "3d 04h 10m". */
export function fmtDuration(v) {
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

export function fmtAge(ms) {
  if (!isNum(ms)) return DASH;
  return `${fmtDuration(Math.max(0, ms) / 1000)} ago`;
}

/** ISO 8601 -> epoch ms, or null. Extra fractional digits are trimmed for portability. */
export function parseTime(v) {
  if (typeof v !== 'string' || v === '') return null;
  const norm = v.trim().replace(/(\.\d{3})\d+/, '$1');
  const ms = Date.parse(norm);
  return Number.isFinite(ms) ? ms : null;
}

export function clock(ms) {
  if (!isNum(ms)) return '--:--:--';
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/** "0.4200" -> "42.00¢" by moving the decimal point; no float arithmetic. */
export function cents(price) {
  if (typeof price !== 'string') return null;
  const m = /^(\d+)(?:\.(\d*))?$/.exec(price.trim());
  if (!m) return null;
  const frac = (m[2] || '').padEnd(2, '0');
  const whole = (m[1] + frac.slice(0, 2)).replace(/^0+(?=\d)/, '');
  const rest = frac.slice(2).padEnd(2, '0');
  return `${whole}.${rest}¢`;
}
