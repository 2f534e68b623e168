/**
 * The noise every backend draws (twin of native/rng.h; keep the two
 * identical): Philox4x32-10 (Salmon et al., SC'11) keyed by the seed and
 * counted by (column block, row, call), mapped to a standard Gumbel value.
 *
 *   key     = (seed mod 2^32, floor(seed / 2^32))          seed < 2^53
 *   counter = (floor(col / 4) mod 2^32, row, call mod 2^32, floor(call / 2^32))
 *   word    = philox4x32_10(counter, key)[col mod 4]
 *   u       = (word + 0.5) * 2^-32                          in (0, 1)
 *   gumbel  = -log(-log(u))                                 float64
 *
 * test/helpers/philox.js holds a straightforward second implementation the
 * tests check this one (and the Random123 known answer) against.
 */

const TWO32 = 4294967296;
const TWO_M32 = 1 / TWO32;
const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/**
 * Philox4x32-10 of counter (c0..c3) and key (k0, k1), all uint32, into out.
 * The high word of a 32x32-bit product is exact in doubles as
 * a*b = (a*bh)*2^16 + a*bl with both partial products below 2^53.
 */
export function philoxBlock(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number,
                            out: Uint32Array): void {
  for (let round = 0; round < 10; round++) {
    const x0 = M0 * (c0 >>> 16), y0 = M0 * (c0 & 0xffff);
    const hi0 = Math.floor((x0 + Math.floor(y0 / 65536)) / 65536) >>> 0;
    const lo0 = Math.imul(M0, c0) >>> 0;
    const x1 = M1 * (c2 >>> 16), y1 = M1 * (c2 & 0xffff);
    const hi1 = Math.floor((x1 + Math.floor(y1 / 65536)) / 65536) >>> 0;
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/** Standard Gumbel value of a uniform word. */
function gumbelFromWord(word: number): number {
  return -Math.log(-Math.log((word + 0.5) * TWO_M32));
}

/** Largest Gumbel value the mapping can produce (word = 2^32 - 1), plus a margin: a bound no noise exceeds. */
export const GUMBEL_MAX = gumbelFromWord(TWO32 - 1) + 1e-6;

/**
 * The Gumbel noise of one (seed, call): at(row, col) per the mapping above.
 * Consecutive columns of a row share a Philox block of 4 words, computed once.
 */
export class GumbelNoise {
  private readonly key0: number;
  private readonly key1: number;
  private readonly call0: number;
  private readonly call1: number;
  private readonly words = new Uint32Array(4);
  private blockRow = -1;
  private blockId = -1;

  constructor(seed: number, call: number) {
    this.key0 = seed % TWO32;
    this.key1 = Math.floor(seed / TWO32);
    this.call0 = call % TWO32;
    this.call1 = Math.floor(call / TWO32);
  }

  at(row: number, col: number): number {
    const block = Math.floor(col / 4);
    if (block !== this.blockId || row !== this.blockRow) {
      philoxBlock(block % TWO32, row, this.call0, this.call1, this.key0, this.key1, this.words);
      this.blockId = block;
      this.blockRow = row;
    }
    return gumbelFromWord(this.words[col & 3]);
  }
}
