'use strict';
// Bad input: every rejected call throws TypeError/RangeError naming the
// argument, what was expected and what was given, and leaves the cache
// exactly as it was (read()/readAge()/readFilled() compared before/after).
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { storeOf } = require('./helpers/internals');

const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');
const SPECS = { emb: { shape: [3], dtype: 'float32', storage: 'float16' }, id: { shape: [2], dtype: 'int32' } };

function expectError(fn, type, ...patterns) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof type, `expected ${type.name}, got ${e && e.name}: ${e && e.message}`);
    for (const p of patterns) assert.match(e.message, p);
    return true;
  });
}

function snapshot(cache) {
  const s = { age: Array.from(cache.readAge()), filled: Array.from(cache.readFilled()) };
  for (const k of Object.keys(cache.specs)) s[k] = Array.from(cache.read(k));
  return s;
}

describe('CacheManager constructor rejects bad specs, sizes and options', () => {
  const ok = { x: { shape: [2], dtype: 'float32' } };
  const cases = [
    [() => new nc.CacheManager(ok, 0), RangeError, /cacheSize must be a positive integer; got 0/],
    [() => new nc.CacheManager(ok, -3), RangeError, /cacheSize/, /-3/],
    [() => new nc.CacheManager(ok, 2.5), RangeError, /cacheSize/, /2\.5/],
    [() => new nc.CacheManager(ok, NaN), RangeError, /cacheSize/, /NaN/],
    [() => new nc.CacheManager(ok, '4'), TypeError, /cacheSize must be a positive integer; got "4"/],
    [() => new nc.CacheManager(ok, 2 ** 31), RangeError, /cacheSize must be at most 2\^31-1/],
    [() => new nc.CacheManager(ok), TypeError, /cacheSize/, /undefined/],
    [() => new nc.CacheManager(null, 4), TypeError, /specs must be an object/, /null/],
    [() => new nc.CacheManager({}, 4), TypeError, /specs must be an object with at least one feature/],
    [() => new nc.CacheManager({ x: { shape: [2], dtype: 'float64' } }, 4), TypeError, /specs\['x'\]\.dtype must be 'float32' or 'int32'; got "float64"/],
    [() => new nc.CacheManager({ x: { shape: [2] } }, 4), TypeError, /specs\['x'\]\.dtype/, /undefined/],
    [() => new nc.CacheManager({ x: { shape: [2], dtype: 'float32', storage: 'float8' } }, 4), TypeError, /specs\['x'\]\.storage must be 'float32', 'float16' or 'bfloat16'/, /"float8"/],
    [() => new nc.CacheManager({ x: { shape: [2], dtype: 'int32', storage: 'float16' } }, 4), TypeError, /specs\['x'\]\.storage must be omitted for an int32 feature/],
    [() => new nc.CacheManager({ x: { shape: 2, dtype: 'float32' } }, 4), TypeError, /specs\['x'\]\.shape must be an array of positive integers; got 2/],
    [() => new nc.CacheManager({ x: { shape: [2, 0], dtype: 'float32' } }, 4), TypeError, /specs\['x'\]\.shape\[1\] must be a positive integer; got 0/],
    [() => new nc.CacheManager({ x: { shape: [1.5], dtype: 'float32' } }, 4), TypeError, /shape\[0\]/, /1\.5/],
    [() => new nc.CacheManager({ x: { shape: ['3'], dtype: 'float32' } }, 4), TypeError, /shape\[0\]/, /"3"/],
    [() => new nc.CacheManager({ x: 'float32' }, 4), TypeError, /specs\['x'\] must be an object/],
    [() => new nc.CacheManager(ok, 4, { useLru: 'yes' }), TypeError, /options\.useLru must be a boolean; got "yes"/],
    [() => new nc.CacheManager(ok, 4, { backend: 'gpu' }), TypeError, /options\.backend must be one of/, /"gpu"/],
  ];
  cases.forEach(([fn, type, ...patterns], i) => {
    it(`case ${i}: ${patterns[0]}`, () => expectError(fn, type, ...patterns));
  });

  it('rejects a misspelt option or spec key, naming it and listing the known ones', () => {
    expectError(() => new nc.CacheManager(ok, 8, { backnd: 'js' }), TypeError,
      /options must be an object with keys useLru, backend; got an object with unknown key 'backnd'/);
    expectError(() => new nc.CacheManager(ok, 8, { useLRU: false }), TypeError, /unknown key 'useLRU'/);
    expectError(() => new nc.CacheManager({ x: { shape: [2], dtype: 'float32', storge: 'float16' } }, 8), TypeError,
      /specs\['x'\] must be an object with keys shape, dtype, storage; got an object with unknown key 'storge'/);
    // The specs a manager hands out are accepted as they are.
    const m = new nc.CacheManager(ok, 8, { backend: 'js' });
    assert.strictEqual(new nc.CacheManager(m.specs, 8, { backend: 'js' }).specs.x.storage, 'float32');
  });
});

for (const backend of BACKENDS) {
  describe(`bad updates change nothing (${backend})`, () => {
    let m, cache, before;
    beforeEach(() => {
      m = new nc.CacheManager(SPECS, 4, { backend });
      cache = m.initCache();
      m.updateCache(cache, { newItems: { emb: [[1, 2, 3], [4, 5, 6]], id: [[1, 1], [2, 2]] } });
      m.updateCache(cache, { newItems: { emb: [[7, 8, 9]], id: [[3, 3]] }, updatedItemData: { emb: [[0.5, 0.5, 0.5]] }, updatedItemIndices: [1] });
      before = snapshot(cache);
    });
    afterEach(() => {
      assert.deepStrictEqual(snapshot(cache), before, 'a rejected call changed the cache');
      cache.dispose();
    });

    const item = (n) => ({ emb: Array.from({ length: n }, () => [1, 1, 1]), id: Array.from({ length: n }, () => [5, 5]) });
    const cases = [
      ['newItems missing a key', () => ({ newItems: { emb: [[1, 2, 3]] } }), TypeError, /newItems must be an object with every spec key \(emb, id\); got an object without 'id'/],
      ['newItems with an unknown key', () => ({ newItems: { ...item(1), extra: [[1]] } }), TypeError, /newItems must be an object whose keys are among the spec keys/, /unknown key 'extra'/],
      ['newItems row counts disagree', () => ({ newItems: { emb: [[1, 2, 3], [1, 2, 3]], id: [[1, 1]] } }), RangeError, /newItems\['id'\] must be 2 rows/, /got 1 rows/],
      ['newItems trailing shape (nested)', () => ({ newItems: { emb: [[1, 2]], id: [[1, 1]] } }), RangeError, /newItems\['emb'\] must be nested arrays of shape \[rows, 3\]/, /shape \[1, 2\]/],
      ['newItems trailing shape (tensor)', () => ({ newItems: { emb: tf.zeros([2, 4]), id: [[1, 1], [1, 1]] } }), RangeError, /newItems\['emb'\] must be a tensor of shape \[rows, 3\]; got shape \[2, 4\]/],
      ['newItems flat length', () => ({ newItems: { emb: [1, 2, 3, 4], id: [1, 1] } }), RangeError, /newItems\['emb'\] must be a flat array whose length is a multiple of 3/, /length 4/],
      ['newItems ragged', () => ({ newItems: { emb: [[1, 2, 3], [1, 2]], id: [[1, 1], [1, 1]] } }), TypeError, /newItems\['emb'\]\[1\] must be an array of length 3/],
      ['newItems non-number', () => ({ newItems: { emb: [[1, 'a', 3]], id: [[1, 1]] } }), TypeError, /newItems\['emb'\]\[0\]\[1\] must be a number; got "a"/],
      ['int32 feature from a float tensor', () => ({ newItems: { emb: [[1, 2, 3]], id: tf.tensor2d([[1, 1]]) } }), TypeError, /newItems\['id'\] must be an int32 tensor/, /float32 tensor of shape \[1, 2\]/],
      ['int32 feature with a fraction', () => ({ newItems: { emb: [[1, 2, 3]], id: [[1, 1.5]] } }), RangeError, /newItems\['id'\]\[1\] must be an int32 integer/, /1\.5/],
      ['newItems not an object', () => ({ newItems: [1, 2, 3] }), TypeError, /newItems must be an object mapping feature names/],
      ['newItemsMask length', () => ({ newItems: item(2), newItemsMask: [true] }), RangeError, /newItemsMask must be of length 2; got length 1/],
      ['newItemsMask NaN', () => ({ newItems: item(1), newItemsMask: [NaN] }), RangeError, /newItemsMask\[0\]/, /NaN/],
      ['newItemsMask without newItems', () => ({ newItemsMask: [true] }), TypeError, /newItems must be given when newItemsMask is given/],
      ['more new items than rows', () => ({ newItems: item(5) }), RangeError, /newItems must be at most 4 unmasked new items/, /got 5/],
      ['more unmasked new items than rows', () => ({ newItems: item(6), newItemsMask: [1, 1, 1, 1, 1, 0] }), RangeError, /newItemsMask must be at most 4 unmasked/, /got 5/],
      ['index out of range', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: [4] }), RangeError, /updatedItemIndices\[0\] must be an integer in \[0, 4\)/, /got 4/],
      ['negative index', () => ({ updatedItemData: { emb: [[1, 1, 1], [2, 2, 2]] }, updatedItemIndices: [0, -1] }), RangeError, /updatedItemIndices\[1\]/, /got -1/],
      ['NaN index', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: [NaN] }), RangeError, /updatedItemIndices\[0\]/, /got NaN/],
      ['fractional index', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: new Float32Array([1.5]) }), RangeError, /updatedItemIndices\[0\]/, /got 1\.5/],
      ['out-of-range index with the insert part valid', () => ({ newItems: item(1), updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: [7], updatedItemMask: [1] }), RangeError, /updatedItemIndices\[0\]/],
      ['updatedItemData unknown key', () => ({ updatedItemData: { nope: [[1]] }, updatedItemIndices: [0] }), TypeError, /updatedItemData must be an object whose keys are among the spec keys/, /'nope'/],
      ['updatedItemData rows vs indices', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: [0, 1] }), RangeError, /updatedItemData\['emb'\] must be 2 rows \(as updatedItemIndices\); got 1 rows/],
      ['updatedItemMask length', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: [0], updatedItemMask: [1, 1] }), RangeError, /updatedItemMask must be of length 1; got length 2/],
      ['indices without data', () => ({ updatedItemIndices: [0] }), TypeError, /updatedItemData must be given when updatedItemIndices is given/],
      ['data without indices', () => ({ updatedItemData: { emb: [[1, 1, 1]] } }), TypeError, /updatedItemIndices must be given when updatedItemData is given/],
      ['indices of rank 2', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: tf.tensor2d([[0]], undefined, 'int32') }), RangeError, /updatedItemIndices must be a rank-1 tensor/],
      ['indices not numbers', () => ({ updatedItemData: { emb: [[1, 1, 1]] }, updatedItemIndices: ['0'] }), TypeError, /updatedItemIndices\[0\] must be a number; got "0"/],
      ['unknown update key', () => ({ newItem: item(1) }), TypeError, /update must be an object with keys newItems/, /'newItem'/],
      ['a disposed tensor', () => { const t = tf.zeros([1, 3]); t.dispose(); return { newItems: { emb: t, id: [[1, 1]] } }; }, TypeError, /newItems\['emb'\] must be a live tensor/],
    ];
    for (const [name, make, type, ...patterns] of cases) {
      it(name, () => expectError(() => m.updateCache(cache, make()), type, ...patterns));
    }

    it('masked-out rows are ignored whatever their index (not an error)', () => {
      const m2 = new nc.CacheManager(SPECS, 4, { backend });
      const c2 = m2.initCache();
      m2.updateCache(c2, { updatedItemData: { emb: [[1, 1, 1], [2, 2, 2]] }, updatedItemIndices: [99, 2], updatedItemMask: [false, true] });
      assert.deepStrictEqual(Array.from(c2.read('emb')), [0, 0, 0, 0, 0, 0, 2, 2, 2, 0, 0, 0]);
      c2.dispose();
    });

    it('rejects something that is not a cache, a disposed cache and a cache of other specs or size', () => {
      expectError(() => m.updateCache({ size: 4 }, {}), TypeError, /cache must be a NegativeCache created by CacheManager\.initCache\(\); got an object/);
      expectError(() => m.updateCache(undefined, {}), TypeError, /cache must be a NegativeCache/, /undefined/);
      const other = new nc.CacheManager({ ...SPECS, emb: { shape: [3], dtype: 'float32' } }, 4, { backend });
      expectError(() => other.updateCache(cache, { newItems: item(1) }), TypeError, /cache must be a cache of this manager's layout/, /"storage":"float32"/, /"storage":"float16"/);
      const bigger = new nc.CacheManager(SPECS, 5, { backend });
      expectError(() => bigger.updateCache(cache, {}), TypeError, /5 rows/, /a cache of 4 rows/);
      const c2 = m.initCache();
      c2.dispose();
      expectError(() => m.updateCache(c2, { newItems: item(1) }), TypeError, /cache was disposed/);
      expectError(() => cache.read('nope'), TypeError, /key must be one of 'emb', 'id'; got "nope"/);
    });

    it('initCache rejects partial data, wrong row counts and bad ages', () => {
      const full = { emb: new Float32Array(12), id: new Int32Array(8) };
      expectError(() => m.initCache({ data: { emb: full.emb } }), TypeError, /initial\.data must be an object with every spec key/, /without 'id'/);
      expectError(() => m.initCache({ data: { emb: new Float32Array(9), id: full.id } }), RangeError, /initial\.data\['emb'\] must be 4 rows \(the cache size\); got 3 rows/);
      expectError(() => m.initCache({ data: full, age: [0, 0, 0] }), RangeError, /initial\.age must be of length 4; got length 3/);
      expectError(() => m.initCache({ data: full, age: [0, 0, 0.5, 0] }), RangeError, /initial\.age\[2\] must be an int32 integer; got 0\.5/);
      expectError(() => m.initCache({ data: full, age: [0, 0, 2 ** 31, 0] }), RangeError, /initial\.age\[2\]/);
      expectError(() => m.initCache({ dat: full }), TypeError, /initial must be an object with keys 'data' and 'age'/, /'dat'/);
      expectError(() => m.initCache(5), TypeError, /initial must be an object/, /got 5/);
      expectError(() => m.initCache({ data: full, ages: [0, 0, 0, 0] }), TypeError, /initial must be an object with keys 'data' and 'age'; got an object with unknown key 'ages'/);
    });

    it('updateCache names a misspelt update key and lists the known ones', () => {
      expectError(() => m.updateCache(cache, { newItems: item(1), updatedItemIndex: [0] }), TypeError,
        /update must be an object with keys newItems, newItemsMask, updatedItemData, updatedItemIndices, updatedItemMask; got an object with unknown key 'updatedItemIndex'/);
    });
  });
}

describe('the native handle re-checks what protects memory', () => {
  it('rejects wrong typed arrays, lengths and indices without crashing', function () {
    if (!BACKENDS.includes('native')) this.skip();
    const m = new nc.CacheManager(SPECS, 4, { backend: 'native' });
    const cache = m.initCache();
    const before = snapshot(cache);
    const h = storeOf(cache).handle;
    const base = { useLru: true, numUpdated: 0, updatedValues: [null, null], updatedIndices: null, updatedMask: null, numNew: 0, newValues: [null, null], newMask: null };
    expectError(() => h.update({ ...base, numNew: 1, newValues: [new Float32Array(2), new Int32Array(2)] }), RangeError, /newValues\['emb'\]\) must be a Float32Array of length 3/);
    expectError(() => h.update({ ...base, numNew: 1, newValues: [new Float64Array(3), new Int32Array(2)] }), TypeError, /must be a Float32Array/, /Float64Array/);
    expectError(() => h.update({ ...base, numNew: 1, newValues: [new Float32Array(3), null] }), TypeError, /newValues\['id'\]\) must be an Int32Array/);
    expectError(() => h.update({ ...base, numNew: 5, newValues: [new Float32Array(15), new Int32Array(10)] }), RangeError, /at most 4 unmasked new items/);
    expectError(() => h.update({ ...base, numUpdated: 1, updatedValues: [new Float32Array(3), null], updatedIndices: new Int32Array([4]) }), RangeError, /updatedIndices\[0\]\) must be an integer in \[0, 4\)/);
    expectError(() => h.update({ ...base, numUpdated: 2, updatedValues: [new Float32Array(6), null], updatedIndices: new Int32Array([0]) }), RangeError, /updatedIndices\) must be an Int32Array of length 2/);
    expectError(() => h.update({ ...base, numUpdated: -1 }), RangeError, /numUpdated/);
    expectError(() => h.readColumn(2, new Float32Array(12)), RangeError, /readColumn\(column\)/);
    expectError(() => h.readColumn(0, new Float32Array(11)), RangeError, /readColumn\(out\)/);
    expectError(() => h.gatherRows(1, new Int32Array([0, 9]), new Int32Array(4)), RangeError, /gatherRows\(rows\[1\]\)/);
    expectError(() => h.readAge(new Uint32Array(4)), TypeError, /readAge\(out\) must be an Int32Array/);
    expectError(() => new (Object.getPrototypeOf(h).constructor)([{ name: 'x', storage: 9, width: 1 }], 4), RangeError, /storage/);
    expectError(() => new (Object.getPrototypeOf(h).constructor)([], 0), RangeError, /size/);
    assert.deepStrictEqual(snapshot(cache), before);
    cache.dispose();
    assert.throws(() => h.readAge(new Int32Array(4)), (e) => e.code === 'ERR_DISPOSED');
  });
});
