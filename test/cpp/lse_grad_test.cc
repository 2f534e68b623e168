// Tests of the CPU full-cache log-sum-exp (Backend::cacheLse, native/cpu/lse_grad.cc)
// against a naive float64 reference: random shapes (odd batch / dim, several
// segments, float16 / bfloat16 storage, partly filled, scoreEmptyRows, the
// extra row), bit-identical outputs for 1 / 2 / 3 threads and any wave size,
// forced baseline vs AVX2, no candidates at all, the ERR_ARGUMENT checks, and
// ERR_UNSUPPORTED from a backend without the pass (CUDA).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/dispatch.h"
#include "cpu/lse_grad.h"
#include "score_problem.h"
#include "test_util.h"

namespace {

const double kInf = std::numeric_limits<double>::infinity();

struct Lse {
  std::vector<float> lse, weighted;
  std::vector<int64_t> cands;
};

Lse runLse(const Problem& p, const float* extra, int threads) {
  Lse o;
  o.lse.assign(static_cast<size_t>(p.batch), 7.0f);
  o.weighted.assign(static_cast<size_t>(p.batch * p.dim), 7.0f);
  o.cands.assign(static_cast<size_t>(p.batch), -7);
  nc::CacheLseOutput out{o.lse.data(), o.weighted.data(), o.cands.data()};
  nc::ScoreRequest r = p.req();
  r.threads = threads;
  nc::cpuBackend().cacheLse(r, extra, out);
  return o;
}

bool same(const Lse& a, const Lse& b) {
  return std::memcmp(a.lse.data(), b.lse.data(), a.lse.size() * 4) == 0 &&
         std::memcmp(a.weighted.data(), b.weighted.data(), a.weighted.size() * 4) == 0 && a.cands == b.cands;
}

/// The float64 reference: lse and the softmax-weighted mean per query.
void referenceLse(const Problem& p, const float* extra, std::vector<double>& lse, std::vector<double>& wmean,
                  std::vector<int64_t>& cands) {
  std::vector<double> S;
  std::vector<uint8_t> cand;
  p.reference(S, cand);
  const int64_t N = p.n(), B = p.batch, D = p.dim;
  std::vector<const float*> rows(static_cast<size_t>(N));
  int64_t j0 = 0;
  for (const SegmentData& s : p.segs) {
    for (int64_t i = 0; i < s.rows; ++i) rows[j0 + i] = s.f32.data() + i * D;
    j0 += s.rows;
  }
  lse.assign(B, -kInf);
  wmean.assign(B * D, 0.0);
  cands.assign(B, 0);
  for (int64_t b = 0; b < B; ++b) {
    std::vector<std::pair<double, const float*>> c;
    for (int64_t j = 0; j < N; ++j)
      if (cand[j]) c.push_back({static_cast<double>(static_cast<float>(S[b * N + j])), rows[j]});
    if (extra) {
      double dot = 0;
      for (int64_t d = 0; d < D; ++d) dot += static_cast<double>(p.queries[b * D + d]) * extra[b * D + d];
      c.push_back({static_cast<double>(static_cast<float>(p.scale * dot)), extra + b * D});
    }
    cands[b] = static_cast<int64_t>(c.size());
    if (c.empty()) continue;
    double M = -kInf;
    for (auto& x : c) M = std::max(M, x.first);
    double sum = 0;
    for (auto& x : c) {
      const double w = std::exp(x.first - M);
      sum += w;
      for (int64_t d = 0; d < D; ++d) wmean[b * D + d] += w * x.second[d];
    }
    for (int64_t d = 0; d < D; ++d) wmean[b * D + d] /= sum;
    lse[b] = M + std::log(sum);
  }
}

void checkAgainstReference(const char* what, const Problem& p, const float* extra, const Lse& got) {
  std::vector<double> lse, wmean;
  std::vector<int64_t> cands;
  referenceLse(p, extra, lse, wmean, cands);
  for (int64_t b = 0; b < p.batch; ++b) {
    EXPECT(got.cands[b] == cands[b], "%s: candidates[%lld] %lld vs %lld", what, (long long)b, (long long)got.cands[b],
           (long long)cands[b]);
    if (lse[b] == -kInf) {
      EXPECT(got.lse[b] == -std::numeric_limits<float>::infinity(), "%s: lse[%lld] = %g, want -inf", what,
             (long long)b, got.lse[b]);
      for (int64_t d = 0; d < p.dim; ++d) EXPECT(got.weighted[b * p.dim + d] == 0.0f, "%s: weighted of a query without candidates", what);
      continue;
    }
    EXPECT(std::fabs(got.lse[b] - lse[b]) <= 2e-6 * (1 + std::fabs(lse[b])), "%s: lse[%lld] %.9g vs %.9g", what,
           (long long)b, got.lse[b], lse[b]);
    // Scores are float32 dot products: their rounding (~1e-7 of scale·|q||e|)
    // moves the softmax weights by about that much times the scale.
    const double tol = 4e-6 * (1 + std::fabs(p.scale));
    for (int64_t d = 0; d < p.dim; ++d) {
      const double w = wmean[b * p.dim + d], g = got.weighted[b * p.dim + d];
      EXPECT(std::fabs(g - w) <= tol * (1 + std::fabs(w)), "%s: weighted[%lld][%lld] %.9g vs %.9g", what,
             (long long)b, (long long)d, g, w);
    }
  }
}

void testRandomShapes(bool baseline) {
  nc::cpu::setForceBaseline(baseline);
  std::mt19937_64 rng(baseline ? 11 : 7);
  const nc::DType storages[] = {nc::DType::Float32, nc::DType::Float16, nc::DType::BFloat16};
  struct Shape { int64_t batch, dim; std::vector<int64_t> rows; double fill; float scale; bool extra, emptyRows; };
  const Shape shapes[] = {
      {1, 1, {5}, 1.0, 1.0f, false, false},
      {3, 7, {50, 13}, 0.6, 3.0f, true, false},
      {17, 33, {300}, 1.0, 20.0f, false, false},
      {16, 8, {100, 100, 7}, 0.3, 5.0f, true, false},
      {20, 40, {1000}, 0.9, 10.0f, true, true},
      {5, 128, {2500}, 1.0, 1.0f, false, false},
      {33, 65, {4100, 9}, 0.8, 50.0f, true, false},  // sharp softmax: weights skipped
  };
  int si = 0;
  for (const Shape& s : shapes) {
    for (nc::DType st : storages) {
      Problem p = makeProblem(rng, s.batch, s.dim, s.rows, st, s.fill, s.scale);
      p.scoreEmptyRows = s.emptyRows;
      std::vector<float> extra;
      if (s.extra) {
        std::normal_distribution<float> nd(0.0f, 1.0f);
        extra.resize(static_cast<size_t>(s.batch * s.dim));
        for (float& x : extra) x = nd(rng);
      }
      const float* x = s.extra ? extra.data() : nullptr;
      char what[96];
      std::snprintf(what, sizeof what, "%s shape %d storage %d", baseline ? "baseline" : "best", si,
                    static_cast<int>(st));
      const Lse one = runLse(p, x, 1);
      checkAgainstReference(what, p, x, one);
      for (int threads : {2, 3}) {
        const Lse many = runLse(p, x, threads);
        EXPECT(same(one, many), "%s: %d threads differ from 1 thread", what, threads);
      }
      nc::cpu::setLseWaveChunks(1);
      const Lse waves = runLse(p, x, 2);
      nc::cpu::setLseWaveChunks(0);
      EXPECT(same(one, waves), "%s: waves of one chunk differ", what);
    }
    ++si;
  }
  nc::cpu::setForceBaseline(false);
}

void testBaselineVsAvx2() {
  if (!nc::cpu::usingAvx2()) {
    std::printf("skip: baseline vs AVX2 (no AVX2)\n");
    return;
  }
  std::mt19937_64 rng(3);
  Problem p = makeProblem(rng, 37, 100, {3000, 500}, nc::DType::Float32, 0.9, 8.0f);
  const Lse best = runLse(p, nullptr, 2);
  nc::cpu::setForceBaseline(true);
  const Lse base = runLse(p, nullptr, 2);
  nc::cpu::setForceBaseline(false);
  for (size_t i = 0; i < best.lse.size(); ++i)
    EXPECT(std::fabs(best.lse[i] - base.lse[i]) <= 1e-6 * (1 + std::fabs(base.lse[i])), "tiers: lse[%zu] %.9g vs %.9g",
           i, best.lse[i], base.lse[i]);
  for (size_t i = 0; i < best.weighted.size(); ++i)
    EXPECT(std::fabs(best.weighted[i] - base.weighted[i]) <= 1e-5 * (1 + std::fabs(base.weighted[i])),
           "tiers: weighted[%zu] %.9g vs %.9g", i, best.weighted[i], base.weighted[i]);
}

void testEdgeCases() {
  std::mt19937_64 rng(5);
  // Nothing filled: lse -inf, weighted zeros; with the extra row: exactly that row.
  Problem p = makeProblem(rng, 4, 6, {40}, nc::DType::Float32, 0.0, 2.0f);
  std::fill(p.segs[0].filled.begin(), p.segs[0].filled.end(), 0);
  const Lse none = runLse(p, nullptr, 2);
  checkAgainstReference("no candidates", p, nullptr, none);
  std::vector<float> extra(24);
  for (size_t i = 0; i < extra.size(); ++i) extra[i] = static_cast<float>(i) * 0.25f - 3.0f;
  const Lse only = runLse(p, extra.data(), 2);
  for (int64_t b = 0; b < 4; ++b) {
    double dot = 0;
    for (int d = 0; d < 6; ++d) dot += static_cast<double>(p.queries[b * 6 + d]) * extra[b * 6 + d];
    EXPECT(only.lse[b] == static_cast<float>(2.0 * dot), "extra only: lse[%lld] %.9g", (long long)b, only.lse[b]);
    for (int d = 0; d < 6; ++d)
      EXPECT(only.weighted[b * 6 + d] == extra[b * 6 + d], "extra only: weighted[%lld][%d]", (long long)b, d);
  }
  // No segments at all.
  Problem q = p;
  q.segs.clear();
  const Lse empty = runLse(q, nullptr, 1);
  checkAgainstReference("no segments", q, nullptr, empty);
  // Batch 0 writes nothing.
  Problem z = makeProblem(rng, 0, 3, {10}, nc::DType::Float32, 1.0, 1.0f);
  const Lse zero = runLse(z, nullptr, 1);
  EXPECT(zero.lse.empty(), "batch 0");
  // Argument checks (nothing written).
  Problem bad = makeProblem(rng, 2, 3, {10}, nc::DType::Float32, 1.0, 1.0f);
  bad.scale = std::numeric_limits<float>::infinity();
  bool threw = false;
  Lse before;
  try {
    before = runLse(bad, nullptr, 1);
  } catch (const nc::Error& e) {
    threw = e.code() == "ERR_ARGUMENT";
  }
  EXPECT(threw, "infinite scale must throw ERR_ARGUMENT");
  bad.scale = 1.0f;
  nc::CacheLseOutput nulls{nullptr, nullptr, nullptr};
  threw = false;
  try {
    nc::cpuBackend().cacheLse(bad.req(), nullptr, nulls);
  } catch (const nc::Error& e) {
    threw = e.code() == "ERR_ARGUMENT";
  }
  EXPECT(threw, "null outputs must throw ERR_ARGUMENT");
}

/// A backend without the pass (like CUDA): the default runCacheLse throws ERR_UNSUPPORTED naming it.
class NoLseBackend final : public nc::Backend {
 public:
  const char* name() const override { return "test"; }
  std::unique_ptr<nc::CacheStore> createStore(std::vector<nc::ColumnSpec>, int64_t) const override { return nullptr; }

 protected:
  void runScoreAndSample(const nc::ScoreRequest&, const nc::SampleParams&, nc::SampleOutput&) const override {}
  void runScoreGroupMax(const nc::ScoreRequest&, int64_t, float*, int32_t*) const override {}
  void runSampleCandidates(const float*, int64_t, int64_t, const nc::SampleParams&, int, nc::SampleOutput&) const override {}
  void runScoreMatrix(const nc::ScoreRequest&, float*) const override {}
};

void testUnsupported() {
  std::mt19937_64 rng(2);
  Problem p = makeProblem(rng, 2, 3, {4}, nc::DType::Float32, 1.0, 1.0f);
  std::vector<float> lse(2, 7.0f), w(6, 7.0f);
  nc::CacheLseOutput out{lse.data(), w.data(), nullptr};
  std::string code, msg;
  try {
    NoLseBackend().cacheLse(p.req(), nullptr, out);
  } catch (const nc::Error& e) {
    code = e.code();
    msg = e.what();
  }
  EXPECT(code == "ERR_UNSUPPORTED" && msg.find("test backend") != std::string::npos, "default runCacheLse: %s %s",
         code.c_str(), msg.c_str());
  EXPECT(lse[0] == 7.0f && w[0] == 7.0f, "default runCacheLse wrote its outputs");
}

}  // namespace

int main() {
  std::printf("cpu: usingAvx2=%d\n", nc::cpu::usingAvx2());
  testEdgeCases();
  testUnsupported();
  testRandomShapes(false);
  testRandomShapes(true);
  testBaselineVsAvx2();
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all lse-grad tests passed\n");
  return 0;
}
