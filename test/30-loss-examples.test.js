'use strict';
// CacheClassificationLoss: the worked example of docs/design.md §3.2 and hand-checked cases,
// on every available backend.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { mulberry32: mulberry } = require('./helpers/rng');

const { CacheManager, CacheClassificationLoss, GumbelMaxRetrievalFn, MaxScoreRetrievalFn } = nc;

function close(actual, expected, tol, what) {
  const a = Array.from(actual), e = Array.from(expected);
  assert.strictEqual(a.length, e.length, `${what}: length ${a.length} vs ${e.length}`);
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - e[i]) <= tol * Math.max(1, Math.abs(e[i])), `${what}[${i}]: ${a[i]} vs ${e[i]} (all: ${a} vs ${e})`);
  }
}

const logSumExp = (xs) => { const m = Math.max(...xs); return m + Math.log(xs.reduce((s, x) => s + Math.exp(x - m), 0)); };

for (const backend of nc.availableBackends()) {
  describe(`CacheClassificationLoss worked examples (${backend})`, () => {
    const specs = { emb: { shape: [1], dtype: 'float32' }, data: { shape: [1], dtype: 'float32' } };
    let cache;
    beforeEach(() => {
      cache = new CacheManager(specs, 2, { backend }).initCache({ data: { emb: [[1], [-1]], data: [[1], [-1]] } });
    });
    afterEach(() => cache.dispose());
    const q = () => tf.tensor2d([[-1], [1], [3]]);
    const p = () => tf.tensor2d([[2], [2], [1]]);
    const docNetwork = (d) => d.data;

    it('gives interpretableLoss [3.169846, 0.349012, 0.694385]', () => {
      const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', seed: 7 });
      const out = loss.compute(docNetwork, q(), p(), cache);
      close(out.interpretableLoss.dataSync(), [3.169846, 0.349012, 0.694385], 1e-5, 'interpretableLoss');
      // Gumbel draws are candidates; the cache rows equal their data, so staleness is 0.
      const idx = out.updatedItemIndices.cache;
      assert.ok(Array.from(idx).every((j) => j === 0 || j === 1), `indices ${idx}`);
      assert.deepStrictEqual(Array.from(out.updatedItemMask.cache), [1, 1, 1]);
      close(out.staleness.dataSync(), [0, 0, 0], 0, 'staleness');
      // updatedItemData = re-embedded negatives: data of the drawn rows.
      close(out.updatedItemData.cache.emb.dataSync(), Array.from(idx).map((j) => (j === 0 ? 1 : -1)), 0, 'updatedItemData');
    });

    it('with a retrieval fn returning [0, 1, 0] gives p_pos and trainingLoss of docs/design.md §3', () => {
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', retrievalFn: () => [0, 1, 0],
      });
      const out = loss.compute(docNetwork, q(), p(), cache);
      const pPos = Array.from(out.interpretableLoss.dataSync()).map((x) => Math.exp(-x));
      close(pPos, [0.0420101, 0.705385, 0.499381], 1e-5, 'p_pos');
      close(out.trainingLoss.dataSync(), [1, -3, 0].map((d, i) => (1 - pPos[i]) * d), 1e-5, 'trainingLoss');
      assert.deepStrictEqual(Array.from(out.updatedItemIndices.cache), [0, 1, 0]);
    });

    it('reducers mean and sum reduce the per-row values; a function reducer is applied as is', () => {
      const fn = () => [0, 1, 0];
      const none = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', retrievalFn: fn })
        .compute(docNetwork, q(), p(), cache);
      const rows = Array.from(none.trainingLoss.dataSync());
      const mean = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], retrievalFn: fn })
        .compute(docNetwork, q(), p(), cache);
      assert.deepStrictEqual(mean.trainingLoss.shape, []);
      close([mean.trainingLoss.dataSync()[0]], [rows.reduce((a, b) => a + b) / 3], 1e-6, 'mean');
      const sum = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'sum', retrievalFn: fn })
        .compute(docNetwork, q(), p(), cache);
      close([sum.trainingLoss.dataSync()[0]], [rows.reduce((a, b) => a + b)], 1e-6, 'sum');
      const max = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: (t) => tf.max(t), retrievalFn: fn })
        .compute(docNetwork, q(), p(), cache);
      close([max.trainingLoss.dataSync()[0]], [Math.max(...rows)], 1e-6, 'max reducer');
      close([max.interpretableLoss.dataSync()[0]], [3.169846], 1e-5, 'max reducer interpretable');
    });

    it('MaxScoreRetrievalFn draws the best-scoring row', () => {
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', retrievalFn: new MaxScoreRetrievalFn(),
      });
      const out = loss.compute(docNetwork, q(), p(), cache);
      // scores q·E: [-1, 1], [1, -1], [3, -3] -> rows 1, 0, 0
      assert.deepStrictEqual(Array.from(out.updatedItemIndices.cache), [1, 0, 0]);
    });

    it('a number scoreTransform scales s_pos, s_neg and the cache scores', () => {
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', scoreTransform: 2, retrievalFn: () => [0, 1, 0],
      });
      const out = loss.compute(docNetwork, q(), p(), cache);
      const qs = [-1, 1, 3], ps = [2, 2, 1], picked = [1, -1, 1];
      const pPos = qs.map((x, b) => {
        const sPos = 2 * x * ps[b];
        return Math.exp(sPos - logSumExp([sPos, 2 * x, -2 * x]));
      });
      close(Array.from(out.interpretableLoss.dataSync()).map((x) => Math.exp(-x)), pPos, 1e-5, 'p_pos');
      close(out.trainingLoss.dataSync(), qs.map((x, b) => (1 - pPos[b]) * (2 * x * picked[b] - 2 * x * ps[b])), 1e-5, 'trainingLoss');
    });
  });
}

for (const backend of nc.availableBackends()) {
  describe(`CacheClassificationLoss cases (${backend})`, () => {
    const specs = { emb: { shape: [2], dtype: 'float32' }, data: { shape: [2], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } };
    const made = [];
    const make = (size, rows) => {
      const c = new CacheManager(specs, size, { backend }).initCache();
      made.push(c);
      return c;
    };
    // A cache whose rows j hold emb = E[j], data = X[j], id = j.
    const filledCache = (E, X = E) => {
      const c = new CacheManager(specs, E.length, { backend }).initCache({
        data: { emb: E, data: X, id: E.map((_, j) => [j]) },
      });
      made.push(c);
      return c;
    };
    afterEach(() => { while (made.length) made.pop().dispose(); });
    const docNetwork = (d) => d.data;
    const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);

    const E6 = [[1, 0], [0, 1], [2, 1], [-1, 1], [0.5, 0.5], [1, -3]];
    const Q = [[1, 2], [-1, 0.5]];
    const P = [[0.5, 0.5], [1, 1]];

    it('topK groups the rows into consecutive groups and uses each group max', () => {
      let seen = null;
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', topK: 3,
        retrievalFn: (s) => { seen = s.arraySync(); return [2, 0]; },
      });
      const out = loss.compute(docNetwork, tf.tensor2d(Q), tf.tensor2d(P), filledCache(E6));
      // groups [0,2) [2,4) [4,6)
      const S = Q.map((q) => E6.map((e) => dot(q, e)));
      const groups = [[0, 2], [2, 4], [4, 6]];
      const gmax = S.map((row) => groups.map(([lo, hi]) => Math.max(...row.slice(lo, hi))));
      const gcol = S.map((row) => groups.map(([lo, hi]) => { const r = row.slice(lo, hi); return lo + r.indexOf(Math.max(...r)); }));
      close(seen.flat(), gmax.flat(), 1e-6, 'candidate scores');
      assert.deepStrictEqual(Array.from(out.updatedItemIndices.cache), [gcol[0][2], gcol[1][0]]);
      const want = Q.map((q, b) => { const sPos = dot(q, P[b]); return logSumExp([sPos, ...gmax[b]]) - sPos; });
      close(out.interpretableLoss.dataSync(), want, 1e-5, 'interpretableLoss over group maxima');
      // approximateTopKWithIndices is the same grouping
      const t = nc.approximateTopKWithIndices(tf.tensor2d(S), 3);
      close(t.scores.dataSync(), gmax.flat(), 1e-6, 'approximateTopK scores');
      assert.deepStrictEqual(Array.from(t.indices.dataSync()), gcol.flat());
      // built-in retrieval with topK: MaxScore takes the best group
      const best = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], topK: 3, retrievalFn: new MaxScoreRetrievalFn() })
        .compute(docNetwork, tf.tensor2d(Q), tf.tensor2d(P), filledCache(E6));
      assert.deepStrictEqual(Array.from(best.updatedItemIndices.cache), S.map((row) => row.indexOf(Math.max(...row))));
    });

    it('staleness is |E[j*] - neg|^2 / |neg|^2, averaged over draws', () => {
      const X = [[1, 1], [2, 0], [0, 0]];
      const E = [[1, 0], [1, 1], [3, 3]];
      const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', retrievalFn: () => [0, 1, 2] });
      const out = loss.compute(docNetwork, tf.tensor2d([[1, 0], [0, 1], [1, 1]]), tf.tensor2d([[1, 0], [0, 1], [1, 1]]), filledCache(E, X));
      close(out.staleness.dataSync(), [1 / 2, 2 / 4, 0], 1e-6, 'staleness');
      close(out.updatedItemData.cache.emb.dataSync(), X.flat(), 0, 'updatedItemData');
    });

    it('several sources are sorted by name and concatenated; masks route each draw to its source', () => {
      const a = filledCache([[1, 0], [0, 1]], [[1, 0], [0, 1]]);
      const b = filledCache([[2, 0], [0, 2], [1, 1]], [[2, 0], [0, 2], [1, 1]]);
      const calls = [];
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['data', 'id'], reducer: 'none',
        retrievalFn: (s) => { assert.deepStrictEqual(s.shape, [3, 5]); return [4, 1, 2]; },
      });
      const q = tf.tensor2d([[1, 0], [0, 1], [1, 1]]);
      const out = loss.compute((d) => { calls.push(Array.from(d.id.dataSync())); return d.data; }, q, q, { zeta: b, alpha: a });
      assert.deepStrictEqual(calls, [[2, 1, 0]]);   // id column: local rows
      assert.deepStrictEqual(Array.from(out.updatedItemMask.alpha), [0, 1, 0]);
      assert.deepStrictEqual(Array.from(out.updatedItemMask.zeta), [1, 0, 1]);
      assert.deepStrictEqual(Array.from(out.updatedItemIndices.alpha), [4, 1, 2]);
      assert.deepStrictEqual(Array.from(out.updatedItemIndices.zeta), [2, -1, 0]);
      close(out.updatedItemData.alpha.emb.dataSync(), [1, 1, 0, 1, 2, 0], 0, 'alpha data');
      close(out.updatedItemData.zeta.emb.dataSync(), [1, 1, 0, 1, 2, 0], 0, 'zeta data');
      // lse over all five rows
      const E = [[1, 0], [0, 1], [2, 0], [0, 2], [1, 1]];
      const Qv = [[1, 0], [0, 1], [1, 1]];
      const want = Qv.map((qq) => { const sPos = dot(qq, qq); return logSumExp([sPos, ...E.map((e) => dot(qq, e))]) - sPos; });
      close(out.interpretableLoss.dataSync(), want, 1e-5, 'interpretableLoss');
      // Updating the caches with the outputs (masks on) refreshes the right rows.
      const cmA = new CacheManager(specs, 2, { backend });
      cmA.updateCache(a, {
        updatedItemData: { emb: out.updatedItemData.alpha.emb }, updatedItemIndices: out.updatedItemIndices.alpha,
        updatedItemMask: out.updatedItemMask.alpha,
      });
      close(a.read('emb'), [1, 0, 0, 1], 0, 'alpha after refresh');
    });

    it('a function scoreTransform gives the same draws and losses as the equal number', () => {
      const rng = mulberry(3);
      const E = Array.from({ length: 40 }, () => [rng() * 2 - 1, rng() * 2 - 1]);
      const Qv = Array.from({ length: 5 }, () => [rng() * 2 - 1, rng() * 2 - 1]);
      // A cache of 50 rows with the 40 above inserted (10 never-filled rows).
      const partly = make(50);
      new CacheManager(specs, 50, { backend }).updateCache(partly, { newItems: { emb: E, data: E, id: E.map((_, j) => [j]) } });
      const retrievals = [
        ['Gumbel', () => undefined, 2],
        ['MaxScore', () => new MaxScoreRetrievalFn(), 2],
        ['custom', () => (s) => tf.argMax(s, 1), 1],
      ];
      for (const cache of [filledCache(E), partly]) {
        for (const [name, retrievalFn, numNegatives] of retrievals) {
          for (const topK of [undefined, 7]) {
            const run = (t) => {
              const loss = new CacheClassificationLoss({
                embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', scoreTransform: t, seed: 99, topK, numNegatives, retrievalFn: retrievalFn(),
              });
              return loss.compute(docNetwork, tf.tensor2d(Qv), tf.tensor2d(Qv), cache);
            };
            const a = run(3), b = run((x) => tf.mul(x, 3));
            const what = `${name}, topK ${topK}, ${cache === partly ? 'partly filled' : 'full'}`;
            assert.deepStrictEqual(Array.from(b.updatedItemIndices.cache), Array.from(a.updatedItemIndices.cache), what);
            assert.ok(Array.from(a.updatedItemIndices.cache).every((j) => j >= 0 && j < 40), `${what}: drew an empty row`);
            close(b.trainingLoss.dataSync(), a.trainingLoss.dataSync(), 1e-5, `trainingLoss (${what})`);
            close(b.interpretableLoss.dataSync(), a.interpretableLoss.dataSync(), 1e-5, `interpretableLoss (${what})`);
          }
        }
      }
      // a nonlinear transform: p_pos from t(S) by hand
      const tfn = (x) => tf.tanh(x);
      const out = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', scoreTransform: tfn, seed: 1 })
        .compute(docNetwork, tf.tensor2d(Qv), tf.tensor2d(Qv), filledCache(E));
      const want = Qv.map((q) => { const sPos = Math.tanh(dot(q, q)); return logSumExp([sPos, ...E.map((e) => Math.tanh(dot(q, e)))]) - sPos; });
      close(out.interpretableLoss.dataSync(), want, 1e-5, 'tanh transform');
    });

    it('numNegatives k: MaxScore takes the k best rows; s_neg and staleness are means over the draws', () => {
      const k = 3;
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', numNegatives: k, retrievalFn: new MaxScoreRetrievalFn(),
      });
      const out = loss.compute(docNetwork, tf.tensor2d(Q), tf.tensor2d(P), filledCache(E6));
      const S = Q.map((q) => E6.map((e) => dot(q, e)));
      const order = S.map((row) => row.map((s, j) => [s, j]).sort((x, y) => y[0] - x[0] || x[1] - y[1]).slice(0, k).map((x) => x[1]));
      assert.deepStrictEqual(Array.from(out.updatedItemIndices.cache), order.flat());
      assert.deepStrictEqual(out.updatedItemData.cache.emb.shape, [Q.length * k, 2]);
      const want = Q.map((q, b) => {
        const sPos = dot(q, P[b]);
        const pPos = Math.exp(sPos - logSumExp([sPos, ...S[b]]));
        const sNeg = order[b].reduce((acc, j) => acc + S[b][j], 0) / k;
        return (1 - pPos) * (sNeg - sPos);
      });
      close(out.trainingLoss.dataSync(), want, 1e-5, 'trainingLoss');
    });

    it('Gumbel-top-k with k = N draws every candidate once', () => {
      const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', numNegatives: 6, seed: 5 });
      const out = loss.compute(docNetwork, tf.tensor2d(Q), tf.tensor2d(P), filledCache(E6));
      const idx = Array.from(out.updatedItemIndices.cache);
      for (let b = 0; b < Q.length; b++) assert.deepStrictEqual(idx.slice(b * 6, b * 6 + 6).sort(), [0, 1, 2, 3, 4, 5]);
    });

    it('an empty cache: p_pos = 1, zero losses, masks false, docNetwork not called, gradient connected', () => {
      const cache = make(4);
      let called = 0;
      const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', numNegatives: 2 });
      const q = tf.tensor2d(Q), p = tf.tensor2d(P);
      const out = loss.compute((d) => { called++; return d.data; }, q, p, cache);
      assert.strictEqual(called, 0);
      close(out.trainingLoss.dataSync(), [0, 0], 0, 'trainingLoss');
      close(out.interpretableLoss.dataSync(), [0, 0], 0, 'interpretableLoss');
      close(out.staleness.dataSync(), [0, 0], 0, 'staleness');
      assert.deepStrictEqual(Array.from(out.updatedItemMask.cache), [0, 0, 0, 0]);
      const g = tf.grad((qq) => loss.compute(docNetwork, qq, p, cache).trainingLoss.sum())(q);
      close(g.dataSync(), [0, 0, 0, 0], 0, 'gradient');
    });

    it('a partly filled cache draws only filled rows; fewer candidates than k leaves draws out', () => {
      const cache = make(5);
      new CacheManager(specs, 5, { backend }).updateCache(cache, {
        newItems: { emb: [[1, 2], [-1, 0]], data: [[1, 2], [-1, 0]], id: [[7], [8]] },
      });
      const filledRows = Array.from(cache.readFilled()).flatMap((f, j) => (f ? [j] : []));
      assert.strictEqual(filledRows.length, 2);
      const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', numNegatives: 3, seed: 11 });
      for (let step = 0; step < 5; step++) {
        const out = loss.compute(docNetwork, tf.tensor2d(Q), tf.tensor2d(P), cache);
        const idx = Array.from(out.updatedItemIndices.cache), mask = Array.from(out.updatedItemMask.cache);
        for (let b = 0; b < Q.length; b++) {
          assert.deepStrictEqual(idx.slice(b * 3, b * 3 + 2).sort(), filledRows, `draws ${idx}`);
          assert.strictEqual(idx[b * 3 + 2], -1);
          assert.deepStrictEqual(mask.slice(b * 3, b * 3 + 3), [1, 1, 0]);
        }
        const E = [[1, 2], [-1, 0]];
        const want = Q.map((q, b) => {
          const sPos = dot(q, P[b]);
          const pPos = Math.exp(sPos - logSumExp([sPos, ...E.map((e) => dot(q, e))]));
          return (1 - pPos) * ((dot(q, E[0]) + dot(q, E[1])) / 2 - sPos);
        });
        close(out.trainingLoss.dataSync(), want, 1e-5, 'trainingLoss over the two real draws');
      }
      // scoreEmptyRows: the zero rows are candidates too (score 0 beats negative scores)
      const all = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['data'], reducer: 'none', scoreEmptyRows: true, retrievalFn: new MaxScoreRetrievalFn() });
      const out = all.compute(docNetwork, tf.tensor2d([[1, -5]]), tf.tensor2d([[1, 1]]), cache);
      const j = out.updatedItemIndices.cache[0];
      assert.ok(!filledRows.includes(j), `drew ${j}, an empty row expected`);
      const want = logSumExp([-4, 1 - 10, -1, 0, 0, 0]) + 4;
      close(out.interpretableLoss.dataSync(), [want], 1e-5, 'lse with empty rows');
    });
  });
}

describe('CacheClassificationLoss options', () => {
  it('exposes the seed and counts calls', () => {
    const loss = new CacheClassificationLoss({ embeddingKey: 'e', dataKeys: [], seed: 42 });
    assert.strictEqual(loss.seed, 42);
    assert.strictEqual(loss.calls, 0);
    const other = new CacheClassificationLoss({ embeddingKey: 'e', dataKeys: [] });
    assert.ok(Number.isSafeInteger(other.seed) && other.seed >= 0);
    assert.ok(new GumbelMaxRetrievalFn({ invTemp: 0.5 }).invTemp === 0.5);
  });
});
