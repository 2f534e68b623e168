// scoreMatrix on the CPU: the plain B x N scores (slow paths, tests).
#include <memory>
#include <vector>

#include "cpu_backend.h"
#include "driver.h"
#include "thread_pool.h"

namespace nc {
namespace cpu {

namespace {

struct MatrixJob {
  const Prepared* p;
  Tier tier;
  int64_t chunkRows, chunks;
  float* out;
  std::vector<Scratch> scratch;
};

void matrixChunk(void* ctx, int64_t c, int slot) {
  MatrixJob& job = *static_cast<MatrixJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  const int64_t begin = c * job.chunkRows, end = std::min(p.n, begin + job.chunkRows);
  forEachTile(p, *job.tier.kernel, true, begin, end, sc, [&](int64_t nrows, int64_t qb) {
    const int64_t qn = std::min(kQueryBlock, p.batch - qb);
    for (int64_t r = 0; r < nrows; ++r) {
      const int64_t j = sc.rowIdx[r];
      for (int64_t i = 0; i < qn; ++i) job.out[(qb + i) * p.n + j] = sc.sb[r * kQueryBlock + i];
    }
  });
}

}  // namespace

void CpuBackend::runScoreMatrix(const ScoreRequest& req, float* out) const {
  Prepared p;
  prepare(req, p);
  if (p.batch == 0 || p.n == 0) return;
  auto job = std::make_unique<MatrixJob>();
  job->p = &p;
  job->tier = currentTier();
  job->out = out;
  job->chunkRows = chunkRowsFor(p.n);
  job->chunks = (p.n + job->chunkRows - 1) / job->chunkRows;
  const int threads = static_cast<int>(std::min<int64_t>(resolveThreads(req.threads), job->chunks));
  job->scratch.resize(threads);
  for (auto& s : job->scratch) s.init(p);
  runChunks(threads, job->chunks, matrixChunk, job.get());
}

}  // namespace cpu
}  // namespace nc
