// The baseline tier (SSE2 on x86-64, plain C++ elsewhere): the micro-kernel
// and the epilogues every CPU can run, written so GCC vectorizes the inner
// loops. The draws go through the shared offer loop (kbest.h).
#include <algorithm>
#include <cmath>
#include <limits>

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "common.h"
#include "half.h"
#include "tier.h"

namespace nc {
namespace cpu {

namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();

void convertRowBase(const void* src, int32_t storage, int64_t n, float* dst) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  if (storage == static_cast<int32_t>(DType::Float16)) {
    halfToFloatN(h, dst, n);
  } else {
    bfloat16ToFloatN(h, dst, n);
  }
}

#if defined(__SSE2__)
// 2 rows x 16 queries with SSE2 (8 accumulators), multiply then add.
void gemmBlockBase(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                   float* sb) {
  const __m128 vscale = _mm_set1_ps(scale);
  for (int64_t r = 0; r < nrows; r += 2) {
    const float* e0 = rows[r];
    const float* e1 = rows[r + 1 < nrows ? r + 1 : r];
    __m128 a0 = _mm_setzero_ps(), a1 = _mm_setzero_ps(), a2 = _mm_setzero_ps(), a3 = _mm_setzero_ps();
    __m128 b0 = _mm_setzero_ps(), b1 = _mm_setzero_ps(), b2 = _mm_setzero_ps(), b3 = _mm_setzero_ps();
    for (int64_t d = 0; d < dim; ++d) {
      const float* qd = q + d * kQueryBlock;
      const __m128 q0 = _mm_loadu_ps(qd), q1 = _mm_loadu_ps(qd + 4);
      const __m128 q2 = _mm_loadu_ps(qd + 8), q3 = _mm_loadu_ps(qd + 12);
      const __m128 x = _mm_set1_ps(e0[d]), y = _mm_set1_ps(e1[d]);
      a0 = _mm_add_ps(a0, _mm_mul_ps(x, q0));
      a1 = _mm_add_ps(a1, _mm_mul_ps(x, q1));
      a2 = _mm_add_ps(a2, _mm_mul_ps(x, q2));
      a3 = _mm_add_ps(a3, _mm_mul_ps(x, q3));
      b0 = _mm_add_ps(b0, _mm_mul_ps(y, q0));
      b1 = _mm_add_ps(b1, _mm_mul_ps(y, q1));
      b2 = _mm_add_ps(b2, _mm_mul_ps(y, q2));
      b3 = _mm_add_ps(b3, _mm_mul_ps(y, q3));
    }
    float* o = sb + r * kQueryBlock;
    _mm_storeu_ps(o, _mm_mul_ps(a0, vscale));
    _mm_storeu_ps(o + 4, _mm_mul_ps(a1, vscale));
    _mm_storeu_ps(o + 8, _mm_mul_ps(a2, vscale));
    _mm_storeu_ps(o + 12, _mm_mul_ps(a3, vscale));
    if (r + 1 < nrows) {
      _mm_storeu_ps(o + 16, _mm_mul_ps(b0, vscale));
      _mm_storeu_ps(o + 20, _mm_mul_ps(b1, vscale));
      _mm_storeu_ps(o + 24, _mm_mul_ps(b2, vscale));
      _mm_storeu_ps(o + 28, _mm_mul_ps(b3, vscale));
    }
  }
}
#else
void gemmBlockBase(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                   float* sb) {
  for (int64_t r = 0; r < nrows; ++r) {
    const float* e = rows[r];
    float acc[kQueryBlock];
    for (int k = 0; k < kQueryBlock; ++k) acc[k] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float ed = e[d];
      const float* qd = q + d * kQueryBlock;
      for (int k = 0; k < kQueryBlock; ++k) acc[k] += ed * qd[k];
    }
    float* out = sb + r * kQueryBlock;
    for (int k = 0; k < kQueryBlock; ++k) out[k] = scale * acc[k];
  }
}
#endif

void sampleTileBase(const SampleTile* t) {
  if (t->flushOnly) return;  // no queue on this path
  const int64_t nrows = t->nrows;
  for (int64_t i = 0; i < t->qcount; ++i) {
    const float* col = t->sb + i;
    // Logsumexp partial of the chunk.
    float m = -kInfF;
    for (int64_t r = 0; r < nrows; ++r) m = std::max(m, col[r * kQueryBlock]);
    float M = t->lseMax[i];
    double sum = t->lseSum[i];
    if (m > M) {
      sum *= std::exp(static_cast<double>(M) - m);
      M = m;
    }
    if (M > -kInfF) {
      float tileSum = 0.0f;
      for (int64_t r = 0; r < nrows; ++r) tileSum += std::exp(col[r * kQueryBlock] - M);
      sum += tileSum;
    }
    t->lseMax[i] = M;
    t->lseSum[i] = sum;
  }
  if (t->mode == 2) return;
  // -inf marks an excluded (query, row) (driver.h forEachTile): skipped.
  const ScoreBlock blk{t->sb, t->qcount, 1, nrows, kQueryBlock, t->rowIdx, true};
  offerScores(t->topk, blk, t->qbase, static_cast<uint32_t>(t->qbase) + t->noiseRow0, t->mode, t->invTempD, t->key);
}

void groupMaxTileBase(const GroupTile* t) {
  for (int64_t r = 0; r < t->nrows; ++r) {
    const float* s = t->sb + r * kQueryBlock;
    const int64_t g = t->rowGroup[r];
    float* gm = t->gmax + g * t->bpad;
    int32_t* gi = t->gidx + g * t->bpad;
    const int32_t j = t->rowIdx[r];
    for (int64_t i = 0; i < kQueryBlock; ++i) {
      if (s[i] > gm[i]) {
        gm[i] = s[i];
        gi[i] = j;
      }
    }
  }
}

void noiseBlocks8Base(const NoiseKey* key, const uint32_t* rows, const uint32_t* colBlocks, uint32_t* words) {
  for (int l = 0; l < 8; ++l) {
    const Philox4x32 w = noiseBlock(*key, rows[l], colBlocks[l]);
    for (int i = 0; i < 4; ++i) words[4 * l + i] = w.v[i];
  }
}

// 12 independent multiply-then-add chains of 4 lanes in SSE2 registers (x86
// has no FMA at this tier); the empty asm keeps the compiler from folding the
// loop. Other targets: no probe.
#if defined(__SSE2__)
double peakLoopBase(int64_t iters) {
  constexpr int kChains = 12;
  __m128 acc[kChains];
  for (int k = 0; k < kChains; ++k) acc[k] = _mm_set1_ps(1.0f + 0.001f * static_cast<float>(k));
  const __m128 m = _mm_set1_ps(0.9999999f), c = _mm_set1_ps(1e-7f);
  for (int64_t it = 0; it < iters; ++it) {
    for (int k = 0; k < kChains; ++k) acc[k] = _mm_add_ps(_mm_mul_ps(acc[k], m), c);
    for (int k = 0; k < kChains; ++k) __asm__ volatile("" : "+x"(acc[k]));
  }
  __m128 sum = acc[0];
  for (int k = 1; k < kChains; ++k) sum = _mm_add_ps(sum, acc[k]);
  volatile float sink = _mm_cvtss_f32(sum);
  (void)sink;
  return static_cast<double>(iters) * kChains * 4 * 2;
}
#define NC_BASE_PEAK peakLoopBase
#else
#define NC_BASE_PEAK nullptr
#endif

void lseGradTileBase(const LseGradTile* t) {
  const int64_t dim = t->dim;
  for (int64_t i = 0; i < t->qcount; ++i) {
    float* acc = t->acc + i * dim;
    const float M = t->newMax[i], old = t->oldMax[i];
    if (old != M) {
      const float rs = old > -kInfF ? std::exp(old - M) : 0.0f;
      for (int64_t d = 0; d < dim; ++d) acc[d] *= rs;
    }
    for (int64_t r = 0; r < t->nrows; ++r) {
      const float w = std::exp(t->sb[r * kQueryBlock + i] - M);
      if (!(w >= kLseGradSkip)) continue;
      const float* e = t->rows[r];
      for (int64_t d = 0; d < dim; ++d) acc[d] += w * e[d];
    }
  }
}

const MicroKernel kBaselineKernel = {convertRowBase, gemmBlockBase, nullptr, NC_BASE_PEAK, nullptr, nullptr, nullptr, nullptr, nullptr};
const Epilogue kBaselineEpilogue = {sampleTileBase, groupMaxTileBase, noiseBlocks8Base, lseGradTileBase};

}  // namespace

const MicroKernel* baselineMicroKernel() { return &kBaselineKernel; }
const Epilogue* baselineEpilogue() { return &kBaselineEpilogue; }

}  // namespace cpu
}  // namespace nc
