'use strict';
// CacheLossHandler / MultiCacheLossHandler: the handler step of docs/design.md §3.3
// (loss on the cache as it is, then refresh + insert), use inside
// optimizer.minimize / tf.variableGrads without leaks, summaries, and the
// options beyond the reference (warm-up, in-batch term, dedupe).
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { mulberry32: mulberry } = require('./helpers/rng');

const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');
const close = (a, b, tol = 1e-5) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);
const specs1 = { embedding: { shape: [1], dtype: 'float32' }, data: { shape: [1], dtype: 'float32' } };
const identity = (d) => d.data;

describe('CacheLossHandler', () => {
  for (const backend of BACKENDS) {
    describe(`backend ${backend}`, () => {
      it('computes the loss on the cache as it is, then refreshes and inserts (worked example of docs/design.md)', () => {
        const manager = new nc.CacheManager(specs1, 4, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'], retrievalFn: () => [0, 1, 0] });
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'] });
        manager.updateCache(handler.cache, { newItems: { embedding: [[1], [-1]], data: [[1], [-1]] } });
        const q = tf.tensor2d([[-1], [1], [3]]);
        const p = tf.tensor2d([[2], [2], [1]]);
        const out = handler.updateCacheAndComputeLoss((d) => tf.mul(d.data, 2), q, p, { data: [[5], [6], [7]] });
        // Golden values of docs/design.md §3 with no transform: interpretableLoss and p_pos per query.
        const pPos = [0.0420101, 0.705385, 0.499381];
        const m = handler.lastMetrics;
        close(m.interpretableLoss, (3.169846 + 0.349012 + 0.694385) / 3);
        // Re-embedded negatives are 2·data = [2, -2, 2]: s_neg = q·neg = [-2, -2, 6].
        const expected = ((1 - pPos[0]) * (-2 - -2) + (1 - pPos[1]) * (-2 - 2) + (1 - pPos[2]) * (6 - 3)) / 3;
        close(out.dataSync()[0], expected);
        close(m.trainingLoss, expected);
        assert.strictEqual(m.step, 0);
        assert.strictEqual(m.phase, 'cache');
        assert.strictEqual(m.inserted, 3);
        assert.strictEqual(m.refreshed, 3);
        // Refresh rows 0,1 (0 twice: the later wins) with 2·data -> ages -1; insert 3 items into rows 2, 3, 0.
        assert.deepStrictEqual(Array.from(handler.cache.read('embedding')), [1, -2, 2, 2]);
        assert.deepStrictEqual(Array.from(handler.cache.read('data')), [7, -1, 5, 6]);
        assert.deepStrictEqual(Array.from(handler.cache.readAge()), [0, 0, 0, 0]);
        tf.dispose([q, p, out]);
        handler.dispose();
      });

      it('works inside optimizer.minimize and tf.variableGrads, leaks no tensors, trains both towers', () => {
        const dim = 8, batch = 6, width = 5;
        const rng = mulberry(7);
        const wq = tf.variable(tf.randomNormal([width, dim], 0, 0.3, 'float32', 1));
        const wd = tf.variable(tf.randomNormal([width, dim], 0, 0.3, 'float32', 2));
        const docNet = (d) => tf.tidy(() => tf.matMul(d.x, wd));
        const manager = new nc.CacheManager({ e: { shape: [dim], dtype: 'float32' }, x: { shape: [width], dtype: 'float32' } }, 32, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['x'], scoreTransform: 5, numNegatives: 3, seed: 3 });
        const scalars = [];
        const handler = new nc.CacheLossHandler(manager, loss, {
          embeddingKey: 'e', dataKeys: ['x'], inBatchWeight: 0.5, warmupSteps: 2,
          summaryWriter: { scalar: (name, value, step) => scalars.push({ name, value, step }) },
        });
        const opt = tf.train.adam(0.01);
        const batchData = () => ({
          qx: tf.tensor2d(Float32Array.from({ length: batch * width }, () => rng() - 0.5), [batch, width]),
          dx: Float32Array.from({ length: batch * width }, () => rng() - 0.5),
        });
        let counts = [];
        for (let s = 0; s < 12; s++) {
          const { qx, dx } = batchData();
          const dxT = tf.tensor2d(dx, [batch, width]);
          if (s % 2 === 0) {
            opt.minimize(() => handler.updateCacheAndComputeLoss(docNet, tf.matMul(qx, wq), docNet({ x: dxT }), { x: dx }), false, [wq, wd]);
          } else {
            const { value, grads } = tf.variableGrads(() => handler.updateCacheAndComputeLoss(docNet, tf.matMul(qx, wq), docNet({ x: dxT }), { x: dx }), [wq, wd]);
            assert.ok(Number.isFinite(value.dataSync()[0]));
            for (const g of Object.values(grads)) assert.ok(tf.tidy(() => tf.sum(tf.abs(g)).dataSync()[0]) > 0, 'a zero gradient');
            opt.applyGradients(grads);
            tf.dispose([value, grads]);
          }
          tf.dispose([qx, dxT]);
          counts.push(tf.memory().numTensors);
        }
        assert.strictEqual(new Set(counts.slice(3)).size, 1, `tensor count moved: ${counts}`);
        assert.strictEqual(handler.step, 12);
        assert.strictEqual(loss.calls, 10, 'two warm-up steps do not call the cache loss');
        const names = new Set(scalars.map((s) => s.name));
        assert.deepStrictEqual([...names].sort(), ['cache/in_batch_loss', 'cache/interpretable_prediction_loss', 'cache/staleness']);
        const interp = scalars.filter((s) => s.name === 'cache/interpretable_prediction_loss');
        assert.deepStrictEqual(interp.map((s) => s.step), [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
        assert.ok(interp.every((s) => Number.isFinite(s.value) && s.value >= 0));
        assert.strictEqual(handler.cache.readFilled().reduce((a, v) => a + v, 0), 32);
        handler.dispose();
        tf.dispose([wq, wd]);
        opt.dispose();
      });

      it('warm-up steps train in-batch only and still fill the cache', () => {
        const manager = new nc.CacheManager(specs1, 8, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'] });
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], warmupSteps: 1, inBatchScale: 2 });
        const q = tf.tensor2d([[1], [-1]]);
        const p = tf.tensor2d([[1], [0.5]]);
        const out = handler.updateCacheAndComputeLoss(identity, q, p, { data: [[3], [4]] });
        // in-batch CE with logits 2·q·pᵀ = [[2, 1], [-2, -1]], positives on the diagonal.
        const ce = (Math.log(Math.exp(2) + Math.exp(1)) - 2 + Math.log(Math.exp(-2) + Math.exp(-1)) + 1) / 2;
        close(out.dataSync()[0], ce);
        assert.strictEqual(handler.lastMetrics.phase, 'warmup');
        assert.ok(Number.isNaN(handler.lastMetrics.interpretableLoss));
        assert.strictEqual(loss.calls, 0);
        assert.strictEqual(handler.cache.readFilled().reduce((a, v) => a + v, 0), 2);
        handler.updateCacheAndComputeLoss(identity, q, p, { data: [[3], [4]] });
        assert.strictEqual(handler.lastMetrics.phase, 'cache');
        assert.strictEqual(loss.calls, 1);
        tf.dispose([q, p, out]);
        handler.dispose();
      });

      it('inBatchWeight adds weight × the in-batch cross-entropy to the cache term', () => {
        const run = (w) => {
          const manager = new nc.CacheManager(specs1, 4, { backend });
          const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'], scoreTransform: 3, seed: 11 });
          const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], inBatchWeight: w });
          manager.updateCache(handler.cache, { newItems: { embedding: [[1], [-1], [0.5], [2]], data: [[1], [-1], [0.5], [2]] } });
          const q = tf.tensor2d([[0.3], [-0.7]]);
          const p = tf.tensor2d([[0.2], [0.9]]);
          const v = handler.updateCacheAndComputeLoss(identity, q, p, { data: [[0], [0]] });
          const r = { value: v.dataSync()[0], inBatch: handler.lastMetrics.inBatchLoss };
          const ce = nc.inBatchCrossEntropy(q, p, 3);
          r.ce = ce.dataSync()[0];
          tf.dispose([q, p, v, ce]);
          handler.dispose();
          return r;
        };
        const a = run(0), b = run(0.5);
        assert.ok(Number.isNaN(a.inBatch));
        close(b.inBatch, b.ce);
        close(b.value - a.value, 0.5 * b.ce);
      });

      it('dedupe: documents already cached refresh their row instead of being inserted; repeats in a batch are inserted once', () => {
        const manager = new nc.CacheManager(specs1, 6, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'], seed: 1 });
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], dedupe: true, warmupSteps: 10 });
        const q = tf.tensor2d([[1], [1], [1]]);
        const step = (p, data) => { const t = tf.tensor2d(p); tf.dispose(handler.updateCacheAndComputeLoss(identity, q, t, { data })); t.dispose(); };
        step([[1], [2], [3]], [[10], [20], [10]]);          // 10 repeated in the batch
        assert.strictEqual(handler.lastMetrics.inserted, 2);
        assert.strictEqual(handler.lastMetrics.duplicates, 1);
        step([[7], [8], [9]], [[20], [30], [20]]);          // 20 cached (refresh), 30 new, 20 again
        assert.strictEqual(handler.lastMetrics.inserted, 1);
        assert.strictEqual(handler.lastMetrics.duplicates, 2);
        const data = Array.from(handler.cache.read('data'));
        const emb = Array.from(handler.cache.read('embedding'));
        const filled = handler.cache.readFilled();
        const rowsOf = (v) => data.map((d, i) => (filled[i] && d === v ? i : -1)).filter((i) => i >= 0);
        assert.deepStrictEqual([10, 20, 30].map((v) => rowsOf(v).length), [1, 1, 1]);
        assert.strictEqual(emb[rowsOf(10)[0]], 1);
        assert.strictEqual(emb[rowsOf(20)[0]], 9, 'the cached row of 20 holds the latest embedding');
        assert.strictEqual(emb[rowsOf(30)[0]], 8);
        q.dispose();
        handler.dispose();
      });

      it('checks and converts a batch once: the dedupe filter and the cache update reuse the rows', () => {
        const manager = new nc.CacheManager(specs1, 8, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'], seed: 2 });
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], dedupe: true });
        const q = tf.tensor2d([[1], [-1], [0.5]]);
        const p = tf.tensor2d([[1], [2], [3]]);
        for (let step = 0; step < 3; step++) {
          const data = tf.tensor2d([[10 + step], [20], [10 + step]]);
          let reads = 0;
          const dataSync = data.dataSync.bind(data);
          data.dataSync = () => { reads++; return dataSync(); };
          tf.dispose(handler.updateCacheAndComputeLoss(identity, q, p, { data }));
          assert.strictEqual(reads, 1, `step ${step}: the features were read ${reads} times`);
          data.dispose();
        }
        // Steps 1 and 2 found 20 cached: inserted 10+step only once each step.
        assert.deepStrictEqual([handler.lastMetrics.inserted, handler.lastMetrics.duplicates], [1, 2]);
        assert.strictEqual(handler.cache.readFilled().reduce((a, v) => a + v, 0), 4);
        tf.dispose([q, p]);
        handler.dispose();
      });

      it("errors raised inside the loss name the handler's arguments (itemNetwork, posItemEmbeddings)", () => {
        const manager = new nc.CacheManager(specs1, 4, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'], seed: 3 });
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'] });
        manager.updateCache(handler.cache, { newItems: { embedding: [[1], [2]], data: [[1], [2]] } });
        const q = tf.tensor2d([[1], [2]]);
        const bad = tf.tensor2d([[1], [NaN]]);
        assert.throws(() => handler.updateCacheAndComputeLoss((d) => tf.concat([d.data, d.data], 1), q, q, { data: [[1], [2]] }),
          (e) => e instanceof RangeError && /itemNetwork\(data\) must be a tensor of shape \[2, 1\]/.test(e.message));
        assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, bad, { data: [[1], [2]] }),
          (e) => e instanceof RangeError && /posItemEmbeddings must be values giving finite positive scores/.test(e.message));
        assert.strictEqual(loss.calls, 0);
        assert.strictEqual(handler.step, 0);
        assert.deepStrictEqual(Array.from(handler.cache.readAge()), [0, 0, 1, 1], 'a rejected step changed the cache');
        tf.dispose([q, bad]);
        handler.dispose();
      });

      it('rejects bad arguments naming them, without touching the cache', () => {
        const manager = new nc.CacheManager(specs1, 4, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'] });
        assert.throws(() => new nc.CacheLossHandler(manager, loss, { embeddingKey: 'nope', dataKeys: ['data'] }), /options\.embeddingKey/);
        assert.throws(() => new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], warmupSteps: -1 }), RangeError);
        assert.throws(() => new nc.CacheLossHandler(manager, {}, { embeddingKey: 'embedding', dataKeys: ['data'] }), /cacheLoss/);
        assert.throws(() => new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], summaryWriter: {} }), /summaryWriter/);
        assert.throws(() => new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'], warmupStep: 100 }), (e) => e instanceof TypeError &&
          /options must be an object with keys embeddingKey, dataKeys, summaryWriter, inBatchWeight, inBatchScale, warmupSteps, dedupe, removeAccidentalHits; got an object with unknown key 'warmupStep'/.test(e.message));
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'embedding', dataKeys: ['data'] });
        const q = tf.tensor2d([[1], [2]]);
        const p3 = tf.tensor2d([[1], [2], [3]]);
        assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, p3, { data: [[1], [2]] }), /posItemEmbeddings/);
        assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, q, null), /features/);
        assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, q, { data: [[1], [2]], embedding: [[1], [2]] }), /features/);
        assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, q, { other: [[1], [2]] }), /features must be an object with exactly the keys data/);
        assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, q, { data: [[1], [2], [3]] }), /features\.data must be 2 rows; got 3 rows/);
        assert.strictEqual(loss.calls, 0, 'a rejected call does not run the loss');
        assert.strictEqual(handler.step, 0);
        assert.strictEqual(handler.cache.readFilled().reduce((a, v) => a + v, 0), 0);
        tf.dispose([q, p3]);
        handler.dispose();
      });
    });
  }
});

describe('MultiCacheLossHandler', () => {
  it('routes refreshed rows to their source by mask and inserts each source\'s new items', () => {
    const managers = { b: new nc.CacheManager(specs1, 4), a: new nc.CacheManager(specs1, 4) };
    // Sources are concatenated by name: a = rows 0..3, b = rows 4..7.
    const loss = new nc.CacheClassificationLoss({ embeddingKey: 'embedding', dataKeys: ['data'], retrievalFn: () => [1, 6] });
    const scalars = [];
    const handler = new nc.MultiCacheLossHandler(managers, loss, { embeddingKey: 'embedding', dataKeys: ['data'], summaryWriter: { scalar: (n, v, s) => scalars.push([n, s]) } });
    assert.deepStrictEqual(Object.keys(handler.caches), ['a', 'b']);
    managers.a.updateCache(handler.caches.a, { newItems: { embedding: [[1], [2], [3], [4]], data: [[1], [2], [3], [4]] } });
    managers.b.updateCache(handler.caches.b, { newItems: { embedding: [[5], [6], [7], [8]], data: [[5], [6], [7], [8]] } });
    const q = tf.tensor2d([[0.1], [0.2]]);
    const p = tf.tensor2d([[0.3], [0.4]]);
    const newA = tf.tensor2d([[-1], [-2]]);
    const out = handler.updateCacheAndComputeLoss((d) => tf.mul(d.data, 10), q, p, { a: newA }, { a: { data: [[-10], [-20]] } });
    assert.ok(Number.isFinite(out.dataSync()[0]));
    // a: row 1 refreshed (10·2 = 20, age -1), then the two new items go to the oldest rows 0 and 2.
    assert.deepStrictEqual(Array.from(handler.caches.a.read('embedding')), [-1, 20, -2, 4]);
    assert.deepStrictEqual(Array.from(handler.caches.a.read('data')), [-10, 2, -20, 4]);
    // b: only row 2 (global 6) refreshed: 10·7; no inserts.
    assert.deepStrictEqual(Array.from(handler.caches.b.read('embedding')), [5, 6, 70, 8]);
    assert.deepStrictEqual(Array.from(handler.caches.b.read('data')), [5, 6, 7, 8]);
    assert.strictEqual(handler.lastMetrics.refreshed, 2);
    assert.strictEqual(handler.lastMetrics.inserted, 2);
    assert.deepStrictEqual(scalars, [['cache/interpretable_prediction_loss', 0], ['cache/staleness', 0]]);
    const calls = loss.calls;
    assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, p, { c: newA }, { c: { data: [[1], [2]] } }), /newItemEmbeddings/);
    // A misspelt source in newItemFeatures is an error, not silently ignored.
    assert.throws(() => handler.updateCacheAndComputeLoss(identity, q, p, { a: newA }, { a: { data: [[1], [2]] }, bb: { data: [[1]] } }),
      (e) => e instanceof RangeError && /newItemFeatures must be keys among the sources \(a, b\); got "bb"/.test(e.message));
    assert.throws(() => new nc.MultiCacheLossHandler(managers, loss, { embeddingKey: 'embedding', dataKeys: ['data'], dedup: true }),
      (e) => e instanceof TypeError && /unknown key 'dedup'/.test(e.message));
    assert.strictEqual(loss.calls, calls, 'rejected calls do not run the loss');
    tf.dispose([q, p, newA, out]);
    handler.dispose();
  });
});
