// scoreGroupMax on the CPU (topK grouping): chunks hold whole groups, so every
// group has one owner thread and its max needs no merge.
#include <limits>
#include <memory>
#include <vector>

#include "cpu_backend.h"
#include "driver.h"
#include "groups.h"
#include "thread_pool.h"

namespace nc {
namespace cpu {

namespace {

struct GroupJob {
  const Prepared* p;
  Tier tier;
  int64_t groups, groupsPerChunk, chunks;
  float* outScores;
  int32_t* outRows;
  std::vector<Scratch> scratch;
  std::vector<std::vector<float>> gmax;
  std::vector<std::vector<int32_t>> gidx;
};

void groupChunk(void* ctx, int64_t c, int slot) {
  GroupJob& job = *static_cast<GroupJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  const int64_t g0 = c * job.groupsPerChunk, g1 = std::min(job.groups, g0 + job.groupsPerChunk);
  const int64_t ng = g1 - g0;
  std::vector<float>& gm = job.gmax[slot];
  std::vector<int32_t>& gi = job.gidx[slot];
  std::fill(gm.begin(), gm.begin() + ng * p.bpad, -std::numeric_limits<float>::infinity());
  std::fill(gi.begin(), gi.begin() + ng * p.bpad, -1);
  GroupTile t{};
  t.bpad = p.bpad;
  const int64_t begin = groupStart(g0, p.n, job.groups), end = groupStart(g1, p.n, job.groups);
  forEachTile(p, *job.tier.kernel, false, begin, end, sc, [&](const TileView& v) {
    // Query block 0 comes first for every tile of a super tile.
    int32_t* rowGroup = sc.rowGroup.data() + v.first;
    if (v.qb == 0)
      for (int64_t r = 0; r < v.nrows; ++r)
        rowGroup[r] = static_cast<int32_t>(groupOf(v.rowIdx[r], p.n, job.groups) - g0);
    t.sb = v.sb;
    t.rowIdx = v.rowIdx;
    t.rowGroup = rowGroup;
    t.nrows = v.nrows;
    t.gmax = gm.data() + v.qb;
    t.gidx = gi.data() + v.qb;
    job.tier.epilogue->groupMaxTile(&t);
  });
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t k = 0; k < ng; ++k) {
      job.outScores[b * job.groups + g0 + k] = gm[k * p.bpad + b];
      job.outRows[b * job.groups + g0 + k] = gi[k * p.bpad + b];
    }
  }
}

}  // namespace

void CpuBackend::runScoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores,
                                  int32_t* groupRows) const {
  Prepared p;
  prepare(req, p);
  if (p.batch == 0) return;
  auto job = std::make_unique<GroupJob>();
  job->p = &p;
  job->tier = currentTier();
  packBf16Queries(p, *job->tier.kernel);
  job->groups = groups;
  job->outScores = groupScores;
  job->outRows = groupRows;
  const int64_t groupSize = std::max<int64_t>(1, p.n / groups);
  const int64_t chunkRows = chunkRowsFor(p.n);
  int64_t gpc = std::max<int64_t>(1, chunkRows / groupSize);
  gpc = std::min<int64_t>(gpc, std::max<int64_t>(1, (1 << 18) / p.bpad));  // <= 2 MB of group state
  job->groupsPerChunk = gpc;
  job->chunks = (groups + gpc - 1) / gpc;
  const int threads = static_cast<int>(std::min<int64_t>(resolveThreads(req.threads), job->chunks));
  job->scratch = makeScratch(p, threads);
  job->gmax.resize(threads);
  job->gidx.resize(threads);
  for (int i = 0; i < threads; ++i) {
    job->gmax[i].resize(static_cast<size_t>(gpc * p.bpad));
    job->gidx[i].resize(static_cast<size_t>(gpc * p.bpad));
  }
  runChunks(threads, job->chunks, groupChunk, job.get());
}

}  // namespace cpu
}  // namespace nc
