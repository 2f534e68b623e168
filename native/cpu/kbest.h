// The k-best draw lists of the CPU kernels: per query up to k draws sorted
// best first under drawBefore (native/draw.h), plus the query's filter
// threshold. One data structure for the per-thread lists, the union lists of
// the threshold exchange (draws.h) and the final merge.
//
// Only plain structs and function declarations: the ISA tiers
// (*_avx2.cc) include this header, and an inline function or template
// instantiated there would emit a weak symbol compiled for their ISA.
#pragma once
#include <cstdint>

#include "draw.h"
#include "rng.h"

namespace nc {
namespace cpu {

/// A view of the lists of a block of queries (storage: KBestBuffer, draws.h).
struct KBest {
  int64_t k;
  Draw* draws;      // [queries][k], best first
  int32_t* count;   // [queries]
  double* thresh;   // [queries] filter threshold: the k-th perturbed score (-inf
                    // while fewer than k), or a larger bound imported from the
                    // other threads' lists; never goes down
  uint8_t* dirty;   // [queries] set when a list changed; null = not tracked
};

/// Offers (j, s, p) to query b's list (exact comparison, ties -> smaller
/// index; NaN p is dropped). Returns the query's threshold.
double offerDraw(KBest* tk, int64_t b, int32_t j, float s, double p);
/// Exact Gumbel draw: p = invTemp * s + gumbelFromWord(word) in float64, then
/// offerDraw. Baseline-compiled so every tier computes the same value.
double offerGumbel(KBest* tk, int64_t b, int32_t j, float s, double invTemp, uint32_t word);
/// Margin (in perturbed-score units) the float filters keep around threshold t.
float filterMargin(double t);

/// Scores of a block of queries for offerScores: query q's score i at
/// s[q * queryStride + i * stride], its noise column cols[i] (i when cols is
/// null); -inf / NaN scores are skipped when skipNonCandidates.
struct ScoreBlock {
  const float* s;
  int64_t queries, queryStride;
  int64_t n, stride;
  const int32_t* cols;
  bool skipNonCandidates;
};

/// The baseline offer loop, shared by the baseline tile epilogue and
/// sampleCandidates: the score filter, the noise bound and the exact offer
/// (docs/kernels.md "Reproducible sampling") of query q of the block into
/// list list0 + q of tk, with noise row row0 + q. mode: 0 Gumbel, 1 max-score.
void offerScores(KBest* tk, const ScoreBlock& blk, int64_t list0, uint32_t row0, int32_t mode, double invTemp,
                 const NoiseKey& key);

/// Merges list sb of src into list db of dst: the k best distinct (by index)
/// elements of both; tmp has room for dst.k entries. Thresholds untouched.
void mergeLists(KBest* dst, int64_t db, const KBest& src, int64_t sb, Draw* tmp);

}  // namespace cpu
}  // namespace nc
