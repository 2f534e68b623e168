'use strict';
// The CUDA backend. Without a usable device: the addon still loads, reports
// why CUDA is unavailable, 'auto' falls back, and asking for 'cuda' fails with
// that reason instead of crashing. On a device: the CUDA store and kernels
// against the native (CPU) ones on random inputs (the C++ twin with more
// cases is test/cpp/cuda_test.cc).
const assert = require('assert');
const { loadAddon, createStore, kernelsFor, resolveBackend, availableBackends } = require('./helpers/internals');
const nc = require('..');
const { rng } = require('./helpers/rng');

const addon = loadAddon();
const cuda = addon ? addon.cuda : null;
const usable = !!cuda && cuda.built && cuda.available();

describe('CUDA backend', () => {
  it('addon.cuda reports built / available / deviceCount / error', function () {
    if (!addon) this.skip();
    assert.strictEqual(typeof cuda.built, 'boolean');
    assert.strictEqual(typeof cuda.available(), 'boolean');
    assert.strictEqual(typeof cuda.deviceCount(), 'number');
    assert.strictEqual(typeof cuda.error(), 'string');
    if (cuda.available()) assert.strictEqual(cuda.error(), '');
    else assert.ok(cuda.error().length > 0, 'an unavailable backend must say why');
  });

  describe('without a usable device', () => {
    before(function () {
      if (!addon || usable) this.skip();
    });

    it("is not listed and 'auto' resolves to native", () => {
      assert.ok(!availableBackends().includes('cuda'));
      const saved = process.env.NEGATIVE_CACHE_BACKEND;
      delete process.env.NEGATIVE_CACHE_BACKEND;
      try {
        assert.strictEqual(resolveBackend('auto'), 'native');
        assert.strictEqual(new nc.CacheManager({ e: { shape: [4], dtype: 'float32' } }, 8).backend, 'native');
      } finally {
        if (saved !== undefined) process.env.NEGATIVE_CACHE_BACKEND = saved;
      }
    });

    it("backend: 'cuda' throws with the reason, and the process goes on", () => {
      const reason = cuda.built ? cuda.error() : 'without CUDA';
      assert.throws(() => new nc.CacheManager({ e: { shape: [4], dtype: 'float32' } }, 8, { backend: 'cuda' }),
        (e) => e instanceof Error && e.message.includes(reason));
      // The native backend still works afterwards.
      const m = new nc.CacheManager({ e: { shape: [2], dtype: 'float32' } }, 4, { backend: 'native' });
      const c = m.initCache();
      m.updateCache(c, { newItems: { e: [[1, 2]] } });
      assert.deepStrictEqual(Array.from(c.read('e')), [1, 2, 0, 0, 0, 0, 0, 0]);
      c.dispose();
    });

    it('the CUDA store and kernels fail with NegativeCacheError ERR_CUDA', function () {
      if (!cuda.built) this.skip();
      const { CudaCacheStore } = require('./helpers/internals');
      const cols = [{ key: 'e', dtype: 'float32', storage: 'bfloat16', width: 8 }];
      assert.throws(() => new CudaCacheStore(addon, cols, 16),
        (e) => e instanceof nc.NegativeCacheError && e.code === 'ERR_CUDA' && e.message.includes(cuda.error()));
      assert.throws(() => new cuda.CacheStore([{ name: 'e', storage: 2, width: 8 }], 16),
        (e) => e.code === 'ERR_CUDA' && /cudaGetDeviceCount|no CUDA device|compute capability|context/.test(e.message));
      assert.throws(() => cuda.device(), (e) => e.code === 'ERR_CUDA');
      // Bad arguments are still TypeErrors/RangeErrors, before any device work.
      assert.throws(() => cuda.setQuerySplits(4), RangeError);
    });
  });

  describe('on a device (cross-checked against the CPU backend)', function () {
    this.timeout(120000);
    before(function () {
      if (!usable) this.skip();
    });

    const columns = [
      { key: 'f32', dtype: 'float32', storage: 'float32', width: 3 },
      { key: 'f16', dtype: 'float32', storage: 'float16', width: 5 },
      { key: 'bf16', dtype: 'float32', storage: 'bfloat16', width: 4 },
      { key: 'id', dtype: 'int32', storage: 'int32', width: 2 },
    ];
    const values = (r, c, n) => (c.storage === 'int32'
      ? Int32Array.from({ length: n * c.width }, () => r.int(1000) - 500)
      : Float32Array.from({ length: n * c.width }, () => r.normal() * 3));

    it('the store follows the CPU store exactly through random updates', () => {
      const r = rng(5);
      const size = 29;
      const cpu = createStore('native', columns, size);
      const gpu = createStore('cuda', columns, size);
      assert.strictEqual(gpu.kind, 'cuda');
      const same = (what) => {
        for (const c of columns) assert.deepStrictEqual(gpu.readColumn(c.key), cpu.readColumn(c.key), `${what}: ${c.key}`);
        assert.deepStrictEqual(gpu.readAge(), cpu.readAge(), `${what}: age`);
        assert.deepStrictEqual(gpu.readFilled(), cpu.readFilled(), `${what}: filled`);
      };
      for (let step = 0; step < 40; step++) {
        const numUpdated = r.int(8), numNew = r.int(10);
        const updatedValues = {}, newValues = {};
        for (const c of columns) {
          if (r.next() < 0.75) updatedValues[c.key] = values(r, c, numUpdated);
          newValues[c.key] = values(r, c, numNew);
        }
        const u = {
          useLru: step % 3 !== 0, numUpdated, updatedValues,
          updatedIndices: Int32Array.from({ length: numUpdated }, () => r.int(size)),
          updatedMask: step % 2 ? Uint8Array.from({ length: numUpdated }, () => (r.next() < 0.8 ? 1 : 0)) : null,
          numNew, newValues, newMask: step % 4 ? Uint8Array.from({ length: numNew }, () => (r.next() < 0.8 ? 1 : 0)) : null,
        };
        const insCpu = new Int32Array(numNew), insGpu = new Int32Array(numNew);
        cpu.update({ ...u, insertedRows: insCpu });
        gpu.update({ ...u, insertedRows: insGpu });
        assert.deepStrictEqual(insGpu, insCpu, `step ${step}: inserted rows`);
        same(`step ${step}`);
      }
      const rows = Int32Array.from([0, 28, 3, 3]);
      for (const c of columns) assert.deepStrictEqual(gpu.gatherRows(c.key, rows), cpu.gatherRows(c.key, rows));
      assert.throws(() => gpu.update({
        useLru: true, numUpdated: 1, updatedValues: {}, updatedIndices: Int32Array.from([size]), updatedMask: null,
        numNew: 0, newValues: {}, newMask: null,
      }), RangeError);
      same('after a rejected update');
      cpu.dispose();
      gpu.dispose();
    });

    for (const storage of ['float32', 'float16', 'bfloat16']) {
      it(`kernels agree with the CPU kernels (${storage} rows, two sources, partly filled)`, () => {
        const r = rng(storage.length * 7);
        const dim = 48, batch = 90;
        const cols = [{ key: 'emb', dtype: 'float32', storage, width: dim }];
        const sizes = [200, 700];
        const stores = sizes.map((size) => {
          const pair = { native: createStore('native', cols, size), cuda: createStore('cuda', cols, size) };
          const idx = [];
          for (let i = 0; i < size; i++) if (r.next() < 0.7) idx.push(i);
          const u = {
            useLru: true, numUpdated: idx.length, updatedValues: { emb: values(r, cols[0], idx.length) },
            updatedIndices: Int32Array.from(idx), updatedMask: null, numNew: 0, newValues: {}, newMask: null,
          };
          pair.native.update(u);
          pair.cuda.update(u);
          return pair;
        });
        const queries = Float32Array.from({ length: batch * dim }, () => r.normal() / Math.sqrt(dim));
        const req = (kind) => ({ queries, batch, dim, sources: stores.map((s) => ({ store: s[kind], key: 'emb' })), scale: 4, scoreEmptyRows: false });
        const kc = kernelsFor('cuda'), kn = kernelsFor('native');
        const tol = storage === 'bfloat16' ? 1e-3 : 1e-4;  // default bf16 query split: 2 terms
        const near = (a, b) => Math.abs(a - b) <= tol * (1 + Math.abs(b));

        const mc = kc.scoreMatrix(req('cuda')), mn = kn.scoreMatrix(req('native'));
        for (let i = 0; i < mn.length; i++) assert.ok(near(mc[i], mn[i]), `S[${i}]: ${mc[i]} vs ${mn[i]}`);

        for (const mode of ['gumbel', 'max']) {
          for (const numDraws of [1, 4]) {
            const params = { mode, invTemp: 1, numDraws, seed: 42, call: 2 };
            const gc = kc.scoreAndSample(req('cuda'), params), gn = kn.scoreAndSample(req('native'), params);
            assert.deepStrictEqual(gc.candidates, gn.candidates);
            for (let b = 0; b < batch; b++) assert.ok(near(gc.lse[b], gn.lse[b]), `lse ${b}: ${gc.lse[b]} vs ${gn.lse[b]}`);
            let same = 0;
            for (let i = 0; i < gn.indices.length; i++) if (gc.indices[i] === gn.indices[i]) same++;
            assert.ok(same >= 0.97 * gn.indices.length, `${mode} k=${numDraws}: ${same}/${gn.indices.length} draws agree`);
          }
        }
        for (const groups of [1, 9, 900]) {
          const gc = kc.scoreGroupMax(req('cuda'), groups), gn = kn.scoreGroupMax(req('native'), groups);
          let same = 0;
          for (let i = 0; i < gn.rows.length; i++) {
            if (gc.rows[i] === gn.rows[i]) {
              same++;
              if (gn.rows[i] >= 0) assert.ok(near(gc.scores[i], gn.scores[i]));
              else assert.strictEqual(gc.scores[i], -Infinity);
            }
          }
          assert.ok(same >= 0.97 * gn.rows.length, `groups ${groups}: ${same}/${gn.rows.length} agree`);
        }
        for (const s of stores) { s.native.dispose(); s.cuda.dispose(); }
      });
    }

    it("CacheManager with backend 'cuda' reproduces the worked example of docs/design.md", () => {
      const m = new nc.CacheManager({ 1: { shape: [2], dtype: 'int32' }, 2: { shape: [3], dtype: 'float32' } }, 4, { backend: 'cuda' });
      assert.strictEqual(m.backend, 'cuda');
      const c = m.initCache();
      const batch = (v) => ({ 1: [[v, v], [v, v]], 2: [[v, v, v], [v, v, v]] });
      m.updateCache(c, { newItems: batch(1) });
      assert.deepStrictEqual(Array.from(c.readAge()), [0, 0, 1, 1]);
      m.updateCache(c, { newItems: batch(2) });
      m.updateCache(c, { newItems: batch(3) });
      assert.deepStrictEqual(Array.from(c.read('1')), [3, 3, 3, 3, 2, 2, 2, 2]);
      assert.deepStrictEqual(Array.from(c.readAge()), [0, 0, 1, 1]);
      c.dispose();
    });
  });
});
