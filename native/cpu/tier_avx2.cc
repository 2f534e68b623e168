// The AVX2 / FMA / F16C tier: micro-kernel and epilogues. Compiled with
// -mavx2 -mfma -mf16c and entered only after a CPUID check (dispatch.cc).
// Everything here is in an anonymous namespace, uses raw pointers and
// intrinsics and instantiates no inline library function, and the one shared
// template (philoxRound, rng.h) only with a lane type of this anonymous
// namespace, so no weak symbol compiled for AVX2 can be picked by the linker
// for a baseline caller (check: nm on the object shows no W/V/u symbol).
#include "tier.h"

#if defined(__AVX2__) && defined(__FMA__) && defined(__F16C__)
#include <immintrin.h>

#include "common.h"

namespace nc {
namespace cpu {
namespace {

// --- conversions -------------------------------------------------------------

void convertRowAvx2(const void* src, int32_t storage, int64_t n, float* dst) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (storage == static_cast<int32_t>(DType::Float16)) {
    for (; i + 8 <= n; i += 8)
      _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i))));
    if (i < n) {
      alignas(16) uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      alignas(32) float out[8];
      for (int64_t t = 0; t < n - i; ++t) tmp[t] = h[i + t];
      _mm256_store_ps(out, _mm256_cvtph_ps(_mm_load_si128(reinterpret_cast<const __m128i*>(tmp))));
      for (int64_t t = 0; t < n - i; ++t) dst[i + t] = out[t];
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      const __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(h + i)));
      _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(w, 16)));
    }
    for (; i < n; ++i) {
      const __m128i w = _mm_cvtsi32_si128(static_cast<int>(static_cast<uint32_t>(h[i]) << 16));
      _mm_store_ss(dst + i, _mm_castsi128_ps(w));
    }
  }
}

// --- GEMM: 6 cache rows x 16 queries micro-kernel ----------------------------

void gemmBlockAvx2(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                   float* sb) {
  const __m256 vscale = _mm256_set1_ps(scale);
  for (int64_t rg = 0; rg < nrows; rg += 6) {
    const int64_t valid = nrows - rg < 6 ? nrows - rg : 6;
    const float* r0 = rows[rg];
    const float* r1 = rows[rg + (valid > 1 ? 1 : 0)];
    const float* r2 = rows[rg + (valid > 2 ? 2 : 0)];
    const float* r3 = rows[rg + (valid > 3 ? 3 : 0)];
    const float* r4 = rows[rg + (valid > 4 ? 4 : 0)];
    const float* r5 = rows[rg + (valid > 5 ? 5 : 0)];
    __m256 c00 = _mm256_setzero_ps(), c01 = _mm256_setzero_ps();
    __m256 c10 = _mm256_setzero_ps(), c11 = _mm256_setzero_ps();
    __m256 c20 = _mm256_setzero_ps(), c21 = _mm256_setzero_ps();
    __m256 c30 = _mm256_setzero_ps(), c31 = _mm256_setzero_ps();
    __m256 c40 = _mm256_setzero_ps(), c41 = _mm256_setzero_ps();
    __m256 c50 = _mm256_setzero_ps(), c51 = _mm256_setzero_ps();
    for (int64_t d = 0; d < dim; ++d) {
      const __m256 a0 = _mm256_loadu_ps(q + d * 16);
      const __m256 a1 = _mm256_loadu_ps(q + d * 16 + 8);
      __m256 e = _mm256_broadcast_ss(r0 + d);
      c00 = _mm256_fmadd_ps(e, a0, c00);
      c01 = _mm256_fmadd_ps(e, a1, c01);
      e = _mm256_broadcast_ss(r1 + d);
      c10 = _mm256_fmadd_ps(e, a0, c10);
      c11 = _mm256_fmadd_ps(e, a1, c11);
      e = _mm256_broadcast_ss(r2 + d);
      c20 = _mm256_fmadd_ps(e, a0, c20);
      c21 = _mm256_fmadd_ps(e, a1, c21);
      e = _mm256_broadcast_ss(r3 + d);
      c30 = _mm256_fmadd_ps(e, a0, c30);
      c31 = _mm256_fmadd_ps(e, a1, c31);
      e = _mm256_broadcast_ss(r4 + d);
      c40 = _mm256_fmadd_ps(e, a0, c40);
      c41 = _mm256_fmadd_ps(e, a1, c41);
      e = _mm256_broadcast_ss(r5 + d);
      c50 = _mm256_fmadd_ps(e, a0, c50);
      c51 = _mm256_fmadd_ps(e, a1, c51);
    }
    float* o = sb + rg * 16;
    _mm256_storeu_ps(o, _mm256_mul_ps(c00, vscale));
    _mm256_storeu_ps(o + 8, _mm256_mul_ps(c01, vscale));
    _mm256_storeu_ps(o + 16, _mm256_mul_ps(c10, vscale));
    _mm256_storeu_ps(o + 24, _mm256_mul_ps(c11, vscale));
    _mm256_storeu_ps(o + 32, _mm256_mul_ps(c20, vscale));
    _mm256_storeu_ps(o + 40, _mm256_mul_ps(c21, vscale));
    _mm256_storeu_ps(o + 48, _mm256_mul_ps(c30, vscale));
    _mm256_storeu_ps(o + 56, _mm256_mul_ps(c31, vscale));
    _mm256_storeu_ps(o + 64, _mm256_mul_ps(c40, vscale));
    _mm256_storeu_ps(o + 72, _mm256_mul_ps(c41, vscale));
    _mm256_storeu_ps(o + 80, _mm256_mul_ps(c50, vscale));
    _mm256_storeu_ps(o + 88, _mm256_mul_ps(c51, vscale));
  }
}

// --- vector exp (relative error ~1e-7 on the clamped range) ------------------

__m256 exp256(__m256 x) {
  x = _mm256_min_ps(x, _mm256_set1_ps(88.3f));
  x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// --- Philox4x32-10 on 8 counters (lanes = 8 consecutive query rows) ----------

inline void mulhilo8(__m256i a, __m256i m, __m256i& hi, __m256i& lo) {
  const __m256i even = _mm256_mul_epu32(a, m);
  const __m256i odd = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);
  lo = _mm256_mullo_epi32(a, m);
  hi = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
}

/// The lane type of philoxRound (rng.h): 8 words.
struct Avx2Lanes {
  using V = __m256i;
  static V splat(uint32_t x) { return _mm256_set1_epi32(static_cast<int>(x)); }
  static void mulhilo(V m, V x, V& hi, V& lo) { mulhilo8(x, m, hi, lo); }
  static V xor3(V a, V b, V c) { return _mm256_xor_si256(_mm256_xor_si256(a, b), c); }
};

using RoundKeys = PhiloxKeys<Avx2Lanes>;

/// words[i] lane l = philox(col block `blk`, row rowBase + l, call, key).v[i].
void philox8(uint32_t blk, uint32_t rowBase, const RoundKeys& rk, __m256i words[4]) {
  philoxLanes(_mm256_set1_epi32(static_cast<int>(blk)),
           _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(rowBase)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)),
           rk, words);
}

// --- sampling epilogue ---------------------------------------------------------

struct LaneThresholds {
  __m256 t;    // k-th perturbed score (float), -inf while fewer than k
  __m256 low;  // t - Gumbel max - margin: below it no noise can reach t
  __m256 marg;
};

LaneThresholds loadThresholds(const double* thresh, int64_t b0, int64_t valid) {
  alignas(32) double tmp[8];
  for (int l = 0; l < 8; ++l) tmp[l] = l < valid ? thresh[b0 + l] : 0.0;
  const __m128 lo = _mm256_cvtpd_ps(_mm256_load_pd(tmp));
  const __m128 hi = _mm256_cvtpd_ps(_mm256_load_pd(tmp + 4));
  LaneThresholds r;
  r.t = _mm256_set_m128(hi, lo);
  const __m256 absT = _mm256_andnot_ps(_mm256_set1_ps(-0.0f), r.t);
  r.marg = _mm256_mul_ps(_mm256_set1_ps(1e-3f), _mm256_add_ps(_mm256_set1_ps(1.0f), absT));
  r.low = _mm256_sub_ps(_mm256_sub_ps(r.t, _mm256_set1_ps(kGumbelMax)), r.marg);
  return r;
}

/// 1 - u from Philox words, rounded down: (~w >> 1) * 2^-31.
__m256 oneMinusU(__m256i w) {
  return _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_srli_epi32(_mm256_xor_si256(w, _mm256_set1_epi32(-1)), 1)),
                       _mm256_set1_ps(4.656612873077392578125e-10f));
}

/// Lanes whose noise may lift d above t: G = -log(-log u) <= -log(1 - u), so
/// a lane cannot reach t when 1 - u > bound = exp(d - t + margin).
int boundPassWith(__m256i w, __m256 bound) {
  return _mm256_movemask_ps(_mm256_cmp_ps(oneMinusU(w), bound, _CMP_NGT_UQ));
}
int boundPass(__m256i w, __m256 d, __m256 t, __m256 marg) {
  return boundPassWith(w, exp256(_mm256_add_ps(_mm256_sub_ps(d, t), marg)));
}

/// exp(M - t + margin) per lane for reusing exp(s - M) of the lse pass as the
/// bound (invTemp = 1); usable only where M - t + margin < 80 on every lane
/// (no clamping in exp256, so the product is never below the true bound).
int boundScale(__m256 M, const LaneThresholds& th, int validMask, __m256& scale) {
  const __m256 x = _mm256_add_ps(_mm256_sub_ps(M, th.t), th.marg);
  scale = exp256(x);
  return (_mm256_movemask_ps(_mm256_cmp_ps(x, _mm256_set1_ps(80.0f), _CMP_LT_OQ)) & validMask) == validMask;
}

/// Lane indices of the set bits of an 8-bit mask, in order, one per byte
/// (for _mm256_permutevar8x32 left-packing).
struct CompressTable {
  uint64_t v[256];
  constexpr CompressTable() : v() {
    for (int m = 0; m < 256; ++m) {
      uint64_t x = 0;
      int n = 0;
      for (int l = 0; l < 8; ++l)
        if (m & (1 << l)) x |= static_cast<uint64_t>(l) << (8 * n++);
      v[m] = x;
    }
  }
};
constexpr CompressTable kCompress{};

/// Handles the first min(pd.n, 8) queued lanes and keeps the rest queued.
void flushPending(const SampleTile* t, const RoundKeys& rk, PendingDraws& pd) {
  if (pd.n == 0) return;
  const int rest = pd.n > 8 ? pd.n - 8 : 0;
  if (rest > 0) pd.n = 8;
  for (int l = pd.n; l < 8; ++l) {
    pd.j[l] = pd.j[0];
    pd.b[l] = pd.b[0];
    pd.s[l] = pd.s[0];
  }
  KBest* tk = t->topk;
  const __m256i jv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pd.j));
  const __m256i bv = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pd.b));
  __m256i words[4];
  philoxLanes(_mm256_srli_epi32(jv, 2), _mm256_add_epi32(bv, _mm256_set1_epi32(static_cast<int>(t->noiseRow0))), rk, words);
  const __m256 bit0 = _mm256_castsi256_ps(_mm256_slli_epi32(jv, 31));
  const __m256 bit1 = _mm256_castsi256_ps(_mm256_slli_epi32(jv, 30));
  const __m256 w01 = _mm256_blendv_ps(_mm256_castsi256_ps(words[0]), _mm256_castsi256_ps(words[1]), bit0);
  const __m256 w23 = _mm256_blendv_ps(_mm256_castsi256_ps(words[2]), _mm256_castsi256_ps(words[3]), bit0);
  const __m256i w = _mm256_castps_si256(_mm256_blendv_ps(w01, w23, bit1));
  alignas(32) float tl[8];
  for (int l = 0; l < 8; ++l) tl[l] = static_cast<float>(tk->thresh[pd.b[l]]);
  const __m256 tv = _mm256_load_ps(tl);
  const __m256 marg = _mm256_mul_ps(_mm256_set1_ps(1e-3f),
                                    _mm256_add_ps(_mm256_set1_ps(1.0f), _mm256_andnot_ps(_mm256_set1_ps(-0.0f), tv)));
  const __m256 d = _mm256_mul_ps(_mm256_loadu_ps(pd.s), _mm256_set1_ps(t->invTemp));
  int bits = boundPass(w, d, tv, marg) & ((1 << pd.n) - 1);
  if (bits) {
    alignas(32) uint32_t wl[8];
    _mm256_store_si256(reinterpret_cast<__m256i*>(wl), w);
    while (bits) {
      const int l = __builtin_ctz(bits);
      bits &= bits - 1;
      offerGumbel(tk, pd.b[l], pd.j[l], pd.s[l], t->invTempD, wl[l]);
    }
  }
  pd.n = rest;
  if (rest > 0) {
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pd.j),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pd.j + 8)));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(pd.b),
                        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(pd.b + 8)));
    _mm256_storeu_ps(pd.s, _mm256_loadu_ps(pd.s + 8));
  }
}

void sampleTileAvx2(const SampleTile* t) {
  const int64_t nrows = t->nrows, bpad = 16;
  const __m256i lane8 = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 invTemp = _mm256_set1_ps(t->invTemp);
  KBest* tk = t->topk;
  RoundKeys rk;
  if (t->mode == 0) makePhiloxKeys(t->key, rk);
  if (t->flushOnly) {
    if (t->pending != nullptr && t->mode == 0)
      while (t->pending->n > 0) flushPending(t, rk, *t->pending);
    return;
  }
  PendingDraws& pending = *t->pending;
  for (int64_t h = 0; h < t->qcount; h += 8) {
    const float* sb = t->sb + h;  // this half of the block
    const int64_t b0 = t->qbase + h;
    const int64_t valid = t->qcount - h < 8 ? t->qcount - h : 8;
    const int validMask = (1 << valid) - 1;
    const __m256i queryIds = _mm256_set1_epi32(static_cast<int>(b0));
    LaneThresholds th{};
    if (t->mode != 2) th = loadThresholds(tk->thresh, b0, valid);
    // Gumbel: a lane passes the score filter when invTemp * s >= t - Gmax - margin;
    // MaxScore: when s >= t.
    const __m256 passAt = t->mode == 1 ? th.t : th.low;
    const __m256 mul = t->mode == 1 ? _mm256_set1_ps(1.0f) : invTemp;
    // Logsumexp partial (padded lanes are computed and ignored), fused with the filter.
    __m256 m = _mm256_set1_ps(-__builtin_inff());
    for (int64_t r = 0; r < nrows; ++r) m = _mm256_max_ps(m, _mm256_loadu_ps(sb + r * bpad));
    const __m256 oldM = _mm256_loadu_ps(t->lseMax + h);
    const __m256 newM = _mm256_max_ps(oldM, m);
    // A lane with only excluded scores (-inf) so far keeps newM = -inf; 0 in
    // its place keeps -inf - -inf (NaN) out of the exponentials.
    const __m256 safeM = _mm256_blendv_ps(newM, _mm256_setzero_ps(),
                                          _mm256_cmp_ps(newM, _mm256_set1_ps(-__builtin_inff()), _CMP_EQ_OQ));
    const __m256 rescale = exp256(_mm256_sub_ps(oldM, safeM));
    __m256 sum = _mm256_setzero_ps();
    uint32_t passRows = 0;  // bit r: row r has a valid lane passing the filter
    alignas(32) float ex[kTileRows * 8];  // exp(s - newM), reused by the noise bound
    for (int64_t r = 0; r < nrows; ++r) {
      const __m256 s = _mm256_loadu_ps(sb + r * bpad);
      const __m256 e = exp256(_mm256_sub_ps(s, safeM));
      _mm256_store_ps(ex + r * 8, e);
      sum = _mm256_add_ps(sum, e);
      // S = -inf marks an excluded (query, row) (driver.h forEachTile): never
      // passes, even while a list holds fewer than k (threshold -inf).
      const __m256 p = _mm256_and_ps(_mm256_cmp_ps(_mm256_mul_ps(s, mul), passAt, _CMP_GE_OQ),
                                     _mm256_cmp_ps(s, _mm256_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ));
      passRows |= static_cast<uint32_t>((_mm256_movemask_ps(p) & validMask) != 0) << r;
    }
    __m256d s0 = _mm256_loadu_pd(t->lseSum + h), s1 = _mm256_loadu_pd(t->lseSum + h + 4);
    s0 = _mm256_fmadd_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(rescale)),
                         _mm256_cvtps_pd(_mm256_castps256_ps128(sum)));
    s1 = _mm256_fmadd_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(rescale, 1)),
                         _mm256_cvtps_pd(_mm256_extractf128_ps(sum, 1)));
    _mm256_storeu_pd(t->lseSum + h, s0);
    _mm256_storeu_pd(t->lseSum + h + 4, s1);
    _mm256_storeu_ps(t->lseMax + h, newM);
    if (t->mode == 2 || passRows == 0) continue;

    // Draws: exact float64 decisions for the lanes that pass the filters.
    if (t->mode == 1) {
      // Rows in order, visiting only those with a passing lane (a bit scan
      // instead of one unpredictable branch per row).
      for (uint32_t rows = passRows; rows != 0; rows &= rows - 1) {
        const int64_t r = __builtin_ctz(rows);
        const __m256 s = _mm256_loadu_ps(sb + r * bpad);
        int bits = _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(s, th.t, _CMP_GE_OQ),
                                                    _mm256_cmp_ps(s, _mm256_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ))) &
                   validMask;
        if (bits == 0) continue;
        while (bits) {
          const int l = __builtin_ctz(bits);
          bits &= bits - 1;
          const float sv = sb[r * bpad + l];
          offerDraw(tk, b0 + l, t->rowIdx[r], sv, static_cast<double>(sv));
        }
        th = loadThresholds(tk->thresh, b0, valid);
      }
      continue;
    }
    uint32_t lastBlock = 0;
    bool haveBlock = false;
    __m256i words[4];
    const bool reuseExp = t->invTemp == 1.0f;
    __m256 scale = _mm256_setzero_ps();
    bool fast = reuseExp && boundScale(newM, th, validMask, scale);
    for (uint32_t rows = passRows; rows != 0; rows &= rows - 1) {
      const int64_t r = __builtin_ctz(rows);
      const __m256 s = _mm256_loadu_ps(sb + r * bpad);
      const __m256 d = _mm256_mul_ps(s, invTemp);
      const int pass = _mm256_movemask_ps(_mm256_and_ps(_mm256_cmp_ps(d, th.low, _CMP_GE_OQ),
                                                        _mm256_cmp_ps(s, _mm256_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ))) &
                       validMask;
      if (pass == 0) continue;
      const uint32_t j = static_cast<uint32_t>(t->rowIdx[r]);
      const bool sameBlock = haveBlock && (j >> 2) == lastBlock;
      if (!sameBlock && __builtin_popcount(pass) <= 2) {
        // Sparse: queue the lanes (left-packed, in lane order); one Philox
        // call serves 8 of them.
        const __m256i perm = _mm256_cvtepu8_epi32(
            _mm_cvtsi64_si128(static_cast<long long>(kCompress.v[pass])));
        const int n = pending.n;
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pending.j + n),
                            _mm256_set1_epi32(static_cast<int>(j)));
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(pending.b + n),
                            _mm256_permutevar8x32_epi32(_mm256_add_epi32(queryIds, lane8), perm));
        _mm256_storeu_ps(pending.s + n, _mm256_permutevar8x32_ps(s, perm));
        pending.n = n + __builtin_popcount(pass);
        if (pending.n >= 8) flushPending(t, rk, pending);
        continue;
      }
      if (!sameBlock) {
        philox8(j >> 2, static_cast<uint32_t>(b0) + t->noiseRow0, rk, words);
        lastBlock = j >> 2;
        haveBlock = true;
      }
      const __m256i w = words[j & 3];
      int bits = pass & (fast ? boundPassWith(w, _mm256_mul_ps(_mm256_load_ps(ex + r * 8), scale))
                              : boundPass(w, d, th.t, th.marg));
      if (bits == 0) continue;
      alignas(32) uint32_t wl[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(wl), w);
      while (bits) {
        const int l = __builtin_ctz(bits);
        bits &= bits - 1;
        offerGumbel(tk, b0 + l, static_cast<int32_t>(j), sb[r * bpad + l], t->invTempD, wl[l]);
      }
      th = loadThresholds(tk->thresh, b0, valid);
      fast = reuseExp && boundScale(newM, th, validMask, scale);
    }
  }
}

// --- group max epilogue --------------------------------------------------------

void groupMaxTileAvx2(const GroupTile* t) {
  const int64_t bpad = t->bpad;
  for (int64_t r = 0; r < t->nrows; ++r) {
    const float* s = t->sb + r * 16;
    float* gm = t->gmax + t->rowGroup[r] * bpad;
    int32_t* gi = t->gidx + t->rowGroup[r] * bpad;
    const __m256i jv = _mm256_set1_epi32(t->rowIdx[r]);
    for (int64_t b = 0; b < 16; b += 8) {
      const __m256 sv = _mm256_loadu_ps(s + b);
      const __m256 cur = _mm256_loadu_ps(gm + b);
      const __m256 gt = _mm256_cmp_ps(sv, cur, _CMP_GT_OQ);
      _mm256_storeu_ps(gm + b, _mm256_blendv_ps(cur, sv, gt));
      const __m256i ci = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(gi + b));
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(gi + b),
                          _mm256_blendv_epi8(ci, jv, _mm256_castps_si256(gt)));
    }
  }
}

void noiseBlocks8Avx2(const NoiseKey* key, const uint32_t* rows, const uint32_t* colBlocks, uint32_t* words) {
  RoundKeys rk;
  makePhiloxKeys(*key, rk);
  __m256i w[4];
  philoxLanes(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(colBlocks)),
           _mm256_loadu_si256(reinterpret_cast<const __m256i*>(rows)), rk, w);
  alignas(32) uint32_t lanes[4][8];
  for (int i = 0; i < 4; ++i) _mm256_store_si256(reinterpret_cast<__m256i*>(lanes[i]), w[i]);
  for (int l = 0; l < 8; ++l)
    for (int i = 0; i < 4; ++i) words[4 * l + i] = lanes[i][l];
}

// 12 independent FMA chains: enough to cover the latency of two FMA ports.
// Named variables, not an array: with an array GCC keeps the chains in
// memory around the asm barrier (a store-forwarding round trip per FMA).
double peakLoopAvx2(int64_t iters) {
  const __m256 m = _mm256_set1_ps(0.9999999f), c = _mm256_set1_ps(1e-7f);
#define NC_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define NC_INIT(k) __m256 a##k = _mm256_set1_ps(1.0f + 0.001f * (k));
#define NC_FMA(k) a##k = _mm256_fmadd_ps(a##k, m, c);
#define NC_KEEP(k) __asm__ volatile("" : "+x"(a##k));  // no folding
#define NC_SUM(k) sum = _mm256_add_ps(sum, a##k);
  NC_CHAINS(NC_INIT)
  for (int64_t it = 0; it < iters; ++it) {
    NC_CHAINS(NC_FMA)
    NC_CHAINS(NC_KEEP)
  }
  __m256 sum = _mm256_setzero_ps();
  NC_CHAINS(NC_SUM)
#undef NC_CHAINS
#undef NC_INIT
#undef NC_FMA
#undef NC_KEEP
#undef NC_SUM
  alignas(32) float out[8];
  _mm256_store_ps(out, sum);
  volatile float sink = out[0];
  (void)sink;
  return static_cast<double>(iters) * 12 * 8 * 2;
}

// --- weighted-sum epilogue of the full-cache log-sum-exp ----------------------

/// a[d] *= f for d < dim.
void scaleRowAvx2(float* a, int64_t dim, float f) {
  const __m256 v = _mm256_set1_ps(f);
  int64_t d = 0;
  for (; d + 8 <= dim; d += 8) _mm256_storeu_ps(a + d, _mm256_mul_ps(_mm256_loadu_ps(a + d), v));
  for (; d < dim; ++d) a[d] *= f;
}

void lseGradTileAvx2(const LseGradTile* t) {
  const int64_t dim = t->dim, nrows = t->nrows, qcount = t->qcount;
  for (int64_t i = 0; i < qcount; ++i) {
    const float old = t->oldMax[i], M = t->newMax[i];
    if (old != M) {
      alignas(32) float f[8];
      _mm256_store_ps(f, exp256(_mm256_set1_ps(old - M)));
      scaleRowAvx2(t->acc + i * dim, dim, old > -__builtin_inff() ? f[0] : 0.0f);
    }
  }
  // Weights exp(S - newMax), [nrows][16], 0 on the lanes past qcount; and per
  // pair of queries (2p, 2p + 1) the rows where either weight reaches
  // kLseGradSkip (a bit scan per row, no branch per query).
  alignas(32) float w[kTileRows * 16];
  int32_t list[8][kTileRows];
  int cnt[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  const __m256i lanes = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256 valid0 = _mm256_castsi256_ps(_mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(qcount)), lanes));
  const __m256 valid1 = _mm256_castsi256_ps(
      _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(qcount) - 8), lanes));
  const __m256 m0 = _mm256_loadu_ps(t->newMax), m1 = _mm256_loadu_ps(t->newMax + 8);
  const __m256 skip = _mm256_set1_ps(kLseGradSkip);
  for (int64_t r = 0; r < nrows; ++r) {
    const __m256 e0 = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(t->sb + r * 16), m0)), valid0);
    const __m256 e1 = _mm256_and_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(t->sb + r * 16 + 8), m1)), valid1);
    _mm256_store_ps(w + r * 16, e0);
    _mm256_store_ps(w + r * 16 + 8, e1);
    const uint32_t m = static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(e0, skip, _CMP_GE_OQ))) |
                       (static_cast<uint32_t>(_mm256_movemask_ps(_mm256_cmp_ps(e1, skip, _CMP_GE_OQ))) << 8);
    for (uint32_t pm = (m | (m >> 1)) & 0x5555u; pm != 0; pm &= pm - 1) {
      const int p = __builtin_ctz(pm) >> 1;
      list[p][cnt[p]++] = static_cast<int32_t>(r);
    }
  }
  const int64_t rem = dim & 7;
  const __m256i tailMask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(rem)), lanes);
  const float* const* rows = t->rows;
  // Two queries at a time share each load of a row. For an odd last query
  // the second is itself with weight 0 (lanes past qcount are 0) whose
  // unchanged result is stored first, then overwritten by the real one.
  for (int p = 0; p < 8; ++p) {
    const int n = cnt[p];
    if (n == 0) continue;
    const int64_t i = 2 * p;
    const int32_t* lp = list[p];
    float* a0 = t->acc + i * dim;
    float* a1 = i + 1 < qcount ? a0 + dim : a0;
    const float* wq = w + i;
    int64_t d = 0;
    for (; d + 32 <= dim; d += 32) {
      __m256 x0 = _mm256_loadu_ps(a0 + d), x1 = _mm256_loadu_ps(a0 + d + 8);
      __m256 x2 = _mm256_loadu_ps(a0 + d + 16), x3 = _mm256_loadu_ps(a0 + d + 24);
      __m256 y0 = _mm256_loadu_ps(a1 + d), y1 = _mm256_loadu_ps(a1 + d + 8);
      __m256 y2 = _mm256_loadu_ps(a1 + d + 16), y3 = _mm256_loadu_ps(a1 + d + 24);
      for (int k = 0; k < n; ++k) {
        const int32_t r = lp[k];
        const float* e = rows[r] + d;
        const __m256 va = _mm256_broadcast_ss(wq + r * 16), vb = _mm256_broadcast_ss(wq + r * 16 + 1);
        const __m256 e0 = _mm256_loadu_ps(e), e1 = _mm256_loadu_ps(e + 8);
        const __m256 e2 = _mm256_loadu_ps(e + 16), e3 = _mm256_loadu_ps(e + 24);
        x0 = _mm256_fmadd_ps(va, e0, x0);
        x1 = _mm256_fmadd_ps(va, e1, x1);
        x2 = _mm256_fmadd_ps(va, e2, x2);
        x3 = _mm256_fmadd_ps(va, e3, x3);
        y0 = _mm256_fmadd_ps(vb, e0, y0);
        y1 = _mm256_fmadd_ps(vb, e1, y1);
        y2 = _mm256_fmadd_ps(vb, e2, y2);
        y3 = _mm256_fmadd_ps(vb, e3, y3);
      }
      _mm256_storeu_ps(a1 + d, y0);
      _mm256_storeu_ps(a1 + d + 8, y1);
      _mm256_storeu_ps(a1 + d + 16, y2);
      _mm256_storeu_ps(a1 + d + 24, y3);
      _mm256_storeu_ps(a0 + d, x0);
      _mm256_storeu_ps(a0 + d + 8, x1);
      _mm256_storeu_ps(a0 + d + 16, x2);
      _mm256_storeu_ps(a0 + d + 24, x3);
    }
    for (; d + 8 <= dim; d += 8) {
      __m256 x0 = _mm256_loadu_ps(a0 + d), y0 = _mm256_loadu_ps(a1 + d);
      for (int k = 0; k < n; ++k) {
        const int32_t r = lp[k];
        const __m256 e0 = _mm256_loadu_ps(rows[r] + d);
        x0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wq + r * 16), e0, x0);
        y0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wq + r * 16 + 1), e0, y0);
      }
      _mm256_storeu_ps(a1 + d, y0);
      _mm256_storeu_ps(a0 + d, x0);
    }
    if (rem > 0) {
      __m256 x0 = _mm256_maskload_ps(a0 + d, tailMask), y0 = _mm256_maskload_ps(a1 + d, tailMask);
      for (int k = 0; k < n; ++k) {
        const int32_t r = lp[k];
        const __m256 e0 = _mm256_maskload_ps(rows[r] + d, tailMask);
        x0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wq + r * 16), e0, x0);
        y0 = _mm256_fmadd_ps(_mm256_broadcast_ss(wq + r * 16 + 1), e0, y0);
      }
      _mm256_maskstore_ps(a1 + d, tailMask, y0);
      _mm256_maskstore_ps(a0 + d, tailMask, x0);
    }
  }
}

const MicroKernel kAvx2Kernel = {convertRowAvx2, gemmBlockAvx2, nullptr, peakLoopAvx2, nullptr, nullptr, nullptr, nullptr, nullptr};
const Epilogue kAvx2Epilogue = {sampleTileAvx2, groupMaxTileAvx2, noiseBlocks8Avx2, lseGradTileAvx2};

}  // namespace

const MicroKernel* avx2MicroKernel() { return &kAvx2Kernel; }
const Epilogue* avx2Epilogue() { return &kAvx2Epilogue; }

}  // namespace cpu
}  // namespace nc

#else

namespace nc {
namespace cpu {
const MicroKernel* avx2MicroKernel() { return nullptr; }
const Epilogue* avx2Epilogue() { return nullptr; }
}  // namespace cpu
}  // namespace nc

#endif
