'use strict';
// CacheManager / NegativeCache: the worked examples of docs/design.md §3.1, inputs of every
// accepted kind, storage types, initCache, dispose, internal hooks; on every
// backend of this build (native and js).
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { storeOf, half } = require('./helpers/internals');

const { floatToHalf, halfToFloat, floatToBFloat16, bfloat16ToFloat } = half;

const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');
const SPECS = { 1: { shape: [2], dtype: 'int32' }, 2: { shape: [3], dtype: 'float32' } };
const arr = (x) => Array.from(x);
const rows = (n, width, v) => Array.from({ length: n }, () => new Array(width).fill(v));

for (const backend of BACKENDS) {
  describe(`CacheManager (${backend})`, () => {
    const manager = (specs = SPECS, size = 4, opts = {}) => new nc.CacheManager(specs, size, { backend, ...opts });

    it('a new cache is all zeros with ages 0', () => {
      const m = manager();
      assert.strictEqual(m.backend, backend);
      const c = m.initCache();
      assert.strictEqual(c.size, 4);
      assert.strictEqual(c.backend, backend);
      assert.ok(c.read('1') instanceof Int32Array);
      assert.ok(c.read('2') instanceof Float32Array);
      assert.deepStrictEqual(arr(c.read('1')), new Array(8).fill(0));
      assert.deepStrictEqual(arr(c.read('2')), new Array(12).fill(0));
      assert.deepStrictEqual(arr(c.readAge()), [0, 0, 0, 0]);
      assert.deepStrictEqual(c.specs, { 1: { shape: [2], dtype: 'int32' }, 2: { shape: [3], dtype: 'float32', storage: 'float32' } });
    });

    it('worked example: inserts go to the oldest rows, ties to the smaller index', () => {
      const m = manager();
      const c = m.initCache();
      const insert = (v) => m.updateCache(c, { newItems: { 1: rows(2, 2, v), 2: rows(2, 3, v) } });
      assert.strictEqual(insert(1), c);
      assert.deepStrictEqual(arr(c.read('1')), [1, 1, 1, 1, 0, 0, 0, 0]);
      assert.deepStrictEqual(arr(c.read('2')), [1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0]);
      assert.deepStrictEqual(arr(c.readAge()), [0, 0, 1, 1]);
      insert(2);
      assert.deepStrictEqual(arr(c.read('1')), [1, 1, 1, 1, 2, 2, 2, 2]);
      assert.deepStrictEqual(arr(c.readAge()), [1, 1, 0, 0]);
      insert(3);
      assert.deepStrictEqual(arr(c.read('1')), [3, 3, 3, 3, 2, 2, 2, 2]);
      assert.deepStrictEqual(arr(c.read('2')), [3, 3, 3, 3, 3, 3, 2, 2, 2, 2, 2, 2]);
      assert.deepStrictEqual(arr(c.readAge()), [0, 0, 1, 1]);
    });

    it('worked example: refresh indices [1, 3] on a fresh cache', () => {
      const m = manager();
      const c = m.initCache();
      m.updateCache(c, { updatedItemData: { 1: rows(2, 2, 1), 2: rows(2, 3, 1) }, updatedItemIndices: [1, 3] });
      assert.deepStrictEqual(arr(c.read('1')), [0, 0, 1, 1, 0, 0, 1, 1]);
      assert.deepStrictEqual(arr(c.read('2')), [0, 0, 0, 1, 1, 1, 0, 0, 0, 1, 1, 1]);
      assert.deepStrictEqual(arr(c.readAge()), [1, 0, 1, 0]);
    });

    it('FIFO: a refresh writes data and leaves ages', () => {
      const m = manager(SPECS, 4, { useLru: false });
      const c = m.initCache();
      m.updateCache(c, { updatedItemData: { 2: rows(2, 3, 5) }, updatedItemIndices: [1, 3] });
      assert.deepStrictEqual(arr(c.read('2')), [0, 0, 0, 5, 5, 5, 0, 0, 0, 5, 5, 5]);
      assert.deepStrictEqual(arr(c.read('1')), new Array(8).fill(0));
      assert.deepStrictEqual(arr(c.readAge()), [1, 1, 1, 1]);
    });

    it('refresh and insert in one update; the later repeated index wins; masks', () => {
      const m = manager({ x: { shape: [], dtype: 'float32' } }, 5);
      const c = m.initCache({ data: { x: [10, 11, 12, 13, 14] }, age: [4, 3, 2, 1, 0] });
      m.updateCache(c, {
        updatedItemData: { x: [20, 21, 22, 23] },
        updatedItemIndices: [0, 2, 0, 99],   // 99 is masked out
        updatedItemMask: [true, true, true, false],
        newItems: { x: [30, 31, 32] },
        newItemsMask: [1, 0, 1],
      });
      // LRU: rows 0 and 2 get age -1; the oldest are then 1 (3), 3 (1), 4 (0).
      assert.deepStrictEqual(arr(c.read('x')), [22, 30, 21, 32, 14]);
      assert.deepStrictEqual(arr(c.readAge()), [0, 0, 0, 0, 1]);
    });

    it('more new items than old rows: refreshed rows are taken last, by index', () => {
      const m = manager({ x: { shape: [1], dtype: 'int32' } }, 3);
      const c = m.initCache({ data: { x: [[1], [2], [3]] }, age: [5, 5, 9] });
      m.updateCache(c, { updatedItemData: { x: [[7], [8]] }, updatedItemIndices: [1, 0], newItems: { x: [[40], [41], [42]] } });
      // After refresh (LRU): ages [-1, -1, 9] -> order 2, 0, 1.
      assert.deepStrictEqual(arr(c.read('x')), [41, 42, 40]);
      assert.deepStrictEqual(arr(c.readAge()), [0, 0, 0]);
    });

    it('initCache({data, age}) from nested arrays, tensors and typed arrays', () => {
      const m = manager();
      const c1 = m.initCache({ data: { 1: [[1, 2], [3, 4], [5, 6], [7, 8]], 2: new Float32Array(12).map((_, i) => i / 2) }, age: [3, 0, 2, 1] });
      assert.deepStrictEqual(arr(c1.read('1')), [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.deepStrictEqual(arr(c1.read('2')), Array.from({ length: 12 }, (_, i) => i / 2));
      assert.deepStrictEqual(arr(c1.readAge()), [3, 0, 2, 1]);
      assert.deepStrictEqual(arr(c1.readFilled()), [1, 1, 1, 1]);
      const c2 = m.initCache({ data: { 1: tf.tensor2d([[1, 2], [3, 4], [5, 6], [7, 8]], undefined, 'int32'), 2: tf.zeros([4, 3]) } });
      assert.deepStrictEqual(arr(c2.read('1')), [1, 2, 3, 4, 5, 6, 7, 8]);
      assert.deepStrictEqual(arr(c2.readAge()), [0, 0, 0, 0]);
      // The next insert goes to the oldest row (index 0 of c1 has age 3).
      m.updateCache(c1, { newItems: { 1: tf.tensor2d([[9, 9]], undefined, 'int32'), 2: tf.ones([1, 3]) } });
      assert.deepStrictEqual(arr(c1.read('1')).slice(0, 2), [9, 9]);
      assert.deepStrictEqual(arr(c1.readAge()), [0, 1, 3, 2]);
      assert.deepStrictEqual(arr(m.initCache().readFilled()), [0, 0, 0, 0]);
    });

    it('accepts tensors, typed arrays, flat and nested arrays alike', () => {
      const m = manager({ e: { shape: [2, 2], dtype: 'float32' }, k: { shape: [2], dtype: 'int32' } }, 3);
      const inputs = [
        { e: tf.tensor3d([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]), k: tf.tensor2d([[1, 2], [3, 4]], undefined, 'int32') },
        { e: new Float32Array([1, 2, 3, 4, 5, 6, 7, 8]), k: new Int32Array([1, 2, 3, 4]) },
        { e: [1, 2, 3, 4, 5, 6, 7, 8], k: [1, 2, 3, 4] },
        { e: [[[1, 2], [3, 4]], [[5, 6], [7, 8]]], k: [[1, 2], [3, 4]] },
        { e: [[1, 2, 3, 4], [5, 6, 7, 8]], k: [[1, 2], [3, 4]] },
      ];
      for (const newItems of inputs) {
        const c = m.initCache();
        m.updateCache(c, { newItems, updatedItemData: { k: tf.tensor1d([5, 6], 'int32').reshape([1, 2]) }, updatedItemIndices: tf.tensor1d([2], 'int32'), updatedItemMask: tf.tensor1d([true], 'bool') });
        assert.deepStrictEqual(arr(c.read('e')), [1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0]);
        assert.deepStrictEqual(arr(c.read('k')), [1, 2, 3, 4, 5, 6]);
        assert.deepStrictEqual(arr(c.readAge()), [0, 0, 0]);
      }
    });

    it('float16 / bfloat16 storage: rows are rounded to nearest even and read back as float32', () => {
      const m = manager({ h: { shape: [4], dtype: 'float32', storage: 'float16' }, b: { shape: [4], dtype: 'float32', storage: 'bfloat16' } }, 2);
      const v = [1 + 1 / 2048, 1 + 3 / 2048, 70000, NaN, -1e-8, 0.1, -0.3333333, 65519];
      const c = m.initCache();
      m.updateCache(c, { newItems: { h: v, b: v } });
      const h = c.read('h'), b = c.read('b');
      assert.ok(h instanceof Float32Array && b instanceof Float32Array);
      assert.deepStrictEqual(arr(h), [1, 1 + 4 / 2048, Infinity, NaN, -0, halfToFloat(floatToHalf(0.1)), halfToFloat(floatToHalf(-0.3333333)), 65504]);
      assert.deepStrictEqual(arr(b), v.map((x) => bfloat16ToFloat(floatToBFloat16(x))));
      assert.strictEqual(b[0], 1);          // 1 + 2^-11 is below bf16 half-ulp
      assert.strictEqual(b[2], 70144);      // 70000 -> nearest bf16
      assert.strictEqual(floatToHalf(0.1), 0x2e66);
      assert.strictEqual(floatToBFloat16(0.1), 0x3dcd);
      assert.deepStrictEqual(c.specs.h, { shape: [4], dtype: 'float32', storage: 'float16' });
    });

    it('dispose frees the cache; later use throws a clear error', () => {
      const m = manager();
      const c = m.initCache();
      c.dispose();
      c.dispose();
      assert.strictEqual(c.disposed, true);
      assert.throws(() => c.read('1'), /disposed/);
      assert.throws(() => c.readAge(), /disposed/);
      assert.throws(() => m.updateCache(c, { newItems: { 1: [1, 1], 2: [1, 1, 1] } }), (e) => e instanceof TypeError && /cache was disposed/.test(e.message));
      assert.throws(() => storeOf(c), /disposed/);
    });

    it('internal hooks: storeOf, write listeners, version, store views', () => {
      const m = manager();
      const c = m.initCache();
      const store = storeOf(c);
      assert.strictEqual(store.kind, backend);
      assert.throws(() => storeOf({ size: 4 }), (e) => e instanceof TypeError && /cache must be a NegativeCache/.test(e.message));
      const seen = [];
      const off = c.addWriteListener((r) => seen.push(arr(r)));
      m.updateCache(c, { newItems: { 1: rows(2, 2, 1), 2: rows(2, 3, 1) }, updatedItemData: { 2: rows(3, 3, 4) }, updatedItemIndices: [3, 1, 3] });
      // Refresh 1, 3 (LRU) -> the oldest are 0, 2.
      assert.deepStrictEqual(seen, [[0, 1, 2, 3]]);
      m.updateCache(c, { newItems: { 1: rows(1, 2, 1), 2: rows(1, 3, 1) } });
      assert.deepStrictEqual(seen[1], [0]);
      assert.strictEqual(c.version, 2);
      off();
      m.updateCache(c, {});
      assert.strictEqual(seen.length, 2);
      assert.strictEqual(c.version, 3);
      assert.deepStrictEqual(arr(c.readAge()), [1, 2, 2, 2]);
      if (backend === 'js') {
        assert.ok(store.columnView('1') instanceof Int32Array);
        assert.ok(store.filledView() instanceof Uint8Array);
        assert.deepStrictEqual(arr(store.filledView()), [1, 1, 1, 1]);
      } else {
        assert.strictEqual(store.columnIndex('2'), 1);
        assert.strictEqual(typeof store.handle.update, 'function');
        assert.deepStrictEqual(store.stats(), { dataBytes: 4 * 2 * 4 + 4 * 3 * 4, bookkeepingBytesPerRow: 13 });
      }
      assert.deepStrictEqual(arr(store.gatherRows('2', new Int32Array([3, 0]))), [4, 4, 4, 1, 1, 1]);
    });

    it('a scalar feature (shape []) and a cache of one row', () => {
      const m = manager({ s: { shape: [], dtype: 'int32' } }, 1);
      const c = m.initCache();
      m.updateCache(c, { newItems: { s: [7] } });
      m.updateCache(c, { newItems: { s: tf.tensor1d([8], 'int32') } });
      assert.deepStrictEqual(arr(c.read('s')), [8]);
      assert.deepStrictEqual(arr(c.readAge()), [0]);
    });
  });
}

describe('native caches in workers and under GC', () => {
  it('works inside worker_threads, and a worker may exit without dispose()', async function () {
    if (!BACKENDS.includes('native')) this.skip();
    const { Worker } = require('worker_threads');
    const code = `
      const { parentPort } = require('worker_threads');
      const nc = require(${JSON.stringify(require('path').resolve(__dirname, '..'))});
      const m = new nc.CacheManager({ x: { shape: [2], dtype: 'float32', storage: 'bfloat16' } }, 3, { backend: 'native' });
      const c = m.initCache();
      m.updateCache(c, { newItems: { x: [[1, 2], [3, 4]] } });
      parentPort.postMessage({ x: Array.from(c.read('x')), age: Array.from(c.readAge()) });`;
    const results = await Promise.all([0, 1].map(() => new Promise((resolve, reject) => {
      const w = new Worker(code, { eval: true });
      w.once('message', resolve);
      w.once('error', reject);
    })));
    for (const r of results) assert.deepStrictEqual(r, { x: [1, 2, 3, 4, 0, 0], age: [0, 0, 1] });
  });

  it('caches dropped without dispose() are collected', async function () {
    if (!BACKENDS.includes('native')) this.skip();
    require('v8').setFlagsFromString('--expose-gc');
    const gc = require('vm').runInNewContext('gc');
    const m = new nc.CacheManager({ x: { shape: [256], dtype: 'float32' } }, 4096, { backend: 'native' });
    for (let i = 0; i < 20; i++) m.updateCache(m.initCache(), { newItems: { x: new Float32Array(256) } });
    gc();
    await new Promise((r) => setImmediate(r));
    gc();
    // The finalizers ran without crashing; the manager still works.
    const c = m.initCache();
    assert.strictEqual(c.readAge().length, 4096);
  });
});

describe('CacheManager backends agree on a small script', () => {
  it('native and js give the same state', function () {
    if (!BACKENDS.includes('native')) this.skip();
    const specs = { e: { shape: [3], dtype: 'float32', storage: 'bfloat16' } };
    const caches = BACKENDS.map((backend) => {
      const m = new nc.CacheManager(specs, 6, { backend });
      const c = m.initCache();
      m.updateCache(c, { newItems: { e: [[0.1, 0.2, 0.3], [1, 2, 3]] } });
      m.updateCache(c, { newItems: { e: [[4, 5, 6]] }, updatedItemData: { e: [[7.7, 8.8, 9.9]] }, updatedItemIndices: [1] });
      return c;
    });
    assert.deepStrictEqual(arr(caches[0].read('e')), arr(caches[1].read('e')));
    assert.deepStrictEqual(arr(caches[0].readAge()), arr(caches[1].readAge()));
  });
});
