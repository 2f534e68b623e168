// cacheLse on the CPU: the full-cache log-sum-exp and its gradient's weighted
// sum in one flash-style streaming pass (docs/kernels.md "Full-cache
// log-sum-exp"). Per chunk and query it keeps the running max and sum of the
// sampling kernel (the tier's sampleTile in mode none updates them, the same
// code as scoreAndSample's lse) and a running D-vector
// acc = sum_j exp(S_j - max) e_j, rescaled whenever the max grows (the tier's
// lseGradTile). The B x N scores exist only as the 24 x 16 blocks of the
// tile loop. Chunk partials are folded in chunk order, a wave of chunks at a
// time (bounded memory), so every output is the same for any thread count.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "cpu_backend.h"
#include "driver.h"
#include "lse_grad.h"
#include "thread_pool.h"

namespace nc {
namespace cpu {

namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();

std::atomic<int64_t> gWaveOverride{0};

/// Chunks whose partials are held at once: about 32 MB of accumulators, at
/// least 8 and at most 64 chunks (a function of the shape only, never of the
/// thread count).
int64_t waveChunksFor(int64_t bpad, int64_t dim) {
  if (const int64_t w = gWaveOverride.load(); w > 0) return w;
  const int64_t perChunk = bpad * dim * static_cast<int64_t>(sizeof(float));
  return std::max<int64_t>(8, std::min<int64_t>(64, (int64_t{32} << 20) / std::max<int64_t>(perChunk, 1)));
}

struct LseJob {
  const Prepared* p;
  Tier tier;
  RowChunks chunks;
  int64_t waveStart = 0;
  std::vector<float> lseMax;   // [wave][bpad]
  std::vector<double> lseSum;  // [wave][bpad]
  std::vector<float> acc;      // [wave][bpad][dim]
  std::vector<Scratch> scratch;
};

void lseChunk(void* ctx, int64_t w, int slot) {
  LseJob& job = *static_cast<LseJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  const int64_t c = job.waveStart + w;
  const int64_t begin = c * job.chunks.rows, end = std::min(p.n, begin + job.chunks.rows);
  SampleTile t{};
  t.mode = static_cast<int32_t>(SampleMode::None);
  t.invTemp = 1.0f;
  t.invTempD = 1.0;
  t.pending = &sc.pending;
  LseGradTile g{};
  g.dim = p.dim;
  float oldMax[kQueryBlock];
  g.oldMax = oldMax;
  forEachTile(p, *job.tier.kernel, false, begin, end, sc, [&](const TileView& v) {
    const int64_t qb = v.qb;
    t.sb = g.sb = v.sb;
    t.rowIdx = v.rowIdx;
    g.rows = v.rowPtr;
    t.nrows = g.nrows = v.nrows;
    t.qbase = qb;
    t.qcount = std::min(kQueryBlock, p.batch - qb);
    t.lseMax = job.lseMax.data() + w * p.bpad + qb;
    t.lseSum = job.lseSum.data() + w * p.bpad + qb;
    std::copy(t.lseMax, t.lseMax + kQueryBlock, oldMax);
    job.tier.epilogue->sampleTile(&t);  // the lse partials, as in scoreAndSample
    g.qcount = t.qcount;
    g.newMax = t.lseMax;
    g.acc = job.acc.data() + (w * p.bpad + qb) * p.dim;
    // A tier without its own weighted-sum epilogue uses the baseline one.
    (job.tier.epilogue->lseGradTile != nullptr ? job.tier.epilogue->lseGradTile : baselineEpilogue()->lseGradTile)(&g);
  });
}

/// The running total of one query: max, sum of exp(S - max), weighted sum.
struct Total {
  float* max;
  double* sum;
  double* acc;  // dim
};

/// Folds one partial (max m, sum s, weighted sum a[dim]) into the total.
void fold(Total t, int64_t dim, float m, double s, const float* a) {
  if (std::isnan(m)) *t.sum = std::numeric_limits<double>::quiet_NaN();  // poisons the lse (the caller rejects it)
  if (!(m > -kInfF)) return;
  if (m > *t.max) {
    const double f = *t.max > -kInfF ? std::exp(static_cast<double>(*t.max) - m) : 0.0;
    *t.sum *= f;
    for (int64_t d = 0; d < dim; ++d) t.acc[d] *= f;
    *t.max = m;
  }
  const double g = std::exp(static_cast<double>(m) - *t.max);
  *t.sum += s * g;
  for (int64_t d = 0; d < dim; ++d) t.acc[d] += g * a[d];
}

}  // namespace

void setLseWaveChunks(int64_t chunks) { gWaveOverride.store(chunks > 0 ? chunks : 0); }

void CpuBackend::runCacheLse(const ScoreRequest& req, const float* extra, CacheLseOutput& out) const {
  Prepared p;
  prepare(req, p);
  if (p.batch == 0) return;
  const int64_t dim = p.dim;
  const int64_t cands = countCandidates(p);
  std::vector<float> totMax(static_cast<size_t>(p.batch), -kInfF);
  std::vector<double> totSum(static_cast<size_t>(p.batch), 0.0);
  std::vector<double> totAcc(static_cast<size_t>(p.batch * dim), 0.0);
  auto total = [&](int64_t b) { return Total{&totMax[b], &totSum[b], totAcc.data() + b * dim}; };

  if (cands > 0) {
    auto job = std::make_unique<LseJob>();
    job->p = &p;
    job->tier = currentTier();
    job->chunks = rowChunks(p.n, req.threads);
    const int64_t wave = std::min(job->chunks.count, waveChunksFor(p.bpad, dim));
    job->scratch = makeScratch(p, job->chunks.threads);
    for (int64_t w0 = 0; w0 < job->chunks.count; w0 += wave) {
      const int64_t nw = std::min(wave, job->chunks.count - w0);
      job->waveStart = w0;
      job->lseMax.assign(static_cast<size_t>(nw * p.bpad), -kInfF);
      job->lseSum.assign(static_cast<size_t>(nw * p.bpad), 0.0);
      job->acc.assign(static_cast<size_t>(nw * p.bpad * dim), 0.0f);
      runChunks(static_cast<int>(std::min<int64_t>(job->chunks.threads, nw)), nw, lseChunk, job.get());
      for (int64_t w = 0; w < nw; ++w)
        for (int64_t b = 0; b < p.batch; ++b)
          fold(total(b), dim, job->lseMax[w * p.bpad + b], job->lseSum[w * p.bpad + b],
               job->acc.data() + (w * p.bpad + b) * dim);
    }
  }

  for (int64_t b = 0; b < p.batch; ++b) {
    if (extra != nullptr) {
      const float* q = req.queries + b * dim;
      const float* x = extra + b * dim;
      double dot = 0.0;
      for (int64_t d = 0; d < dim; ++d) dot += static_cast<double>(q[d]) * x[d];
      fold(total(b), dim, static_cast<float>(static_cast<double>(req.scale) * dot), 1.0, x);
    }
    float* wout = out.weighted + b * dim;
    if (!(totMax[b] > -kInfF)) {
      out.lse[b] = std::isnan(totMax[b]) ? totMax[b] : -kInfF;
      std::fill(wout, wout + dim, 0.0f);
    } else {
      out.lse[b] = static_cast<float>(totMax[b] + std::log(totSum[b]));
      const double inv = 1.0 / totSum[b];
      for (int64_t d = 0; d < dim; ++d) wout[d] = static_cast<float>(totAcc[b * dim + d] * inv);
    }
    if (out.candidates) out.candidates[b] = cands + (extra != nullptr ? 1 : 0);
  }
}

}  // namespace cpu
}  // namespace nc
