// float32 <-> float16 / bfloat16 conversions, one definition for host and
// device code, bit-identical to src/js/half.ts.
//
// float32 -> half rounds to nearest, ties to even; overflow gives +-inf; NaN
// stays NaN (quiet bit set, top payload bits kept, as F16C's vcvtps2ph does).
// half -> float32 is exact (on the device through the hardware conversion,
// which gives the same value). The F16C paths of the CPU tiers
// (native/cpu/*_avx2.cc) give the same bits; test/cpp/cache_store_test.cc
// checks the scalar functions against F16C.
#pragma once
#include <stdint.h>
#include <string.h>

#include "hd.h"

#if defined(__CUDACC__)
#include <cuda_fp16.h>
#endif

namespace nc {

NC_HD inline uint32_t floatBits(float f) {
  uint32_t u;
  memcpy(&u, &f, 4);
  return u;
}
NC_HD inline float bitsFloat(uint32_t u) {
  float f;
  memcpy(&f, &u, 4);
  return f;
}

/// IEEE binary16 bits of f, round to nearest even.
NC_HD inline uint16_t floatToHalf(float f) {
  const uint32_t x = floatBits(f);
  const uint32_t sign = (x >> 16) & 0x8000u;
  const uint32_t exp = (x >> 23) & 0xffu;
  const uint32_t mant = x & 0x7fffffu;
  if (exp == 0xffu) {
    if (mant == 0) return static_cast<uint16_t>(sign | 0x7c00u);                  // inf
    return static_cast<uint16_t>(sign | 0x7e00u | (mant >> 13));                  // NaN
  }
  const int32_t e = static_cast<int32_t>(exp) - 127 + 15;  // biased half exponent
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7c00u);                      // overflow
  if (e <= 0) {
    // Subnormal half (or zero): value = m * 2^-24 with m = round(full * 2^(e-1-...)).
    if (e < -10) return static_cast<uint16_t>(sign);                               // < half of min subnormal
    const uint32_t full = mant | 0x800000u;        // 24-bit significand
    const uint32_t shift = static_cast<uint32_t>(14 - e);  // 14..24
    uint32_t m = full >> shift;
    const uint32_t rem = full & ((1u << shift) - 1u);
    const uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (m & 1u))) ++m;  // may carry into the normal range: still right
    return static_cast<uint16_t>(sign | m);
  }
  uint32_t h = (static_cast<uint32_t>(e) << 10) | (mant >> 13);
  const uint32_t rem = mant & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u))) ++h;  // carry may reach inf: correct
  return static_cast<uint16_t>(sign | h);
}

/// float32 value of IEEE binary16 bits (exact).
NC_HD inline float halfToFloat(uint16_t h) {
#if defined(__CUDA_ARCH__)
  return __half2float(__ushort_as_half(h));
#else
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  const uint32_t exp = (h >> 10) & 0x1fu;
  const uint32_t mant = h & 0x3ffu;
  if (exp == 0x1fu) {
    if (mant == 0) return bitsFloat(sign | 0x7f800000u);
    return bitsFloat(sign | 0x7fc00000u | (mant << 13));
  }
  if (exp == 0) {
    if (mant == 0) return bitsFloat(sign);
    // subnormal: mant * 2^-24, exact in float32
    const float v = static_cast<float>(mant) * bitsFloat(0x33800000u);  // 2^-24
    return sign ? -v : v;
  }
  return bitsFloat(sign | ((exp + 112u) << 23) | (mant << 13));
#endif
}

/// bfloat16 bits of f (the top 16 bits of float32), round to nearest even.
NC_HD inline uint16_t floatToBFloat16(float f) {
  const uint32_t x = floatBits(f);
  if ((x & 0x7f800000u) == 0x7f800000u && (x & 0x7fffffu) != 0) {
    return static_cast<uint16_t>((x >> 16) | 0x0040u);  // NaN stays NaN (quiet)
  }
  const uint32_t rounded = x + 0x7fffu + ((x >> 16) & 1u);  // overflow rounds to inf
  return static_cast<uint16_t>(rounded >> 16);
}

/// float32 value of bfloat16 bits (exact).
NC_HD inline float bfloat16ToFloat(uint16_t b) { return bitsFloat(static_cast<uint32_t>(b) << 16); }

/// n halves -> n floats.
inline void halfToFloatN(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = halfToFloat(in[i]);
}

/// n bfloat16 -> n floats.
inline void bfloat16ToFloatN(const uint16_t* in, float* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = bfloat16ToFloat(in[i]);
}

/// n floats -> n halves, round to nearest even.
inline void floatToHalfN(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = floatToHalf(in[i]);
}

/// n floats -> n bfloat16, round to nearest even.
inline void floatToBFloat16N(const float* in, uint16_t* out, int64_t n) {
  for (int64_t i = 0; i < n; ++i) out[i] = floatToBFloat16(in[i]);
}

}  // namespace nc
