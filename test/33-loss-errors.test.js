'use strict';
// Bad input to the loss: TypeError/RangeError naming the argument, the
// expectation and what was given; nothing leaked, the call counter unchanged.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');

const { CacheManager, CacheClassificationLoss, GumbelMaxRetrievalFn, approximateTopKWithIndices } = nc;

const base = { embeddingKey: 'emb', dataKeys: ['x'] };

describe('CacheClassificationLoss: constructor errors', () => {
  const cases = [
    [{ ...base, embeddingKey: 3 }, TypeError, /embeddingKey must be a non-empty string; got 3/],
    [{ ...base, dataKeys: 'x' }, TypeError, /dataKeys must be an array of strings/],
    [{ ...base, topK: 0 }, RangeError, /topK must be a positive integer; got 0/],
    [{ ...base, topK: 2.5 }, RangeError, /topK must be a positive integer; got 2.5/],
    [{ ...base, topK: '4' }, TypeError, /topK/],
    [{ ...base, numNegatives: 0 }, RangeError, /numNegatives must be an integer in \[1, 65536\]; got 0/],
    [{ ...base, numNegatives: 1.5 }, RangeError, /numNegatives/],
    [{ ...base, seed: -1 }, RangeError, /seed must be a non-negative safe integer; got -1/],
    [{ ...base, seed: 2 ** 53 }, RangeError, /seed must be a non-negative safe integer/],
    [{ ...base, seed: 1.5 }, RangeError, /seed/],
    [{ ...base, seed: '1' }, TypeError, /seed/],
    [{ ...base, scoreTransform: NaN }, RangeError, /scoreTransform must be a finite scale; got NaN/],
    [{ ...base, scoreTransform: 'x' }, TypeError, /scoreTransform must be a number \(scale\) or a function/],
    [{ ...base, reducer: 'max' }, TypeError, /reducer must be 'mean', 'sum', 'none' or a function; got "max"/],
    [{ ...base, retrievalFn: {} }, TypeError, /retrievalFn must be a GumbelMaxRetrievalFn/],
    [{ ...base, scoreEmptyRows: 1 }, TypeError, /scoreEmptyRows must be a boolean/],
  ];
  for (const [options, type, re] of cases) {
    it(`rejects ${JSON.stringify(options, (k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))}`, () => {
      assert.throws(() => new CacheClassificationLoss(options), (e) => e instanceof type && re.test(e.message));
    });
  }
  it('rejects a bad invTemp', () => {
    for (const invTemp of [0, -1, Infinity, NaN]) {
      assert.throws(() => new GumbelMaxRetrievalFn({ invTemp }), (e) => e instanceof RangeError && /invTemp must be a positive finite number/.test(e.message));
    }
    assert.throws(() => new GumbelMaxRetrievalFn({ invTemp: '1' }), TypeError);
  });
  it('rejects misspelt option keys, naming the key and listing the known ones', () => {
    const typo = (fn, re) => assert.throws(fn, (e) => e instanceof TypeError && re.test(e.message));
    typo(() => new CacheClassificationLoss({ ...base, numNegative: 4 }),
      /options must be an object with keys embeddingKey, dataKeys, scoreTransform, topK, reducer, retrievalFn, seed, numNegatives, scoreEmptyRows; got an object with unknown key 'numNegative'/);
    typo(() => new CacheClassificationLoss({ ...base, topk: 4 }), /unknown key 'topk'/);
    typo(() => new GumbelMaxRetrievalFn({ invTemperature: 2 }), /options must be an object with keys invTemp; got an object with unknown key 'invTemperature'/);
    typo(() => new nc.MaxScoreRetrievalFn({ invTemp: 2 }), /options must be omitted or an empty object \(it takes no options\); got an object with unknown key 'invTemp'/);
    assert.ok(new nc.MaxScoreRetrievalFn() instanceof nc.MaxScoreRetrievalFn);
    assert.strictEqual(new GumbelMaxRetrievalFn({ invTemp: undefined }).invTemp, 1);
  });
});

for (const backend of nc.availableBackends()) {
  describe(`CacheClassificationLoss: compute errors (${backend})`, () => {
    const specs = { emb: { shape: [3], dtype: 'float32' }, x: { shape: [2], dtype: 'float32' }, n: { shape: [1], dtype: 'int32' } };
    let cache, other, q, p;
    before(() => {
      cache = new CacheManager(specs, 4, { backend }).initCache({
        data: { emb: [[1, 0, 0], [0, 1, 0], [0, 0, 1], [1, 1, 1]], x: [[1, 2], [3, 4], [5, 6], [7, 8]], n: [[1], [2], [3], [4]] },
      });
      other = new CacheManager({ emb: { shape: [3], dtype: 'float32' } }, 2, { backend }).initCache();
      q = tf.tensor2d([[1, 2, 3], [0, 1, 0]]);
      p = tf.tensor2d([[1, 0, 0], [0, 0, 1]]);
    });
    after(() => { cache.dispose(); other.dispose(); tf.dispose([q, p]); });
    const net = (d) => tf.matMul(d.x, tf.ones([2, 3]));

    function rejects(options, args, type, re) {
      const loss = new CacheClassificationLoss({ ...base, seed: 1, ...options });
      const before = tf.memory().numTensors;
      assert.throws(() => loss.compute(...args()), (e) => {
        assert.ok(e instanceof type, `${e.constructor.name}: ${e.message}`);
        assert.match(e.message, re);
        return true;
      });
      assert.strictEqual(tf.memory().numTensors, before, 'tensors leaked');
      assert.strictEqual(loss.calls, 0, 'a rejected call counts');
    }

    it('rejects a dimension mismatch between queries and the cache', () => {
      const q2 = tf.zeros([2, 4]);
      rejects({}, () => [net, q2, q2, cache], RangeError, /queryEmbeddings must be dimension 3 to match caches's "emb" \(shape \[3\]\); got dimension 4/);
      q2.dispose();
    });
    it('rejects posDocEmbeddings of another shape', () => {
      const p2 = tf.zeros([3, 3]);
      rejects({}, () => [net, q, p2, cache], RangeError, /posDocEmbeddings must be shape \[2, 3\] like queryEmbeddings; got shape \[3, 3\]/);
      p2.dispose();
    });
    it('rejects an empty batch, non-tensors and non-matrices', () => {
      const e = tf.zeros([0, 3]);
      rejects({}, () => [net, e, e, cache], RangeError, /queryEmbeddings must be a non-empty batch/);
      e.dispose();
      rejects({}, () => [net, [[1, 2, 3]], p, cache], TypeError, /queryEmbeddings must be a float32 tf.Tensor2D \[batch, dim\]; got an array/);
      const v = tf.zeros([3]);
      rejects({}, () => [net, v, v, cache], RangeError, /queryEmbeddings must be a rank-2 tensor/);
      v.dispose();
      rejects({}, () => ['net', q, p, cache], TypeError, /docNetwork must be a function/);
    });
    it('rejects NaN or infinite queries and positives', () => {
      const bad = tf.tensor2d([[1, NaN, 3], [0, 1, 0]]);
      rejects({}, () => [net, bad, p, cache], RangeError, /queryEmbeddings must be finite values; got NaN at \[0, 1\]/);
      const inf = tf.tensor2d([[1, 0, 3], [0, 1, Infinity]]);
      rejects({}, () => [net, q, inf, cache], RangeError, /posDocEmbeddings must be values giving finite positive scores; got score (NaN|Infinity) for row 1/);
      tf.dispose([bad, inf]);
    });
    it('rejects infinite cache scores (overflowing scale)', () => {
      rejects({ scoreTransform: 1e38 }, () => [net, q, p, cache], RangeError, /scores must be finite/);
      rejects({ scoreTransform: 1e38, topK: 2 }, () => [net, q, p, cache], RangeError, /scores must be finite/);
    });
    it('rejects an unknown or non-float embeddingKey and unknown dataKeys', () => {
      rejects({ embeddingKey: 'nope' }, () => [net, q, p, cache], RangeError, /embeddingKey must be a key of caches's specs \(emb, x, n\); got "nope"/);
      rejects({ embeddingKey: 'n' }, () => [net, q, p, cache], TypeError, /embeddingKey must be a float32 feature/);
      rejects({ dataKeys: ['x', 'y'] }, () => [net, q, p, cache], RangeError, /dataKeys must be keys of caches's specs \(emb, x, n\); got "y"/);
      rejects({}, () => [net, q, p, { a: cache, b: other }], RangeError, /dataKeys must be keys of caches\["b"\]'s specs \(emb\); got "x"/);
    });
    it('rejects bad caches', () => {
      rejects({}, () => [net, q, p, {}], TypeError, /caches must be a NegativeCache or a non-empty record/);
      rejects({}, () => [net, q, p, { a: 3 }], TypeError, /caches\["a"\] must be a NegativeCache/);
      rejects({}, () => [net, q, p, null], TypeError, /caches must be a NegativeCache/);
      const gone = new CacheManager(specs, 2, { backend }).initCache();
      gone.dispose();
      rejects({}, () => [net, q, p, gone], TypeError, /caches was disposed/);
    });
    it('rejects topK larger than the cache', () => {
      rejects({ topK: 5 }, () => [net, q, p, cache], RangeError, /topK must be an integer in \[1, 4\] \(the number of cached rows\); got 5/);
    });
    it('rejects a score transform returning the wrong shape or a non-tensor', () => {
      rejects({ scoreTransform: (s) => (s.rank === 2 ? s : tf.sum(s)) }, () => [net, q, p, cache], RangeError,
        /scoreTransform\(scores\) must be a tensor of the input's shape \[2\] \(applied to s_pos\); got shape \[\]/);
      rejects({ scoreTransform: (s) => (s.rank === 2 ? tf.sum(s, 1) : s) }, () => [net, q, p, cache], RangeError,
        /scoreTransform\(scores\) must be a tensor of the input's shape \[2, 4\] \(applied to the cache scores\); got shape \[2\]/);
      rejects({ scoreTransform: () => 3 }, () => [net, q, p, cache], TypeError, /scoreTransform\(scores\) must be a tensor/);
      rejects({ scoreTransform: (s) => tf.log(tf.sub(s, 100)) }, () => [net, q, p, cache], RangeError, /scores must be finite \(check queryEmbeddings, the cached embeddings and scoreTransform\); got NaN for query row 0/);
    });
    it('rejects a docNetwork output of the wrong shape', () => {
      rejects({}, () => [(d) => d.x, q, p, cache], RangeError, /docNetwork\(data\) must be a tensor of shape \[2, 3\] \(one embedding per drawn row\); got shape \[2, 2\]/);
      rejects({}, () => [() => 'x', q, p, cache], TypeError, /docNetwork\(data\) must be a tf.Tensor2D \[2, 3\]; got "x"/);
    });
    it('rejects bad custom retrieval results', () => {
      rejects({ retrievalFn: () => [0] }, () => [net, q, p, cache], RangeError, /retrievalFn\(scores\) must be 2 column indices \(1 per query row\); got length 1/);
      rejects({ retrievalFn: () => [0, 4] }, () => [net, q, p, cache], RangeError, /retrievalFn\(scores\) must be integer columns in \[0, 4\); got 4 for query row 1/);
      rejects({ retrievalFn: () => [0, 0.5] }, () => [net, q, p, cache], RangeError, /integer columns/);
      rejects({ retrievalFn: () => null }, () => [net, q, p, cache], TypeError, /retrievalFn\(scores\) must be a tensor or array of 2 column indices; got null/);
      rejects({ retrievalFn: (s) => tf.argMax(s, 1).reshape([2, 1]).tile([1, 2]) }, () => [net, q, p, cache], RangeError, /got shape \[2, 2\]/);
    });
  });
}

describe('approximateTopKWithIndices', () => {
  it('returns each group max and its column, in group order', () => {
    const s = tf.tensor2d([[1, 5, 2, 2, 0, 9, 3], [4, 4, 4, 1, 1, 1, 1]]);
    const { scores, indices } = approximateTopKWithIndices(s, 3);   // groups [0,2) [2,4) [4,7)
    assert.deepStrictEqual(scores.arraySync(), [[5, 2, 9], [4, 4, 1]]);
    assert.deepStrictEqual(indices.arraySync(), [[1, 2, 5], [0, 2, 4]]);
    assert.strictEqual(indices.dtype, 'int32');
    // differentiable through the gather
    const g = tf.grad((x) => tf.sum(approximateTopKWithIndices(x, 3).scores))(s);
    assert.deepStrictEqual(g.arraySync(), [[0, 1, 1, 0, 0, 1, 0], [1, 0, 1, 0, 1, 0, 0]]);
    tf.dispose([s, scores, indices, g]);
  });
  it('rejects bad k and bad scores', () => {
    const s = tf.zeros([2, 3]);
    for (const k of [0, 4, 1.5]) {
      assert.throws(() => approximateTopKWithIndices(s, k), (e) => e instanceof RangeError && /k must be an integer in \[1, 3\]/.test(e.message));
    }
    assert.throws(() => approximateTopKWithIndices(s, '2'), TypeError);
    assert.throws(() => approximateTopKWithIndices([[1, 2]], 1), (e) => e instanceof TypeError && /scores must be a tf.Tensor2D/.test(e.message));
    s.dispose();
  });
});
