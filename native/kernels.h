// The scoring kernels: score B queries against the concatenated cache rows,
// never materializing the B x N score matrix. CPU implementation in cpu/,
// CUDA in cuda/ (same semantics, same noise; see rng.h).
#pragma once
#include <cstdint>
#include <vector>

#include "common.h"

namespace nc {

/// A block of cached embeddings; segments are concatenated into one index
/// space in the order given (global row = offset of segment + local row).
struct Segment {
  const void* data;        // rows x dim, of `storage`
  DType storage;           // Float32 / Float16 / BFloat16
  int64_t rows;
  const uint8_t* filled;   // rows flags; null = every row is a candidate
};

struct ScoreRequest {
  const float* queries;    // batch x dim, row-major float32
  int64_t batch = 0;
  int64_t dim = 0;
  std::vector<Segment> segments;
  float scale = 1.0f;      // S = scale * (q . e)
  bool scoreEmptyRows = false;  // false: rows with filled == 0 are not candidates
  int threads = 0;         // 0 = hardware concurrency
};

enum class SampleMode : int32_t { Gumbel = 0, MaxScore = 1, None = 2 };

struct SampleParams {
  SampleMode mode = SampleMode::Gumbel;
  double invTemp = 1.0;
  int64_t numDraws = 1;    // k: Gumbel-top-k (without replacement) or k best
  uint64_t seed = 0;
  uint64_t call = 0;
};

struct SampleOutput {
  int32_t* indices;        // batch x numDraws global rows (or columns), -1 = no draw
  float* scores;           // batch x numDraws: S at the draw (NaN for no draw)
  float* lse;              // batch: logsumexp of S over candidates (-inf if none)
  int64_t* candidates;     // batch: number of candidates (may be null)
};

/// Fused: score, logsumexp and draw per query in one streaming pass.
void scoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out);

/// topK grouping: per query, the max of S in each of `groups` consecutive
/// groups of the global index space (group g = [floor(g*N/K), floor((g+1)*N/K)),
/// first index on ties), and its global row; -inf / -1 for a group without
/// candidates. Outputs are batch x groups.
void scoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores,
                   int32_t* groupRows);

/// Sampling over an explicit candidate matrix (batch x cols, -inf = not a
/// candidate): noise column = matrix column. Used for topK groups and for
/// function score transforms. indices are columns.
void sampleCandidates(const float* scores, int64_t batch, int64_t cols,
                      const SampleParams& params, int threads, SampleOutput& out);

/// Plain scores (batch x N, float32) for slow paths and tests.
void scoreMatrix(const ScoreRequest& req, float* out);

namespace cpu {
struct Features { bool avx2, fma, f16c; };
Features detectedFeatures();
/// Forces the baseline (SSE2) kernels even on an AVX2 CPU; also set by the
/// environment variable NEGATIVE_CACHE_FORCE_BASELINE=1 at load.
void setForceBaseline(bool force);
bool usingAvx2();
}  // namespace cpu

}  // namespace nc
