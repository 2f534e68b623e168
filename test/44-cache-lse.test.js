'use strict';
// cacheLogSumExp: the differentiable full-cache log-sum-exp. A worked example
// by hand; the native pass against the JS reference (and both against the
// same loss written with tfjs ops) on random inputs: float32 / float16 /
// bfloat16 storage, partly filled caches, scoreEmptyRows, several caches, the
// extra rows; the gradient against finite differences; thread-count (and
// forced-baseline) invariance; bad input -> TypeError / RangeError, nothing
// changed, nothing leaked.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { kernelsFor, loadAddon, storeOf } = require('./helpers/internals');
const { rng } = require('./helpers/rng');

const { CacheManager, cacheLogSumExp, NegativeCacheError } = nc;
const addon = loadAddon();
const backends = addon ? ['js', 'native'] : ['js'];

/** |a - b| <= tol · (unit + |b|) elementwise (unit: the quantity's natural size). */
function assertClose(got, want, tol, what, unit = 1) {
  assert.strictEqual(got.length, want.length, `${what}: length`);
  for (let i = 0; i < got.length; i++) {
    if (want[i] === -Infinity) assert.strictEqual(got[i], -Infinity, `${what}[${i}]`);
    else assert.ok(Math.abs(got[i] - want[i]) <= tol * (unit + Math.abs(want[i])), `${what}[${i}]: ${got[i]} vs ${want[i]}`);
  }
}

/** A cache of `size` rows with embeddings `rows` (n x dim, n <= size) inserted. */
function makeCache(backend, size, dim, rows, storage = 'float32') {
  const m = new CacheManager({ emb: { shape: [dim], dtype: 'float32', storage }, id: { shape: [1], dtype: 'int32' } }, size, { backend });
  const c = m.initCache();
  const n = rows.length / dim;
  if (n > 0) {
    m.updateCache(c, { newItems: { emb: tf.tensor2d(rows, [n, dim]), id: tf.zeros([n, 1], 'int32') } });
  }
  return c;
}

function randomRows(r, n, dim) {
  return Float32Array.from({ length: n * dim }, () => r.normal());
}

/**
 * The same quantity written with tfjs ops (matMul + logSumExp over the
 * candidate rows of every cache, plus the extra column), and its gradient.
 */
function tfjsOracle(q, caches, { scale = 1, scoreEmptyRows = false, extra = null } = {}) {
  const [, dim] = q.shape;
  const rows = [];
  for (const c of caches) {
    const e = c.read('emb');
    const filled = c.readFilled();
    for (let j = 0; j < c.size; j++) if (scoreEmptyRows || filled[j]) rows.push(e.subarray(j * dim, (j + 1) * dim));
  }
  const E = rows.length > 0 ? tf.tensor2d(rows.map((x) => Array.from(x))) : null;
  const f = (x) => {
    const parts = [];
    if (E) parts.push(tf.mul(tf.matMul(x, E, false, true), scale));
    if (extra) parts.push(tf.reshape(tf.mul(tf.sum(tf.mul(x, extra), 1), scale), [-1, 1]));
    return tf.logSumExp(parts.length === 1 ? parts[0] : tf.concat(parts, 1), 1);
  };
  const lse = f(q).dataSync();
  const grad = tf.grad((x) => tf.sum(f(x)))(q).dataSync();
  if (E) E.dispose();
  return { lse: Float32Array.from(lse), grad: Float32Array.from(grad) };
}

function lseAndGrad(q, caches, options, weights) {
  const lse = cacheLogSumExp(q, caches, options);
  const out = Float32Array.from(lse.dataSync());
  lse.dispose();
  const w = weights ? tf.tensor1d(weights) : null;
  const g = tf.grad((x) => {
    const l = cacheLogSumExp(x, caches, options);
    return w ? tf.sum(tf.mul(l, w)) : tf.sum(l);
  })(q);
  const grad = Float32Array.from(g.dataSync());
  g.dispose();
  if (w) w.dispose();
  return { lse: out, grad };
}

describe('cacheLogSumExp: worked example', () => {
  // E = [[1], [-1]], q = [[-1], [1], [3]], scale 1:
  //   lse_b = log(e^q + e^-q) = log(2 cosh q)
  //   d lse_b / d q_b = (e^q·1 + e^-q·(-1)) / (e^q + e^-q) = tanh q
  // with extra x = [[2], [0], [1]] (row b for query b only, score q·x):
  //   q = -1: scores -1, 1, -2: lse = log(e^-1 + e + e^-2) = log(3.221496) = 1.169846,
  //           grad = (e^-1 - e + 2e^-2) / 3.221496 = -2.079732 / 3.221496 = -0.645579
  //   q = 1:  scores 1, -1, 0:  lse = log(e + e^-1 + 1) = log(4.086161) = 1.407606,
  //           grad = (e - e^-1 + 0) / 4.086161 = 2.350402 / 4.086161 = 0.575210
  //   q = 3:  scores 3, -3, 3:  lse = log(2e^3 + e^-3) = log(40.220860) = 3.694386,
  //           grad = (e^3 - e^-3 + e^3) / (2e^3 + e^-3) = 40.121287 / 40.220860 = 0.997524
  for (const backend of backends) {
    it(`${backend}: lse = log(2 cosh q), gradient tanh q; the extra row`, () => {
      const c = makeCache(backend, 3, 1, [1, -1]);   // 3 rows, 2 filled: the empty one is no candidate
      const q = tf.tensor2d([[-1], [1], [3]]);
      const plain = lseAndGrad(q, c, { embeddingKey: 'emb' });
      assertClose(plain.lse, [1.126928, 1.126928, 3.002476], 2e-6, 'lse');
      assertClose(plain.grad, [-0.761594, 0.761594, 0.995055], 2e-6, 'grad');
      const extra = tf.tensor2d([[2], [0], [1]]);
      const withExtra = lseAndGrad(q, c, { embeddingKey: 'emb', extra });
      assertClose(withExtra.lse, [1.169846, 1.407606, 3.694386], 2e-6, 'lse with extra');
      assertClose(withExtra.grad, [-0.645579, 0.575210, 0.997524], 2e-6, 'grad with extra');
      // scale 2 doubles every score: lse = log(2 cosh 2q) (2.018150, 6.000006), gradient 2 tanh 2q (1.928055, 1.999975).
      const scaled = lseAndGrad(q, c, { embeddingKey: 'emb', scale: 2 });
      assertClose(scaled.lse, [2.018149, 2.018149, 6.000006], 2e-6, 'lse, scale 2');
      assertClose(scaled.grad, [-1.928055, 1.928055, 1.999975], 2e-6, 'grad, scale 2');
      // scoreEmptyRows: the all-zero row joins with score 0.
      const empty = lseAndGrad(q, c, { embeddingKey: 'emb', scoreEmptyRows: true });
      assertClose(empty.lse, [Math.log(1 + 2 * Math.cosh(1)), Math.log(1 + 2 * Math.cosh(1)), Math.log(1 + 2 * Math.cosh(3))], 2e-6, 'lse, empty rows');
      tf.dispose([q, extra]);
      c.dispose();
    });
  }

  it('a query without candidates: -Infinity and a zero gradient', () => {
    for (const backend of backends) {
      const c = makeCache(backend, 4, 2, []);
      const q = tf.tensor2d([[1, 2]]);
      const r = lseAndGrad(q, c, { embeddingKey: 'emb' });
      assert.deepStrictEqual(Array.from(r.lse), [-Infinity], backend);
      assert.deepStrictEqual(Array.from(r.grad), [0, 0], backend);
      q.dispose();
      c.dispose();
    }
  });
});

describe('cacheLogSumExp: native against the JS reference and tfjs ops', function () {
  this.timeout(60000);
  const shapes = [
    { B: 1, D: 1, sizes: [7], fill: [5] },
    { B: 5, D: 7, sizes: [40], fill: [40] },
    { B: 17, D: 33, sizes: [300, 50], fill: [200, 50] },
    { B: 20, D: 64, sizes: [1000], fill: [700] },
    { B: 3, D: 130, sizes: [64, 64, 64], fill: [64, 10, 0] },
  ];
  for (const storage of ['float32', 'float16', 'bfloat16']) {
    shapes.forEach((s, si) => {
      it(`${storage}, shape ${si} (B ${s.B}, D ${s.D}, caches ${s.sizes.join('+')})`, () => {
        const r = rng(1000 + si * 7 + storage.length);
        const embs = s.sizes.map((_, i) => randomRows(r, s.fill[i], s.D));
        const q = tf.tensor2d(Float32Array.from({ length: s.B * s.D }, () => r.normal() / Math.sqrt(s.D)), [s.B, s.D]);
        const extra = tf.tensor2d(randomRows(r, s.B, s.D), [s.B, s.D]);
        const weights = Float32Array.from({ length: s.B }, () => r.normal());
        const byBackend = {};
        for (const backend of backends) {
          byBackend[backend] = s.sizes.map((size, i) => makeCache(backend, size, s.D, embs[i], storage));
        }
        for (const opts of [{ scale: 5 }, { scale: 20, extra }, { scale: 1, scoreEmptyRows: true }]) {
          const options = { embeddingKey: 'emb', ...opts };
          const caches = byBackend.js;
          const want = tfjsOracle(q, caches, opts);
          const js = lseAndGrad(q, caches.length === 1 ? caches[0] : caches, options);
          // Gradients are compared relative to their natural size, scale · |e|
          // (|e| ~ 1 here): float32 scores move the softmax weights by about
          // their rounding, ~1e-7 · scale · |q||e| · sqrt(D), times the scale.
          const g = opts.scale;
          // The JS reference against the tfjs formulation (float32 ops there).
          assertClose(js.lse, want.lse, 1e-5, `js vs tfjs lse ${JSON.stringify(opts.scale)}`);
          assertClose(js.grad, want.grad, 1e-4, 'js vs tfjs grad', g);
          if (!addon) continue;
          for (const baseline of [false, true]) {
            addon.setForceBaseline(baseline);
            try {
              const nat = lseAndGrad(q, byBackend.native.length === 1 ? byBackend.native[0] : byBackend.native, options);
              assertClose(nat.lse, js.lse, 1e-5, `native (baseline ${baseline}) vs js lse`);
              assertClose(nat.grad, js.grad, 1e-4, `native (baseline ${baseline}) vs js grad`, g);
              // Weighted sums reach the gradient unchanged.
              const wn = lseAndGrad(q, byBackend.native, options, weights);
              const wj = lseAndGrad(q, byBackend.js, options, weights);
              assertClose(wn.grad, wj.grad, 1e-4, 'weighted grad', g);
            } finally {
              addon.setForceBaseline(false);
            }
          }
        }
        tf.dispose([q, extra]);
        for (const list of Object.values(byBackend)) for (const c of list) c.dispose();
      });
    });
  }

  it('a record of caches is taken in name order, an array in its order', () => {
    for (const backend of backends) {
      const r = rng(5);
      const a = makeCache(backend, 30, 8, randomRows(r, 30, 8));
      const b = makeCache(backend, 20, 8, randomRows(r, 11, 8));
      const q = tf.tensor2d(randomRows(r, 4, 8), [4, 8]);
      const want = tfjsOracle(q, [a, b], { scale: 3 });
      for (const caches of [[a, b], [b, a], { z: b, a }]) {
        const got = lseAndGrad(q, caches, { embeddingKey: 'emb', scale: 3 });
        assertClose(got.lse, want.lse, 1e-5, `${backend} lse`);
        assertClose(got.grad, want.grad, 1e-4, `${backend} grad`, 3);
      }
      tf.dispose(q);
      a.dispose();
      b.dispose();
    }
  });
});

describe('cacheLogSumExp: gradient against finite differences', () => {
  for (const backend of backends) {
    it(`${backend}: tf.grad of sum(w · lse) matches central differences`, () => {
      const r = rng(77);
      const B = 3, D = 5;
      const c = makeCache(backend, 50, D, randomRows(r, 40, D), 'float32');
      const qv = Float32Array.from({ length: B * D }, () => r.normal() * 0.5);
      const xv = randomRows(r, B, D);
      const w = [0.7, -1.3, 2.1];
      const extra = tf.tensor2d(xv, [B, D]);
      const options = { embeddingKey: 'emb', scale: 2, extra };
      const f = (vals) => tf.tidy(() => {
        const l = cacheLogSumExp(tf.tensor2d(vals, [B, D]), c, options).dataSync();
        return l.reduce((s, v, i) => s + w[i] * v, 0);
      });
      const q = tf.tensor2d(qv, [B, D]);
      const { grad } = lseAndGrad(q, c, options, Float32Array.from(w));
      const h = 1e-2;
      for (let i = 0; i < B * D; i++) {
        const up = Float32Array.from(qv), dn = Float32Array.from(qv);
        up[i] += h;
        dn[i] -= h;
        const fd = (f(up) - f(dn)) / ((up[i] - dn[i]));
        assert.ok(Math.abs(grad[i] - fd) <= 2e-3 * (1 + Math.abs(fd)), `d/dq[${i}]: ${grad[i]} vs finite difference ${fd}`);
      }
      tf.dispose([q, extra]);
      c.dispose();
    });
  }
});

describe('cacheLogSumExp: kernels', () => {
  it('native: the same bits for 1, 2 and 3 threads', function () {
    if (!addon) this.skip();
    const r = rng(9);
    const D = 48, B = 21;
    const c1 = makeCache('native', 5000, D, randomRows(r, 4500, D), 'float16');
    const c2 = makeCache('native', 3000, D, randomRows(r, 3000, D));
    const queries = Float32Array.from({ length: B * D }, () => r.normal() / Math.sqrt(D));
    const extra = randomRows(r, B, D);
    const req = (threads) => ({
      queries, batch: B, dim: D, scale: 10, scoreEmptyRows: false, threads,
      sources: [c1, c2].map((c) => ({ store: storeOf(c), key: 'emb' })),
    });
    const k = kernelsFor('native');
    const one = k.cacheLse(req(1), extra);
    for (const threads of [2, 3]) {
      const many = k.cacheLse(req(threads), extra);
      assert.deepStrictEqual(many.lse, one.lse, `lse, ${threads} threads`);
      assert.deepStrictEqual(many.weighted, one.weighted, `weighted, ${threads} threads`);
      assert.deepStrictEqual(many.candidates, one.candidates, `candidates, ${threads} threads`);
    }
    assert.ok(one.candidates.every((n) => n === 4500 + 3000 + 1));
    c1.dispose();
    c2.dispose();
  });

  it('the addon rejects bad arrays and writes nothing', function () {
    if (!addon) this.skip();
    const c = makeCache('native', 10, 4, randomRows(rng(1), 10, 4));
    const nreq = { queries: new Float32Array(8), batch: 2, dim: 4, scale: 1, scoreEmptyRows: false, threads: 0,
      segments: [{ store: storeOf(c).handle, column: storeOf(c).columnIndex('emb') }] };
    const lse = new Float32Array(2).fill(7), w = new Float32Array(8).fill(7), cand = new Int32Array(2).fill(7);
    assert.throws(() => addon.cacheLse(nreq, new Float32Array(7), lse, w, cand), (e) => e instanceof RangeError && /extra must be a Float32Array of length 8/.test(e.message));
    assert.throws(() => addon.cacheLse(nreq, new Float32Array(8).fill(NaN), lse, w, cand), (e) => e instanceof RangeError && /extra must be finite/.test(e.message));
    assert.throws(() => addon.cacheLse(nreq, null, new Float32Array(3), w, cand), (e) => e instanceof RangeError && /outLse/.test(e.message));
    assert.throws(() => addon.cacheLse(nreq, null, lse, new Float64Array(8), cand), (e) => e instanceof TypeError && /outWeighted/.test(e.message));
    assert.throws(() => addon.cacheLse(nreq, null, lse, w, new Float32Array(2)), (e) => e instanceof TypeError && /outCandidates/.test(e.message));
    assert.ok(lse.every((v) => v === 7) && w.every((v) => v === 7) && cand.every((v) => v === 7));
    c.dispose();
  });

  it('cuda: a clear ERR_UNSUPPORTED', function () {
    if (!nc.availableBackends().includes('cuda')) this.skip();
    const c = makeCache('cuda', 8, 2, [1, 2, 3, 4]);
    const q = tf.tensor2d([[1, 0]]);
    assert.throws(() => cacheLogSumExp(q, c, { embeddingKey: 'emb' }),
      (e) => e instanceof NegativeCacheError && e.code === 'ERR_UNSUPPORTED' && /cuda/.test(e.message));
    q.dispose();
    c.dispose();
  });
});

describe('cacheLogSumExp: bad input', () => {
  for (const backend of backends) {
    it(`${backend}: TypeError / RangeError naming the argument; nothing changed or leaked`, () => {
      const c = makeCache(backend, 6, 3, [1, 2, 3, 4, 5, 6]);
      const other = makeCache(backend, 4, 2, [1, 2]);
      const intEmb = new CacheManager({ emb: { shape: [3], dtype: 'int32' } }, 2, { backend }).initCache();
      const disposed = makeCache(backend, 2, 3, []);
      disposed.dispose();
      const q = tf.tensor2d([[1, 0, 0], [0, 1, 0]]);
      const before = { emb: Array.from(c.read('emb')), age: Array.from(c.readAge()), filled: Array.from(c.readFilled()) };
      const ok = { embeddingKey: 'emb' };
      const qNaN = tf.tensor2d([[1, NaN, 0], [0, 1, 0]]);
      const qInt = tf.tensor2d([[1, 0, 0]], [1, 3], 'int32');
      const q1 = tf.tensor1d([1, 2, 3]);
      const q0 = tf.zeros([0, 3]);
      const dead = tf.tensor2d([[1, 2, 3]]);
      dead.dispose();
      const x = tf.tensor2d([[1, 1, 1], [2, 2, 2]]);
      const xBad = tf.tensor2d([[1, 1, 1]]);
      const xInf = tf.tensor2d([[1, Infinity, 1], [2, 2, 2]]);
      const cases = [
        [() => cacheLogSumExp([[1, 2, 3]], c, ok), TypeError, /queries must be a float32 tf.Tensor2D/],
        [() => cacheLogSumExp(q1, c, ok), RangeError, /queries must be a rank-2 tensor/],
        [() => cacheLogSumExp(qInt, c, ok), TypeError, /queries must be a float32 tensor/],
        [() => cacheLogSumExp(q0, c, ok), RangeError, /queries must be a non-empty batch/],
        [() => cacheLogSumExp(dead, c, ok), TypeError, /queries must be a live tensor/],
        [() => cacheLogSumExp(qNaN, c, ok), RangeError, /queries must be finite values; got NaN at \[0, 1\]/],
        [() => cacheLogSumExp(q, other, ok), RangeError, /queries must be dimension 2/],
        [() => cacheLogSumExp(q, null, ok), TypeError, /caches must be a NegativeCache, a non-empty array/],
        [() => cacheLogSumExp(q, [], ok), TypeError, /caches must be a NegativeCache, a non-empty array/],
        [() => cacheLogSumExp(q, {}, ok), TypeError, /caches must be .*; got an empty object/],
        [() => cacheLogSumExp(q, [c, 3], ok), TypeError, /caches\[1\] must be a NegativeCache created by CacheManager/],
        [() => cacheLogSumExp(q, { a: c, b: disposed }, ok), TypeError, /caches\["b"\] was disposed/],
        [() => cacheLogSumExp(q, c), TypeError, /options must be an object; got undefined/],
        [() => cacheLogSumExp(q, c, { embeddingKey: 'emb', sclae: 2 }), TypeError, /options must be an object with keys embeddingKey, scale, scoreEmptyRows, extra; got an object with unknown key 'sclae'/],
        [() => cacheLogSumExp(q, c, { embeddingKey: 3 }), TypeError, /options.embeddingKey must be a non-empty string; got 3/],
        [() => cacheLogSumExp(q, c, { embeddingKey: 'nope' }), RangeError, /options.embeddingKey must be a key of caches's specs \(emb, id\); got "nope"/],
        [() => cacheLogSumExp(q, c, { embeddingKey: 'id' }), TypeError, /options.embeddingKey must be a float32 feature of caches/],
        [() => cacheLogSumExp(q, intEmb, ok), TypeError, /options.embeddingKey must be a float32 feature/],
        [() => cacheLogSumExp(q, c, { ...ok, scale: NaN }), RangeError, /options.scale must be a finite number \(as float32\); got NaN/],
        [() => cacheLogSumExp(q, c, { ...ok, scale: 1e39 }), RangeError, /options.scale must be a finite number/],
        [() => cacheLogSumExp(q, c, { ...ok, scale: '2' }), TypeError, /options.scale must be a finite number; got "2"/],
        [() => cacheLogSumExp(q, c, { ...ok, scoreEmptyRows: 1 }), TypeError, /options.scoreEmptyRows must be a boolean; got 1/],
        [() => cacheLogSumExp(q, c, { ...ok, extra: [[1, 1, 1], [2, 2, 2]] }), TypeError, /options.extra must be a float32 tf.Tensor2D \[2, 3\] or null/],
        [() => cacheLogSumExp(q, c, { ...ok, extra: xBad }), RangeError, /options.extra must be shape \[2, 3\] like queries; got shape \[1, 3\]/],
        [() => cacheLogSumExp(q, c, { ...ok, extra: xInf }), RangeError, /options.extra must be finite values; got Infinity at \[0, 1\]/],
        [() => cacheLogSumExp(q, c, { ...ok, scale: 3e38 }), RangeError, /queries must be values giving finite scores/],
      ];
      if (backend === 'native') {
        const jsCache = makeCache('js', 6, 3, [1, 2, 3]);
        cases.push([() => cacheLogSumExp(q, [c, jsCache], ok), TypeError, /caches must be NegativeCaches of one backend .*caches\[0\] \(native\), caches\[1\] \(js\)/]);
      }
      const tensorsBefore = tf.memory().numTensors;
      cases.forEach(([fn, type, re], i) => {
        assert.throws(fn, (e) => e instanceof type && re.test(e.message), `case ${i}`);
      });
      assert.strictEqual(tf.memory().numTensors, tensorsBefore, 'no tensor leaked');
      assert.deepStrictEqual({ emb: Array.from(c.read('emb')), age: Array.from(c.readAge()), filled: Array.from(c.readFilled()) }, before);
      // Still usable, with the extra given or null.
      const l1 = cacheLogSumExp(q, c, { ...ok, extra: x });
      const l2 = cacheLogSumExp(q, c, { ...ok, extra: null });
      assert.deepStrictEqual(l1.shape, [2]);
      assert.ok(l1.dataSync()[0] > l2.dataSync()[0]);
      tf.dispose([l1, l2, q, qNaN, qInt, q1, q0, x, xBad, xInf]);
      for (const cc of [c, other, intEmb]) cc.dispose();
    });
  }

  it('a training step leaks no tensors', () => {
    const c = makeCache(backends[backends.length - 1], 64, 4, randomRows(rng(3), 64, 4));
    const v = tf.variable(tf.randomNormal([8, 4]));
    const opt = tf.train.sgd(0.1);
    const step = () => opt.minimize(() => tf.mean(cacheLogSumExp(v, c, { embeddingKey: 'emb', scale: 2 })));
    step();
    const n = tf.memory().numTensors;
    for (let i = 0; i < 3; i++) step();
    assert.strictEqual(tf.memory().numTensors, n);
    v.dispose();
    opt.dispose();
    c.dispose();
  });
});
