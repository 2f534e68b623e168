'use strict';
// A second, straightforward implementation of the noise mapping of
// src/js/philox.ts (64-bit products in four 16-bit pieces), used only as the
// tests' oracle: the shipped one is checked against it and against the
// Random123 known answer.

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO32 = 4294967296;

/** High 32 bits of the 64-bit product of two uint32. */
function mulhi32(a, b) {
  const ah = a >>> 16, al = a & 0xffff, bh = b >>> 16, bl = b & 0xffff;
  const p = al * bl, m1 = ah * bl, m2 = al * bh;
  const mid = (m1 & 0xffff) + (m2 & 0xffff) + Math.floor(p / 65536);
  return (ah * bh + Math.floor(m1 / 65536) + Math.floor(m2 / 65536) + Math.floor(mid / 65536)) >>> 0;
}

/** Philox4x32-10 of counter (c0..c3) and key (k0, k1): 4 uint32 in a new Uint32Array. */
function philox4x32_10(c0, c1, c2, c3, k0, k1) {
  c0 >>>= 0; c1 >>>= 0; c2 >>>= 0; c3 >>>= 0; k0 >>>= 0; k1 >>>= 0;
  for (let round = 0; round < 10; round++) {
    const hi0 = mulhi32(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 = (k0 + W0) >>> 0; k1 = (k1 + W1) >>> 0;
  }
  return Uint32Array.of(c0, c1, c2, c3);
}

/** The standard Gumbel noise of (seed, call, row, col). */
function gumbelNoise(seed, call, row, col) {
  const word = philox4x32_10(Math.floor(col / 4) % TWO32, row, call % TWO32, Math.floor(call / TWO32),
    seed % TWO32, Math.floor(seed / TWO32))[col % 4];
  return -Math.log(-Math.log((word + 0.5) / TWO32));
}

module.exports = { philox4x32_10, gumbelNoise };
