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
  RowChunks chunks;
  float* out;
  std::vector<Scratch> scratch;
};

void matrixChunk(void* ctx, int64_t c, int slot) {
  MatrixJob& job = *static_cast<MatrixJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  const int64_t begin = c * job.chunks.rows, end = std::min(p.n, begin + job.chunks.rows);
  forEachTile(p, *job.tier.kernel, true, begin, end, sc, [&](const TileView& v) {
    const int64_t qn = std::min(kQueryBlock, p.batch - v.qb);
    for (int64_t r = 0; r < v.nrows; ++r) {
      const int64_t j = v.rowIdx[r];
      for (int64_t i = 0; i < qn; ++i) job.out[(v.qb + i) * p.n + j] = v.sb[r * kQueryBlock + i];
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
  packBf16Queries(p, *job->tier.kernel);
  job->out = out;
  job->chunks = rowChunks(p.n, req.threads);
  job->scratch = makeScratch(p, job->chunks.threads);
  runChunks(job->chunks.threads, job->chunks.count, matrixChunk, job.get());
}

}  // namespace cpu
}  // namespace nc
