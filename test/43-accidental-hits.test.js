'use strict';
// removeAccidentalHits (handler option, DESIGN §6): a cached row equal to the
// query's own positive is left out of that query's candidates, for the lse
// and the draws alike, on every backend. Worked examples by hand (one cache,
// topK, several sources), the kernels' per-query exclusions against a brute
// force oracle (Philox of test/helpers/philox.js) and native against JS,
// chi-square of the draws against the softmax renormalized over the rows
// left, validation, and unchanged behaviour when the option is off.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { loadAddon, createStore, kernelsFor, jsKernels } = require('./helpers/internals');
const { gumbelNoise } = require('./helpers/philox');
const { rng } = require('./helpers/rng');

const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');
const addon = loadAddon();
const close = (a, b, tol = 1e-5) => assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${a} vs ${b}`);
const logSumExp = (xs) => { const m = Math.max(...xs); return m + Math.log(xs.reduce((a, x) => a + Math.exp(x - m), 0)); };
const logAddExp = (a, b) => logSumExp([a, b]);
const specs = { emb: { shape: [1], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } };
const fixed = (value) => (d) => tf.fill([d.id.shape[0], 1], value);

/** A handler over 8 rows; rows 0..3 hold ids [7, 1, 2, 3] with embeddings [3, 1, 0, -1], rows 4..7 are empty. */
function setup(backend, lossOptions, handlerOptions) {
  const manager = new nc.CacheManager(specs, 8, { backend });
  const loss = new nc.CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], scoreTransform: 20, seed: 5, ...lossOptions });
  const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'emb', dataKeys: ['id'], ...handlerOptions });
  manager.updateCache(handler.cache, { newItems: { emb: [[3], [1], [0], [-1]], id: [[7], [1], [2], [3]] } });
  return handler;
}

describe('removeAccidentalHits: worked examples', () => {
  for (const backend of BACKENDS) {
    describe(`backend ${backend}`, () => {
      // Query q = [1] with positive p = [0.5] of id 7: s_pos = 20·0.5 = 10. Row 0 (id 7, S = 60) is a copy of the positive.
      const step = (handler) => {
        const q = tf.tensor2d([[1]]), p = tf.tensor2d([[0.5]]);
        const out = handler.updateCacheAndComputeLoss(fixed(100), q, p, { id: [[7]] });
        tf.dispose([q, p, out]);
        return { m: handler.lastMetrics, emb: Array.from(handler.cache.read('emb')) };
      };

      it('without the option the copy of the positive is drawn (scale 20); with it, never, and lse is over the other rows', () => {
        // numNegatives 3: three draws without replacement; the drawn rows are refreshed with 100.
        const off = setup(backend, { numNegatives: 3 }, {});
        const a = step(off);
        assert.strictEqual(a.emb[0], 100, 'the reference draws the positive\'s copy (row 0, S = 60)');
        close(a.m.interpretableLoss, logAddExp(10, logSumExp([60, 20, 0, -20])) - 10);
        assert.strictEqual(a.m.accidentalHits, 0);
        off.dispose();

        const on = setup(backend, { numNegatives: 3 }, { removeAccidentalHits: true });
        const b = step(on);
        // Only rows 1..3 are candidates: all three drawn and refreshed, row 0 untouched; the positive goes to row 4.
        assert.deepStrictEqual(b.emb, [3, 100, 100, 100, 0.5, 0, 0, 0]);
        close(b.m.interpretableLoss, logAddExp(10, logSumExp([20, 0, -20])) - 10);
        assert.strictEqual(b.m.accidentalHits, 1);
        assert.strictEqual(b.m.refreshed, 3);
        on.dispose();
      });

      it('a list of keys, a function score transform and MaxScore give the same exclusion', () => {
        for (const lossOptions of [{ scoreTransform: (s) => tf.mul(s, 20) }, { retrievalFn: new nc.MaxScoreRetrievalFn() }]) {
          const h = setup(backend, lossOptions, { removeAccidentalHits: ['id'] });
          const b = step(h);
          assert.deepStrictEqual(b.emb.slice(0, 4), [3, 100, 0, -1], 'the best row that is not the positive\'s copy is row 1');
          close(b.m.interpretableLoss, logAddExp(10, logSumExp([20, 0, -20])) - 10);
          h.dispose();
        }
      });

      it('topK: the group of the copy falls back to its other row', () => {
        // topK 4 over 8 rows: groups {0, 1}, {2, 3}, {4, 5}, {6, 7}; without row 0 the maxima are rows 1 (S = 20) and 2 (S = 0).
        const h = setup(backend, { topK: 4, numNegatives: 2 }, { removeAccidentalHits: true });
        const b = step(h);
        assert.deepStrictEqual(b.emb.slice(0, 4), [3, 100, 100, -1]);
        close(b.m.interpretableLoss, logAddExp(10, logSumExp([20, 0])) - 10);
        h.dispose();
      });

      it('every cached copy of the positive is excluded, and only for its own query', () => {
        const manager = new nc.CacheManager(specs, 6, { backend });
        const loss = new nc.CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], scoreTransform: 20, numNegatives: 2, seed: 1, reducer: 'none' });
        const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'emb', dataKeys: ['id'], removeAccidentalHits: true });
        // Rows: id 7 twice (S = 60, 50), id 8 (S = 40), id 1 (S = 0), id 2 (S = -20), empty.
        manager.updateCache(handler.cache, { newItems: { emb: [[3], [2.5], [2], [0], [-1]], id: [[7], [7], [8], [1], [2]] } });
        const q = tf.tensor2d([[1], [1]]), p = tf.tensor2d([[0.5], [0.5]]);
        const out = handler.updateCacheAndComputeLoss(fixed(100), q, p, { id: [[7], [8]] });
        // Query 0 (id 7): candidates rows 2, 3, 4 -> draws rows 2, 3. Query 1 (id 8): rows 0, 1, 3, 4 -> draws rows 0, 1.
        assert.strictEqual(handler.lastMetrics.accidentalHits, 3);
        const emb = Array.from(handler.cache.read('emb'));
        assert.deepStrictEqual(emb.slice(0, 4), [100, 100, 100, 100]);
        close(handler.lastMetrics.interpretableLoss,
          ((logAddExp(10, logSumExp([40, 0, -20])) - 10) + (logAddExp(10, logSumExp([60, 50, 0, -20])) - 10)) / 2);
        tf.dispose([q, p, out]);
        handler.dispose();
      });
    });
  }

  it('MultiCacheLossHandler: copies in any source are excluded (global rows of the concatenated sources)', () => {
    const managers = { a: new nc.CacheManager(specs, 3), b: new nc.CacheManager(specs, 3) };
    const loss = new nc.CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'], scoreTransform: 20, numNegatives: 3, seed: 2 });
    const handler = new nc.MultiCacheLossHandler(managers, loss, { embeddingKey: 'emb', dataKeys: ['id'], removeAccidentalHits: true });
    // a = rows 0..2 (ids 1, 2, 3; S = 20, 0, -20), b = rows 3..5 (ids 4, 7, 7; S = -40, 60, 50).
    managers.a.updateCache(handler.caches.a, { newItems: { emb: [[1], [0], [-1]], id: [[1], [2], [3]] } });
    managers.b.updateCache(handler.caches.b, { newItems: { emb: [[-2], [3], [2.5]], id: [[4], [7], [7]] } });
    const q = tf.tensor2d([[1]]), p = tf.tensor2d([[0.5]]), e = tf.tensor2d([[0.5]]);
    const out = handler.updateCacheAndComputeLoss(fixed(100), q, p, { a: e }, { a: { id: [[7]] } });
    assert.strictEqual(handler.lastMetrics.accidentalHits, 2);
    // The 3 draws are a's rows (the best left); b's copies keep their embeddings, b's row 3 (S = -40) is not drawn.
    assert.deepStrictEqual(Array.from(handler.caches.b.read('emb')), [-2, 3, 2.5]);
    close(handler.lastMetrics.interpretableLoss, logAddExp(10, logSumExp([20, 0, -20, -40])) - 10);
    // The sources' new items must be the positives row by row.
    assert.throws(() => handler.updateCacheAndComputeLoss(fixed(1), q, p, {}, {}),
      (err) => err instanceof RangeError && /newItemFeatures must be .*removeAccidentalHits.*\(1 rows in all\); got 0 rows/.test(err.message));
    tf.dispose([q, p, e, out]);
    handler.dispose();
  });
});

describe('removeAccidentalHits: validation and the default', () => {
  const manager = new nc.CacheManager(specs, 4);
  const loss = new nc.CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['id'] });
  const make = (v, l = loss, extra = {}) => new nc.CacheLossHandler(manager, l, { embeddingKey: 'emb', dataKeys: ['id'], removeAccidentalHits: v, ...extra });

  it('rejects what is not a boolean or a list of dataKeys (TypeError naming the option and the known keys)', () => {
    assert.throws(() => make('yes'), (e) => e instanceof TypeError && /options\.removeAccidentalHits must be a boolean or an array of dataKeys \("id"\); got "yes"/.test(e.message));
    assert.throws(() => make(['emb']), (e) => e instanceof TypeError && /removeAccidentalHits must be an array of dataKeys \("id"\); got an array with "emb"/.test(e.message));
    assert.throws(() => make([]), (e) => e instanceof TypeError && /removeAccidentalHits must be true, false or a non-empty array/.test(e.message));
    assert.throws(() => make(['id', 'id']), (e) => e instanceof TypeError && /removeAccidentalHits must be distinct/.test(e.message));
    assert.throws(() => make([3]), (e) => e instanceof TypeError && /got an array with 3/.test(e.message));
    assert.throws(() => make(true, { compute: () => null }), (e) => e instanceof TypeError && /removeAccidentalHits must be used with a CacheClassificationLoss/.test(e.message));
    assert.throws(() => new nc.CacheLossHandler(manager, loss, { embeddingKey: 'emb', dataKeys: [], removeAccidentalHits: true }),
      (e) => e instanceof TypeError && /removeAccidentalHits must be false when dataKeys is empty/.test(e.message));
    assert.throws(() => new nc.CacheLossHandler(manager, loss, { embeddingKey: 'emb', dataKeys: ['id'], removeAccidentalHit: true }),
      (e) => e instanceof TypeError && /unknown key 'removeAccidentalHit'/.test(e.message));
    // Shares the dedupe filter's index when the keys are the same.
    make(true, loss, { dedupe: true }).dispose();
  });

  for (const backend of BACKENDS) {
    it(`false (or omitted, or nothing to exclude) changes nothing (${backend})`, () => {
      const dim = 4, size = 32, batch = 6;
      const runs = [{}, { removeAccidentalHits: false }, { removeAccidentalHits: true }].map((opt) => {
        const m = new nc.CacheManager({ e: { shape: [dim], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } }, size, { backend });
        const l = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['id'], scoreTransform: 3, numNegatives: 2, seed: 9 });
        const h = new nc.CacheLossHandler(m, l, { embeddingKey: 'e', dataKeys: ['id'], ...opt });
        const rr = rng(11);
        const emb = Array.from({ length: 20 }, () => Array.from({ length: dim }, () => rr.normal()));
        m.updateCache(h.cache, { newItems: { e: emb, id: emb.map((_, j) => [j]) } });
        const losses = [];
        for (let s = 0; s < 3; s++) {
          // Positives with ids never cached (100 + ...): nothing to exclude.
          const q = tf.tensor2d(Array.from({ length: batch * dim }, () => rr.normal()), [batch, dim]);
          const p = tf.tensor2d(Array.from({ length: batch * dim }, () => rr.normal()), [batch, dim]);
          const out = h.updateCacheAndComputeLoss((d) => tf.mul(tf.ones([d.id.shape[0], dim]), tf.cast(d.id, 'float32')), q, p,
            { id: Array.from({ length: batch }, (_, b) => [100 + s * batch + b]) });
          losses.push(out.dataSync()[0], h.lastMetrics.interpretableLoss, h.lastMetrics.accidentalHits);
          tf.dispose([q, p, out]);
        }
        const state = [Array.from(h.cache.read('e')), Array.from(h.cache.read('id'))];
        h.dispose();
        return { losses, state };
      });
      assert.deepStrictEqual(runs[1], runs[0]);
      assert.deepStrictEqual(runs[2], runs[0]);
    });
  }
});

// ---------------------------------------------------------------- kernels

const kernelKinds = ['js', ...(addon ? ['native'] : [])];

/** A store of `kind` with `size` rows of dimension `dim`; rows with r.next() < fill are written. */
function makeStore(kind, values, filledRows, size, dim) {
  const s = createStore(kind, [{ key: 'emb', dtype: 'float32', storage: 'float32', width: dim }], size);
  const upd = new Float32Array(filledRows.length * dim);
  filledRows.forEach((row, i) => upd.set(values.subarray(row * dim, (row + 1) * dim), i * dim));
  if (filledRows.length > 0) {
    s.update({ useLru: true, numUpdated: filledRows.length, updatedValues: { emb: upd }, updatedIndices: Int32Array.from(filledRows),
      updatedMask: null, numNew: 0, newValues: {}, newMask: null });
  }
  return s;
}

/** Random per-query exclusion lists (repeats, some queries excluding everything or nothing). */
function randomExclusions(r, batch, total) {
  const offsets = new Int32Array(batch + 1);
  const rows = [];
  for (let b = 0; b < batch; b++) {
    const kind = r.int(6);
    const count = kind === 0 ? 0 : kind === 1 ? total : r.int(Math.min(total, 30) + 1);
    for (let i = 0; i < count; i++) {
      const j = kind === 1 ? i : r.int(total);
      rows.push(j);
      if (r.next() < 0.2) rows.push(j);
    }
    offsets[b + 1] = rows.length;
  }
  return { exclusions: Int32Array.from(rows), exclusionOffsets: offsets };
}

/** Brute force: per query the lse over its candidates and its k best perturbed scores (the Philox oracle). */
function oracle(S, batch, total, candidate, params) {
  const lse = [], draws = [], counts = [];
  for (let b = 0; b < batch; b++) {
    const cols = [];
    for (let j = 0; j < total; j++) if (candidate(b, j)) cols.push(j);
    counts.push(cols.length);
    lse.push(cols.length === 0 ? -Infinity : logSumExp(cols.map((j) => S[b * total + j])));
    const keyed = cols.map((j) => {
      const s = S[b * total + j];
      return [params.mode === 'max' ? s : params.invTemp * s + gumbelNoise(params.seed, params.call, b, j), j];
    });
    keyed.sort((x, y) => y[0] - x[0] || x[1] - y[1]);
    for (let i = 0; i < params.numDraws; i++) draws.push(i < keyed.length ? keyed[i][1] : -1);
  }
  return { lse, draws, counts };
}

describe('per-query exclusions in the kernels', () => {
  it('scoreAndSample and scoreGroupMax leave each query\'s excluded rows out: every backend equals the brute force oracle, native equals JS', function () {
    this.timeout(60000);
    const r = rng(43);
    let cases = 0;
    for (let trial = 0; trial < 16; trial++) {
      const dim = 1 + r.int(12), batch = 1 + r.int(20);
      const sizes = trial % 3 === 0 ? [40, 1, 75] : [1 + r.int(600)];
      const total = sizes.reduce((a, b) => a + b, 0);
      const fill = trial % 2 ? 1 : 0.6;
      const srcValues = sizes.map((n) => new Float32Array(n * dim).map(() => r.normal()));
      const srcFilled = sizes.map((n) => Array.from({ length: n }, (_, i) => i).filter(() => fill >= 1 || r.next() < fill));
      const stores = Object.fromEntries(kernelKinds.map((kind) => [kind, sizes.map((n, i) => makeStore(kind, srcValues[i], srcFilled[i], n, dim))]));
      const filled = new Uint8Array(total);
      let off = 0;
      sizes.forEach((n, i) => { for (const row of srcFilled[i]) filled[off + row] = 1; off += n; });
      const queries = new Float32Array(batch * dim).map(() => r.normal() / Math.sqrt(dim));
      const scale = trial % 4 === 0 ? 1 : 10;
      const ex = randomExclusions(r, batch, total);
      const excluded = new Set();
      for (let b = 0; b < batch; b++) for (let i = ex.exclusionOffsets[b]; i < ex.exclusionOffsets[b + 1]; i++) excluded.add(b * total + ex.exclusions[i]);
      const candidate = (b, j) => filled[j] === 1 && !excluded.has(b * total + j);
      const req = (kind) => ({ queries, batch, dim, sources: stores[kind].map((store) => ({ store, key: 'emb' })), scale, scoreEmptyRows: false, ...ex });
      const S = jsKernels.scoreMatrix({ ...req('js'), exclusions: undefined, exclusionOffsets: undefined });
      for (const params of [
        { mode: 'gumbel', invTemp: 1, numDraws: 1 }, { mode: 'gumbel', invTemp: 0.5, numDraws: 4 }, { mode: 'max', invTemp: 1, numDraws: 3 },
      ]) {
        const p = { ...params, seed: 1000 + trial, call: trial % 3 };
        const want = oracle(S, batch, total, candidate, p);
        const results = {};
        // Native: the dispatched tier (AVX2 where the CPU has it), then the forced baseline.
        for (const kind of [...kernelKinds, ...(addon ? ['native-baseline'] : [])]) {
          const base = kind === 'native-baseline';
          if (base) addon.setForceBaseline(true);
          let got;
          try { got = kernelsFor(base ? 'native' : kind).scoreAndSample(req(base ? 'native' : kind), p); } finally { if (base) addon.setForceBaseline(false); }
          results[kind] = got;
          const what = `${kind} trial ${trial} ${p.mode} k=${p.numDraws}`;
          assert.deepStrictEqual(Array.from(got.candidates), want.counts, `${what}: candidates`);
          assert.deepStrictEqual(Array.from(got.indices), want.draws, `${what}: draws`);
          for (let b = 0; b < batch; b++) {
            if (want.lse[b] === -Infinity) assert.strictEqual(got.lse[b], -Infinity, `${what}: lse ${b}`);
            else close(got.lse[b], want.lse[b], 2e-6);
          }
          cases++;
        }
        if (results.native) {
          assert.deepStrictEqual(Array.from(results.native.indices), Array.from(results.js.indices), 'native = JS draws');
          for (let b = 0; b < batch; b++) {
            if (results.js.lse[b] === -Infinity) assert.strictEqual(results.native.lse[b], -Infinity);
            else assert.ok(Math.abs(results.native.lse[b] - results.js.lse[b]) <= 1e-5 * Math.abs(results.js.lse[b]) + 1e-6,
              `native lse ${results.native.lse[b]} vs js ${results.js.lse[b]}`);
          }
        }
      }
      // Group max: each group's best candidate of the query, -1 when none is left.
      const groups = 1 + r.int(Math.min(total, 40));
      for (const kind of kernelKinds) {
        const gm = kernelsFor(kind).scoreGroupMax(req(kind), groups);
        for (let b = 0; b < batch; b++) {
          for (let g = 0; g < groups; g++) {
            let best = -1;
            for (let j = Math.floor(g * total / groups); j < Math.floor((g + 1) * total / groups); j++) {
              if (candidate(b, j) && (best < 0 || S[b * total + j] > S[b * total + best])) best = j;
            }
            assert.strictEqual(gm.rows[b * groups + g], best, `${kind} group max b=${b} g=${g}`);
          }
        }
      }
      for (const list of Object.values(stores)) for (const s of list) s.dispose();
    }
    assert.ok(cases >= 16 * 3 * kernelKinds.length);
  });

  for (const kind of kernelKinds) {
    it(`draws with exclusions follow the softmax renormalized over the rows left (chi-square, ${kind})`, () => {
      const S = [2.0, 1.5, 1.0, 0.5, 0.0, -0.5, -1.0, 0.3, 1.2, -2.0];
      const store = makeStore(kind, Float32Array.from(S), S.map((_, j) => j), S.length, 1);
      const n = 20000;
      // Every query excludes rows 0 and 8 (the two most likely), query b also row 1 when b is odd.
      const offsets = new Int32Array(n + 1), rows = [];
      for (let b = 0; b < n; b++) { rows.push(8, 0); if (b % 2) rows.push(1); offsets[b + 1] = rows.length; }
      const res = kernelsFor(kind).scoreAndSample({
        queries: new Float32Array(n).fill(1), batch: n, dim: 1, sources: [{ store, key: 'emb' }], scale: 1, scoreEmptyRows: false,
        exclusions: Int32Array.from(rows), exclusionOffsets: offsets,
      }, { mode: 'gumbel', invTemp: 1, numDraws: 1, seed: 77, call: 0 });
      for (const odd of [0, 1]) {
        const left = S.map((_, j) => j).filter((j) => j !== 0 && j !== 8 && !(odd && j === 1));
        const z = logSumExp(left.map((j) => S[j]));
        const counts = new Map(left.map((j) => [j, 0]));
        let m = 0;
        for (let b = odd; b < n; b += 2, m++) {
          const j = res.indices[b];
          assert.ok(counts.has(j), `query ${b} drew row ${j}, which it excludes`);
          counts.set(j, counts.get(j) + 1);
        }
        let x = 0;
        for (const j of left) { const e = m * Math.exp(S[j] - z); x += (counts.get(j) - e) ** 2 / e; }
        // Critical values at p = 1e-3: df 7 -> 24.32, df 6 -> 22.46.
        assert.ok(x < (odd ? 22.46 : 24.32), `chi-square ${x.toFixed(2)} (${left.length - 1} df)`);
        for (let b = odd; b < n; b += 2) close(res.lse[b], z, 1e-5);
      }
      store.dispose();
    });
  }

  it('bad exclusion arrays are TypeError / RangeError naming them, in the binding and the JS kernels', function () {
    const dim = 2;
    for (const kind of kernelKinds) {
      const store = makeStore(kind, new Float32Array(10 * dim).fill(1), [0, 1, 2], 10, dim);
      const base = { queries: new Float32Array(2 * dim), batch: 2, dim, sources: [{ store, key: 'emb' }], scale: 1, scoreEmptyRows: false };
      const params = { mode: 'gumbel', invTemp: 1, numDraws: 1, seed: 1, call: 0 };
      const k = kernelsFor(kind);
      const bad = [
        [{ exclusions: new Int32Array([0]), exclusionOffsets: new Int32Array([0, 1]) }, RangeError, /request\.exclusionOffsets must be an Int32Array of length 3/],
        [{ exclusions: new Int32Array([0, 1]), exclusionOffsets: new Int32Array([0, 2, 1]) }, RangeError, /request\.exclusionOffsets must be non-decreasing/],
        [{ exclusions: new Int32Array([0, 1]), exclusionOffsets: new Int32Array([1, 1, 2]) }, RangeError, /request\.exclusionOffsets must be 0 at index 0/],
        [{ exclusions: new Int32Array([0, 10]), exclusionOffsets: new Int32Array([0, 1, 2]) }, RangeError, /request\.exclusions must be rows in \[0, 10\); got 10 at index 1/],
        [{ exclusions: new Int32Array([0]), exclusionOffsets: new Int32Array([0, 1, 2]) }, RangeError, /request\.exclusions must be an Int32Array of length 2/],
        [{ exclusions: new Float32Array([0, 1]), exclusionOffsets: new Int32Array([0, 1, 2]) }, TypeError, /request\.exclusions/],
        [{ exclusionOffsets: new Int32Array([0, 1, 2]) }, TypeError, /request\.exclusions/],
      ];
      for (const [extra, type, re] of bad) {
        assert.throws(() => k.scoreAndSample({ ...base, ...extra }, params), (e) => e instanceof type && re.test(e.message), `${kind} ${re}`);
        assert.throws(() => k.scoreGroupMax({ ...base, ...extra }, 2), (e) => e instanceof type && re.test(e.message), `${kind} groupMax ${re}`);
      }
      // Empty lists are fine and change nothing.
      const plain = k.scoreAndSample(base, params);
      const empty = k.scoreAndSample({ ...base, exclusions: new Int32Array(0), exclusionOffsets: new Int32Array(3) }, params);
      assert.deepStrictEqual(empty, plain);
      store.dispose();
    }
  });
});
