// The AVX-512 tier (F/BW/VL/DQ, with FMA and F16C): micro-kernel and
// epilogues, 16 lanes = one block of kQueryBlock queries per zmm register.
// Compiled with -mavx512f -mavx512bw -mavx512vl -mavx512dq -mavx512bf16 -mfma
// -mf16c and entered only after a CPUID/XGETBV check (dispatch.cc). The same
// rules as tier_avx2.cc: everything in an anonymous namespace, raw pointers
// and intrinsics, no inline library function, and philoxRound (rng.h) only
// instantiated with this file's own lane type, so no weak symbol compiled for
// AVX-512 can be picked by the linker for a baseline caller (scripts/test-cpp.js
// checks the object with nm).
#include "tier.h"

#if defined(__AVX512F__) && defined(__AVX512BW__) && defined(__AVX512VL__) && defined(__AVX512DQ__) && \
    defined(__FMA__) && defined(__F16C__)
// GCC 12's AVX-512 headers start some intrinsics from _mm512_undefined_*(),
// which -Wuninitialized reports at every use (a known false positive).
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#include <immintrin.h>

#include "common.h"

namespace nc {
namespace cpu {
namespace {

static_assert(kQueryBlock == 16, "the AVX-512 tier holds one query block per zmm");

// --- conversions -------------------------------------------------------------

void convertRowAvx512(const void* src, int32_t storage, int64_t n, float* dst) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (storage == static_cast<int32_t>(DType::Float16)) {
    for (; i + 16 <= n; i += 16)
      _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i))));
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
      _mm512_mask_storeu_ps(dst + i, m, _mm512_cvtph_ps(_mm256_maskz_loadu_epi16(m, h + i)));
    }
  } else {
    for (; i + 16 <= n; i += 16) {
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(h + i)));
      _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
    if (i < n) {
      const __mmask16 m = static_cast<__mmask16>((1u << (n - i)) - 1);
      const __m512i w = _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(m, h + i));
      _mm512_mask_storeu_ps(dst + i, m, _mm512_castsi512_ps(_mm512_slli_epi32(w, 16)));
    }
  }
}

// --- GEMM: 12 cache rows x 16 queries micro-kernel ---------------------------
// One zmm accumulator per row (12 independent FMA chains, enough for two FMA
// ports of latency 4-5), one query load and 12 broadcast FMAs per step of D.
// Exact float32 products and sums in order of d: the same scores as the AVX2
// tier except for its order (it also sums over d in order, per lane).

template <int NB>
void gemmBlocksN(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale, float* sb);

void gemmBlockAvx512(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                     float* sb) {
  const __m512 vscale = _mm512_set1_ps(scale);
  for (int64_t rg = 0; rg < nrows; rg += 12) {
    const int64_t valid = nrows - rg < 12 ? nrows - rg : 12;
    if (valid <= 6) {
      // A short last group (end of a chunk): the 6-row kernel, half the work.
      gemmBlocksN<1>(q, dim, rows + rg, valid, scale, sb + rg * 16);
      continue;
    }
    const float* r0 = rows[rg];
    const float* r1 = rows[rg + 1];
    const float* r2 = rows[rg + 2];
    const float* r3 = rows[rg + 3];
    const float* r4 = rows[rg + 4];
    const float* r5 = rows[rg + 5];
    float* o = sb + rg * 16;
    const float* r6 = rows[rg + 6];
    const float* r7 = rows[rg + (valid > 7 ? 7 : 6)];
    const float* r8 = rows[rg + (valid > 8 ? 8 : 6)];
    const float* r9 = rows[rg + (valid > 9 ? 9 : 6)];
    const float* r10 = rows[rg + (valid > 10 ? 10 : 6)];
    const float* r11 = rows[rg + (valid > 11 ? 11 : 6)];
    __m512 c0 = _mm512_setzero_ps(), c1 = _mm512_setzero_ps(), c2 = _mm512_setzero_ps();
    __m512 c3 = _mm512_setzero_ps(), c4 = _mm512_setzero_ps(), c5 = _mm512_setzero_ps();
    __m512 c6 = _mm512_setzero_ps(), c7 = _mm512_setzero_ps(), c8 = _mm512_setzero_ps();
    __m512 c9 = _mm512_setzero_ps(), c10 = _mm512_setzero_ps(), c11 = _mm512_setzero_ps();
    for (int64_t d = 0; d < dim; ++d) {
      const __m512 a = _mm512_loadu_ps(q + d * 16);
      c0 = _mm512_fmadd_ps(_mm512_set1_ps(r0[d]), a, c0);
      c1 = _mm512_fmadd_ps(_mm512_set1_ps(r1[d]), a, c1);
      c2 = _mm512_fmadd_ps(_mm512_set1_ps(r2[d]), a, c2);
      c3 = _mm512_fmadd_ps(_mm512_set1_ps(r3[d]), a, c3);
      c4 = _mm512_fmadd_ps(_mm512_set1_ps(r4[d]), a, c4);
      c5 = _mm512_fmadd_ps(_mm512_set1_ps(r5[d]), a, c5);
      c6 = _mm512_fmadd_ps(_mm512_set1_ps(r6[d]), a, c6);
      c7 = _mm512_fmadd_ps(_mm512_set1_ps(r7[d]), a, c7);
      c8 = _mm512_fmadd_ps(_mm512_set1_ps(r8[d]), a, c8);
      c9 = _mm512_fmadd_ps(_mm512_set1_ps(r9[d]), a, c9);
      c10 = _mm512_fmadd_ps(_mm512_set1_ps(r10[d]), a, c10);
      c11 = _mm512_fmadd_ps(_mm512_set1_ps(r11[d]), a, c11);
    }
    _mm512_storeu_ps(o, _mm512_mul_ps(c0, vscale));
    _mm512_storeu_ps(o + 16, _mm512_mul_ps(c1, vscale));
    _mm512_storeu_ps(o + 32, _mm512_mul_ps(c2, vscale));
    _mm512_storeu_ps(o + 48, _mm512_mul_ps(c3, vscale));
    _mm512_storeu_ps(o + 64, _mm512_mul_ps(c4, vscale));
    _mm512_storeu_ps(o + 80, _mm512_mul_ps(c5, vscale));
    _mm512_storeu_ps(o + 96, _mm512_mul_ps(c6, vscale));
    _mm512_storeu_ps(o + 112, _mm512_mul_ps(c7, vscale));
    _mm512_storeu_ps(o + 128, _mm512_mul_ps(c8, vscale));
    _mm512_storeu_ps(o + 144, _mm512_mul_ps(c9, vscale));
    _mm512_storeu_ps(o + 160, _mm512_mul_ps(c10, vscale));
    _mm512_storeu_ps(o + 176, _mm512_mul_ps(c11, vscale));
  }
}

/// NB query blocks x 6 rows: 6 * NB accumulators (24 at NB = 4), NB query
/// loads and 6 broadcasts per step of D, so each broadcast row value serves
/// NB multiply-adds (the single-block kernel is bound by its loads: one per
/// multiply-add). The same float32 FMA chain per (row, query) as gemmBlock.
template <int NB>
void gemmBlocksN(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale, float* sb) {
  const __m512 vscale = _mm512_set1_ps(scale);
  const int64_t qstride = dim * 16;
  for (int64_t rg = 0; rg < nrows; rg += 6) {
    const int64_t valid = nrows - rg < 6 ? nrows - rg : 6;
    const float* p[6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i) p[i] = rows[rg + (i < valid ? i : 0)];
    __m512 c[NB][6];
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i)
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) c[b][i] = _mm512_setzero_ps();
    for (int64_t d = 0; d < dim; ++d) {
      __m512 a[NB];
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) a[b] = _mm512_loadu_ps(q + b * qstride + d * 16);
#pragma GCC unroll 6
      for (int i = 0; i < 6; ++i) {
        const __m512 x = _mm512_set1_ps(p[i][d]);
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) c[b][i] = _mm512_fmadd_ps(x, a[b], c[b][i]);
      }
    }
#pragma GCC unroll 6
    for (int i = 0; i < 6; ++i)
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b)
        _mm512_storeu_ps(sb + b * (kTileRows * 16) + (rg + i) * 16, _mm512_mul_ps(c[b][i], vscale));
  }
}

void gemmBlocksAvx512(const float* q, int64_t nblk, int64_t dim, const float* const* rows, int64_t nrows,
                      float scale, float* sb) {
  switch (nblk) {
    case 4: gemmBlocksN<4>(q, dim, rows, nrows, scale, sb); break;
    case 3: gemmBlocksN<3>(q, dim, rows, nrows, scale, sb); break;
    case 2: gemmBlocksN<2>(q, dim, rows, nrows, scale, sb); break;
    default: gemmBlockAvx512(q, dim, rows, nrows, scale, sb); break;
  }
}

// --- vector exp (the AVX2 tier's polynomial, relative error ~1e-7) -----------

__m512 exp512(__m512 x) {
  x = _mm512_min_ps(x, _mm512_set1_ps(88.3f));
  x = _mm512_max_ps(x, _mm512_set1_ps(-87.3f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  // p * 2^n in one instruction (exact, as the AVX2 tier's exponent-bits product).
  return _mm512_scalef_ps(p, n);
}

// --- Philox4x32-10 on 16 counters ---------------------------------------------

/// The lane type of philoxRound (rng.h): 16 words. The high halves of the
/// 32 x 32-bit products come from two _mm512_mul_epu32 (even lanes, then the
/// odd lanes shifted down).
struct Avx512Lanes {
  using V = __m512i;
  static V splat(uint32_t x) { return _mm512_set1_epi32(static_cast<int>(x)); }
  static void mulhilo(V m, V x, V& hi, V& lo) {
    const __m512i even = _mm512_mul_epu32(x, m);
    const __m512i odd = _mm512_mul_epu32(_mm512_srli_epi64(x, 32), m);
    lo = _mm512_mullo_epi32(x, m);
    hi = _mm512_mask_blend_epi32(static_cast<__mmask16>(0xAAAA), _mm512_srli_epi64(even, 32), odd);
  }
  static V xor3(V a, V b, V c) { return _mm512_ternarylogic_epi32(a, b, c, 0x96); }
};

using RoundKeys = PhiloxKeys<Avx512Lanes>;

__m512i lane16() { return _mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); }

/// words[i] lane l = philox(col block `blk`, row rowBase + l, call, key).v[i].
void philox16(uint32_t blk, uint32_t rowBase, const RoundKeys& rk, __m512i words[4]) {
  philoxLanes(_mm512_set1_epi32(static_cast<int>(blk)),
            _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(rowBase)), lane16()), rk, words);
}

/// The word of column j of each lane: words[j & 3] per lane.
__m512i selectWord(const __m512i words[4], __m512i jv) {
  const __mmask16 bit0 = _mm512_test_epi32_mask(jv, _mm512_set1_epi32(1));
  const __mmask16 bit1 = _mm512_test_epi32_mask(jv, _mm512_set1_epi32(2));
  const __m512i w01 = _mm512_mask_blend_epi32(bit0, words[0], words[1]);
  const __m512i w23 = _mm512_mask_blend_epi32(bit0, words[2], words[3]);
  return _mm512_mask_blend_epi32(bit1, w01, w23);
}

// --- sampling epilogue ---------------------------------------------------------

struct LaneThresholds {
  __m512 t;    // k-th perturbed score (float), -inf while fewer than k
  __m512 low;  // t - Gumbel max - margin: below it no noise can reach t
  __m512 marg;
};

__m512 marginOf(__m512 t) {
  return _mm512_mul_ps(_mm512_set1_ps(1e-3f), _mm512_add_ps(_mm512_set1_ps(1.0f), _mm512_abs_ps(t)));
}

LaneThresholds loadThresholds(const double* thresh, int64_t b0, int64_t valid) {
  const __mmask8 m0 = static_cast<__mmask8>(valid >= 8 ? 0xFF : (1u << valid) - 1);
  const __mmask8 m1 = static_cast<__mmask8>(valid >= 16 ? 0xFF : valid > 8 ? (1u << (valid - 8)) - 1 : 0);
  const __m256 lo = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd(m0, thresh + b0));
  const __m256 hi = _mm512_cvtpd_ps(_mm512_maskz_loadu_pd(m1, thresh + b0 + 8));
  LaneThresholds r;
  r.t = _mm512_insertf32x8(_mm512_castps256_ps512(lo), hi, 1);
  r.marg = marginOf(r.t);
  r.low = _mm512_sub_ps(_mm512_sub_ps(r.t, _mm512_set1_ps(kGumbelMax)), r.marg);
  return r;
}

/// 1 - u from Philox words, rounded down: (~w >> 1) * 2^-31.
__m512 oneMinusU(__m512i w) {
  return _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_srli_epi32(_mm512_xor_si512(w, _mm512_set1_epi32(-1)), 1)),
                       _mm512_set1_ps(4.656612873077392578125e-10f));
}

/// Lanes whose noise may lift d above t: G = -log(-log u) <= -log(1 - u), so
/// a lane cannot reach t when 1 - u > bound = exp(d - t + margin).
__mmask16 boundPassWith(__m512i w, __m512 bound) { return _mm512_cmp_ps_mask(oneMinusU(w), bound, _CMP_NGT_UQ); }
__mmask16 boundPass(__m512i w, __m512 d, __m512 t, __m512 marg) {
  return boundPassWith(w, exp512(_mm512_add_ps(_mm512_sub_ps(d, t), marg)));
}

/// exp(M - t + margin) per lane for reusing exp(s - M) of the lse pass as the
/// bound (invTemp = 1); usable only where M - t + margin < 80 on every valid
/// lane (no clamping in exp512, so the product is never below the true bound).
bool boundScale(__m512 M, const LaneThresholds& th, __mmask16 validMask, __m512& scale) {
  const __m512 x = _mm512_add_ps(_mm512_sub_ps(M, th.t), th.marg);
  scale = exp512(x);
  return (_mm512_cmp_ps_mask(x, _mm512_set1_ps(80.0f), _CMP_LT_OQ) & validMask) == validMask;
}

/// Queued lanes are handled together once more than this many are waiting
/// (capacity 16: a row adds at most kSparseLanes).
constexpr int kSparseLanes = 4;
constexpr int kFlushAt = 16 - kSparseLanes + 1;

/// Handles every queued lane (at most 16) with one 16-lane Philox call.
void flushPending(const SampleTile* t, const RoundKeys& rk, PendingDraws& pd) {
  const int n = pd.n;
  if (n == 0) return;
  const __mmask16 m = static_cast<__mmask16>((1u << n) - 1);
  KBest* tk = t->topk;
  const __m512i jv = _mm512_maskz_loadu_epi32(m, pd.j);
  const __m512i bv = _mm512_maskz_loadu_epi32(m, pd.b);
  __m512i words[4];
  philoxLanes(_mm512_srli_epi32(jv, 2), _mm512_add_epi32(bv, _mm512_set1_epi32(static_cast<int>(t->noiseRow0))), rk,
            words);
  const __m512i w = selectWord(words, jv);
  alignas(64) float tl[16];
  for (int l = 0; l < 16; ++l) tl[l] = l < n ? static_cast<float>(tk->thresh[pd.b[l]]) : 0.0f;
  const __m512 tv = _mm512_load_ps(tl);
  const __m512 d = _mm512_mul_ps(_mm512_maskz_loadu_ps(m, pd.s), _mm512_set1_ps(t->invTemp));
  unsigned bits = boundPass(w, d, tv, marginOf(tv)) & m;
  if (bits) {
    alignas(64) uint32_t wl[16];
    _mm512_store_si512(wl, w);
    while (bits) {
      const int l = __builtin_ctz(bits);
      bits &= bits - 1;
      offerGumbel(tk, pd.b[l], pd.j[l], pd.s[l], t->invTempD, wl[l]);
    }
  }
  pd.n = 0;
}

void sampleTileAvx512(const SampleTile* t) {
  const int64_t nrows = t->nrows;
  const __m512 invTemp = _mm512_set1_ps(t->invTemp);
  KBest* tk = t->topk;
  // The round keys (20 broadcasts) only when a draw needs noise: most blocks
  // have no lane passing the score filter.
  RoundKeys rk;
  if (t->flushOnly) {
    if (t->pending != nullptr && t->mode == 0 && t->pending->n > 0) {
      makePhiloxKeys(t->key, rk);
      flushPending(t, rk, *t->pending);
    }
    return;
  }
  PendingDraws& pending = *t->pending;
  const float* sb = t->sb;
  const int64_t b0 = t->qbase;
  const int64_t valid = t->qcount;
  const __mmask16 validMask = static_cast<__mmask16>(valid >= 16 ? 0xFFFF : (1u << valid) - 1);
  LaneThresholds th{};
  if (t->mode != 2) th = loadThresholds(tk->thresh, b0, valid);
  // Gumbel: a lane passes the score filter when invTemp * s >= t - Gmax - margin;
  // MaxScore: when s >= t.
  const __m512 passAt = t->mode == 1 ? th.t : th.low;
  const __m512 mul = t->mode == 1 ? _mm512_set1_ps(1.0f) : invTemp;
  // Logsumexp partial (padded lanes are computed and ignored), fused with the filter.
  __m512 m = _mm512_set1_ps(-__builtin_inff());
  for (int64_t r = 0; r < nrows; ++r) m = _mm512_max_ps(m, _mm512_loadu_ps(sb + r * 16));
  const __m512 oldM = _mm512_loadu_ps(t->lseMax);
  const __m512 newM = _mm512_max_ps(oldM, m);
  // A lane with only excluded scores (-inf) so far keeps newM = -inf; 0 in
  // its place keeps -inf - -inf (NaN) out of the exponentials.
  const __m512 safeM = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(newM, _mm512_set1_ps(-__builtin_inff()), _CMP_EQ_OQ),
                                            newM, _mm512_setzero_ps());
  const __m512 rescale = exp512(_mm512_sub_ps(oldM, safeM));
  __m512 sum = _mm512_setzero_ps();
  uint32_t passRows = 0;  // bit r: row r has a valid lane passing the filter
  alignas(64) float ex[kTileRows * 16];  // exp(s - newM), reused by the noise bound
  // (Skipping the exp of rows far below the running max was measured slower:
  // the per-row branch mispredicts more than the exp costs.)
  for (int64_t r = 0; r < nrows; ++r) {
    const __m512 s = _mm512_loadu_ps(sb + r * 16);
    const __m512 e = exp512(_mm512_sub_ps(s, safeM));
    _mm512_store_ps(ex + r * 16, e);
    sum = _mm512_add_ps(sum, e);
    // S = -inf marks an excluded (query, row) (driver.h forEachTile): never
    // passes, even while a list holds fewer than k (threshold -inf).
    const __mmask16 p = _mm512_cmp_ps_mask(_mm512_mul_ps(s, mul), passAt, _CMP_GE_OQ) &
                        _mm512_cmp_ps_mask(s, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ) & validMask;
    passRows |= static_cast<uint32_t>(p != 0) << r;
  }
  __m512d s0 = _mm512_loadu_pd(t->lseSum), s1 = _mm512_loadu_pd(t->lseSum + 8);
  s0 = _mm512_fmadd_pd(s0, _mm512_cvtps_pd(_mm512_castps512_ps256(rescale)),
                       _mm512_cvtps_pd(_mm512_castps512_ps256(sum)));
  s1 = _mm512_fmadd_pd(s1, _mm512_cvtps_pd(_mm512_extractf32x8_ps(rescale, 1)),
                       _mm512_cvtps_pd(_mm512_extractf32x8_ps(sum, 1)));
  _mm512_storeu_pd(t->lseSum, s0);
  _mm512_storeu_pd(t->lseSum + 8, s1);
  _mm512_storeu_ps(t->lseMax, newM);
  if (t->mode == 2 || passRows == 0) return;

  // Draws: exact float64 decisions for the lanes that pass the filters.
  if (t->mode == 1) {
    for (uint32_t rows = passRows; rows != 0; rows &= rows - 1) {
      const int64_t r = __builtin_ctz(rows);
      const __m512 s = _mm512_loadu_ps(sb + r * 16);
      unsigned bits = _mm512_cmp_ps_mask(s, th.t, _CMP_GE_OQ) &
                      _mm512_cmp_ps_mask(s, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ) & validMask;
      if (bits == 0) continue;
      while (bits) {
        const int l = __builtin_ctz(bits);
        bits &= bits - 1;
        const float sv = sb[r * 16 + l];
        offerDraw(tk, b0 + l, t->rowIdx[r], sv, static_cast<double>(sv));
      }
      th = loadThresholds(tk->thresh, b0, valid);
    }
    return;
  }
  makePhiloxKeys(t->key, rk);
  const __m512i queryIds = _mm512_add_epi32(_mm512_set1_epi32(static_cast<int>(b0)), lane16());
  uint32_t lastBlock = 0;
  bool haveBlock = false;
  __m512i words[4];
  const bool reuseExp = t->invTemp == 1.0f;
  __m512 scale = _mm512_setzero_ps();
  bool fast = reuseExp && boundScale(newM, th, validMask, scale);
  for (uint32_t rows = passRows; rows != 0; rows &= rows - 1) {
    const int64_t r = __builtin_ctz(rows);
    const __m512 s = _mm512_loadu_ps(sb + r * 16);
    const __m512 d = _mm512_mul_ps(s, invTemp);
    const __mmask16 pass = _mm512_cmp_ps_mask(d, th.low, _CMP_GE_OQ) &
                           _mm512_cmp_ps_mask(s, _mm512_set1_ps(-__builtin_inff()), _CMP_NEQ_OQ) & validMask;
    if (pass == 0) continue;
    const uint32_t j = static_cast<uint32_t>(t->rowIdx[r]);
    const bool sameBlock = haveBlock && (j >> 2) == lastBlock;
    const int npass = __builtin_popcount(pass);
    if (!sameBlock && npass <= kSparseLanes) {
      // Sparse: queue the lanes (left-packed, in lane order); one Philox
      // call serves up to 16 of them.
      const int n = pending.n;
      const __mmask16 dst = static_cast<__mmask16>((1u << npass) - 1);
      _mm512_mask_storeu_epi32(pending.j + n, dst, _mm512_set1_epi32(static_cast<int>(j)));
      _mm512_mask_storeu_epi32(pending.b + n, dst, _mm512_maskz_compress_epi32(pass, queryIds));
      _mm512_mask_storeu_ps(pending.s + n, dst, _mm512_maskz_compress_ps(pass, s));
      pending.n = n + npass;
      if (pending.n >= kFlushAt) flushPending(t, rk, pending);
      continue;
    }
    if (!sameBlock) {
      philox16(j >> 2, static_cast<uint32_t>(b0) + t->noiseRow0, rk, words);
      lastBlock = j >> 2;
      haveBlock = true;
    }
    const __m512i w = words[j & 3];
    unsigned bits = pass & (fast ? boundPassWith(w, _mm512_mul_ps(_mm512_load_ps(ex + r * 16), scale))
                                : boundPass(w, d, th.t, th.marg));
    if (bits == 0) continue;
    alignas(64) uint32_t wl[16];
    _mm512_store_si512(wl, w);
    while (bits) {
      const int l = __builtin_ctz(bits);
      bits &= bits - 1;
      offerGumbel(tk, b0 + l, static_cast<int32_t>(j), sb[r * 16 + l], t->invTempD, wl[l]);
    }
    th = loadThresholds(tk->thresh, b0, valid);
    fast = reuseExp && boundScale(newM, th, validMask, scale);
  }
}

// --- group max epilogue --------------------------------------------------------

void groupMaxTileAvx512(const GroupTile* t) {
  const int64_t bpad = t->bpad;
  for (int64_t r = 0; r < t->nrows; ++r) {
    const __m512 sv = _mm512_loadu_ps(t->sb + r * 16);
    float* gm = t->gmax + t->rowGroup[r] * bpad;
    int32_t* gi = t->gidx + t->rowGroup[r] * bpad;
    const __mmask16 gt = _mm512_cmp_ps_mask(sv, _mm512_loadu_ps(gm), _CMP_GT_OQ);
    _mm512_mask_storeu_ps(gm, gt, sv);
    _mm512_mask_storeu_epi32(gi, gt, _mm512_set1_epi32(t->rowIdx[r]));
  }
}

/// The test hook: 8 counters through the 16-lane Philox. Lanes 0-7 hold the
/// counters in order, lanes 8-15 the same counters reversed; counter l's
/// words come from lane l when l is even and from lane 15 - l when l is odd,
/// so both halves and both the even and odd lanes of the products are checked.
void noiseBlocks8Avx512(const NoiseKey* key, const uint32_t* rows, const uint32_t* colBlocks, uint32_t* words) {
  RoundKeys rk;
  makePhiloxKeys(*key, rk);
  alignas(64) uint32_t r16[16], c16[16];
  for (int l = 0; l < 8; ++l) {
    r16[l] = rows[l];
    c16[l] = colBlocks[l];
    r16[15 - l] = rows[l];
    c16[15 - l] = colBlocks[l];
  }
  __m512i w[4];
  philoxLanes(_mm512_load_si512(c16), _mm512_load_si512(r16), rk, w);
  alignas(64) uint32_t lanes[4][16];
  for (int i = 0; i < 4; ++i) _mm512_store_si512(lanes[i], w[i]);
  for (int l = 0; l < 8; ++l) {
    const int lane = (l & 1) ? 15 - l : l;
    for (int i = 0; i < 4; ++i) words[4 * l + i] = lanes[i][lane];
  }
}

// 16 independent zmm FMA chains: covers the latency of two 512-bit FMA ports.
// Named variables, not an array: with an array GCC keeps the chains in
// memory around the asm barrier (a store-forwarding round trip per FMA).
double peakLoopAvx512(int64_t iters) {
  const __m512 m = _mm512_set1_ps(0.9999999f), c = _mm512_set1_ps(1e-7f);
#define NC_CHAINS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) X(15)
#define NC_INIT(k) __m512 a##k = _mm512_set1_ps(1.0f + 0.001f * (k));
#define NC_FMA(k) a##k = _mm512_fmadd_ps(a##k, m, c);
#define NC_KEEP(k) __asm__ volatile("" : "+v"(a##k));  // no folding
#define NC_SUM(k) sum = _mm512_add_ps(sum, a##k);
  NC_CHAINS(NC_INIT)
  for (int64_t it = 0; it < iters; ++it) {
    NC_CHAINS(NC_FMA)
    NC_CHAINS(NC_KEEP)
  }
  __m512 sum = _mm512_setzero_ps();
  NC_CHAINS(NC_SUM)
#undef NC_CHAINS
#undef NC_INIT
#undef NC_FMA
#undef NC_KEEP
#undef NC_SUM
  alignas(64) float out[16];
  _mm512_store_ps(out, sum);
  volatile float sink = out[0];
  (void)sink;
  return static_cast<double>(iters) * 16 * 16 * 2;
}

const MicroKernel kAvx512Kernel = {convertRowAvx512, gemmBlockAvx512, gemmBlocksAvx512, peakLoopAvx512, nullptr, nullptr, nullptr, nullptr, nullptr};
const Epilogue kAvx512Epilogue = {sampleTileAvx512, groupMaxTileAvx512, noiseBlocks8Avx512, nullptr};  // lse gradient: the baseline epilogue

}  // namespace

const MicroKernel* avx512MicroKernel() { return &kAvx512Kernel; }
const Epilogue* avx512Epilogue() { return &kAvx512Epilogue; }

}  // namespace cpu
}  // namespace nc

#else

namespace nc {
namespace cpu {
const MicroKernel* avx512MicroKernel() { return nullptr; }
const Epilogue* avx512Epilogue() { return nullptr; }
}  // namespace cpu
}  // namespace nc

#endif
