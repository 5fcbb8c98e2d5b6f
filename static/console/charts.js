/* Small hand-drawn SVG time charts: step lines over a time axis, no library and no build step. */

const NS = 'http://www.w3.org/2000/svg';
const DEFAULT_WIDTH = 600;
const PAD = { left: 52, right: 8, top: 8, bottom: 18 };

function node(tag, attrs, content) {
  const n = document.createElementNS(NS, tag);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (content !== undefined) n.textContent = content;
  return n;
}

const pad2 = (n) => String(n).padStart(2, '0');
function clockText(ms) {
  const d = new Date(ms);
  return `${pad2(d.getHours())}:${pad2(d.getMinutes())}:${pad2(d.getSeconds())}`;
}

/**
 * Draw ``series`` into ``svg``, one SVG unit a CSS pixel: its viewBox is its width on screen × its height attribute.
 *
 * series: [{ name, points: [[epoch ms, number | null], ...] in time order, step: bool }], a null value breaks
 * the line (an empty side of a book). Options: ``yText`` formats axis values, ``tMax`` extends the time axis
 * (to now), ``marker`` {t, label} draws a vertical line (the last change). Returns the points drawn.
 */
export function drawChart(svg, series, options = {}) {
  const height = Number(svg.getAttribute('height')) || 140;
  const WIDTH = Math.round(svg.getBoundingClientRect().width) || DEFAULT_WIDTH;
  svg.setAttribute('viewBox', `0 0 ${WIDTH} ${height}`);
  const yText = options.yText || ((v) => String(v));
  let tMin = Infinity;
  let tMax = -Infinity;
  let yMin = Infinity;
  let yMax = -Infinity;
  let drawn = 0;
  for (const s of series) {
    for (const [t, v] of s.points) {
      tMin = Math.min(tMin, t);
      tMax = Math.max(tMax, t);
      if (v !== null) {
        yMin = Math.min(yMin, v);
        yMax = Math.max(yMax, v);
        drawn += 1;
      }
    }
  }
  if (options.tMax !== undefined && Number.isFinite(tMin)) tMax = Math.max(tMax, options.tMax);
  const children = [];
  if (!drawn) {
    children.push(node('text', { x: WIDTH / 2, y: height / 2, class: 'chart-empty', 'text-anchor': 'middle' }, 'no data yet'));
    svg.replaceChildren(...children);
    svg.dataset.points = '0';
    return 0;
  }
  if (yMax === yMin) {
    yMax += Math.abs(yMax) * 0.05 || 1;
    yMin -= Math.abs(yMin) * 0.05 || 1;
  }
  if (tMax === tMin) tMax = tMin + 1000;
  const x = (t) => PAD.left + ((t - tMin) / (tMax - tMin)) * (WIDTH - PAD.left - PAD.right);
  const y = (v) => PAD.top + (1 - (v - yMin) / (yMax - yMin)) * (height - PAD.top - PAD.bottom);
  const right = WIDTH - PAD.right;
  const bottom = height - PAD.bottom;

  children.push(node('line', { x1: PAD.left, y1: bottom, x2: right, y2: bottom, class: 'chart-axis' }));
  children.push(node('line', { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: bottom, class: 'chart-axis' }));
  children.push(node('text', { x: PAD.left - 4, y: PAD.top + 8, class: 'chart-label', 'text-anchor': 'end' }, yText(yMax)));
  children.push(node('text', { x: PAD.left - 4, y: bottom, class: 'chart-label', 'text-anchor': 'end' }, yText(yMin)));
  children.push(node('text', { x: PAD.left, y: height - 4, class: 'chart-label' }, clockText(tMin)));
  children.push(node('text', { x: right, y: height - 4, class: 'chart-label', 'text-anchor': 'end' }, clockText(tMax)));

  for (const s of series) {
    let d = '';
    let open = false;
    let lastY = 0;
    for (const [t, v] of s.points) {
      if (v === null) {
        open = false;
        continue;
      }
      const px = x(t).toFixed(1);
      const py = y(v).toFixed(1);
      if (!open) d += `M${px} ${py}`;
      else if (s.step) d += `H${px}V${py}`;
      else d += `L${px} ${py}`;
      open = true;
      lastY = py;
    }
    // A step line holds its last value up to the end of the axis (to now).
    if (open && s.step) d += `H${x(tMax).toFixed(1)}`;
    if (d) children.push(node('path', { d, class: `chart-line chart-${s.name}`, 'data-series': s.name, 'data-y': lastY }));
  }
  if (options.marker && Number.isFinite(options.marker.t) && options.marker.t >= tMin) {
    const mx = x(Math.min(options.marker.t, tMax)).toFixed(1);
    children.push(node('line', { x1: mx, y1: PAD.top, x2: mx, y2: bottom, class: 'chart-marker' }));
    if (options.marker.label) {
      children.push(node('text', { x: mx - 3, y: PAD.top + 8, class: 'chart-label chart-marker-label', 'text-anchor': 'end' }, options.marker.label));
    }
  }
  svg.replaceChildren(...children);
  svg.dataset.points = String(drawn);
  return drawn;
}
