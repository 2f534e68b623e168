'use strict';
// Regression tests for what the fuzz targets (test/fuzz, docs/reliability.md) found.
//
// 1. fuzz_kernels: an invTemp beyond the float32 range (finite as a double)
//    became inf in the kernels, and inf * 0 = NaN lost the draws of queries
//    whose scores were 0. Now refused: GumbelMaxRetrievalFn (RangeError) and
//    the native core (NegativeCacheError ERR_ARGUMENT); the largest float32
//    invTemp still draws exactly like the JS kernels.
// 2. fuzz_kernels (after the exclusion masks): with invTemp = -float32 max a
//    finite score whose product with invTemp overflows float32 was filtered
//    out like an excluded row (-inf) by the vector tiers, so the only
//    candidate went undrawn. Each tier now draws it, as the float64 offer does.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { loadAddon } = require('./helpers/internals');

const FLOAT32_MAX = 3.4028234663852886e38;
const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');

describe('fuzz findings', () => {
  it('GumbelMaxRetrievalFn refuses an invTemp above the float32 range, naming the limit', () => {
    for (const invTemp of [3.5e38, 1e39, 1e300, Number.MAX_VALUE]) {
      assert.throws(() => new nc.GumbelMaxRetrievalFn({ invTemp }),
        (e) => e instanceof RangeError && /options\.invTemp must be a positive finite number at most 3\.4028234663852886e38 \(float32\); got /.test(e.message));
    }
    assert.strictEqual(new nc.GumbelMaxRetrievalFn({ invTemp: FLOAT32_MAX }).invTemp, FLOAT32_MAX);
  });

  it('the native core refuses such an invTemp (ERR_ARGUMENT) and writes nothing', function () {
    const addon = loadAddon();
    if (!addon) this.skip();
    const store = new addon.CacheStore([{ name: 'e', storage: 0, width: 2 }], 4);
    store.initialize([new Float32Array(8)], null);
    const req = { queries: new Float32Array(2), batch: 1, dim: 2, scale: 1, scoreEmptyRows: false, threads: 1, segments: [{ store, column: 0 }] };
    const out = { indices: new Int32Array([7]), scores: new Float32Array(1), lse: new Float32Array(1), candidates: new Int32Array(1) };
    for (const invTemp of [1e39, -1e300]) {
      assert.throws(() => addon.scoreAndSample(req, { mode: 0, invTemp, numDraws: 1, seed: 0, call: 0 }, out),
        (e) => e.name === 'NegativeCacheError' && e.code === 'ERR_ARGUMENT' && /invTemp must be finite and at most/.test(e.message));
      assert.strictEqual(out.indices[0], 7);
    }
    // At the limit, zero scores still give a draw per query.
    const atMax = { ...out, indices: new Int32Array(2), scores: new Float32Array(2) };
    addon.scoreAndSample(req, { mode: 0, invTemp: FLOAT32_MAX, numDraws: 2, seed: 3, call: 1 }, atMax);
    assert.strictEqual(atMax.candidates[0], 4);
    assert.ok(atMax.indices.every((j) => j >= 0 && j < 4) && atMax.indices[0] !== atMax.indices[1], `draws ${atMax.indices}`);
    store.dispose();
  });

  it('at invTemp = float32 max every backend draws the same rows, one per query', () => {
    const draws = {};
    for (const backend of BACKENDS) {
      const manager = new nc.CacheManager({ e: { shape: [2], dtype: 'float32' } }, 6, { backend });
      const cache = manager.initCache();
      // Scores 0 (zero rows), tiny and large, of both signs.
      manager.updateCache(cache, { newItems: { e: [[0, 0], [0, 0], [1e-3, 0], [-1e-3, 0], [2, 1], [-2, -1]] } });
      const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['e'], seed: 9, numNegatives: 3,
        retrievalFn: new nc.GumbelMaxRetrievalFn({ invTemp: FLOAT32_MAX }) });
      const q = tf.tensor2d([[0, 0], [1, 0], [-1, 0.5]]);
      draws[backend] = tf.tidy(() => {
        const r = loss.compute((d) => d.e, q, q, cache);
        return { idx: Array.from(r.updatedItemIndices.cache instanceof tf.Tensor ? r.updatedItemIndices.cache.dataSync() : r.updatedItemIndices.cache),
          mask: Array.from(r.updatedItemMask.cache instanceof tf.Tensor ? r.updatedItemMask.cache.dataSync() : r.updatedItemMask.cache) };
      });
      q.dispose();
      cache.dispose();
      assert.ok(draws[backend].mask.every((m) => m === 1), `${backend}: a query lost its draws: ${JSON.stringify(draws[backend])}`);
      assert.strictEqual(draws[backend].idx.length, 9);
    }
    for (const b of BACKENDS) assert.deepStrictEqual(draws[b], draws[BACKENDS[0]], `${b} differs from ${BACKENDS[0]}`);
  });

  it('a finite score whose invTemp product overflows float32 is still drawn, on every CPU tier', function () {
    const addon = loadAddon();
    if (!addon) this.skip();
    const before = addon.cpuFeatures().isaCap;
    try {
      for (const tier of addon.cpuFeatures().usableTiers) {
        addon.setIsaCap(tier === 'neon' ? 'neon' : tier);
        const store = new addon.CacheStore([{ name: 'e', storage: 0, width: 2 }], 1);
        store.initialize([new Float32Array([1.5, -0.5])], null);  // S = 16, invTemp * S = -inf in float32
        const batch = 7;
        const req = { queries: new Float32Array(batch * 2).fill(-4), batch, dim: 2, scale: -4, scoreEmptyRows: true, threads: 0, segments: [{ store, column: 0 }] };
        const out = { indices: new Int32Array(batch).fill(-7), scores: new Float32Array(batch), lse: new Float32Array(batch), candidates: new Int32Array(batch) };
        addon.scoreAndSample(req, { mode: 0, invTemp: -FLOAT32_MAX, numDraws: 1, seed: 0, call: 0 }, out);
        assert.deepStrictEqual(Array.from(out.indices), new Array(batch).fill(0), `tier ${tier}`);
      }
    } finally {
      addon.setIsaCap(before);
    }
  });
});
