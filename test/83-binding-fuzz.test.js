'use strict';
// A bounded random fuzz loop over the addon's own argument checks
// (binding/args.cc, store_wrap.cc, kernels_binding.cc), which libFuzzer cannot
// reach without Node: valid calls with one or more arguments or fields
// replaced by random values (wrong types, typed arrays of the wrong type or
// length, out-of-range and non-integer numbers, foreign or disposed handles).
// Every call must either succeed or throw a TypeError, RangeError or
// NegativeCacheError, and a call that throws must leave the store exactly as
// it was. Under scripts/test-sanitize.sh this runs against the ASan build.
//   NEGATIVE_CACHE_BINDING_FUZZ_ITERS=N   iterations (default 3000)
const assert = require('assert');
const { loadAddon } = require('./helpers/internals');
const { mulberry32 } = require('./helpers/rng');

const ITERS = Number(process.env.NEGATIVE_CACHE_BINDING_FUZZ_ITERS || 3000);

describe('binding argument checks under random input', function () {
  const addon = loadAddon();
  before(function () { if (!addon) this.skip(); });

  it(`${ITERS} random calls: success or a TypeError / RangeError / NegativeCacheError, and a refused call changes nothing`, () => {
    const rnd = mulberry32(20240611);
    const int = (n) => Math.floor(rnd() * n);
    const pick = (a) => a[int(a.length)];
    const SIZE = 6;
    const cols = [{ name: 'e', storage: 0, width: 3 }, { name: 'h', storage: 1, width: 3 }, { name: 'id', storage: 3, width: 2 }];
    const store = new addon.CacheStore(cols, SIZE);
    const other = new addon.CacheStore([{ name: 'e', storage: 2, width: 3 }], 3);
    const disposed = new addon.CacheStore([{ name: 'e', storage: 0, width: 3 }], 2);
    disposed.dispose();

    const typed = () => {
      const T = pick([Float32Array, Int32Array, Uint8Array, Float64Array, Int8Array, Uint32Array]);
      const a = new T(pick([0, 1, 2, 3, 5, 6, 9, 12, 18, 36, int(40)]));
      for (let i = 0; i < a.length; i++) a[i] = T === Float32Array || T === Float64Array ? pick([0, 1, -2.5, NaN, Infinity, 1e30]) : int(20) - 5;
      return a;
    };
    const junk = () => pick([
      () => undefined, () => null, () => true, () => 'x', () => [], () => [1, 2], () => ({}),
      () => pick([-1, 0, 1, 2, 3, 5, 6, 7, 1.5, -0.5, NaN, Infinity, -Infinity, 2 ** 31, 2 ** 53, -(2 ** 31)]),
      typed, typed, typed, () => other, () => disposed, () => ({ store: other, column: 0 }), () => Symbol('s'),
    ])();
    const maybe = (v, p = 0.15) => (rnd() < p ? junk() : v);
    const f32 = (n) => Float32Array.from({ length: n }, () => int(17) - 8);
    const i32 = (n) => Int32Array.from({ length: n }, () => int(SIZE + 4) - 2);
    const u8 = (n) => Uint8Array.from({ length: n }, () => int(3));

    const state = () => {
      const s = { ages: new Int32Array(SIZE), filled: new Uint8Array(SIZE), e: new Float32Array(SIZE * 3), h: new Float32Array(SIZE * 3), id: new Int32Array(SIZE * 2) };
      store.readAge(s.ages);
      store.readFilled(s.filled);
      store.readColumn(0, s.e);
      store.readColumn(1, s.h);
      store.readColumn(2, s.id);
      return s;
    };
    const request = () => maybe({
      queries: maybe(f32(6)), batch: maybe(2), dim: maybe(3), scale: maybe(1), scoreEmptyRows: maybe(false), threads: maybe(pick([0, 1, 2])),
      segments: maybe([maybe({ store: maybe(store), column: maybe(pick([0, 1])) }), ...(rnd() < 0.3 ? [{ store: other, column: 0 }] : [])]),
    });
    const params = () => maybe({ mode: maybe(int(3)), invTemp: maybe(1), numDraws: maybe(1 + int(3)), seed: maybe(int(100)), call: maybe(int(5)) });
    const out = (b, k) => maybe({ indices: maybe(new Int32Array(b * k)), scores: maybe(new Float32Array(b * k)), lse: maybe(new Float32Array(b)), candidates: maybe(new Int32Array(b)) });

    const calls = [
      () => { const nu = maybe(int(4)), nn = maybe(int(4)); const n1 = typeof nu === 'number' && nu >= 0 && nu < 10 ? nu : 2, n2 = typeof nn === 'number' && nn >= 0 && nn < 10 ? nn : 2;
        return store.update(maybe({ useLru: maybe(true), numUpdated: nu, numNew: nn,
          updatedValues: maybe([maybe(f32(n1 * 3)), maybe(null), maybe(i32(n1 * 2))]), updatedIndices: maybe(i32(n1)), updatedMask: maybe(rnd() < 0.5 ? null : u8(n1)),
          newValues: maybe([maybe(f32(n2 * 3)), maybe(f32(n2 * 3)), maybe(i32(n2 * 2))]), newMask: maybe(rnd() < 0.5 ? null : u8(n2)), insertedRows: maybe(rnd() < 0.5 ? null : new Int32Array(n2)) })); },
      () => store.initialize(maybe([maybe(f32(SIZE * 3)), maybe(null), maybe(i32(SIZE * 2))]), maybe(rnd() < 0.5 ? null : i32(SIZE))),
      () => store.readColumn(maybe(int(3)), maybe(pick([new Float32Array(18), new Int32Array(12), new Float32Array(17)]))),
      () => store.readAge(maybe(new Int32Array(SIZE))),
      () => store.readFilled(maybe(new Uint8Array(SIZE))),
      () => { const rows = maybe(i32(3)); return store.gatherRows(maybe(int(3)), rows, maybe(pick([new Float32Array(9), new Int32Array(6), new Float32Array(8)]))); },
      () => addon.scoreAndSample(request(), params(), out(2, pick([1, 2, 3]))),
      () => addon.scoreGroupMax(request(), maybe(1 + int(SIZE)), maybe(new Float32Array(2 * 3)), maybe(new Int32Array(2 * 3))),
      () => addon.scoreMatrix(request(), maybe(pick([new Float32Array(2 * SIZE), new Float32Array(2 * (SIZE + 3)), new Float32Array(3)]))),
      () => addon.sampleCandidates(maybe(f32(6)), maybe(2), maybe(3), params(), maybe(0), out(2, pick([1, 2]))),
      () => { const s = new addon.CacheStore(maybe([maybe({ name: maybe('a'), storage: maybe(int(4)), width: maybe(1 + int(3)) })]), maybe(1 + int(5))); s.dispose(); },
      () => addon.CacheStore.prototype[pick(['update', 'readAge', 'readColumn', 'dispose', 'stats'])].call(junk(), junk(), junk()),
    ];

    const counts = { ok: 0, TypeError: 0, RangeError: 0, NegativeCacheError: 0 };
    for (let it = 0; it < ITERS; it++) {
      const before = state();
      const which = int(calls.length);
      try {
        calls[which]();
        counts.ok++;
      } catch (e) {
        const kind = e && e.name === 'NegativeCacheError' ? 'NegativeCacheError' : e instanceof TypeError ? 'TypeError' : e instanceof RangeError ? 'RangeError' : null;
        assert.ok(kind, `call ${which} at iteration ${it} threw ${e && e.name}: ${e && e.message}`);
        assert.ok(/negative-cache|Illegal invocation|Invalid argument|Symbol/.test(String(e.message)), `unclear message: ${e.message}`);
        counts[kind]++;
        assert.deepStrictEqual(state(), before, `call ${which} at iteration ${it} threw (${e.message}) but changed the store`);
      }
    }
    // The loop exercised both outcomes.
    assert.ok(counts.ok > ITERS / 20 && counts.TypeError > 0 && counts.RangeError > 0, JSON.stringify(counts));
    store.dispose();
    other.dispose();
  });
});
