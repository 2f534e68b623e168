// scoreAndSample on the CPU: per chunk, the tier's sampling epilogue keeps
// the lse partials (running max and sum per query) and the per-thread k-best
// lists; the partials are combined in chunk order and the lists merged under
// their total order, so the outputs are the same for any number of threads.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "cpu_backend.h"
#include "draws.h"
#include "driver.h"
#include "thread_pool.h"

namespace nc {
namespace cpu {

namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();

struct SampleJob {
  const Prepared* p;
  Tier tier;
  SampleParams params;
  RowChunks chunks;
  std::vector<float> lseMax;       // [chunks][bpad]
  std::vector<double> lseSum;      // [chunks][bpad]
  std::vector<Scratch> scratch;    // per slot
  std::vector<KBestBuffer> topk;   // per slot
  SharedBest shared;               // threads > 1, Gumbel
};

void sampleChunk(void* ctx, int64_t c, int slot) {
  SampleJob& job = *static_cast<SampleJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  SampleTile t{};
  t.mode = static_cast<int32_t>(job.params.mode);
  t.invTemp = static_cast<float>(job.params.invTemp);
  t.invTempD = job.params.invTemp;
  t.key = noiseKey(job.params.seed, job.params.call);
  t.noiseRow0 = static_cast<uint32_t>(job.params.rowOffset);
  t.topk = job.topk.empty() ? nullptr : &job.topk[slot].view;
  const int64_t begin = c * job.chunks.rows, end = std::min(p.n, begin + job.chunks.rows);
  t.pending = &sc.pending;
  t.flushOnly = 0;
  // Filter with what the other threads have found (see SharedBest).
  if (job.shared.enabled()) job.shared.import(t.topk, p.batch);
  forEachTile(p, *job.tier.kernel, false, begin, end, sc, [&](const TileView& v) {
    const int64_t qb = v.qb;
    t.sb = v.sb;
    t.rowIdx = v.rowIdx;
    t.nrows = v.nrows;
    t.qbase = qb;
    t.qcount = std::min(kQueryBlock, p.batch - qb);
    t.lseMax = job.lseMax.data() + c * p.bpad + qb;
    t.lseSum = job.lseSum.data() + c * p.bpad + qb;
    job.tier.epilogue->sampleTile(&t);
  });
  if (t.mode == 0) {
    t.flushOnly = 1;
    job.tier.epilogue->sampleTile(&t);
    if (job.shared.enabled()) job.shared.publish(t.topk, p.batch);
  }
}

/// The lse of query b from the chunk partials, combined in chunk order.
float combineLse(const SampleJob& job, int64_t b) {
  const int64_t bpad = job.p->bpad;
  float M = -kInfF;
  for (int64_t c = 0; c < job.chunks.count; ++c) M = std::max(M, job.lseMax[c * bpad + b]);
  if (!(M > -kInfF)) return std::isnan(M) ? M : -kInfF;
  double total = 0.0;
  for (int64_t c = 0; c < job.chunks.count; ++c) {
    const float m = job.lseMax[c * bpad + b];
    if (m > -kInfF) total += job.lseSum[c * bpad + b] * std::exp(static_cast<double>(m) - M);
  }
  return static_cast<float>(M + std::log(total));
}

}  // namespace

void CpuBackend::runScoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const {
  Prepared p;
  prepare(req, p);
  if (p.batch == 0) return;
  p.indexBase = params.columnOffset;
  const int64_t k = params.numDraws;
  std::vector<int64_t> perQuery(static_cast<size_t>(p.batch));
  countCandidatesPerQuery(p, perQuery.data());
  int64_t cands = 0;
  for (int64_t b = 0; b < p.batch; ++b) cands = std::max(cands, perQuery[b]);
  if (out.candidates)
    for (int64_t b = 0; b < p.batch; ++b) out.candidates[b] = perQuery[b];
  auto job = std::make_unique<SampleJob>();
  job->p = &p;
  job->tier = currentTier();
  packBf16Queries(p, *job->tier.kernel);
  job->params = params;
  job->chunks = rowChunks(p.n, req.threads);
  job->lseMax.assign(static_cast<size_t>(job->chunks.count * p.bpad), -kInfF);
  job->lseSum.assign(static_cast<size_t>(job->chunks.count * p.bpad), 0.0);
  const int threads = job->chunks.threads;
  job->scratch = makeScratch(p, threads);
  if (params.mode != SampleMode::None) {
    job->topk.resize(threads);
    for (auto& t : job->topk) t.init(p.batch, k);
    if (threads > 1 && params.mode == SampleMode::Gumbel) {
      job->shared.init(p.batch, k);
      for (auto& t : job->topk) t.trackChanges();
    }
  }
  if (cands > 0) runChunks(threads, job->chunks.count, sampleChunk, job.get());
  for (int64_t b = 0; b < p.batch; ++b) out.lse[b] = combineLse(*job, b);
  if (params.mode != SampleMode::None) {
    mergeThreadLists(job->topk, p.batch, out);
  } else {
    for (int64_t i = 0; i < p.batch * k; ++i) {
      out.indices[i] = -1;
      out.scores[i] = std::numeric_limits<float>::quiet_NaN();
    }
  }
}

}  // namespace cpu
}  // namespace nc
