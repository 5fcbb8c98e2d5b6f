/* A recorded session's page: its charts, drawn from the data the server embedded in the page. */

import { drawChart } from './charts.js';
import { arr, isNum, obj, toNum } from './format.js';

const source = document.getElementById('session-charts');
const data = obj(source ? JSON.parse(source.textContent || 'null') : null);
const points = arr(obj(data.prices).points).filter((p) => Array.isArray(p) && isNum(p[0]));
const price = document.getElementById('price-chart');
if (price) {
  drawChart(
    price,
    [
      { name: 'bid', step: true, points: points.map((p) => [p[0], toNum(p[1])]) },
      { name: 'ask', step: true, points: points.map((p) => [p[0], toNum(p[2])]) },
    ],
    { yText: (v) => `${(v * 100).toFixed(1)}¢` },
  );
}
const rate = document.getElementById('rate-chart');
if (rate) {
  const rates = arr(data.rates).filter((r) => Array.isArray(r) && isNum(r[0]) && isNum(r[1]));
  drawChart(rate, [{ name: 'rate', step: false, points: rates }], { yText: (v) => String(Math.round(v)) });
}
document.body.dataset.chartsDrawn = 'true';
