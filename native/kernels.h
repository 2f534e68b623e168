// The requests of the scoring kernels (backend.h): score B queries against the
// concatenated cache rows, never materializing the B x N score matrix.
#pragma once
#include <cstdint>
#include <vector>

#include "common.h"

namespace nc {

/// A block of cached embeddings; segments are concatenated into one index
/// space in the order given (global row = offset of segment + local row).
/// Pointers are in the memory of the backend that runs the kernels
/// (CacheStore::segment).
struct Segment {
  const void* data;        // rows x dim, of `storage`
  DType storage;           // Float32 / Float16 / BFloat16
  int64_t rows;
  const uint8_t* filled;   // rows flags; null = every row is a candidate
};

struct ScoreRequest {
  const float* queries;    // batch x dim, row-major float32, host memory
  int64_t batch = 0;
  int64_t dim = 0;
  std::vector<Segment> segments;
  float scale = 1.0f;      // S = scale * (q . e)
  bool scoreEmptyRows = false;  // false: rows with filled == 0 are not candidates
  int threads = 0;         // CPU: 0 = hardware concurrency; ignored by CUDA
  // Per-query exclusions (CSR, host memory; both null = none): query b does
  // not count global rows exclusions[exclusionOffsets[b] .. exclusionOffsets[b + 1])
  // among its candidates (neither lse nor draws; scoreGroupMax skips them,
  // scoreMatrix ignores them). Any order, repeats allowed (exclusions.h).
  const int32_t* exclusions = nullptr;
  const int32_t* exclusionOffsets = nullptr;  // batch + 1 entries, [0] = 0, non-decreasing
};

enum class SampleMode : int32_t { Gumbel = 0, MaxScore = 1, None = 2 };

struct SampleParams {
  SampleMode mode = SampleMode::Gumbel;
  double invTemp = 1.0;
  int64_t numDraws = 1;    // k: Gumbel-top-k (without replacement) or k best
  uint64_t seed = 0;
  uint64_t call = 0;
  // Shards of one global problem (the distributed loss): query b is noise row
  // rowOffset + b; local row/column j is global index columnOffset + j, which
  // is both its noise column and the index returned.
  int64_t rowOffset = 0;
  int64_t columnOffset = 0;
};

/// Host memory.
struct SampleOutput {
  int32_t* indices;        // batch x numDraws global rows (or columns), -1 = no draw
  float* scores;           // batch x numDraws: S at the draw (NaN for no draw)
  float* lse;              // batch: logsumexp of S over candidates (-inf if none)
  int64_t* candidates;     // batch: number of candidates (may be null)
};

}  // namespace nc
