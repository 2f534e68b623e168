#!/usr/bin/env node
'use strict';
// Time of one CacheManager.updateCache (m new items + r refreshes) against
// the cache size. The store keeps its rows in age order with step-counter
// ages, so the time should be flat in the size (O(m log m) per update).
//
//   node bench/cache_update.js [--json] [--sizes 14..22] [--backends native,js]
//                              [--m 256] [--refreshes 64] [--width 64] [--iters 200]
// --json prints one JSON object per line; otherwise a table.
const nc = require('..');

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}
const json = process.argv.includes('--json');
const [lo, hi] = arg('sizes', '14..22').split('..').map(Number);
const backends = arg('backends', nc.availableBackends().filter((b) => b !== 'cuda').join(',')).split(',');
const m = Number(arg('m', 256));
const refreshes = Number(arg('refreshes', 64));
const width = Number(arg('width', 64));
const iters = Number(arg('iters', 200));
const warmup = 20;

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

function quantile(sorted, q) {
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))];
}

const rows = [];
for (const backend of backends) {
  for (let e = lo; e <= hi; e++) {
    const size = 2 ** e;
    const specs = { emb: { shape: [width], dtype: 'float32', storage: 'float16' }, id: { shape: [1], dtype: 'int32' } };
    const manager = new nc.CacheManager(specs, size, { backend });
    const cache = manager.initCache();
    const rand = rng(e * 31 + backend.length);
    const updates = Array.from({ length: 8 }, () => ({
      newItems: { emb: Float32Array.from({ length: m * width }, () => rand() - 0.5), id: Int32Array.from({ length: m }, () => Math.floor(rand() * 1e9)) },
      updatedItemData: { emb: Float32Array.from({ length: refreshes * width }, () => rand() - 0.5) },
      updatedItemIndices: Int32Array.from({ length: refreshes }, () => Math.floor(rand() * size)),
    }));
    const times = [];
    for (let i = 0; i < warmup + iters; i++) {
      const u = updates[i % updates.length];
      const t0 = process.hrtime.bigint();
      manager.updateCache(cache, u);
      const dt = Number(process.hrtime.bigint() - t0) / 1e3;
      if (i >= warmup) times.push(dt);
    }
    cache.dispose();
    times.sort((a, b) => a - b);
    const row = {
      bench: 'cache_update', backend, size, m, refreshes, width, storage: 'float16', iters,
      medianUs: +quantile(times, 0.5).toFixed(1), p10Us: +quantile(times, 0.1).toFixed(1), p90Us: +quantile(times, 0.9).toFixed(1),
    };
    rows.push(row);
    if (json) console.log(JSON.stringify(row));
  }
}

if (!json) {
  console.log(`updateCache: m=${m} inserts + ${refreshes} refreshes, emb ${width}-wide float16 + int32 id, median of ${iters}`);
  console.log('backend   size        median µs   p10 µs   p90 µs');
  for (const r of rows) {
    console.log(`${r.backend.padEnd(9)} ${String(r.size).padEnd(11)} ${String(r.medianUs).padStart(9)} ${String(r.p10Us).padStart(8)} ${String(r.p90Us).padStart(8)}`);
  }
}
