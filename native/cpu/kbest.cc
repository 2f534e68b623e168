// The k-best draw lists and the baseline offer loop (baseline-compiled: every
// tier's exact decisions go through these functions).
#include "kbest.h"

#include <cmath>
#include <limits>

namespace nc {
namespace cpu {

namespace {
constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kInfF = std::numeric_limits<float>::infinity();
}  // namespace

double offerDraw(KBest* tk, int64_t b, int32_t j, float s, double p) {
  if (std::isnan(p)) return tk->thresh[b];
  const int64_t k = tk->k;
  Draw* L = tk->draws + b * k;
  int32_t n = tk->count[b];
  if (n == k) {
    if (!drawBefore(p, j, L[k - 1].p, L[k - 1].idx)) return tk->thresh[b];
    --n;  // drop the last entry
  }
  int64_t pos = n;
  while (pos > 0 && drawBefore(p, j, L[pos - 1].p, L[pos - 1].idx)) {
    L[pos] = L[pos - 1];
    --pos;
  }
  L[pos] = Draw{p, j, s};
  tk->count[b] = n + 1;
  if (tk->dirty != nullptr) tk->dirty[b] = 1;
  // The threshold may already be above this list's k-th entry (imported from
  // the other threads' lists, see SharedBest in draws.h); it never goes down.
  if (n + 1 == k && L[k - 1].p > tk->thresh[b]) tk->thresh[b] = L[k - 1].p;
  return tk->thresh[b];
}

double offerGumbel(KBest* tk, int64_t b, int32_t j, float s, double invTemp, uint32_t word) {
  const double p = invTemp * static_cast<double>(s) + gumbelFromWord(word);
  return offerDraw(tk, b, j, s, p);
}

float filterMargin(double t) { return static_cast<float>(1e-3 * (1.0 + std::fabs(t))); }

namespace {

/// offerScores for one query, with the mode and the candidate test fixed at
/// compile time.
template <bool kMaxScore, bool kSkip>
void offerQuery(KBest* tk, int64_t b, const float* scores, int64_t n, int64_t stride, const int32_t* cols,
                uint32_t noiseRow, double invTemp, const NoiseKey& key) {
  double T = tk->thresh[b];
  uint32_t lastBlock = 0;
  bool haveBlock = false;
  Philox4x32 words{};
  for (int64_t i = 0; i < n; ++i) {
    const float s = scores[i * stride];
    if (kSkip && (s == -kInfF || std::isnan(s))) continue;
    if (kMaxScore) {
      if (!(static_cast<double>(s) < T)) T = offerDraw(tk, b, cols != nullptr ? cols[i] : static_cast<int32_t>(i), s, s);
      continue;
    }
    // Score filter: no noise can lift d above T.
    const double d = invTemp * s;
    const double margin = filterMargin(T);
    if (d + kGumbelMax + margin < T) continue;
    const int32_t j = cols != nullptr ? cols[i] : static_cast<int32_t>(i);
    const uint32_t blk = static_cast<uint32_t>(j) >> 2;
    if (!haveBlock || blk != lastBlock) {
      words = noiseBlock(key, noiseRow, blk);
      lastBlock = blk;
      haveBlock = true;
    }
    const uint32_t w = words.v[j & 3];
    // Noise bound: -log(-log u) <= -log(1 - u); skip when even that cannot reach T.
    if (T > -kInf) {
      const double oneMinusU = (static_cast<double>(~w) + 0.5) * (1.0 / 4294967296.0);
      if (oneMinusU > std::exp(d - T + margin)) continue;
    }
    T = offerGumbel(tk, b, j, s, invTemp, w);
  }
}

template <bool kMaxScore, bool kSkip>
void offerBlock(KBest* tk, const ScoreBlock& blk, int64_t list0, uint32_t row0, double invTemp, const NoiseKey& key) {
  for (int64_t q = 0; q < blk.queries; ++q)
    offerQuery<kMaxScore, kSkip>(tk, list0 + q, blk.s + q * blk.queryStride, blk.n, blk.stride, blk.cols,
                                 row0 + static_cast<uint32_t>(q), invTemp, key);
}

}  // namespace

void offerScores(KBest* tk, const ScoreBlock& blk, int64_t list0, uint32_t row0, int32_t mode, double invTemp,
                 const NoiseKey& key) {
  if (mode == 1) {
    if (blk.skipNonCandidates) offerBlock<true, true>(tk, blk, list0, row0, invTemp, key);
    else offerBlock<true, false>(tk, blk, list0, row0, invTemp, key);
  } else {
    if (blk.skipNonCandidates) offerBlock<false, true>(tk, blk, list0, row0, invTemp, key);
    else offerBlock<false, false>(tk, blk, list0, row0, invTemp, key);
  }
}

void mergeLists(KBest* dst, int64_t db, const KBest& src, int64_t sb, Draw* tmp) {
  const int64_t k = dst->k;
  const Draw* A = src.draws + sb * src.k;
  Draw* B = dst->draws + db * k;
  const int32_t na = src.count[sb], nb = dst->count[db];
  // Both lists are sorted best first; an element in both (a thread publishing
  // again) is the same (p, idx) pair and comes out adjacent: keep one.
  int32_t i = 0, j = 0, n = 0;
  while (n < k && (i < na || j < nb)) {
    const bool takeA = j >= nb || (i < na && !drawBefore(B[j].p, B[j].idx, A[i].p, A[i].idx));
    const Draw e = takeA ? A[i++] : B[j++];
    if (n > 0 && tmp[n - 1].idx == e.idx) continue;
    tmp[n++] = e;
  }
  for (int32_t t = 0; t < n; ++t) B[t] = tmp[t];
  dst->count[db] = n;
}

}  // namespace cpu
}  // namespace nc
