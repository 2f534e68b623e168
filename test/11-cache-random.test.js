'use strict';
// Randomized cross-check: the same long random sequence of updates (masks,
// refreshes, repeated and masked-out out-of-range indices, LRU and FIFO, every
// storage type, int32 features, odd initial ages) applied to the native
// store, the JS store and a naive O(N) model of docs/design.md §3 written here; the
// states must be identical after every step. Also float16/bfloat16 rounding
// against an independent float64 formulation.
const assert = require('assert');
const nc = require('..');
const { half } = require('./helpers/internals');
const { mulberry32 } = require('./helpers/rng');

const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');

// Round-to-nearest-even of a float32 value to `mantBits` fraction bits with
// exponent range [minExp, maxExp] (float64 arithmetic, exact for these sizes).
function roundTo(x, mantBits, minExp, maxFinite) {
  x = Math.fround(x);
  if (Number.isNaN(x) || !Number.isFinite(x) || x === 0) return x;
  const a = Math.abs(x);
  let e = Math.floor(Math.log2(a));
  if (2 ** e > a) e--;                     // guard log2 rounding
  if (2 ** (e + 1) <= a) e++;
  const ulp = 2 ** (Math.max(e, minExp) - mantBits);
  const q = a / ulp;
  let r = Math.floor(q);
  const frac = q - r;
  if (frac > 0.5 || (frac === 0.5 && r % 2 === 1)) r++;
  let v = r * ulp;
  if (v > maxFinite) v = Infinity;
  return x < 0 ? -v : v;
}
const refHalf = (x) => roundTo(x, 10, -14, 65504);
const refBf16 = (x) => roundTo(x, 7, -126, 3.3895313892515355e38);

class NaiveCache {
  constructor(specs, size, useLru) {
    this.specs = specs;
    this.size = size;
    this.useLru = useLru;
    this.data = {};
    for (const [k, s] of Object.entries(specs)) {
      this.data[k] = Array.from({ length: size }, () => new Array(s.shape.reduce((a, b) => a * b, 1)).fill(0));
    }
    this.age = new Array(size).fill(0);
    this.filled = new Array(size).fill(0);
  }

  quantize(key, row) {
    const s = this.specs[key];
    if (s.dtype === 'int32') return row.slice();
    if (s.storage === 'float16') return row.map(refHalf);
    if (s.storage === 'bfloat16') return row.map(refBf16);
    return row.map(Math.fround);
  }

  init(data, age) {
    for (const k of Object.keys(data)) for (let r = 0; r < this.size; r++) this.data[k][r] = this.quantize(k, data[k][r]);
    this.age = age.slice();
    this.filled.fill(1);
  }

  update({ newItems, newItemsMask, updatedItemData, updatedItemIndices, updatedItemMask }) {
    if (updatedItemIndices) {
      updatedItemIndices.forEach((r, i) => {
        if (updatedItemMask && !updatedItemMask[i]) return;
        for (const k of Object.keys(updatedItemData)) this.data[k][r] = this.quantize(k, updatedItemData[k][i]);
        this.filled[r] = 1;
        if (this.useLru) this.age[r] = -1;
      });
    }
    if (newItems) {
      const order = Array.from({ length: this.size }, (_, i) => i).sort((a, b) => this.age[b] - this.age[a] || a - b);
      let j = 0;
      const n = newItems[Object.keys(newItems)[0]].length;
      for (let i = 0; i < n; i++) {
        if (newItemsMask && !newItemsMask[i]) continue;
        const r = order[j++];
        for (const k of Object.keys(newItems)) this.data[k][r] = this.quantize(k, newItems[k][i]);
        this.filled[r] = 1;
        this.age[r] = -1;
      }
    }
    this.age = this.age.map((a) => (a + 1) | 0);
  }
}

function randomRow(rand, spec) {
  const w = spec.shape.reduce((a, b) => a * b, 1);
  return Array.from({ length: w }, () => (spec.dtype === 'int32'
    ? Math.floor(rand() * 2000) - 1000
    : (rand() - 0.5) * 10 ** Math.floor(rand() * 12 - 6)));
}

function randomUpdate(rand, specs, size) {
  const keys = Object.keys(specs);
  const u = {};
  if (rand() < 0.8) {
    const n = Math.floor(rand() * Math.min(size, 9) + (rand() < 0.1 ? 0 : 1));
    u.newItems = {};
    for (const k of keys) u.newItems[k] = Array.from({ length: n }, () => randomRow(rand, specs[k]));
    if (rand() < 0.5) u.newItemsMask = Array.from({ length: n }, () => rand() < 0.7);
  }
  if (rand() < 0.6) {
    const n = Math.floor(rand() * 8);
    const sub = keys.filter(() => rand() < 0.7);
    u.updatedItemData = {};
    for (const k of sub) u.updatedItemData[k] = Array.from({ length: n }, () => randomRow(rand, specs[k]));
    const masked = rand() < 0.5;
    u.updatedItemMask = masked ? Array.from({ length: n }, () => rand() < 0.6) : undefined;
    // Repeated indices are likely in small caches; masked-out entries may be out of range.
    u.updatedItemIndices = Array.from({ length: n }, (_, i) => (masked && !u.updatedItemMask[i] && rand() < 0.5
      ? size + Math.floor(rand() * 100) - (rand() < 0.5 ? 0 : 200)
      : Math.floor(rand() * size)));
  }
  return u;
}

const flatten = (rowsArr) => rowsArr.flat();

function bitsEqual(a, b, what) {
  assert.strictEqual(a.constructor, b.constructor, `${what}: array types differ`);
  assert.strictEqual(a.length, b.length, `${what}: lengths differ`);
  const ua = new Uint32Array(a.buffer, a.byteOffset, a.length), ub = new Uint32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < a.length; i++) {
    if (ua[i] !== ub[i]) assert.fail(`${what}: element ${i} differs: ${a[i]} vs ${b[i]}`);
  }
}

function checkAgainst(naive, cache, what) {
  for (const k of Object.keys(naive.specs)) {
    const got = cache.read(k);
    const want = flatten(naive.data[k]);
    for (let i = 0; i < want.length; i++) {
      if (!Object.is(got[i], want[i])) assert.fail(`${what}: ${k}[${i}] is ${got[i]}, the model says ${want[i]}`);
    }
  }
  assert.deepStrictEqual(Array.from(cache.readAge()), naive.age, `${what}: ages`);
  assert.deepStrictEqual(Array.from(cache.readFilled()), naive.filled, `${what}: filled`);
}

const CONFIGS = [];
for (const useLru of [true, false]) {
  for (const storage of ['float32', 'float16', 'bfloat16']) {
    for (const size of [1, 3, 8, 37]) {
      for (const ages of ['none', 'small', 'odd']) {
        CONFIGS.push({ useLru, storage, size, ages });
      }
    }
  }
}

describe('cache updates: native = js = naive model over random sequences', function () {
  this.timeout(300000);
  CONFIGS.forEach((cfg, ci) => {
    it(`useLru=${cfg.useLru} storage=${cfg.storage} size=${cfg.size} ages=${cfg.ages}`, () => {
      const rand = mulberry32(1000 + ci);
      const specs = {
        emb: { shape: [3], dtype: 'float32', storage: cfg.storage },
        key: { shape: [2], dtype: 'int32' },
        sc: { shape: [], dtype: 'float32' },
      };
      const naive = new NaiveCache(specs, cfg.size, cfg.useLru);
      const caches = BACKENDS.map((backend) => {
        const m = new nc.CacheManager(specs, cfg.size, { backend, useLru: cfg.useLru });
        return { m, backend };
      });
      if (cfg.ages !== 'none') {
        const data = {};
        for (const k of Object.keys(specs)) data[k] = Array.from({ length: cfg.size }, () => randomRow(rand, specs[k]));
        const age = Array.from({ length: cfg.size }, () => (cfg.ages === 'small'
          ? Math.floor(rand() * 4)
          : [0x7fffffff, 0x7ffffffe, -3, -1, 5, -2147483648][Math.floor(rand() * 6)]));
        naive.init(data, age);
        for (const c of caches) c.cache = c.m.initCache({ data, age });
      } else {
        for (const c of caches) c.cache = c.m.initCache();
      }
      for (const c of caches) checkAgainst(naive, c.cache, `${c.backend} init`);
      const steps = cfg.size > 8 ? 150 : 60;
      for (let step = 0; step < steps; step++) {
        const u = randomUpdate(rand, specs, cfg.size);
        naive.update(u);
        for (const c of caches) {
          c.m.updateCache(c.cache, u);
          checkAgainst(naive, c.cache, `${c.backend} step ${step}`);
        }
        if (caches.length === 2) {
          for (const k of Object.keys(specs)) bitsEqual(caches[0].cache.read(k), caches[1].cache.read(k), `step ${step} ${k}`);
        }
      }
      for (const c of caches) c.cache.dispose();
    });
  });
});

describe('float16 / bfloat16 conversion', () => {
  it('matches an independent float64 rounding on random and boundary float32 values', () => {
    const rand = mulberry32(42);
    const f = new Float32Array(1), u = new Uint32Array(f.buffer);
    const values = [0, -0, 1, -1, 65504, 65519.99, 65520, 1e-8, 2 ** -24, 2 ** -25, 3 * 2 ** -26, 2 ** -14, 3.3895313892515355e38, 3.4e38, Infinity, -Infinity];
    for (let i = 0; i < 200000; i++) {
      u[0] = Math.floor(rand() * 4294967296);
      if (!Number.isNaN(f[0])) values.push(f[0]);
    }
    for (const x of values) {
      const h = half.halfToFloat(half.floatToHalf(x));
      if (!Object.is(h, refHalf(x))) assert.fail(`half(${x}) = ${h}, expected ${refHalf(x)}`);
      const b = half.bfloat16ToFloat(half.floatToBFloat16(x));
      if (!Object.is(b, refBf16(x))) assert.fail(`bf16(${x}) = ${b}, expected ${refBf16(x)}`);
    }
  });

  it('every half and bfloat16 value round-trips; NaN stays NaN', () => {
    for (let h = 0; h < 65536; h++) {
      const x = half.halfToFloat(h);
      if (Number.isNaN(x)) assert.ok(Number.isNaN(half.halfToFloat(half.floatToHalf(x))));
      else if (half.floatToHalf(x) !== h) assert.fail(`half 0x${h.toString(16)} does not round-trip`);
      const y = half.bfloat16ToFloat(h);
      if (Number.isNaN(y)) assert.ok(Number.isNaN(half.bfloat16ToFloat(half.floatToBFloat16(y))));
      else if (half.floatToBFloat16(y) !== h) assert.fail(`bf16 0x${h.toString(16)} does not round-trip`);
    }
  });

  it('native and js store the same bits for arbitrary float32 bit patterns (NaN payloads included)', function () {
    if (!BACKENDS.includes('native')) this.skip();
    const rand = mulberry32(7);
    const n = 4096;
    const bits = new Uint32Array(n * 4);
    for (let i = 0; i < bits.length; i++) bits[i] = Math.floor(rand() * 4294967296);
    bits[0] = 0x7f800001; bits[1] = 0xffc12345; bits[2] = 0x477fefff; bits[3] = 0x477ff000;
    const values = new Float32Array(bits.buffer);
    for (const storage of ['float16', 'bfloat16']) {
      const got = ['native', 'js'].map((backend) => {
        const m = new nc.CacheManager({ e: { shape: [4], dtype: 'float32', storage } }, n, { backend });
        const c = m.initCache();
        m.updateCache(c, { newItems: { e: values } });
        return c.read('e');
      });
      bitsEqual(got[0], got[1], storage);
    }
  });
});
