// sampleCandidates on the CPU: sampling over an explicit host matrix (scalar,
// parallel over query rows; the chunking does not change any output).
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "cpu_backend.h"
#include "draws.h"
#include "thread_pool.h"

namespace nc {
namespace cpu {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kInfF = std::numeric_limits<float>::infinity();

struct CandidatesJob {
  const float* scores;
  int64_t batch, cols, rowsPerChunk;
  SampleParams params;
  SampleOutput* out;
  std::vector<KBestBuffer> topk;  // per slot, 1 query each
  std::vector<int32_t> colIndex;  // columnOffset + c (empty when columnOffset is 0)
};

inline bool isCandidate(float s) { return s != -kInfF && !std::isnan(s); }

void candidatesChunk(void* ctx, int64_t c, int slot) {
  CandidatesJob& job = *static_cast<CandidatesJob*>(ctx);
  const int64_t k = job.params.numDraws;
  const NoiseKey key = noiseKey(job.params.seed, job.params.call);
  KBestBuffer& list = job.topk[slot];
  for (int64_t b = c * job.rowsPerChunk; b < std::min(job.batch, (c + 1) * job.rowsPerChunk); ++b) {
    const float* s = job.scores + b * job.cols;
    double M = -kInf;
    int64_t cands = 0;
    for (int64_t j = 0; j < job.cols; ++j) {
      if (!isCandidate(s[j])) continue;
      ++cands;
      M = std::max(M, static_cast<double>(s[j]));
    }
    if (job.out->candidates) job.out->candidates[b] = cands;
    double sum = 0.0;
    if (cands > 0)
      for (int64_t j = 0; j < job.cols; ++j)
        if (isCandidate(s[j])) sum += std::exp(static_cast<double>(s[j]) - M);
    job.out->lse[b] = cands > 0 ? static_cast<float>(M + std::log(sum)) : -kInfF;
    list.clear();
    if (job.params.mode != SampleMode::None && cands > 0) {
      const ScoreBlock blk{s, 1, job.cols, job.cols, 1, job.colIndex.empty() ? nullptr : job.colIndex.data(), true};
      offerScores(&list.view, blk, 0, static_cast<uint32_t>(b + job.params.rowOffset), static_cast<int32_t>(job.params.mode),
                  job.params.invTemp, key);
    }
    writeDraws(list.view, 0, job.out->indices + b * k, job.out->scores + b * k);
  }
}

}  // namespace

void CpuBackend::runSampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params,
                                     int threads, SampleOutput& out) const {
  if (batch == 0) return;
  auto job = std::make_unique<CandidatesJob>();
  job->scores = scores;
  job->batch = batch;
  job->cols = cols;
  job->params = params;
  job->out = &out;
  if (params.columnOffset != 0) {
    job->colIndex.resize(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c) job->colIndex[static_cast<size_t>(c)] = static_cast<int32_t>(params.columnOffset + c);
  }
  job->rowsPerChunk = std::max<int64_t>(1, std::min<int64_t>(64, (1 << 16) / std::max<int64_t>(cols, 1)));
  const int64_t chunks = (batch + job->rowsPerChunk - 1) / job->rowsPerChunk;
  const int t = static_cast<int>(std::min<int64_t>(resolveThreads(threads), chunks));
  job->topk.resize(t);
  for (auto& s : job->topk) s.init(1, params.numDraws);
  runChunks(t, chunks, candidatesChunk, job.get());
}

}  // namespace cpu
}  // namespace nc
