'use strict';
// CacheClassificationLoss: the DESIGN §3 worked example and hand-checked cases,
// on every available backend.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');

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

    it('with a retrieval fn returning [0, 1, 0] gives p_pos and trainingLoss of DESIGN §3', () => {
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
