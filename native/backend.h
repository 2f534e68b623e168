// The one interface of the native backends (faiss's Index / GpuIndex split is
// the model): a Backend creates the cache stores whose rows live in its
// memory and runs the kernels that read them. The CPU backend is
// native/cpu/, the CUDA backend native/cuda/ (cuda/cuda_backend.h); the
// binding wraps this interface only.
//
// The public kernel calls check their arguments here, once for every backend
// (nc::Error ERR_ARGUMENT), then run the backend's implementation.
#pragma once
#include <cstdint>
#include <memory>
#include <vector>

#include "cache_lse.h"
#include "cache_store.h"
#include "kernels.h"

namespace nc {

class Backend {
 public:
  virtual ~Backend() = default;
  /// "cpu" or "cuda".
  virtual const char* name() const = 0;

  /// A store of `size` rows, all zeros, ages 0, nothing filled. Throws nc::Error.
  virtual std::unique_ptr<CacheStore> createStore(std::vector<ColumnSpec> columns, int64_t size) const = 0;

  /// Fused: score, logsumexp and draw per query in one streaming pass.
  void scoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const;
  /// topK grouping: per query, the max of S in each of `groups` consecutive
  /// groups of the global index space (groups.h; first index on ties), and
  /// its global row; -inf / -1 for a group without candidates. Outputs
  /// (host) are batch x groups.
  void scoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores, int32_t* groupRows) const;
  /// Sampling over an explicit host candidate matrix (batch x cols, -inf =
  /// not a candidate): noise column = matrix column; indices are columns.
  /// Used for topK groups and for function score transforms.
  void sampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params, int threads,
                        SampleOutput& out) const;
  /// Plain scores (batch x N, float32, host) for slow paths and tests.
  void scoreMatrix(const ScoreRequest& req, float* out) const;
  /// Full-cache log-sum-exp and its softmax-weighted mean of the candidate
  /// embeddings, in one streaming pass (cache_lse.h). `extra` (host, batch x
  /// dim, may be null): row b is one more candidate of query b only.
  void cacheLse(const ScoreRequest& req, const float* extra, CacheLseOutput& out) const;

 protected:
  // The implementations, called with checked arguments.
  virtual void runScoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const = 0;
  virtual void runScoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores,
                                int32_t* groupRows) const = 0;
  virtual void runSampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params,
                                   int threads, SampleOutput& out) const = 0;
  virtual void runScoreMatrix(const ScoreRequest& req, float* out) const = 0;
  /// Default: nc::Error ERR_UNSUPPORTED (a backend without the pass).
  virtual void runCacheLse(const ScoreRequest& req, const float* extra, CacheLseOutput& out) const;
};

/// The CPU backend (native/cpu/).
const Backend& cpuBackend();

}  // namespace nc
