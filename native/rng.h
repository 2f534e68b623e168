// Counter-based random numbers for Gumbel sampling: Philox4x32-10 (Salmon et
// al., SC'11). The noise of every (seed, call, row, column) is a pure function
// of those four numbers, so draws do not depend on thread count, tiling or
// backend. The JS twin is src/js/philox.ts; keep the two identical.
//
// Mapping (documented in README "Reproducible sampling"):
//   key     = (seed mod 2^32, floor(seed / 2^32))          seed < 2^53
//   counter = (floor(col / 4) mod 2^32, row, call mod 2^32, floor(call / 2^32))
//   word    = philox4x32_10(counter, key)[col mod 4]
//   u       = (word + 0.5) * 2^-32                          in (0, 1), float64
//   gumbel  = -log(-log(u))                                 float64
//   perturbed score = invTemp * s + gumbel                  float64, ties -> smaller col
#pragma once
#include <cmath>
#include <cstdint>

namespace nc {

struct Philox4x32 {
  uint32_t v[4];
};

inline void philoxMulhilo(uint32_t a, uint32_t b, uint32_t& hi, uint32_t& lo) {
  const uint64_t p = static_cast<uint64_t>(a) * b;
  hi = static_cast<uint32_t>(p >> 32);
  lo = static_cast<uint32_t>(p);
}

/// Philox4x32 with 10 rounds on counter c and key (k0, k1).
inline Philox4x32 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0,
                                uint32_t k1) {
  constexpr uint32_t M0 = 0xD2511F53u, M1 = 0xCD9E8D57u;
  constexpr uint32_t W0 = 0x9E3779B9u, W1 = 0xBB67AE85u;
  for (int round = 0; round < 10; ++round) {
    uint32_t hi0, lo0, hi1, lo1;
    philoxMulhilo(M0, c0, hi0, lo0);
    philoxMulhilo(M1, c2, hi1, lo1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n1 = lo1, n2 = hi0 ^ c3 ^ k1, n3 = lo0;
    c0 = n0; c1 = n1; c2 = n2; c3 = n3;
    k0 += W0; k1 += W1;
  }
  return Philox4x32{{c0, c1, c2, c3}};
}

/// The uniform word for (seed, call, row, col) as in the mapping above.
inline uint32_t noiseWord(uint64_t seed, uint64_t call, uint32_t row, uint64_t col) {
  const Philox4x32 r = philox4x32_10(static_cast<uint32_t>(col >> 2), row,
                                     static_cast<uint32_t>(call), static_cast<uint32_t>(call >> 32),
                                     static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return r.v[col & 3];
}

/// Standard Gumbel from a uniform word: -log(-log((word + 0.5) / 2^32)).
inline double gumbelFromWord(uint32_t word) {
  const double u = (static_cast<double>(word) + 0.5) * (1.0 / 4294967296.0);
  return -std::log(-std::log(u));
}

inline double gumbelNoise(uint64_t seed, uint64_t call, uint32_t row, uint64_t col) {
  return gumbelFromWord(noiseWord(seed, call, row, col));
}

}  // namespace nc
