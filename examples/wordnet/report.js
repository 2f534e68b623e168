'use strict';
// A self-contained HTML page (inline SVG, no scripts, no network): the recall
// comparison and the training curves (loss, interpretable loss, staleness).

const fs = require('fs');

const COLORS = { warmup: '#888888', 'in-batch': '#1f77b4', 'in-batch-time': '#17becf', 'in-batch-4x': '#2ca02c', cache: '#d62728', reference: '#9467bd' };
const LABELS = {
  warmup: 'warm-up (in-batch)', 'in-batch': 'in-batch, equal steps', 'in-batch-time': 'in-batch, equal time',
  'in-batch-4x': 'in-batch, 4x batch, equal time', cache: 'cache recipe', reference: 'reference cache (k=1)',
};

function esc(s) {
  return String(s).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

/** Moving average over a window of points (NaN-aware). */
function smooth(points, window = 5) {
  return points.map((p, i) => {
    let s = 0, n = 0;
    for (let j = Math.max(0, i - window + 1); j <= i; j++) if (Number.isFinite(points[j].y)) { s += points[j].y; n++; }
    return { x: p.x, y: n ? s / n : NaN };
  });
}

function niceTicks(lo, hi, count = 5) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + 1e-12; v += step) out.push(+v.toFixed(10));
  return out;
}

/** A line chart: series [{name, points: [{x, y}]}]. */
function lineChart(title, series, { width = 560, height = 260, yLabel = '' } = {}) {
  const m = { l: 52, r: 20, t: 28, b: 34 };
  const all = series.flatMap((s) => s.points).filter((p) => Number.isFinite(p.y));
  if (all.length === 0) return `<svg width="${width}" height="${height}" role="img"><text x="10" y="20">${esc(title)}: no data</text></svg>`;
  const xs = all.map((p) => p.x), ys = all.map((p) => p.y);
  const x0 = Math.min(...xs), x1 = Math.max(...xs);
  let y0 = Math.min(...ys), y1 = Math.max(...ys);
  if (y0 === y1) { y0 -= 1; y1 += 1; }
  const pad = (y1 - y0) * 0.05; y0 -= pad; y1 += pad;
  const sx = (x) => m.l + (x1 === x0 ? 0 : (x - x0) / (x1 - x0)) * (width - m.l - m.r);
  const sy = (y) => height - m.b - (y - y0) / (y1 - y0) * (height - m.t - m.b);
  let g = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="${esc(title)}">`;
  g += `<text x="${m.l}" y="18" class="title">${esc(title)}</text>`;
  for (const t of niceTicks(y0, y1)) {
    g += `<line x1="${m.l}" x2="${width - m.r}" y1="${sy(t)}" y2="${sy(t)}" class="grid"/><text x="${m.l - 6}" y="${sy(t) + 4}" class="tick" text-anchor="end">${t}</text>`;
  }
  for (const t of niceTicks(x0, x1, 6)) {
    g += `<text x="${sx(t)}" y="${height - m.b + 16}" class="tick" text-anchor="middle">${t}</text>`;
  }
  g += `<text x="${(m.l + width - m.r) / 2}" y="${height - 4}" class="axis" text-anchor="middle">step</text>`;
  if (yLabel) g += `<text x="12" y="${(m.t + height - m.b) / 2}" class="axis" text-anchor="middle" transform="rotate(-90 12 ${(m.t + height - m.b) / 2})">${esc(yLabel)}</text>`;
  g += `<rect x="${m.l}" y="${m.t}" width="${width - m.l - m.r}" height="${height - m.t - m.b}" class="frame"/>`;
  for (const s of series) {
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (pts.length === 0) continue;
    const d = pts.map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join('');
    g += `<path d="${d}" fill="none" stroke="${COLORS[s.name] || '#333'}" stroke-width="1.8"><title>${esc(LABELS[s.name] || s.name)}</title></path>`;
  }
  return g + '</svg>';
}

/** Grouped bars: recall@1/10/100 per mode. */
function recallChart(results, { width = 560, height = 300 } = {}) {
  const ks = [['r1', 'R@1'], ['r10', 'R@10'], ['r100', 'R@100']];
  if (results.some((r) => typeof r.clozeR10 === 'number')) ks.push(['clozeR1', 'cloze R@1'], ['clozeR10', 'cloze R@10'], ['clozeR100', 'cloze R@100']);
  const m = { l: 44, r: 12, t: 28, b: 40 };
  const top = Math.max(0.05, ...results.flatMap((r) => ks.map(([k]) => r[k] || 0))) * 1.1;
  const sy = (v) => height - m.b - v / top * (height - m.t - m.b);
  const groupW = (width - m.l - m.r) / ks.length;
  const barW = Math.min(36, (groupW - 16) / Math.max(results.length, 1));
  let g = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="held-out recall">`;
  g += `<text x="${m.l}" y="18" class="title">Held-out recall (higher is better): glosses, and masked usage examples (cloze)</text>`;
  for (const t of niceTicks(0, top)) {
    g += `<line x1="${m.l}" x2="${width - m.r}" y1="${sy(t)}" y2="${sy(t)}" class="grid"/><text x="${m.l - 6}" y="${sy(t) + 4}" class="tick" text-anchor="end">${t}</text>`;
  }
  ks.forEach(([key, label], gi) => {
    const gx = m.l + gi * groupW + (groupW - barW * results.length) / 2;
    results.forEach((r, i) => {
      const v = typeof r[key] === 'number' ? r[key] : 0;
      const x = gx + i * barW;
      g += `<rect x="${x + 2}" y="${sy(v)}" width="${barW - 4}" height="${sy(0) - sy(v)}" fill="${COLORS[r.mode] || '#333'}"><title>${esc(LABELS[r.mode] || r.mode)} ${label} ${v.toFixed(3)}</title></rect>`;
      g += `<text x="${x + barW / 2}" y="${sy(v) - 3}" class="val" text-anchor="middle">${v.toFixed(3)}</text>`;
    });
    g += `<text x="${m.l + (gi + 0.5) * groupW}" y="${height - m.b + 18}" class="axis" text-anchor="middle" font-size="${ks.length > 3 ? 10 : 12}">${label}</text>`;
  });
  g += `<line x1="${m.l}" x2="${width - m.r}" y1="${sy(0)}" y2="${sy(0)}" class="frame"/>`;
  return g + '</svg>';
}

/** Recall@10 against training seconds, one labelled point per mode. */
function timeChart(results, { width = 560, height = 260 } = {}) {
  const m = { l: 52, r: 16, t: 28, b: 34 };
  if (results.length === 0) return '';
  const x1 = Math.max(...results.map((r) => r.trainSeconds)) * 1.1 || 1;
  const y1 = Math.max(...results.map((r) => r.r10)) * 1.2 || 0.01;
  const sx = (x) => m.l + x / x1 * (width - m.l - m.r);
  const sy = (y) => height - m.b - y / y1 * (height - m.t - m.b);
  let g = `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-label="recall against time">`;
  g += `<text x="${m.l}" y="18" class="title">Recall@10 against training seconds (up and left is better)</text>`;
  for (const t of niceTicks(0, y1)) g += `<line x1="${m.l}" x2="${width - m.r}" y1="${sy(t)}" y2="${sy(t)}" class="grid"/><text x="${m.l - 6}" y="${sy(t) + 4}" class="tick" text-anchor="end">${t}</text>`;
  for (const t of niceTicks(0, x1, 6)) g += `<text x="${sx(t)}" y="${height - m.b + 16}" class="tick" text-anchor="middle">${t}</text>`;
  g += `<text x="${(m.l + width - m.r) / 2}" y="${height - 4}" class="axis" text-anchor="middle">training seconds (warm-up included)</text>`;
  g += `<rect x="${m.l}" y="${m.t}" width="${width - m.l - m.r}" height="${height - m.t - m.b}" class="frame"/>`;
  // Labels: stacked 13 px apart where points are close, so they never overlap.
  const placed = results.map((r) => ({ r, x: sx(r.trainSeconds), y: sy(r.r10) })).sort((a, b) => a.y - b.y);
  let lastY = -Infinity;
  for (const p of placed) {
    p.ly = Math.max(p.y + 4, lastY + 13);
    lastY = p.ly;
  }
  for (const p of placed) {
    const { r, x, y } = p;
    g += `<circle cx="${x}" cy="${y}" r="6" fill="${COLORS[r.mode] || '#333'}"><title>${esc(LABELS[r.mode] || r.mode)}</title></circle>`;
    const left = x > m.l + 0.55 * (width - m.l - m.r);
    g += `<text x="${left ? x - 10 : x + 10}" y="${p.ly}" class="val" text-anchor="${left ? 'end' : 'start'}">${esc(LABELS[r.mode] || r.mode)} ${r.r10.toFixed(3)}</text>`;
  }
  return g + '</svg>';
}

function legend(names) {
  return `<div class="legend">${names.map((n) => `<span><i style="background:${COLORS[n] || '#333'}"></i>${esc(LABELS[n] || n)}</span>`).join('')}</div>`;
}

const fmt = (v) => (typeof v === 'number' ? v.toFixed(3) : '');

function writeReport(file, { config, results, curves }) {
  const series = (key) => Object.entries(curves).map(([name, pts]) => ({
    name, points: smooth(pts.map((p) => ({ x: p.step, y: p[key] === undefined ? NaN : p[key] }))),
  })).filter((s) => s.points.some((p) => Number.isFinite(p.y)));
  const best = results.reduce((a, r) => (a && a.r10 >= r.r10 ? a : r), null);
  const rows = results.map((r) => `<tr${r === best ? ' class="best"' : ''}><td><i style="background:${COLORS[r.mode] || '#333'}"></i>${esc(LABELS[r.mode] || r.mode)}</td>` +
    `<td>${r.steps}</td><td>${r.batch}</td><td>${r.r1.toFixed(3)}</td><td>${r.r10.toFixed(3)}</td><td>${r.r100.toFixed(3)}</td>` +
    `<td>${fmt(r.clozeR1)}</td><td>${fmt(r.clozeR10)}</td><td>${fmt(r.clozeR100)}</td>` +
    `<td>${r.trainSeconds.toFixed(1)}</td><td>${r.stepsPerSecond.toFixed(1)}</td></tr>`).join('');
  const html = `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>negative-cache on WordNet</title>
<style>
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1180px;color:#222;padding:0 16px}
h1{font-size:22px;margin:0 0 4px} .sub{color:#555;margin:0 0 18px}
.grid2{display:grid;grid-template-columns:1fr 1fr;gap:18px}
.card{border:1px solid #ddd;border-radius:8px;padding:10px;background:#fff}
svg{max-width:100%;height:auto} svg .title{font-weight:600;font-size:13px} svg .tick{font-size:11px;fill:#555} svg .axis{font-size:12px;fill:#333}
svg .val{font-size:10px;fill:#333} svg .grid{stroke:#eee} svg .frame{fill:none;stroke:#bbb}
table{border-collapse:collapse;width:100%;font-variant-numeric:tabular-nums} td,th{padding:5px 8px;border-bottom:1px solid #eee;text-align:right}
td:first-child,th:first-child{text-align:left} tr.best td{font-weight:600}
i{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:6px;vertical-align:-1px}
.legend span{margin-right:16px;white-space:nowrap;font-size:13px}
</style></head><body>
<h1>Training a retrieval model on WordNet 3.1 with a negative cache</h1>
<p class="sub">Queries: ${config.heldOut} held-out glosses; corpus: ${config.corpus.toLocaleString('en')} lemmas; batch ${config.batch},
cache ${config.cacheSize} rows, score scale ${config.scale}, warm-up ${config.warmup} in-batch steps then ${config.steps} steps;
recipe k=${config.k}, inverse temperature ${config.invTemp}, in-batch weight ${config.inBatchWeight}, full-cache weight ${config.fullCacheWeight || 0}; tfjs ${esc(config.backend)}; total ${config.totalSeconds}s.</p>
<div class="grid2">
<div class="card">${recallChart(results)}</div>
<div class="card"><table><tr><th>mode</th><th>steps</th><th>batch</th><th>R@1</th><th>R@10</th><th>R@100</th><th>cloze R@1</th><th>cloze R@10</th><th>cloze R@100</th><th>train s</th><th>steps/s</th></tr>${rows}</table>
<p class="sub" style="margin-top:10px">Steps and seconds include the shared warm-up. Seconds are the cost model: steps x the median per-step cost of the mode's step kind,
measured in an interleaved timing phase (${esc(config.clock || 'wall')} clock); "equal time" gives a mode as many steps as the cache mode's seconds buy.
Cloze: ${config.cloze || 0} held-out usage examples with the lemma masked out (out of domain: sentences, not definitions).</p></div>
</div>
<p>${legend(Object.keys(curves))}</p>
<div class="grid2">
<div class="card">${lineChart('Training loss (in-batch: cross-entropy; cache: surrogate)', series('loss'), { yLabel: 'loss' })}</div>
<div class="card">${lineChart('Interpretable loss  −log p(positive | cache)', series('interpretable'), { yLabel: 'nats' })}</div>
<div class="card">${lineChart('Staleness of the drawn negatives  |E − e|² / |e|²', series('staleness'), { yLabel: 'relative error' })}</div>
<div class="card">${timeChart(results)}</div>
</div>
</body></html>
`;
  fs.writeFileSync(file, html);
  return file;
}

module.exports = { writeReport };
