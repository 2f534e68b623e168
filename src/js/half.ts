/**
 * float32 <-> float16 / bfloat16, bit-identical to native/half.h: float32 ->
 * half rounds to nearest, ties to even; overflow gives ±inf; NaN stays NaN
 * (quiet bit set, top payload bits kept). half -> float32 is exact.
 */

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/** binary16 bits from float32 bits. */
function floatBitsToHalf(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return mant === 0 ? sign | 0x7c00 : sign | 0x7e00 | (mant >>> 13);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const full = mant | 0x800000;
    const shift = 14 - e;                       // 14..24
    let m = full >>> shift;
    const rem = full & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && (m & 1) !== 0)) m++;
    return sign | m;
  }
  let h = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && (h & 1) !== 0)) h++;
  return sign | h;
}

/** bfloat16 bits from float32 bits. */
function floatBitsToBFloat16(x: number): number {
  if ((x & 0x7f800000) === 0x7f800000 && (x & 0x7fffff) !== 0) return ((x >>> 16) | 0x0040) & 0xffff;
  return (((x >>> 0) + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

/** float32 bits of binary16 bits (exact). */
function halfToFloatBits(h: number): number {
  const sign = (h & 0x8000) << 16;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0x1f) return (mant === 0 ? sign | 0x7f800000 : sign | 0x7fc00000 | (mant << 13)) >>> 0;
  if (exp === 0) {
    if (mant === 0) return sign >>> 0;
    f32[0] = mant * 5.960464477539063e-8;     // mant * 2^-24, exact
    return (u32[0] | sign) >>> 0;
  }
  return (sign | ((exp + 112) << 23) | (mant << 13)) >>> 0;
}

/** float32 -> binary16 bits (one value). */
export function floatToHalf(f: number): number {
  f32[0] = f;
  return floatBitsToHalf(u32[0]);
}
/** binary16 bits -> float32 value (one value). */
export function halfToFloat(h: number): number {
  u32[0] = halfToFloatBits(h);
  return f32[0];
}
/** float32 -> bfloat16 bits (one value). */
export function floatToBFloat16(f: number): number {
  f32[0] = f;
  return floatBitsToBFloat16(u32[0]);
}
/** bfloat16 bits -> float32 value (one value). */
export function bfloat16ToFloat(b: number): number {
  u32[0] = (b << 16) >>> 0;
  return f32[0];
}

let halfTable: Uint32Array | null = null;
let bfloat16Table: Uint32Array | null = null;
/** float32 bits of every binary16 value (a 256 KiB table, built on first use). */
function halfBitsTable(): Uint32Array {
  if (!halfTable) {
    halfTable = new Uint32Array(65536);
    for (let h = 0; h < 65536; h++) halfTable[h] = halfToFloatBits(h);
  }
  return halfTable;
}

/** The float32 value of every 16-bit pattern of a half storage type (65536 entries, built on first use). */
export function decodeTable(storage: 'float16' | 'bfloat16'): Float32Array {
  if (storage === 'float16') return new Float32Array(halfBitsTable().buffer);
  if (!bfloat16Table) {
    bfloat16Table = new Uint32Array(65536);
    for (let b = 0; b < 65536; b++) bfloat16Table[b] = b << 16;
  }
  return new Float32Array(bfloat16Table.buffer);
}

function bitsOf(src: Float32Array): Uint32Array {
  return new Uint32Array(src.buffer, src.byteOffset, src.length);
}

/** n float32 values from src[srcOff..] -> half bits into dst[dstOff..]. */
export function floatsToHalves(src: Float32Array, srcOff: number, dst: Uint16Array, dstOff: number, n: number): void {
  const bits = bitsOf(src);
  for (let i = 0; i < n; i++) dst[dstOff + i] = floatBitsToHalf(bits[srcOff + i]);
}
/** n float32 values -> bfloat16 bits. */
export function floatsToBFloat16s(src: Float32Array, srcOff: number, dst: Uint16Array, dstOff: number, n: number): void {
  const bits = bitsOf(src);
  for (let i = 0; i < n; i++) dst[dstOff + i] = floatBitsToBFloat16(bits[srcOff + i]);
}
/** n halves -> float32 values into dst[dstOff..] (exact). */
export function halvesToFloats(src: Uint16Array, srcOff: number, dst: Float32Array, dstOff: number, n: number): void {
  const table = halfBitsTable();
  const out = bitsOf(dst);
  for (let i = 0; i < n; i++) out[dstOff + i] = table[src[srcOff + i]];
}
/** n bfloat16 -> float32 values (exact). */
export function bfloat16sToFloats(src: Uint16Array, srcOff: number, dst: Float32Array, dstOff: number, n: number): void {
  const out = bitsOf(dst);
  for (let i = 0; i < n; i++) out[dstOff + i] = src[srcOff + i] << 16;
}
