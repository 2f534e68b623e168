/**
 * Philox4x32-10 and the noise mapping shared by every backend (twin of
 * native/rng.h; keep the two identical).
 *
 *   key     = (seed mod 2^32, floor(seed / 2^32))          seed < 2^53
 *   counter = (floor(col / 4) mod 2^32, row, call mod 2^32, floor(call / 2^32))
 *   word    = philox4x32_10(counter, key)[col mod 4]
 *   u       = (word + 0.5) * 2^-32                          in (0, 1)
 *   gumbel  = -log(-log(u))                                 float64
 */

const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;
const TWO32 = 4294967296;

/** High 32 bits of the 64-bit product of two uint32 (exact, in doubles). */
export function mulhi32(a: number, b: number): number {
  const ah = a >>> 16, al = a & 0xffff, bh = b >>> 16, bl = b & 0xffff;
  const p = al * bl, m1 = ah * bl, m2 = al * bh;
  const mid = (m1 & 0xffff) + (m2 & 0xffff) + Math.floor(p / 65536);
  return (ah * bh + Math.floor(m1 / 65536) + Math.floor(m2 / 65536) + Math.floor(mid / 65536)) >>> 0;
}

/** Philox4x32-10 of counter (c0..c3) and key (k0, k1); writes 4 uint32 into out. */
export function philox4x32_10(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number,
                              out: Uint32Array = new Uint32Array(4)): Uint32Array {
  c0 >>>= 0; c1 >>>= 0; c2 >>>= 0; c3 >>>= 0; k0 >>>= 0; k1 >>>= 0;
  for (let round = 0; round < 10; round++) {
    const hi0 = mulhi32(M0, c0), lo0 = Math.imul(M0, c0) >>> 0;
    const hi1 = mulhi32(M1, c2), lo1 = Math.imul(M1, c2) >>> 0;
    const n0 = (hi1 ^ c1 ^ k0) >>> 0, n2 = (hi0 ^ c3 ^ k1) >>> 0;
    c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
    k0 = (k0 + W0) >>> 0; k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
  return out;
}

const scratch = new Uint32Array(4);

/** The uniform word for (seed, call, row, col). */
export function noiseWord(seed: number, call: number, row: number, col: number): number {
  philox4x32_10(Math.floor(col / 4) % TWO32, row, call % TWO32, Math.floor(call / TWO32),
                seed % TWO32, Math.floor(seed / TWO32), scratch);
  return scratch[col % 4];
}

/** Standard Gumbel from a uniform word. */
export function gumbelFromWord(word: number): number {
  const u = (word + 0.5) / TWO32;
  return -Math.log(-Math.log(u));
}

export function gumbelNoise(seed: number, call: number, row: number, col: number): number {
  return gumbelFromWord(noiseWord(seed, call, row, col));
}
