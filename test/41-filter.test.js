'use strict';
// IsInCacheFilterFn: exact membership on the given keys, kept current through
// the cache's updates by an index built once (no full read after the first call).
const assert = require('assert');
const nc = require('..');
const { mulberry32: mulberry } = require('./helpers/rng');

const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');
const specs = { ids: { shape: [2], dtype: 'int32' }, v: { shape: [1], dtype: 'float32' }, e: { shape: [3], dtype: 'float32' } };

/** Brute force: 1 where no filled row equals the item on ids and v. */
function bruteForce(cache, items) {
  const ids = cache.read('ids'), v = cache.read('v'), filled = cache.readFilled();
  const n = items.v.length;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    let found = false;
    for (let r = 0; r < cache.size && !found; r++) {
      found = filled[r] === 1 && ids[2 * r] === items.ids[2 * i] && ids[2 * r + 1] === items.ids[2 * i + 1] && Object.is(v[r], Math.fround(items.v[i]));
    }
    out[i] = found ? 0 : 1;
  }
  return out;
}

describe('IsInCacheFilterFn', () => {
  for (const backend of BACKENDS) {
    describe(`backend ${backend}`, () => {
      it('answers 1 for items not in the cache, 0 for items in it (exact match on every key)', () => {
        const m = new nc.CacheManager(specs, 4, { backend });
        const cache = m.initCache();
        m.updateCache(cache, { newItems: { ids: [[1, 2], [3, 4]], v: [[0.5], [1.5]], e: [[0, 0, 0], [0, 0, 0]] } });
        const f = new nc.IsInCacheFilterFn(['ids', 'v']);
        const items = { ids: [[1, 2], [3, 4], [1, 2], [2, 1], [0, 0]], v: [[0.5], [1.5], [1.5], [0.5], [0]] };
        // [0,0]/0 equals the never-filled rows' zeros but empty rows are not "in the cache".
        assert.deepStrictEqual(Array.from(f.apply(cache, items)), [0, 0, 1, 1, 1]);
        assert.deepStrictEqual(Array.from(f.lookup(cache, items)), [0, 1, -1, -1, -1]);
        // Only the keys given matter.
        assert.deepStrictEqual(Array.from(new nc.IsInCacheFilterFn(['ids']).apply(cache, items)), [0, 0, 0, 1, 1]);
        // Floats match by bit pattern: -0 is not 0.
        m.updateCache(cache, { newItems: { ids: [[9, 9]], v: [[0]], e: [[0, 0, 0]] } });
        assert.deepStrictEqual(Array.from(f.apply(cache, { ids: [[9, 9], [9, 9]], v: [[0], [-0]] })), [0, 1]);
        cache.dispose();
      });

      it('stays exact through random inserts, refreshes and evictions without re-reading the cache', () => {
        const rng = mulberry(backend === 'js' ? 5 : 6);
        const m = new nc.CacheManager(specs, 16, { backend });
        const cache = m.initCache();
        const f = new nc.IsInCacheFilterFn(['ids', 'v']);
        const randomItems = (n) => ({
          ids: Int32Array.from({ length: 2 * n }, () => Math.floor(rng() * 3)),
          v: Float32Array.from({ length: n }, () => Math.floor(rng() * 3) / 2),
          e: Float32Array.from({ length: 3 * n }, () => rng()),
        });
        f.apply(cache, randomItems(1));               // builds the index
        let reads = 0;
        const read = cache.read.bind(cache);
        cache.read = (k) => { reads++; return read(k); };
        for (let step = 0; step < 150; step++) {
          const n = 1 + Math.floor(rng() * 6);
          const upd = { newItems: randomItems(n) };
          if (rng() < 0.4) {   // refresh a few rows of the key 'v' (changes the identity of those rows)
            const r = 1 + Math.floor(rng() * 3);
            upd.updatedItemData = { v: Float32Array.from({ length: r }, () => Math.floor(rng() * 3) / 2) };
            upd.updatedItemIndices = Int32Array.from({ length: r }, () => Math.floor(rng() * 16));
          }
          if (rng() < 0.3) upd.newItemsMask = Uint8Array.from({ length: n }, () => (rng() < 0.5 ? 1 : 0));
          m.updateCache(cache, upd);
          const probe = randomItems(8);
          cache.read = read;
          const expected = bruteForce(cache, probe);
          cache.read = (k) => { reads++; return read(k); };
          assert.deepStrictEqual(Array.from(f.apply(cache, probe)), Array.from(expected), `step ${step}`);
        }
        assert.strictEqual(reads, 0, 'the filter re-read whole columns');
        cache.dispose();
      });

      it('insertMask also keeps only the first of equal items in a batch', () => {
        const m = new nc.CacheManager(specs, 4, { backend });
        const cache = m.initCache();
        m.updateCache(cache, { newItems: { ids: [[1, 1]], v: [[1]], e: [[0, 0, 0]] } });
        const f = new nc.IsInCacheFilterFn(['ids']);
        const items = { ids: [[2, 2], [1, 1], [2, 2], [3, 3], [3, 3]] };
        assert.deepStrictEqual(Array.from(f.apply(cache, items)), [1, 0, 1, 1, 1]);
        assert.deepStrictEqual(Array.from(f.insertMask(cache, items)), [1, 0, 0, 1, 0]);
        cache.dispose();
      });
    });
  }

  it('rejects bad keys and items, naming them', () => {
    const m = new nc.CacheManager(specs, 4, { backend: 'js' });
    const cache = m.initCache();
    assert.throws(() => new nc.IsInCacheFilterFn([]), TypeError);
    assert.throws(() => new nc.IsInCacheFilterFn('ids'), /keys/);
    assert.throws(() => new nc.IsInCacheFilterFn(['ids', 'ids']), /keys/);
    assert.throws(() => new nc.IsInCacheFilterFn(['nope']).apply(cache, { nope: [1] }), /keys/);
    const f = new nc.IsInCacheFilterFn(['ids', 'v']);
    assert.throws(() => f.apply(cache, { ids: [[1, 2]] }), /newItems\['v'\]/);
    assert.throws(() => f.apply(cache, { ids: [[1, 2]], v: [[1], [2]] }), /newItems\['v'\]/);
    assert.throws(() => f.apply(cache, { ids: [1, 2, 3], v: [1] }), /newItems\['ids'\]/);
    assert.throws(() => f.apply({}, { ids: [[1, 2]], v: [[1]] }), /cache/);
    cache.dispose();
    assert.throws(() => f.apply(cache, { ids: [[1, 2]], v: [[1]] }), /disposed/);
  });
});
