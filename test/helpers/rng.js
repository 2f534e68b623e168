'use strict';
// Deterministic random numbers for the tests (not a test file: mocha runs
// test/**/*.test.js only).

/** mulberry32: a generator of uniform floats in [0, 1) from a 32-bit seed. */
function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** mulberry32 with a normal sampler (Box-Muller) and integers in [0, n). */
function rng(seed) {
  const next = mulberry32(seed);
  const normal = () => Math.sqrt(-2 * Math.log(next() + 1e-12)) * Math.cos(2 * Math.PI * next());
  const int = (n) => Math.floor(next() * n);
  return { next, normal, int };
}

module.exports = { mulberry32, rng };
