'use strict';
// Sampling: draws follow softmax(invTemp · S) (chi-square), are a pure function
// of (seed, call, row, column, scores) with the Philox mapping of
// src/js/philox.ts (re-derived by the oracle in test/helpers/philox.js), and
// are the same on every backend.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { gumbelNoise, philox4x32_10 } = require('./helpers/philox');
const { philoxBlock } = require('./helpers/internals');
const { mulberry32: mulberry } = require('./helpers/rng');

const { CacheManager, CacheClassificationLoss, GumbelMaxRetrievalFn, MaxScoreRetrievalFn } = nc;

// chi-square critical value at p = 1e-3 for 9 degrees of freedom
const CHI2_9_999 = 27.877;

function chiSquare(counts, probs, n) {
  let x = 0;
  for (let j = 0; j < probs.length; j++) {
    const e = n * probs[j];
    x += ((counts[j] - e) ** 2) / e;
  }
  return x;
}

const softmax = (xs) => { const m = Math.max(...xs); const e = xs.map((x) => Math.exp(x - m)); const z = e.reduce((a, b) => a + b); return e.map((v) => v / z); };

describe('Philox noise', () => {
  it('the kernels\' Philox block equals the oracle of test/helpers/philox.js and the Random123 known answer', () => {
    // Random123 kat_vectors: philox4x32 10 rounds, counter = key = 0
    assert.deepStrictEqual(Array.from(philox4x32_10(0, 0, 0, 0, 0, 0)), [0x6627e8d5, 0xe169c58d, 0xbc57ac4c, 0x9b00dbd8]);
    const rng = mulberry(1);
    const out = new Uint32Array(4);
    for (let t = 0; t < 2000; t++) {
      const a = Array.from({ length: 6 }, () => Math.floor(rng() * 4294967296));
      philoxBlock(...a, out);
      assert.deepStrictEqual(Array.from(out), Array.from(philox4x32_10(...a)));
    }
  });
});

for (const backend of nc.availableBackends()) {
  describe(`sampling (${backend})`, () => {
    const specs = { emb: { shape: [2], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } };
    const S = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 0.3, 1.2, -2.0];   // q = [1, 0] against E[j] = [S[j], 7]
    let cache;
    before(() => {
      cache = new CacheManager(specs, S.length, { backend }).initCache({
        data: { emb: S.map((s) => [s, 7]), id: S.map((_, j) => [j]) },
      });
    });
    after(() => cache.dispose());
    const n = 20000;
    const draw = (options) => {
      const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], reducer: 'none', ...options });
      const q = tf.tidy(() => tf.tile(tf.tensor2d([[1, 0]]), [n, 1]));
      const out = loss.compute((d) => tf.zeros([d.id.shape[0], 2]), q, q, cache);
      const idx = Array.from(out.updatedItemIndices.cache);
      tf.dispose([q, out.trainingLoss, out.interpretableLoss, out.staleness, out.updatedItemData.cache.emb]);
      return idx;
    };

    for (const invTemp of [1, 0.5]) {
      it(`Gumbel-max draws match softmax(invTemp·S) (invTemp ${invTemp}, chi-square, ${n} draws)`, () => {
        const idx = draw({ retrievalFn: new GumbelMaxRetrievalFn({ invTemp }), seed: 2024 });
        const counts = new Array(S.length).fill(0);
        for (const j of idx) counts[j]++;
        const x = chiSquare(counts, softmax(S.map((s) => invTemp * s)), n);
        assert.ok(x < CHI2_9_999, `chi-square ${x.toFixed(2)} >= ${CHI2_9_999}; counts ${counts}`);
        // and it does tell distributions apart: against the other temperature it fails
        const other = chiSquare(counts, softmax(S.map((s) => (1.5 - invTemp) * s)), n);
        assert.ok(other > CHI2_9_999 * 10, `chi-square vs the wrong temperature only ${other.toFixed(2)}`);
      });

      it(`Gumbel-top-k: the first draw matches softmax, the second Plackett-Luce (invTemp ${invTemp})`, () => {
        const k = 3;
        const idx = draw({ retrievalFn: new GumbelMaxRetrievalFn({ invTemp }), numNegatives: k, seed: 77 });
        const first = new Array(S.length).fill(0), second = new Array(S.length).fill(0);
        for (let b = 0; b < n; b++) {
          const row = idx.slice(b * k, b * k + k);
          assert.strictEqual(new Set(row).size, k, `draws without replacement: ${row}`);
          first[row[0]]++;
          second[row[1]]++;
        }
        const p = softmax(S.map((s) => invTemp * s));
        const p2 = p.map((pj, j) => p.reduce((acc, pi, i) => (i === j ? acc : acc + pi * pj / (1 - pi)), 0));
        const x1 = chiSquare(first, p, n), x2 = chiSquare(second, p2, n);
        assert.ok(x1 < CHI2_9_999, `first draw chi-square ${x1.toFixed(2)}; counts ${first}`);
        assert.ok(x2 < CHI2_9_999, `second draw chi-square ${x2.toFixed(2)}; counts ${second}`);
      });
    }

    it('draws are the argmax of invTemp·S + gumbelNoise(seed, call, row, col), reproducible by seed and call', () => {
      const seed = 2 ** 40 + 12345, invTemp = 0.7, k = 2, rows = 50;
      const loss = new CacheClassificationLoss({
        embeddingKey: 'emb', dataKeys: ['id'], reducer: 'none', seed, numNegatives: k,
        retrievalFn: new GumbelMaxRetrievalFn({ invTemp }),
      });
      const q = tf.tile(tf.tensor2d([[1, 0]]), [rows, 1]);
      const docNetwork = (d) => tf.zeros([d.id.shape[0], 2]);
      const got = [0, 1, 2].map(() => Array.from(loss.compute(docNetwork, q, q, cache).updatedItemIndices.cache));
      assert.strictEqual(loss.calls, 3);
      for (let call = 0; call < 3; call++) {
        const want = [];
        for (let b = 0; b < rows; b++) {
          const scored = S.map((s, j) => [invTemp * Math.fround(s) + gumbelNoise(seed, call, b, j), j]).sort((x, y) => y[0] - x[0]);
          want.push(scored[0][1], scored[1][1]);
        }
        assert.deepStrictEqual(got[call], want, `call ${call}`);
      }
      assert.notDeepStrictEqual(got[0], got[1]);
      // Same seed on a new loss object: the same sequence.
      const again = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], reducer: 'none', seed, numNegatives: k, retrievalFn: new GumbelMaxRetrievalFn({ invTemp }) });
      assert.deepStrictEqual(Array.from(again.compute(docNetwork, q, q, cache).updatedItemIndices.cache), got[0]);
      // Resuming at call 2 (loss.calls is settable) replays that call's draws.
      again.calls = 2;
      assert.deepStrictEqual(Array.from(again.compute(docNetwork, q, q, cache).updatedItemIndices.cache), got[2]);
      assert.throws(() => { again.calls = -1; }, RangeError);
      // Another seed: other draws.
      const other = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], reducer: 'none', seed: seed + 1, numNegatives: k, retrievalFn: new GumbelMaxRetrievalFn({ invTemp }) });
      assert.notDeepStrictEqual(Array.from(other.compute(docNetwork, q, q, cache).updatedItemIndices.cache), got[0]);
      q.dispose();
    });
  });
}

describe('sampling: native and JS draw the same negatives', () => {
  const rng = mulberry(9);
  const rand = (n, s = 1) => Array.from({ length: n }, () => (rng() * 2 - 1) * s);
  for (const storage of ['float32', 'float16', 'bfloat16']) {
    it(`on random inputs (${storage} storage; Gumbel, Gumbel-top-k, MaxScore, topK, several sources, partly filled)`, function () {
      if (!nc.availableBackends().includes('native')) this.skip();
      const D = 24, B = 40;
      const specs = { emb: { shape: [D], dtype: 'float32', storage }, id: { shape: [1], dtype: 'int32' } };
      const dataA = { emb: rand(300 * D), id: Array.from({ length: 300 }, (_, j) => j) };
      const dataB = { emb: rand(170 * D), id: Array.from({ length: 170 }, (_, j) => 1000 + j) };
      const make = (backend) => {
        const cm = new CacheManager(specs, 300, { backend });
        const a = cm.initCache({ data: dataA });
        const b = new CacheManager(specs, 400, { backend }).initCache();
        new CacheManager(specs, 400, { backend }).updateCache(b, { newItems: dataB });
        return { a, b };
      };
      const js = make('js'), native = make('native');
      const q = tf.tensor2d(rand(B * D, 0.5), [B, D]);
      const cases = [
        { scoreTransform: 4 },
        { scoreTransform: 4, numNegatives: 8, retrievalFn: new GumbelMaxRetrievalFn({ invTemp: 0.5 }) },
        { numNegatives: 5, retrievalFn: new MaxScoreRetrievalFn() },
        { topK: 16, numNegatives: 3, scoreTransform: 2 },
        { scoreEmptyRows: true, numNegatives: 2 },
      ];
      for (const c of cases) {
        const run = (caches) => {
          const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], reducer: 'none', seed: 31337, ...c });
          const out = loss.compute((d) => tf.zeros([d.id.shape[0], D]), q, q, caches);
          return { a: Array.from(out.updatedItemIndices.a), b: Array.from(out.updatedItemIndices.b), il: Array.from(out.interpretableLoss.dataSync()) };
        };
        const x = run(js), y = run(native);
        assert.deepStrictEqual(y.a, x.a, `indices (${JSON.stringify(c)})`);
        assert.deepStrictEqual(y.b, x.b, `indices (${JSON.stringify(c)})`);
        for (let i = 0; i < B; i++) assert.ok(Math.abs(x.il[i] - y.il[i]) < 1e-4 * Math.max(1, Math.abs(x.il[i])), `interpretableLoss ${i}`);
      }
      q.dispose();
      for (const s of [js, native]) { s.a.dispose(); s.b.dispose(); }
    });
  }

  it('sources of different backends are rejected (TypeError naming caches and the backends); one backend each draws the same', function () {
    if (!nc.availableBackends().includes('native')) this.skip();
    const D = 8, B = 16;
    const specs = { emb: { shape: [D], dtype: 'float32' } };
    const ea = rand(50 * D), eb = rand(30 * D);
    const jsA = new CacheManager(specs, 50, { backend: 'js' }).initCache({ data: { emb: ea } });
    const jsB = new CacheManager(specs, 30, { backend: 'js' }).initCache({ data: { emb: eb } });
    const natA = new CacheManager(specs, 50, { backend: 'native' }).initCache({ data: { emb: ea } });
    const natB = new CacheManager(specs, 30, { backend: 'native' }).initCache({ data: { emb: eb } });
    const q = tf.tensor2d(rand(B * D), [B, D]);
    const newLoss = () => new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: [], reducer: 'none', seed: 8, numNegatives: 3 });
    const run = (caches) => {
      const out = newLoss().compute(() => tf.zeros([B * 3, D]), q, q, caches);
      return [Array.from(out.updatedItemIndices.a), Array.from(out.updatedItemIndices.b)];
    };
    const loss = newLoss();
    const tensors = tf.memory().numTensors;
    assert.throws(() => loss.compute(() => tf.zeros([B * 3, D]), q, q, { a: jsA, b: natB }), (e) => e instanceof TypeError &&
      /caches must be NegativeCaches of one backend/.test(e.message) && /got a \(js\), b \(native\)/.test(e.message));
    assert.strictEqual(loss.calls, 0, 'a rejected call counts');
    assert.strictEqual(tf.memory().numTensors, tensors, 'tensors leaked');
    assert.deepStrictEqual(run({ a: natA, b: natB }), run({ a: jsA, b: jsB }));
    q.dispose();
    for (const c of [jsA, jsB, natA, natB]) c.dispose();
  });
});
