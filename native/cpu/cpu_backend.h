// The CPU backend. Its kernels are one file each: sample.cc
// (scoreAndSample), group_max.cc, candidates.cc (sampleCandidates), matrix.cc,
// lse_grad.cc (cacheLse);
// all run on the tiling driver (driver.h) with the ISA tier chosen by the
// dispatch table (dispatch.cc).
#pragma once
#include "backend.h"

namespace nc {
namespace cpu {

class CpuBackend final : public Backend {
 public:
  const char* name() const override { return "cpu"; }
  std::unique_ptr<CacheStore> createStore(std::vector<ColumnSpec> columns, int64_t size) const override;

 protected:
  void runScoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const override;
  void runScoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores,
                        int32_t* groupRows) const override;
  void runSampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params, int threads,
                           SampleOutput& out) const override;
  void runScoreMatrix(const ScoreRequest& req, float* out) const override;
  void runCacheLse(const ScoreRequest& req, const float* extra, CacheLseOutput& out) const override;
};

}  // namespace cpu
}  // namespace nc
