#!/usr/bin/env node
'use strict';
// Soak: long runs of the three hot paths, checking that memory stays flat.
//   A. 10^6 CacheManager.updateCache calls (inserts + refreshes, masks on)
//   B. 10^5 scoring steps (CacheClassificationLoss.compute inside tf.tidy)
//   C. 10^4 CacheLossHandler steps inside optimizer.minimize (two towers)
// Each phase prints RSS, the V8 heap and tf.memory().numTensors at its start
// (after a warm-up of 2% of its steps), middle and end, and one JSON line.
// Exits 1 when the tensor count moved at all, or the RSS (or the heap) grew
// from the middle to the end by more than the tolerance: the first half may
// still grow (allocator arenas, JIT, tfjs's kernel caches); a leak keeps
// growing in the second half too.
//
//   npm run soak                      (= node --expose-gc bench/soak.js)
//   node --expose-gc bench/soak.js [--scale 0.1] [--backend native|js|cuda]
//        [--phases A,B,C] [--tol-mb 32] [--json]
// Not a timed test: the times printed are for information.
const tf = require('@tensorflow/tfjs');
const nc = require('..');

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}
const scale = Number(arg('scale', 1));
const backend = arg('backend', nc.availableBackends()[0] === 'cuda' ? 'native' : nc.availableBackends()[0]);
const phases = arg('phases', 'A,B,C').split(',');
const tolMb = Number(arg('tol-mb', 32));
const json = process.argv.includes('--json');
if (!(scale > 0) || !(tolMb > 0)) throw new RangeError('--scale and --tol-mb must be positive numbers');

function rng(seed) {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}
const rand = rng(12345);
const fill = (a, f) => { for (let i = 0; i < a.length; i++) a[i] = f(); return a; };

function sample() {
  if (global.gc) { global.gc(); global.gc(); }
  const m = process.memoryUsage();
  return { rssMb: m.rss / 2 ** 20, heapMb: m.heapUsed / 2 ** 20, externalMb: m.external / 2 ** 20, tensors: tf.memory().numTensors };
}

let failed = false;
/** Runs step(i) n times; samples after the warm-up, at the middle and at the end. */
function phase(name, what, n, step) {
  const warm = Math.max(1, Math.floor(n * 0.02));
  for (let i = 0; i < warm; i++) step(i);
  const t0 = process.hrtime.bigint();
  const points = [sample()];
  const half = Math.floor(n / 2);
  for (let i = warm; i < n; i++) {
    step(i);
    if (i === half) points.push(sample());
  }
  points.push(sample());
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const [s, m, e] = points;
  const problems = [];
  if (e.tensors !== s.tensors || m.tensors !== s.tensors) problems.push(`tensor count ${s.tensors} -> ${m.tensors} -> ${e.tensors}`);
  if (e.rssMb - m.rssMb > tolMb) problems.push(`RSS grew ${(e.rssMb - m.rssMb).toFixed(1)} MB in the second half (tolerance ${tolMb} MB)`);
  if (e.heapMb - m.heapMb > tolMb) problems.push(`heap grew ${(e.heapMb - m.heapMb).toFixed(1)} MB in the second half (tolerance ${tolMb} MB)`);
  if (problems.length) failed = true;
  const f = (p) => `rss ${p.rssMb.toFixed(1)} MB, heap ${p.heapMb.toFixed(1)} MB, tensors ${p.tensors}`;
  console.log(`soak ${name}: ${n} ${what} on ${backend} in ${secs.toFixed(1)} s (${(secs / n * 1e6).toFixed(1)} us each)`);
  console.log(`  start  ${f(s)}\n  middle ${f(m)}\n  end    ${f(e)}`);
  console.log(`  ${problems.length ? `FAIL: ${problems.join('; ')}` : 'flat'}`);
  if (json) console.log(JSON.stringify({ bench: 'soak', phase: name, what, n, backend, seconds: secs, start: s, middle: m, end: e, ok: problems.length === 0 }));
}

// A. cache updates ------------------------------------------------------------
if (phases.includes('A')) {
  const size = 4096, dim = 16, width = 8, m = 8, r = 8;
  const manager = new nc.CacheManager({ e: { shape: [dim], dtype: 'float32' }, x: { shape: [width], dtype: 'int32' } }, size, { backend });
  let cache = manager.initCache();
  const ne = fill(new Float32Array(m * dim), rand), nx = fill(new Int32Array(m * width), () => (rand() * 1000) | 0);
  const ue = fill(new Float32Array(r * dim), rand);
  const idx = new Int32Array(r), umask = new Uint8Array(r), nmask = new Uint8Array(m);
  phase('A', 'cache updates', Math.round(1e6 * scale), (i) => {
    for (let j = 0; j < r; j++) { idx[j] = (i * 131 + j * 977) % size; umask[j] = (i + j) % 5 !== 0 ? 1 : 0; }
    for (let j = 0; j < m; j++) nmask[j] = (i + j) % 7 !== 0 ? 1 : 0;
    ne[i % ne.length] = i;
    cache = manager.updateCache(cache, {
      newItems: { e: ne, x: nx }, newItemsMask: nmask,
      updatedItemData: { e: ue }, updatedItemIndices: idx, updatedItemMask: umask,
    });
  });
  cache.dispose();
}

// B. scoring steps -----------------------------------------------------------
if (phases.includes('B')) {
  const size = 2048, dim = 16, batch = 8;
  const manager = new nc.CacheManager({ e: { shape: [dim], dtype: 'float32' }, x: { shape: [dim], dtype: 'float32' } }, size, { backend });
  const data = fill(new Float32Array(size * dim), () => rand() - 0.5);
  let cache = manager.initCache();
  cache = manager.updateCache(cache, { newItems: { e: data, x: data } });
  const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['x'], scoreTransform: 4, numNegatives: 2, seed: 5 });
  const q = tf.tensor2d(fill(new Float32Array(batch * dim), () => rand() - 0.5), [batch, dim]);
  const p = tf.tensor2d(fill(new Float32Array(batch * dim), () => rand() - 0.5), [batch, dim]);
  const docNet = (d) => d.x;
  let sum = 0;
  phase('B', 'scoring steps', Math.round(1e5 * scale), () => {
    sum += tf.tidy(() => loss.compute(docNet, q, p, cache).trainingLoss.dataSync()[0]);
  });
  if (!Number.isFinite(sum)) { console.log('soak B: FAIL: a non-finite loss'); failed = true; }
  tf.dispose([q, p]);
  cache.dispose();
}

// C. handler steps in optimizer.minimize ------------------------------------
if (phases.includes('C')) {
  const dim = 8, batch = 16, width = 12;
  const wq = tf.variable(tf.randomNormal([width, dim], 0, 0.3, 'float32', 1));
  const wd = tf.variable(tf.randomNormal([width, dim], 0, 0.3, 'float32', 2));
  const docNet = (d) => tf.matMul(d.x, wd);
  const manager = new nc.CacheManager({ e: { shape: [dim], dtype: 'float32' }, x: { shape: [width], dtype: 'float32' } }, 1024, { backend });
  const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['x'], scoreTransform: 5, numNegatives: 2, seed: 3 });
  const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'e', dataKeys: ['x'], inBatchWeight: 0.5, warmupSteps: 2, dedupe: true });
  const opt = tf.train.adam(0.01);
  const qx = new Float32Array(batch * width), dx = new Float32Array(batch * width);
  let last = 0;
  phase('C', 'handler steps in optimizer.minimize', Math.round(1e4 * scale), () => {
    fill(qx, () => rand() - 0.5);
    fill(dx, () => Math.round((rand() - 0.5) * 8) / 8);  // repeats, so dedupe finds some
    const qT = tf.tensor2d(qx, [batch, width]), dT = tf.tensor2d(dx, [batch, width]);
    const cost = opt.minimize(() => handler.updateCacheAndComputeLoss(docNet, tf.matMul(qT, wq), docNet({ x: dT }), { x: dx }), true, [wq, wd]);
    last = cost.dataSync()[0];
    tf.dispose([cost, qT, dT]);
  });
  if (!Number.isFinite(last)) { console.log('soak C: FAIL: a non-finite loss'); failed = true; }
  handler.dispose();
  opt.dispose();
  tf.dispose([wq, wd]);
}

if (!global.gc) console.log('soak: run with node --expose-gc for steadier figures (npm run soak does)');
process.exit(failed ? 1 : 0);
