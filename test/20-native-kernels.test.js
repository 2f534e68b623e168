'use strict';
// The native kernels through the addon, cross-checked against the pure-JS
// reference kernels on random inputs (several sources, float16 / bfloat16,
// partly filled caches, k > 1, topK groups, explicit candidate matrices), the
// same draws for 1 and 2 threads, and bad input -> TypeError / RangeError.
// test/21-baseline-isa.test.js reruns this file on the forced baseline path,
// test/23-isa-tiers.test.js under each other usable tier (NEGATIVE_CACHE_ISA).
const assert = require('assert');
const { loadAddon, createStore, kernelsFor, jsKernels } = require('./helpers/internals');
const { rng } = require('./helpers/rng');

const addon = loadAddon();

/** A pair of stores (native, js) with identical contents; `fill` = fraction of rows filled. */
function makeStores(r, size, dim, storage, fill) {
  const cols = [{ key: 'emb', dtype: 'float32', storage, width: dim }, { key: 'id', dtype: 'int32', storage: 'int32', width: 1 }];
  const values = new Float32Array(size * dim).map(() => r.normal());
  const stores = { native: createStore('native', cols, size), js: jsKernels ? createStore('js', cols, size) : null };
  let indices = [];
  for (let i = 0; i < size; i++) if (r.next() < fill) indices.push(i);
  if (fill >= 1) indices = Array.from({ length: size }, (_, i) => i);
  const upd = new Float32Array(indices.length * dim);
  indices.forEach((row, i) => upd.set(values.subarray(row * dim, (row + 1) * dim), i * dim));
  const update = {
    useLru: true, numUpdated: indices.length, updatedValues: { emb: upd }, updatedIndices: Int32Array.from(indices),
    updatedMask: null, numNew: 0, newValues: {}, newMask: null,
  };
  for (const s of Object.values(stores)) if (s && indices.length > 0) s.update(update);
  return stores;
}

function request(r, stores, batch, dim, opts = {}) {
  const queries = new Float32Array(batch * dim).map(() => r.normal() / Math.sqrt(dim));
  const mk = (kind) => ({
    queries, batch, dim, sources: stores.map((s) => ({ store: s[kind], key: 'emb' })),
    scale: opts.scale ?? 1, scoreEmptyRows: opts.scoreEmptyRows ?? false, threads: opts.threads,
  });
  return { native: mk('native'), js: jsKernels ? mk('js') : null };
}

const near = (a, b, tol) => Math.abs(a - b) <= tol * (1 + Math.abs(b));

/** Draw lists agree, except for swaps between entries whose perturbed scores nearly tie. */
function assertSameDraws(got, want, k, what, nearTie) {
  let differing = 0;
  for (let i = 0; i < got.indices.length; i++) {
    if (got.indices[i] !== want.indices[i]) {
      differing++;
      assert.ok(nearTie(Math.floor(i / k), got.indices[i], want.indices[i]), `${what}: draw ${i}: native ${got.indices[i]} vs js ${want.indices[i]}`);
    } else if (got.indices[i] >= 0) {
      assert.ok(near(got.scores[i], want.scores[i], 1e-4), `${what}: score ${i}: ${got.scores[i]} vs ${want.scores[i]}`);
    } else {
      assert.ok(Number.isNaN(got.scores[i]), `${what}: score of a missing draw must be NaN`);
    }
  }
  assert.ok(differing <= Math.max(1, got.indices.length / 100), `${what}: ${differing} draws differ`);
  for (let b = 0; b < got.lse.length; b++) {
    if (want.lse[b] === -Infinity) assert.strictEqual(got.lse[b], -Infinity, `${what}: lse ${b}`);
    else assert.ok(near(got.lse[b], want.lse[b], 2e-4), `${what}: lse ${b}: ${got.lse[b]} vs ${want.lse[b]}`);
  }
  assert.deepStrictEqual(Array.from(got.candidates), Array.from(want.candidates), `${what}: candidates`);
}

const describeNative = addon ? describe : describe.skip;

describeNative(`native kernels (tier ${addon ? addon.cpuFeatures().tier : 'n/a'})`, function () {
  const native = addon ? kernelsFor('native') : null;

  it('reports CPU features and the path in use', () => {
    const f = addon.cpuFeatures();
    for (const k of ['avx2', 'fma', 'f16c', 'usingAvx2']) assert.strictEqual(typeof f[k], 'boolean');
    // usingAvx2: the AVX2 tier runs (an AVX-512 CPU runs the avx512 tier unless capped).
    assert.strictEqual(f.usingAvx2, f.tier === 'avx2');
    if (process.env.NEGATIVE_CACHE_FORCE_BASELINE === '1') assert.strictEqual(f.tier, 'baseline');
    else if (!process.env.NEGATIVE_CACHE_ISA) assert.strictEqual(f.tier, f.usableTiers[0]);
    else if (f.usableTiers.includes(process.env.NEGATIVE_CACHE_ISA)) assert.strictEqual(f.tier, process.env.NEGATIVE_CACHE_ISA);
  });

  it('worked example: known scores, lse and max draws', () => {
    const r = rng(1);
    const stores = makeStores(r, 3, 2, 'float32', 1);
    // Overwrite with known rows e0 = [1, 0], e1 = [0, 1], e2 = [1, 1].
    stores.native.update({
      useLru: false, numUpdated: 3, updatedValues: { emb: new Float32Array([1, 0, 0, 1, 1, 1]) },
      updatedIndices: new Int32Array([0, 1, 2]), updatedMask: null, numNew: 0, newValues: {}, newMask: null,
    });
    const req = {
      queries: new Float32Array([2, 1]), batch: 1, dim: 2, sources: [{ store: stores.native, key: 'emb' }],
      scale: 0.5, scoreEmptyRows: false,
    };
    assert.deepStrictEqual(Array.from(native.scoreMatrix(req)), [1, 0.5, 1.5]);
    const res = native.scoreAndSample(req, { mode: 'max', invTemp: 1, numDraws: 4, seed: 0, call: 0 });
    assert.deepStrictEqual(Array.from(res.indices), [2, 0, 1, -1]);
    assert.deepStrictEqual(Array.from(res.scores.subarray(0, 3)), [1.5, 1, 0.5]);
    assert.ok(Number.isNaN(res.scores[3]));
    assert.ok(near(res.lse[0], Math.log(Math.exp(1) + Math.exp(0.5) + Math.exp(1.5)), 1e-6));
    assert.deepStrictEqual(Array.from(res.candidates), [3]);
    const g = native.scoreGroupMax(req, 2);  // groups [0, 1) and [1, 3)
    assert.deepStrictEqual(Array.from(g.rows), [0, 2]);
  });

  it('an empty cache: no candidates, lse -Infinity, no draws', () => {
    const r = rng(2);
    const stores = makeStores(r, 40, 8, 'float32', 0);
    const req = request(r, [stores], 3, 8).native;
    const res = native.scoreAndSample(req, { mode: 'gumbel', invTemp: 1, numDraws: 2, seed: 5, call: 0 });
    assert.deepStrictEqual(Array.from(res.indices), [-1, -1, -1, -1, -1, -1]);
    assert.deepStrictEqual(Array.from(res.lse), [-Infinity, -Infinity, -Infinity]);
    assert.deepStrictEqual(Array.from(res.candidates), [0, 0, 0]);
    const all = native.scoreAndSample({ ...req, scoreEmptyRows: true }, { mode: 'gumbel', invTemp: 1, numDraws: 2, seed: 5, call: 0 });
    assert.deepStrictEqual(Array.from(all.candidates), [40, 40, 40]);
    assert.ok(near(all.lse[0], Math.log(40), 1e-5), 'all-zero rows score 0: lse = log N');
  });

  it('draws are identical for 1 and 2 threads (and run to run)', () => {
    const r = rng(3);
    const stores = makeStores(r, 30000, 24, 'float16', 0.7);
    const reqs = request(r, [stores], 19, 24, { scale: 5 });
    const params = { mode: 'gumbel', invTemp: 0.7, numDraws: 4, seed: 2 ** 40 + 17, call: 9 };
    const one = native.scoreAndSample({ ...reqs.native, threads: 1 }, params);
    const two = native.scoreAndSample({ ...reqs.native, threads: 2 }, params);
    const again = native.scoreAndSample({ ...reqs.native, threads: 2 }, params);
    assert.deepStrictEqual(two, one);
    assert.deepStrictEqual(again, one);
    const other = native.scoreAndSample(reqs.native, { ...params, call: 10 });
    assert.notDeepStrictEqual(Array.from(other.indices), Array.from(one.indices), 'a new call draws new noise');
  });

  const crossIt = jsKernels ? it : it.skip;

  crossIt('scoreAndSample matches the JS kernels on random inputs', function () {
    this.timeout(300000);
    const r = rng(4);
    const shapes = [
      { batch: 1, dim: 1, sizes: [1], storage: 'float32', fill: 1 },
      { batch: 5, dim: 7, sizes: [50, 13], storage: 'float32', fill: 0.5 },
      { batch: 17, dim: 33, sizes: [1001], storage: 'float16', fill: 0.8 },
      { batch: 9, dim: 16, sizes: [300, 301, 5], storage: 'bfloat16', fill: 0.9 },
      { batch: 33, dim: 64, sizes: [4000], storage: 'float32', fill: 0.05 },
      { batch: 3, dim: 5, sizes: [7], storage: 'float32', fill: 0.4 },
    ];
    for (const [si, sh] of shapes.entries()) {
      const stores = sh.sizes.map((n) => makeStores(r, n, sh.dim, sh.storage, sh.fill));
      for (const scoreEmptyRows of [false, true]) {
        const reqs = request(r, stores, sh.batch, sh.dim, { scale: si % 2 ? 20 : 1, scoreEmptyRows });
        const S = jsKernels.scoreMatrix(reqs.js);
        const nrows = S.length / sh.batch;
        const nat = native.scoreMatrix(reqs.native);
        for (let i = 0; i < S.length; i++) assert.ok(near(nat[i], S[i], 1e-4), `scoreMatrix ${i}: ${nat[i]} vs ${S[i]}`);
        for (const mode of ['gumbel', 'max', 'none']) {
          for (const numDraws of [1, 3]) {
            const params = { mode, invTemp: mode === 'gumbel' && numDraws === 3 ? 0.5 : 1, numDraws, seed: 1000 + si, call: numDraws };
            const what = `shape ${si} ${mode} k=${numDraws} empty=${scoreEmptyRows}`;
            const got = native.scoreAndSample(reqs.native, params);
            const want = jsKernels.scoreAndSample(reqs.js, params);
            assertSameDraws(got, want, numDraws, what, (b, x, y) => x >= 0 && y >= 0 && Math.abs(S[b * nrows + x] - S[b * nrows + y]) < 1e-4 * (1 + Math.abs(S[b * nrows + y])) * 10 + (mode === 'gumbel' ? 1e-3 : 0));
          }
        }
        const groups = 1 + r.int(Math.min(nrows, 40));
        const gn = native.scoreGroupMax(reqs.native, groups);
        const gj = jsKernels.scoreGroupMax(reqs.js, groups);
        for (let i = 0; i < gj.rows.length; i++) {
          if (gn.rows[i] !== gj.rows[i]) {
            assert.ok(gn.rows[i] >= 0 && near(gn.scores[i], gj.scores[i], 1e-5), `group ${i}: native ${gn.rows[i]} vs js ${gj.rows[i]}`);
          } else if (gj.rows[i] < 0) {
            assert.strictEqual(gn.scores[i], -Infinity);
          } else {
            assert.ok(near(gn.scores[i], gj.scores[i], 1e-4));
          }
        }
      }
    }
  });

  crossIt('sampleCandidates matches the JS kernels', () => {
    const r = rng(5);
    for (let t = 0; t < 12; t++) {
      const batch = 1 + r.int(12), cols = 1 + r.int(200);
      const scores = new Float32Array(batch * cols).map(() => (r.next() < 0.2 ? -Infinity : 3 * r.normal()));
      if (t === 0) scores.fill(-Infinity, 0, cols);
      const params = { mode: ['gumbel', 'max', 'none'][t % 3], invTemp: t % 2 ? 1 : 2, numDraws: 1 + r.int(5), seed: t * 7919, call: t };
      const got = native.sampleCandidates(scores, batch, cols, params);
      const want = jsKernels.sampleCandidates(scores, batch, cols, params);
      assert.deepStrictEqual(Array.from(got.indices), Array.from(want.indices), `trial ${t}`);
      assert.deepStrictEqual(Array.from(got.candidates), Array.from(want.candidates));
      for (let b = 0; b < batch; b++) {
        if (want.lse[b] === -Infinity) assert.strictEqual(got.lse[b], -Infinity);
        else assert.ok(near(got.lse[b], want.lse[b], 1e-5));
      }
    }
  });

  describe('bad input throws TypeError / RangeError and changes nothing', () => {
    const r = rng(6);
    const stores = addon ? makeStores(r, 20, 4, 'float32', 1) : null;
    const good = () => ({
      queries: new Float32Array(8), batch: 2, dim: 4, segments: [{ store: stores.native.handle, column: 0 }],
      scale: 1, scoreEmptyRows: false, threads: 0,
    });
    const params = () => ({ mode: 0, invTemp: 1, numDraws: 1, seed: 0, call: 0 });
    const out = (b = 2, k = 1) => ({ indices: new Int32Array(b * k), scores: new Float32Array(b * k), lse: new Float32Array(b), candidates: new Int32Array(b) });
    const cases = [
      ['queries length', (q) => { q.queries = new Float32Array(7); }, RangeError, /request\.queries/],
      ['queries type', (q) => { q.queries = new Float64Array(8); }, TypeError, /request\.queries/],
      ['queries NaN', (q) => { q.queries[3] = NaN; }, RangeError, /finite/],
      ['dim mismatch', (q) => { q.dim = 2; q.queries = new Float32Array(4); }, RangeError, /width/],
      ['int column', (q) => { q.segments[0].column = 1; }, RangeError, /float column/],
      ['column out of range', (q) => { q.segments[0].column = 2; }, RangeError, /column/],
      ['foreign store', (q) => { q.segments[0].store = {}; }, TypeError, /store/],
      ['segments not array', (q) => { q.segments = 3; }, TypeError, /segments/],
      ['scale NaN', (q) => { q.scale = NaN; }, RangeError, /scale/],
      ['batch not integer', (q) => { q.batch = 1.5; }, RangeError, /batch/],
      ['threads negative', (q) => { q.threads = -1; }, RangeError, /threads/],
    ];
    for (const [name, mutate, Err, re] of cases) {
      it(name, () => {
        const q = good();
        mutate(q);
        const o = out();
        assert.throws(() => addon.scoreAndSample(q, params(), o), (e) => e instanceof Err && re.test(e.message));
        assert.deepStrictEqual(Array.from(o.indices), [0, 0], 'outputs untouched');
      });
    }
    it('params: numDraws 0, invTemp Infinity, negative seed, bad mode', () => {
      for (const [k, v, Err] of [['numDraws', 0, RangeError], ['invTemp', Infinity, RangeError], ['seed', -1, RangeError], ['mode', 3, RangeError], ['call', 'x', TypeError]]) {
        assert.throws(() => addon.scoreAndSample(good(), { ...params(), [k]: v }, out()), Err, k);
      }
    });
    it('outputs of the wrong size or type', () => {
      assert.throws(() => addon.scoreAndSample(good(), { ...params(), numDraws: 2 }, out(2, 1)), RangeError);
      assert.throws(() => addon.scoreAndSample(good(), params(), { ...out(), lse: new Float64Array(2) }), TypeError);
      assert.throws(() => addon.scoreAndSample(good(), params(), null), TypeError);
    });
    it('groups out of range, matrix of the wrong size', () => {
      assert.throws(() => addon.scoreGroupMax(good(), 0, new Float32Array(0), new Int32Array(0)), RangeError);
      assert.throws(() => addon.scoreGroupMax(good(), 21, new Float32Array(42), new Int32Array(42)), RangeError);
      assert.throws(() => addon.scoreGroupMax(good(), 4, new Float32Array(8), new Int32Array(7)), RangeError);
      assert.throws(() => addon.scoreMatrix(good(), new Float32Array(39)), RangeError);
    });
    it('sampleCandidates rejects NaN / +Infinity scores and bad shapes', () => {
      const s = new Float32Array(6);
      s[4] = NaN;
      assert.throws(() => addon.sampleCandidates(s, 2, 3, params(), 0, out()), /NaN at index 4/);
      s[4] = Infinity;
      assert.throws(() => addon.sampleCandidates(s, 2, 3, params(), 0, out()), RangeError);
      assert.throws(() => addon.sampleCandidates(new Float32Array(5), 2, 3, params(), 0, out()), RangeError);
    });
    it('a disposed store is rejected', () => {
      const s2 = makeStores(r, 5, 4, 'float32', 1).native;
      const q = good();
      q.segments = [{ store: s2.handle, column: 0 }];
      s2.dispose();
      assert.throws(() => addon.scoreAndSample(q, params(), out()), /disposed/);
    });
    it('the KernelBackend rejects a non-native store', () => {
      if (!jsKernels) return;
      const js = makeStores(r, 5, 4, 'float32', 1).js;
      const req = { queries: new Float32Array(4), batch: 1, dim: 4, sources: [{ store: js, key: 'emb' }], scale: 1, scoreEmptyRows: false };
      assert.throws(() => native.scoreAndSample(req, { mode: 'gumbel', invTemp: 1, numDraws: 1, seed: 0, call: 0 }), TypeError);
    });
    it('the JS kernels reject a native store (they read JS stores in place, never copy a column)', () => {
      const nat = makeStores(r, 5, 4, 'float32', 1).native;
      const req = { queries: new Float32Array(4), batch: 1, dim: 4, sources: [{ store: nat, key: 'emb' }], scale: 1, scoreEmptyRows: false };
      const params = { mode: 'gumbel', invTemp: 1, numDraws: 1, seed: 0, call: 0 };
      for (const call of [() => jsKernels.scoreAndSample(req, params), () => jsKernels.scoreGroupMax(req, 1), () => jsKernels.scoreMatrix(req)]) {
        assert.throws(call, (e) => e instanceof TypeError && /sources\[0\]\.store must be a JS cache store/.test(e.message));
      }
      nat.dispose();
    });
  });
});
