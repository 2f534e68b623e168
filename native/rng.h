// Counter-based random numbers for Gumbel sampling: Philox4x32-10 (Salmon et
// al., SC'11), one definition for the CPU scalar path, the CPU SIMD paths
// (through philoxRound on their own lane type) and the CUDA kernels. The noise
// of every (seed, call, row, column) is a pure function of those four
// numbers, so draws do not depend on thread count, tiling or backend. The JS
// twin is src/js/philox.ts; keep the two identical.
//
// Mapping (documented in docs/kernels.md "Reproducible sampling"):
//   key     = (seed mod 2^32, floor(seed / 2^32))          seed < 2^53
//   counter = (floor(col / 4) mod 2^32, row, call mod 2^32, floor(call / 2^32))
//   word    = philox4x32_10(counter, key)[col mod 4]
//   u       = (word + 0.5) * 2^-32                          in (0, 1), float64
//   gumbel  = -log(-log(u))                                 float64
//   perturbed score = invTemp * s + gumbel                  float64, ties -> smaller col
//
// Only constants, templates and inline functions: a SIMD tier instantiates
// philoxRound with a lane type of its own anonymous namespace, so the
// instantiation has internal linkage (no weak symbol compiled for its ISA).
#pragma once
#include <math.h>
#include <stdint.h>

#include "hd.h"

namespace nc {

/// Philox4x32 multipliers and Weyl key increments; 10 rounds.
constexpr uint32_t kPhiloxM0 = 0xD2511F53u, kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u, kPhiloxW1 = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

/// Largest standard Gumbel value gumbelFromWord can return is
/// -log(-log((2^32 - 0.5) / 2^32)) = 22.87; the filters use this bound.
constexpr float kGumbelMax = 23.0f;

/// One Philox4x32 round on counters (c0..c3) with round key (k0, k1), for any
/// lane type L: L::V (a word or a vector of words), L::splat(u32),
/// L::mulhilo(m, x, hi, lo) (the two halves of the 64-bit products) and
/// L::xor3(a, b, c).
template <class L>
NC_HD inline void philoxRound(typename L::V& c0, typename L::V& c1, typename L::V& c2, typename L::V& c3,
                              typename L::V k0, typename L::V k1) {
  typename L::V hi0, lo0, hi1, lo1;
  L::mulhilo(L::splat(kPhiloxM0), c0, hi0, lo0);
  L::mulhilo(L::splat(kPhiloxM1), c2, hi1, lo1);
  const typename L::V n0 = L::xor3(hi1, c1, k0), n2 = L::xor3(hi0, c3, k1);
  c0 = n0;
  c1 = lo1;
  c2 = n2;
  c3 = lo0;
}

/// The lane type of the scalar Philox: one 32-bit word.
struct ScalarLanes {
  using V = uint32_t;
  NC_HD static V splat(uint32_t x) { return x; }
  NC_HD static void mulhilo(V m, V x, V& hi, V& lo) {
#if defined(__CUDA_ARCH__)
    hi = __umulhi(m, x);
    lo = m * x;
#else
    const uint64_t p = static_cast<uint64_t>(m) * x;
    hi = static_cast<uint32_t>(p >> 32);
    lo = static_cast<uint32_t>(p);
#endif
  }
  NC_HD static V xor3(V a, V b, V c) { return a ^ b ^ c; }
};

struct Philox4x32 {
  uint32_t v[4];
};

/// Philox4x32 with 10 rounds on counter c and key (k0, k1).
NC_HD inline Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                      uint32_t k1) {
  NC_UNROLL
  for (int round = 0; round < kPhiloxRounds; ++round) {
    philoxRound<ScalarLanes>(c0, c1, c2, c3, k0, k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

/// The key and the call words of the counter for one (seed, call).
struct NoiseKey {
  uint32_t k0, k1, c2, c3;
};

NC_HD inline NoiseKey noiseKey(uint64_t seed, uint64_t call) {
  return NoiseKey{static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(call),
                  static_cast<uint32_t>(call >> 32)};
}

/// The round keys and call words of one noise call, each splat once into the
/// lanes of L (the SIMD tiers: 4, 8 or 16 counters at a time).
template <class L>
struct PhiloxKeys {
  typename L::V k0[kPhiloxRounds], k1[kPhiloxRounds];
  typename L::V c2, c3;
};

template <class L>
NC_HD inline void makePhiloxKeys(const NoiseKey& key, PhiloxKeys<L>& rk) {
  uint32_t k0 = key.k0, k1 = key.k1;
  for (int round = 0; round < kPhiloxRounds; ++round) {
    rk.k0[round] = L::splat(k0);
    rk.k1[round] = L::splat(k1);
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  rk.c2 = L::splat(key.c2);
  rk.c3 = L::splat(key.c3);
}

/// words[i] lane l = philox4x32_10(counter (c0[l], c1[l], call), key).v[i],
/// with the keys of makePhiloxKeys.
template <class L>
NC_HD inline void philoxLanes(typename L::V c0, typename L::V c1, const PhiloxKeys<L>& rk, typename L::V words[4]) {
  typename L::V c2 = rk.c2, c3 = rk.c3;
  for (int round = 0; round < kPhiloxRounds; ++round) philoxRound<L>(c0, c1, c2, c3, rk.k0[round], rk.k1[round]);
  words[0] = c0;
  words[1] = c1;
  words[2] = c2;
  words[3] = c3;
}

/// The four words of noise row `row`, columns 4 * colBlock .. 4 * colBlock + 3.
NC_HD inline Philox4x32 noiseBlock(const NoiseKey& key, uint32_t row, uint32_t colBlock) {
  return philox4x32_10(colBlock, row, key.c2, key.c3, key.k0, key.k1);
}

/// The uniform word for (seed, call, row, col) as in the mapping above.
NC_HD inline uint32_t noiseWord(uint64_t seed, uint64_t call, uint32_t row, uint64_t col) {
  return noiseBlock(noiseKey(seed, call), row, static_cast<uint32_t>(col >> 2)).v[col & 3];
}

/// Standard Gumbel from a uniform word: -log(-log((word + 0.5) / 2^32)).
NC_HD inline double gumbelFromWord(uint32_t word) {
  const double u = (static_cast<double>(word) + 0.5) * (1.0 / 4294967296.0);
  return -::log(-::log(u));
}

NC_HD inline double gumbelNoise(uint64_t seed, uint64_t call, uint32_t row, uint64_t col) {
  return gumbelFromWord(noiseWord(seed, call, row, col));
}

}  // namespace nc
