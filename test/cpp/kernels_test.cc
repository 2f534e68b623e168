// Tests of the CPU kernels against a naive float64 reference (no Node needed):
// random shapes (odd batch / dim / N, several segments, float16 / bfloat16,
// partly filled, k > 1, topK groups), 1 vs N threads, on every usable ISA tier
// (baseline, AVX2, AVX-512: forced through the tier cap), the tiers against
// each other, lse precision per tier, and a chi-square test that Gumbel draws follow softmax(invTemp * S).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "cpu/dispatch.h"
#include "cpu/tier.h"
#include "exclusions.h"
#include "rng.h"
#include "score_problem.h"
#include "test_util.h"

namespace {

const double kInf = std::numeric_limits<double>::infinity();

struct Draws {
  std::vector<int32_t> idx;
  std::vector<float> scores, lse;
  std::vector<int64_t> cands;
};

Draws runSample(const Problem& p, const nc::SampleParams& sp, int threads) {
  Draws d;
  d.idx.assign(static_cast<size_t>(p.batch * sp.numDraws), -7);
  d.scores.assign(static_cast<size_t>(p.batch * sp.numDraws), 7.0f);
  d.lse.assign(static_cast<size_t>(p.batch), 7.0f);
  d.cands.assign(static_cast<size_t>(p.batch), -7);
  nc::SampleOutput out{d.idx.data(), d.scores.data(), d.lse.data(), d.cands.data()};
  nc::ScoreRequest r = p.req();
  r.threads = threads;
  nc::cpuBackend().scoreAndSample(r, sp, out);
  return d;
}

/// Reference draws for one query row: k best of (perturbed desc, index asc).
void referenceDraws(const double* S, const uint8_t* cand, int64_t N, int64_t row,
                    const nc::SampleParams& sp, std::vector<std::pair<double, int64_t>>& best) {
  best.clear();
  for (int64_t j = 0; j < N; ++j) {
    if (!cand[j]) continue;
    // The kernels perturb the float32 score; do the same.
    const double s = static_cast<float>(S[j]);
    double pv = s;
    if (sp.mode == nc::SampleMode::Gumbel)
      pv = sp.invTemp * s + nc::gumbelNoise(sp.seed, sp.call, static_cast<uint32_t>(row), j);
    best.push_back({pv, j});
  }
  std::sort(best.begin(), best.end(), [](const auto& a, const auto& b) {
    return a.first > b.first || (a.first == b.first && a.second < b.second);
  });
  if (static_cast<int64_t>(best.size()) > sp.numDraws) best.resize(static_cast<size_t>(sp.numDraws));
}

/// Checks draws of a kernel against the reference (tolerating near-ties).
/// Query b's candidate flags are cand[b * candStride ..] (stride 0: shared).
void checkDraws(const char* what, const std::vector<double>& S, const std::vector<uint8_t>& candAll,
                int64_t batch, int64_t N, const nc::SampleParams& sp, const Draws& d, int64_t candStride = 0) {
  std::vector<std::pair<double, int64_t>> best;
  for (int64_t b = 0; b < batch; ++b) {
    const uint8_t* cand = candAll.data() + b * candStride;
    int64_t nc = 0;
    for (int64_t j = 0; j < N; ++j) nc += cand[j];
    EXPECT(d.cands[b] == nc, "%s: candidates %lld vs %lld", what, (long long)d.cands[b], (long long)nc);
    // lse
    double M = -kInf;
    for (int64_t j = 0; j < N; ++j)
      if (cand[j]) M = std::max(M, S[b * N + j]);
    double lse = -kInf;
    if (M > -kInf) {
      double sum = 0;
      for (int64_t j = 0; j < N; ++j)
        if (cand[j]) sum += std::exp(S[b * N + j] - M);
      lse = M + std::log(sum);
    }
    if (lse == -kInf) {
      EXPECT(d.lse[b] == -std::numeric_limits<float>::infinity(), "%s: lse %g vs -inf", what, d.lse[b]);
    } else {
      EXPECT(std::fabs(d.lse[b] - lse) <= 2e-4 * (1 + std::fabs(lse)), "%s: b=%lld lse %.7g vs %.7g", what,
             (long long)b, d.lse[b], lse);
    }
    if (sp.mode == nc::SampleMode::None) {
      for (int64_t i = 0; i < sp.numDraws; ++i) EXPECT(d.idx[b * sp.numDraws + i] == -1, "%s: none mode draw", what);
      continue;
    }
    referenceDraws(S.data() + b * N, cand, N, b, sp, best);
    for (int64_t i = 0; i < sp.numDraws; ++i) {
      const int32_t got = d.idx[b * sp.numDraws + i];
      if (i >= static_cast<int64_t>(best.size())) {
        EXPECT(got == -1, "%s: expected no draw, got %d", what, got);
        EXPECT(std::isnan(d.scores[b * sp.numDraws + i]), "%s: expected NaN score", what);
        continue;
      }
      const int64_t want = best[i].second;
      if (got != want) {
        // Accept only a near-tie in the reference perturbed scores.
        double pg = -kInf;
        for (auto& e : best)
          if (e.second == got) pg = e.first;
        const double gap = std::fabs(pg - best[i].first);
        EXPECT(gap < 1e-3 * (1 + std::fabs(best[i].first)), "%s: b=%lld draw %lld: got %d want %lld (gap %g)",
               what, (long long)b, (long long)i, got, (long long)want, gap);
      } else {
        const double sref = S[b * N + want];
        EXPECT(std::fabs(d.scores[b * sp.numDraws + i] - sref) <= 1e-4 * (1 + std::fabs(sref)),
               "%s: score %g vs %g", what, d.scores[b * sp.numDraws + i], sref);
      }
    }
  }
}

bool sameDraws(const Draws& a, const Draws& b, bool exactLse) {
  if (a.idx != b.idx || a.cands != b.cands) return false;
  for (size_t i = 0; i < a.lse.size(); ++i) {
    if (exactLse ? std::memcmp(&a.lse[i], &b.lse[i], 4) != 0
                 : std::fabs(a.lse[i] - b.lse[i]) > 1e-4 * (1 + std::fabs(a.lse[i])))
      return false;
  }
  return true;
}

/// Runs the kernels on one tier (through the cap); false when it cannot run here.
bool useTier(const std::string& name) {
  const auto usable = nc::cpu::usableTiers();
  if (std::find(usable.begin(), usable.end(), name) == usable.end()) return false;
  nc::cpu::setForceBaseline(false);
  EXPECT(nc::cpu::setIsaCap(name), "setIsaCap(%s)", name.c_str());
  EXPECT(nc::cpu::tierName() == name, "cap %s runs %s", name.c_str(), nc::cpu::tierName().c_str());
  return nc::cpu::tierName() == name;
}
void resetTier() {
  nc::cpu::setIsaCap("");
  nc::cpu::setForceBaseline(false);
}

void testRandomShapes(const std::string& tier, uint64_t seed) {
  if (!useTier(tier)) return;
  std::mt19937_64 rng(seed);
  const int64_t batches[] = {1, 3, 8, 17, 33};
  const int64_t dims[] = {1, 5, 16, 33, 128};
  const std::vector<std::vector<int64_t>> rowSets = {{1}, {47}, {100, 0, 13}, {1000}, {3001, 2000}, {12000}};
  const nc::DType storages[] = {nc::DType::Float32, nc::DType::Float16, nc::DType::BFloat16};
  int cases = 0;
  for (int trial = 0; trial < 60; ++trial) {
    const int64_t B = batches[rng() % 5], D = dims[rng() % 5];
    const auto& rows = rowSets[rng() % rowSets.size()];
    const nc::DType st = storages[rng() % 3];
    const double fill = (rng() % 3 == 0) ? 1.0 : (rng() % 2 ? 0.6 : 0.02);
    const float scale = (rng() % 2) ? 1.0f : 20.0f;
    Problem p = makeProblem(rng, B, D, rows, st, fill, scale);
    p.scoreEmptyRows = rng() % 4 == 0;
    std::vector<double> S, absS;
    std::vector<uint8_t> cand;
    p.reference(S, cand, &absS);
    const int64_t N = p.n();
    // The AMX tier scores bfloat16 (and float16, split in two) rows against the query split in two
    // bfloat16 parts: a score may differ from float64 by up to about 2^-17 of
    // scale * sum |q_d r_d| (tier_amx.cc); the other tiers by float32 rounding.
    const double split =
        tier == "amx" && (st == nc::DType::BFloat16 || st == nc::DType::Float16) ? std::ldexp(1.0, -16) : 0.0;
    auto tol = [&](int64_t i) { return 1e-4 * (1 + std::fabs(S[i])) + split * absS[i]; };
    for (int mode = 0; mode < 3; ++mode) {
      nc::SampleParams sp;
      sp.mode = static_cast<nc::SampleMode>(mode);
      sp.invTemp = (rng() % 2) ? 1.0 : 0.3;
      sp.numDraws = (rng() % 2) ? 1 : 1 + static_cast<int64_t>(rng() % 12);
      sp.seed = rng() & ((1ULL << 53) - 1);
      sp.call = rng() % 5;
      const Draws d = runSample(p, sp, 3);
      char what[160];
      std::snprintf(what, sizeof what, "%s B=%lld D=%lld N=%lld st=%d fill=%.2f mode=%d k=%lld",
                    tier.c_str(), (long long)B, (long long)D, (long long)N,
                    (int)st, fill, mode, (long long)sp.numDraws);
      checkDraws(what, S, cand, B, N, sp, d);
      const Draws d1 = runSample(p, sp, 1);
      EXPECT(sameDraws(d, d1, true), "%s: 1 vs 3 threads differ", what);
      ++cases;
    }
    // Group max.
    if (N > 0) {
      const int64_t groups = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(N, 70));
      std::vector<float> gs(static_cast<size_t>(B * groups));
      std::vector<int32_t> gr(static_cast<size_t>(B * groups));
      nc::ScoreRequest r = p.req();
      r.threads = 2;
      nc::cpuBackend().scoreGroupMax(r, groups, gs.data(), gr.data());
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t g = 0; g < groups; ++g) {
          const int64_t a = g * N / groups, e = (g + 1) * N / groups;
          double best = -kInf;
          int64_t bi = -1;
          for (int64_t j = a; j < e; ++j) {
            if (!cand[j]) continue;
            const double s = static_cast<float>(S[b * N + j]);
            if (s > best) {
              best = s;
              bi = j;
            }
          }
          const int32_t got = gr[b * groups + g];
          if (bi < 0) {
            EXPECT(got == -1 && gs[b * groups + g] == -std::numeric_limits<float>::infinity(),
                   "groupMax empty group");
          } else if (got != bi) {
            const double sg = got >= 0 ? S[b * N + got] : -kInf;
            EXPECT(got >= a && got < e && std::fabs(sg - best) < tol(b * N + bi) + (got >= 0 ? tol(b * N + got) : 0.0),
                   "groupMax b=%lld g=%lld got %d want %lld", (long long)b, (long long)g, got, (long long)bi);
          } else {
            EXPECT(std::fabs(gs[b * groups + g] - best) <= tol(b * N + bi), "groupMax score");
          }
        }
      }
    }
    // Score matrix.
    if (N > 0 && N * B < 2000000) {
      std::vector<float> m(static_cast<size_t>(B * N));
      nc::ScoreRequest r = p.req();
      nc::cpuBackend().scoreMatrix(r, m.data());
      for (int64_t i = 0; i < B * N; ++i) {
        if (std::fabs(m[i] - S[i]) > tol(i)) {
          EXPECT(false, "scoreMatrix %lld: %g vs %g", (long long)i, m[i], S[i]);
          break;
        }
      }
    }
  }
  resetTier();
  std::printf("random shapes (%s): %d cases\n", tier.c_str(), cases);
}

/// Every usable tier against the baseline tier: the same draws (up to
/// near-ties, none expected on this data) and lse within 1e-4.
void testTiersAgree() {
  for (const std::string& tier : nc::cpu::usableTiers()) {
    if (tier == "baseline") continue;
    std::mt19937_64 rng(5);
    int diffs = 0, total = 0;
    for (nc::DType st : {nc::DType::Float32, nc::DType::Float16, nc::DType::BFloat16}) {
      Problem p = makeProblem(rng, 37, 64, {20000, 777}, st, 0.8, 20.0f);
      for (int mode = 0; mode < 2; ++mode) {
        nc::SampleParams sp;
        sp.mode = static_cast<nc::SampleMode>(mode);
        sp.numDraws = 5;
        sp.seed = 42;
        sp.call = 3;
        nc::cpu::setForceBaseline(true);
        EXPECT(nc::cpu::tierName() == "baseline", "forced baseline runs %s", nc::cpu::tierName().c_str());
        const Draws a = runSample(p, sp, 2);
        if (!useTier(tier)) return;
        if (tier == "avx2") EXPECT(nc::cpu::usingAvx2(), "AVX2 tier but usingAvx2() is false");
        const Draws b = runSample(p, sp, 2);
        resetTier();
        for (size_t i = 0; i < a.idx.size(); ++i) diffs += a.idx[i] != b.idx[i];
        total += static_cast<int>(a.idx.size());
        EXPECT(sameDraws(a, b, false), "baseline vs %s: lse or draws differ (st=%d mode=%d)", tier.c_str(), (int)st,
               mode);
      }
    }
    std::printf("baseline vs %s: %d of %d draws differ\n", tier.c_str(), diffs, total);
  }
}

/// lse of every tier within 1e-5 relative of the float64 reference (of the
/// stored values), at score scales 1 and 20, every storage.
void testLsePrecision() {
  for (const std::string& tier : nc::cpu::usableTiers()) {
    if (!useTier(tier)) continue;
    std::mt19937_64 rng(77);
    double worst = 0;
    for (nc::DType st : {nc::DType::Float32, nc::DType::Float16, nc::DType::BFloat16}) {
      for (float scale : {1.0f, 20.0f}) {
        Problem p = makeProblem(rng, 19, 128, {30011}, st, 1.0, scale);
        std::vector<double> S;
        std::vector<uint8_t> cand;
        p.reference(S, cand);
        const int64_t N = p.n();
        nc::SampleParams sp;
        sp.mode = nc::SampleMode::None;
        const Draws d = runSample(p, sp, 2);
        for (int64_t b = 0; b < p.batch; ++b) {
          double M = -kInf, sum = 0;
          for (int64_t j = 0; j < N; ++j) M = std::max(M, S[b * N + j]);
          for (int64_t j = 0; j < N; ++j) sum += std::exp(S[b * N + j] - M);
          const double lse = M + std::log(sum);
          const double rel = std::fabs(d.lse[b] - lse) / std::max(1.0, std::fabs(lse));
          worst = std::max(worst, rel);
          EXPECT(rel <= 1e-5, "%s lse st=%d scale=%g b=%lld: %.9g vs %.9g (rel %.3g)", tier.c_str(), (int)st, scale,
                 (long long)b, d.lse[b], lse, rel);
        }
      }
    }
    std::printf("lse precision (%s): worst relative error %.3g\n", tier.c_str(), worst);
  }
  resetTier();
}

/// The NEON tier against the baseline tier on random inputs: the same draws,
/// lse within 1e-5 relative, the same group maxima, and its row conversion
/// bit-identical to the scalar one for every float16 / bfloat16 value.
void testBaselineVsNeon() {
#if defined(__aarch64__)
  const nc::cpu::Features f = nc::cpu::detectedFeatures();
  if (!f.neon || nc::cpu::neonMicroKernel() == nullptr) {
    EXPECT(false, "aarch64 build without its NEON tier (neon=%d)", (int)f.neon);
    return;
  }
  EXPECT(nc::cpu::tierName() == "neon", "aarch64 CPU but the tier in use is %s", nc::cpu::tierName().c_str());
  // Conversions: all 65536 bit patterns, odd lengths for the tails.
  {
    std::vector<uint16_t> all(65536);
    for (uint32_t i = 0; i < 65536; ++i) all[i] = static_cast<uint16_t>(i);
    std::vector<float> a(65536), b(65536);
    for (int storage : {1, 2}) {
      for (int64_t n : {int64_t{65536}, int64_t{65533}, int64_t{7}, int64_t{1}}) {
        nc::cpu::baselineMicroKernel()->convertRow(all.data() + (65536 - n), storage, n, a.data());
        nc::cpu::neonMicroKernel()->convertRow(all.data() + (65536 - n), storage, n, b.data());
        EXPECT(std::memcmp(a.data(), b.data(), static_cast<size_t>(n) * 4) == 0,
               "neon convertRow (storage %d, n %lld) differs from the scalar conversion", storage, (long long)n);
      }
    }
  }
  std::mt19937_64 rng(23);
  int draws = 0, cases = 0;
  double worstLse = 0;
  const int64_t batches[] = {1, 5, 16, 37};
  const int64_t dims[] = {1, 7, 64};
  for (int trial = 0; trial < 12; ++trial) {
    const nc::DType st = static_cast<nc::DType>(trial % 3);
    const int64_t B = batches[rng() % 4], D = dims[rng() % 3];
    const std::vector<int64_t> rows = trial % 2 ? std::vector<int64_t>{3001, 777} : std::vector<int64_t>{1, 250, 41};
    Problem p = makeProblem(rng, B, D, rows, st, trial % 4 == 0 ? 1.0 : 0.7, trial % 3 ? 20.0f : 1.0f);
    for (int mode = 0; mode < 3; ++mode) {
      nc::SampleParams sp;
      sp.mode = static_cast<nc::SampleMode>(mode);
      sp.invTemp = rng() % 2 ? 1.0 : 0.3;
      sp.numDraws = rng() % 2 ? 1 : 5;
      sp.seed = rng() & ((1ULL << 53) - 1);
      sp.call = rng() % 7;
      nc::cpu::setForceBaseline(true);
      const Draws a = runSample(p, sp, 2);
      nc::cpu::setForceBaseline(false);
      const Draws b = runSample(p, sp, 2);
      EXPECT(a.idx == b.idx, "baseline vs neon: draws differ (trial %d st=%d mode=%d)", trial, (int)st, mode);
      EXPECT(a.cands == b.cands, "baseline vs neon: candidate counts differ");
      for (size_t i = 0; i < a.lse.size(); ++i) {
        const double rel = std::fabs(static_cast<double>(a.lse[i]) - b.lse[i]) / std::max(1e-30, std::fabs(static_cast<double>(a.lse[i])));
        if (!(a.lse[i] == b.lse[i])) worstLse = std::max(worstLse, rel);
        EXPECT(a.lse[i] == b.lse[i] || rel <= 1e-5, "baseline vs neon: lse %g vs %g (trial %d)", a.lse[i], b.lse[i], trial);
      }
      draws += static_cast<int>(a.idx.size());
      ++cases;
    }
    const int64_t N = p.n(), groups = 1 + static_cast<int64_t>(rng() % 50);
    std::vector<float> ga(static_cast<size_t>(B * groups)), gb(ga.size());
    std::vector<int32_t> ra(ga.size()), rb(ga.size());
    nc::ScoreRequest r = p.req();
    r.threads = 2;
    nc::cpu::setForceBaseline(true);
    nc::cpuBackend().scoreGroupMax(r, groups, ga.data(), ra.data());
    nc::cpu::setForceBaseline(false);
    nc::cpuBackend().scoreGroupMax(r, groups, gb.data(), rb.data());
    EXPECT(ra == rb, "baseline vs neon: group max rows differ (N=%lld)", (long long)N);
  }
  std::printf("baseline vs neon: %d cases, %d draws identical, worst lse rel diff %.2g\n", cases, draws, worstLse);
#else
  std::printf("baseline vs neon: skipped (not an aarch64 build)\n");
#endif
}

void testSampleCandidates() {
  std::mt19937_64 rng(3);
  std::normal_distribution<float> nd(0.0f, 2.0f);
  for (int trial = 0; trial < 20; ++trial) {
    const int64_t B = 1 + rng() % 20, C = 1 + rng() % 300;
    std::vector<float> s(static_cast<size_t>(B * C));
    for (float& v : s) v = (rng() % 5 == 0) ? -std::numeric_limits<float>::infinity() : nd(rng);
    if (trial == 0)
      for (int64_t j = 0; j < C; ++j) s[j] = -std::numeric_limits<float>::infinity();  // empty row
    nc::SampleParams sp;
    sp.mode = static_cast<nc::SampleMode>(trial % 3);
    sp.numDraws = 1 + rng() % 6;
    sp.invTemp = trial % 2 ? 1.0 : 2.5;
    sp.seed = rng() & 0xffffffffffffULL;
    sp.call = rng() % 1000;
    Draws d;
    d.idx.assign(static_cast<size_t>(B * sp.numDraws), -7);
    d.scores.assign(static_cast<size_t>(B * sp.numDraws), 0);
    d.lse.assign(static_cast<size_t>(B), 0);
    d.cands.assign(static_cast<size_t>(B), 0);
    nc::SampleOutput out{d.idx.data(), d.scores.data(), d.lse.data(), d.cands.data()};
    nc::cpuBackend().sampleCandidates(s.data(), B, C, sp, 2, out);
    std::vector<double> S(s.begin(), s.end());
    // Per-row candidates differ; check row by row.
    for (int64_t b = 0; b < B; ++b) {
      std::vector<uint8_t> cand(static_cast<size_t>(C));
      std::vector<double> row(static_cast<size_t>(C));
      for (int64_t j = 0; j < C; ++j) {
        cand[j] = s[b * C + j] != -std::numeric_limits<float>::infinity();
        row[j] = cand[j] ? S[b * C + j] : 0.0;
      }
      Draws one;
      one.idx.assign(d.idx.begin() + b * sp.numDraws, d.idx.begin() + (b + 1) * sp.numDraws);
      one.scores.assign(d.scores.begin() + b * sp.numDraws, d.scores.begin() + (b + 1) * sp.numDraws);
      one.lse = {d.lse[b]};
      one.cands = {d.cands[b]};
      // The noise row is b: shift by building a 1-row reference with row index b.
      std::vector<std::pair<double, int64_t>> best;
      referenceDraws(row.data(), cand.data(), C, b, sp, best);
      int64_t nc = 0;
      for (auto c : cand) nc += c;
      EXPECT(one.cands[0] == nc, "sampleCandidates cands");
      for (int64_t i = 0; i < sp.numDraws; ++i) {
        const int64_t want = sp.mode == nc::SampleMode::None || i >= (int64_t)best.size() ? -1 : best[i].second;
        EXPECT(one.idx[i] == want, "sampleCandidates b=%lld i=%lld got %d want %lld", (long long)b,
               (long long)i, one.idx[i], (long long)want);
      }
      if (nc == 0) EXPECT(one.lse[0] == -std::numeric_limits<float>::infinity(), "sampleCandidates empty lse");
    }
  }
  std::printf("sampleCandidates: ok\n");
}

void testChiSquare() {
  // 6 candidates with fixed scores; 30000 calls; the first draw must follow
  // softmax(invTemp * S); the first two draws must be distinct.
  const int64_t D = 1, N = 6;
  Problem p;
  p.batch = 1;
  p.dim = D;
  p.scale = 1.0f;
  p.scoreEmptyRows = false;
  p.queries = {1.0f};
  SegmentData s;
  s.storage = nc::DType::Float32;
  s.rows = N;
  s.f32 = {0.0f, 0.5f, 1.0f, -1.0f, 2.0f, 0.25f};
  p.segs.push_back(s);
  for (double invTemp : {1.0, 0.5}) {
    for (const std::string& tier : nc::cpu::usableTiers()) {
      if (!useTier(tier)) continue;
      std::vector<double> counts(N, 0.0);
      const int calls = 30000;
      int dup = 0;
      for (int c = 0; c < calls; ++c) {
        nc::SampleParams sp;
        sp.invTemp = invTemp;
        sp.numDraws = 2;
        sp.seed = 123456789;
        sp.call = static_cast<uint64_t>(c);
        const Draws d = runSample(p, sp, 1);
        counts[d.idx[0]] += 1;
        dup += d.idx[0] == d.idx[1];
      }
      double z = 0;
      for (float v : s.f32) z += std::exp(invTemp * v);
      double chi2 = 0;
      for (int64_t j = 0; j < N; ++j) {
        const double e = calls * std::exp(invTemp * s.f32[j]) / z;
        chi2 += (counts[j] - e) * (counts[j] - e) / e;
      }
      // df = 5: P(chi2 > 20.5) = 0.001.
      EXPECT(chi2 < 20.5, "chi-square %g too large (invTemp %g, tier %s)", chi2, invTemp, tier.c_str());
      EXPECT(dup == 0, "Gumbel-top-2 drew the same row twice");
      std::printf("chi-square invTemp=%g %s: %.2f (df 5)\n", invTemp, tier.c_str(), chi2);
    }
  }
  resetTier();
}

void testEdgeCases() {
  std::mt19937_64 rng(9);
  // No segment / all empty: lse -inf, no draws.
  Problem p = makeProblem(rng, 4, 8, {50}, nc::DType::Float32, 0.0, 1.0f);
  for (auto& f : p.segs[0].filled) f = 0;
  nc::SampleParams sp;
  sp.numDraws = 3;
  const Draws d = runSample(p, sp, 2);
  for (int64_t b = 0; b < 4; ++b) {
    EXPECT(d.lse[b] == -std::numeric_limits<float>::infinity(), "empty cache lse");
    EXPECT(d.cands[b] == 0, "empty cache candidates");
    for (int i = 0; i < 3; ++i) EXPECT(d.idx[b * 3 + i] == -1 && std::isnan(d.scores[b * 3 + i]), "empty draws");
  }
  // Fewer candidates than draws: the rest are -1.
  p.segs[0].filled[7] = 1;
  const Draws d2 = runSample(p, sp, 2);
  for (int64_t b = 0; b < 4; ++b) {
    EXPECT(d2.idx[b * 3] == 7 && d2.idx[b * 3 + 1] == -1, "one candidate");
    EXPECT(d2.cands[b] == 1, "one candidate count");
  }
  // Argument errors throw nc::Error.
  bool threw = false;
  try {
    nc::SampleParams bad;
    bad.numDraws = 0;
    runSample(p, bad, 1);
  } catch (const nc::Error& e) {
    threw = e.code() == "ERR_ARGUMENT";
  }
  EXPECT(threw, "numDraws 0 must throw ERR_ARGUMENT");
  threw = false;
  try {
    std::vector<float> gs(4), gr(4);
    nc::ScoreRequest r = p.req();
    nc::cpuBackend().scoreGroupMax(r, 51, gs.data(), reinterpret_cast<int32_t*>(gr.data()));
  } catch (const nc::Error&) {
    threw = true;
  }
  EXPECT(threw, "groups > N must throw");
  std::printf("edge cases: ok\n");
}

/// Threads exchange filter thresholds at chunk boundaries (SharedBest): a
/// larger N (many chunks, so the exchange happens), k up to 40, repeated rows
/// (exact ties between threads' lists): every thread count must give the
/// reference draws, bit-identical to one thread.
void testThresholdExchange(const std::string& tier) {
  if (!useTier(tier)) return;
  std::mt19937_64 rng(4242);
  int cases = 0;
  for (int rep = 0; rep < 6; ++rep) {
    const int64_t B = 1 + static_cast<int64_t>(rng() % 40), D = 8 + static_cast<int64_t>(rng() % 24);
    const float scale = (rep % 3 == 0) ? 1.0f : 20.0f;
    Problem p = makeProblem(rng, B, D, {6000, 3001}, nc::DType::Float32, rep % 2 ? 1.0 : 0.7, scale);
    // Copy a block of rows over another: equal scores in different chunks.
    SegmentData& s0 = p.segs[0];
    std::copy(s0.f32.begin(), s0.f32.begin() + 500 * D, s0.f32.begin() + 4000 * D);
    std::vector<double> S;
    std::vector<uint8_t> cand;
    p.reference(S, cand);
    const int64_t N = p.n();
    for (const int64_t k : {1, 7, 40}) {
      nc::SampleParams sp;
      sp.numDraws = k;
      sp.invTemp = rep % 2 ? 1.0 : 0.5;
      sp.seed = rng() & ((1ULL << 53) - 1);
      sp.call = rng() % 3;
      const Draws d1 = runSample(p, sp, 1);
      char what[160];
      std::snprintf(what, sizeof what, "exchange B=%lld D=%lld N=%lld k=%lld scale=%g", (long long)B,
                    (long long)D, (long long)N, (long long)k, scale);
      checkDraws(what, S, cand, B, N, sp, d1);
      for (const int threads : {2, 5, 16}) {
        const Draws d = runSample(p, sp, threads);
        EXPECT(sameDraws(d, d1, true), "%s: 1 vs %d threads differ", what, threads);
      }
      ++cases;
    }
  }
  resetTier();
  std::printf("threshold exchange (%s): %d cases ok\n", tier.c_str(), cases);
}

/// Every tier's SIMD Philox against the scalar definition (rng.h), and the
/// scalar definition against the published Philox4x32-10 known-answer vectors
/// (Random123 kat_vectors).
void testPhiloxTiers() {
  const nc::Philox4x32 zero = nc::philox4x32_10(0, 0, 0, 0, 0, 0);
  EXPECT(zero.v[0] == 0x6627e8d5u && zero.v[1] == 0xe169c58du && zero.v[2] == 0xbc57ac4cu &&
             zero.v[3] == 0x9b00dbd8u,
         "philox4x32_10(0, 0) known answer");
  const nc::Philox4x32 ones = nc::philox4x32_10(~0u, ~0u, ~0u, ~0u, ~0u, ~0u);
  EXPECT(ones.v[0] == 0x408f276du && ones.v[1] == 0x41c83b0eu && ones.v[2] == 0xa20bc7c6u &&
             ones.v[3] == 0x6d5451fdu,
         "philox4x32_10(ff.., ff..) known answer");
  struct Named {
    const char* name;
    const nc::cpu::Epilogue* ep;
    bool usable;
  };
  const auto f = nc::cpu::detectedFeatures();
  const Named tiers[] = {{"baseline", nc::cpu::baselineEpilogue(), true},
                         #if defined(__aarch64__)
                         {"neon", nc::cpu::neonEpilogue(), f.neon},
#endif
                         {"avx2", nc::cpu::avx2Epilogue(), f.avx2 && f.fma && f.f16c},
                         {"avx512", nc::cpu::avx512Epilogue(),
                          f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c}};
  std::mt19937_64 rng(17);
  for (const Named& t : tiers) {
    if (t.ep == nullptr || !t.usable) {
      std::printf("philox %s: skipped (not compiled or not supported)\n", t.name);
      continue;
    }
    int checked = 0;
    for (int trial = 0; trial < 2000; ++trial) {
      const nc::NoiseKey key = nc::noiseKey(rng() & ((1ULL << 53) - 1), rng());
      uint32_t rows[8], blocks[8], words[32];
      for (int l = 0; l < 8; ++l) {
        rows[l] = static_cast<uint32_t>(trial % 3 == 0 ? l : rng());
        blocks[l] = static_cast<uint32_t>(trial % 5 == 0 ? rng() % 4 : rng());
      }
      t.ep->noiseBlocks8(&key, rows, blocks, words);
      for (int l = 0; l < 8; ++l) {
        const nc::Philox4x32 want = nc::noiseBlock(key, rows[l], blocks[l]);
        for (int i = 0; i < 4; ++i) {
          EXPECT(words[4 * l + i] == want.v[i], "philox %s: lane %d word %d", t.name, l, i);
          ++checked;
        }
      }
    }
    std::printf("philox %s: %d words equal the scalar Philox\n", t.name, checked);
  }
}

/// Per-query exclusion lists (CSR) for a problem: random rows with repeats,
/// including whole-cache exclusions for some queries; flags[b * N + j] = 1
/// where row j stays a candidate of query b.
struct ExclusionLists {
  std::vector<int32_t> rows, offsets;
  std::vector<uint8_t> flags;
};

ExclusionLists makeExclusions(std::mt19937_64& rng, int64_t B, int64_t N, const std::vector<uint8_t>& cand) {
  ExclusionLists e;
  e.offsets.push_back(0);
  e.flags.assign(static_cast<size_t>(B * N), 0);
  for (int64_t b = 0; b < B; ++b) {
    for (int64_t j = 0; j < N; ++j) e.flags[b * N + j] = cand[j];
    const int kind = static_cast<int>(rng() % 6);
    int64_t count = kind == 0 ? 0 : kind == 1 ? N : static_cast<int64_t>(rng() % std::min<int64_t>(N + 1, 40));
    for (int64_t i = 0; i < count && N > 0; ++i) {
      const int32_t j = static_cast<int32_t>(kind == 1 ? i : static_cast<int64_t>(rng() % N));
      e.rows.push_back(j);
      if (rng() % 4 == 0) e.rows.push_back(j);  // repeats are allowed
      e.flags[b * N + j] = 0;
    }
    e.offsets.push_back(static_cast<int32_t>(e.rows.size()));
  }
  return e;
}

/// Exclusions::build and ExclusionCursor against brute force, then
/// scoreAndSample / scoreGroupMax with exclusions against the float64
/// reference over each query's remaining candidates (baseline and AVX2, 1 vs
/// 3 threads); scoreMatrix ignores exclusions; bad lists are ERR_ARGUMENT.
void testExclusions() {
  std::mt19937_64 rng(99);
  // The helper alone.
  for (int trial = 0; trial < 200; ++trial) {
    const int64_t B = 1 + static_cast<int64_t>(rng() % 20), N = 1 + static_cast<int64_t>(rng() % 300);
    std::vector<uint8_t> all(static_cast<size_t>(N), 1);
    const ExclusionLists e = makeExclusions(rng, B, N, all);
    nc::ScoreRequest r;
    r.batch = B;
    r.exclusions = e.rows.data();
    r.exclusionOffsets = e.offsets.data();
    nc::Exclusions ex;
    ex.build(r);
    // Per query: sorted unique rows.
    for (int64_t b = 0; b < B && !ex.empty(); ++b) {
      std::vector<int32_t> want(e.rows.begin() + e.offsets[b], e.rows.begin() + e.offsets[b + 1]);
      std::sort(want.begin(), want.end());
      want.erase(std::unique(want.begin(), want.end()), want.end());
      std::vector<int32_t> got(ex.rows.begin() + ex.offsets[b], ex.rows.begin() + ex.offsets[b + 1]);
      EXPECT(got == want, "exclusions: query %lld rows not normalized", (long long)b);
    }
    // A cursor over random increasing tiles (gaps = rows that are not candidates).
    const int64_t begin = static_cast<int64_t>(rng() % N);
    nc::ExclusionCursor cur(ex, begin);
    std::vector<nc::ExclusionHit> hits;
    std::vector<int32_t> tileRows;
    int64_t j = begin, found = 0, expected = 0;
    for (int64_t b = 0; b < B; ++b)
      for (int64_t i = begin; i < N; ++i) expected += e.flags[b * N + i] == 0 && (i % 3 != 1);
    while (j < N) {
      tileRows.clear();
      const int64_t len = 1 + static_cast<int64_t>(rng() % 24);
      for (; j < N && static_cast<int64_t>(tileRows.size()) < len; ++j)
        if (j % 3 != 1) tileRows.push_back(static_cast<int32_t>(j));  // rows j % 3 == 1 skipped
      if (tileRows.empty()) continue;
      cur.tile(tileRows.data(), static_cast<int64_t>(tileRows.size()), hits);
      for (const nc::ExclusionHit& h : hits) {
        const int32_t row = tileRows[h.tileRow];
        EXPECT(e.flags[h.query * N + row] == 0, "cursor: hit (%d, %d) is not excluded", row, h.query);
      }
      found += static_cast<int64_t>(hits.size());
    }
    EXPECT(found == expected, "cursor: %lld hits, want %lld", (long long)found, (long long)expected);
  }

  // The kernels.
  int cases = 0;
  for (const bool baseline : {false, true}) {
    nc::cpu::setForceBaseline(baseline);
    for (int trial = 0; trial < 24; ++trial) {
      const int64_t B = 1 + static_cast<int64_t>(rng() % 37), D = 1 + static_cast<int64_t>(rng() % 40);
      const std::vector<int64_t> rows = trial % 3 == 0 ? std::vector<int64_t>{700, 0, 2100}
                                                       : std::vector<int64_t>{1 + static_cast<int64_t>(rng() % 5000)};
      const nc::DType st = trial % 4 == 1 ? nc::DType::Float16 : nc::DType::Float32;
      Problem p = makeProblem(rng, B, D, rows, st, trial % 2 ? 1.0 : 0.5, trial % 3 == 2 ? 1.0f : 20.0f);
      std::vector<double> S;
      std::vector<uint8_t> cand;
      p.reference(S, cand);
      const int64_t N = p.n();
      const ExclusionLists e = makeExclusions(rng, B, N, cand);
      for (int mode = 0; mode < 3; ++mode) {
        nc::SampleParams sp;
        sp.mode = static_cast<nc::SampleMode>(mode);
        sp.invTemp = trial % 2 ? 1.0 : 0.4;
        sp.numDraws = 1 + static_cast<int64_t>(rng() % 9);
        sp.seed = rng() & ((1ULL << 53) - 1);
        sp.call = rng() % 4;
        Draws d[2];
        for (int t = 0; t < 2; ++t) {
          d[t].idx.assign(static_cast<size_t>(B * sp.numDraws), -7);
          d[t].scores.assign(static_cast<size_t>(B * sp.numDraws), 7.0f);
          d[t].lse.assign(static_cast<size_t>(B), 7.0f);
          d[t].cands.assign(static_cast<size_t>(B), -7);
          nc::SampleOutput out{d[t].idx.data(), d[t].scores.data(), d[t].lse.data(), d[t].cands.data()};
          nc::ScoreRequest r = p.req();
          r.threads = t == 0 ? 3 : 1;
          r.exclusions = e.rows.data();
          r.exclusionOffsets = e.offsets.data();
          nc::cpuBackend().scoreAndSample(r, sp, out);
        }
        char what[160];
        std::snprintf(what, sizeof what, "exclusions %s B=%lld D=%lld N=%lld mode=%d k=%lld",
                      baseline ? "baseline" : "dispatch", (long long)B, (long long)D, (long long)N, mode,
                      (long long)sp.numDraws);
        checkDraws(what, S, e.flags, B, N, sp, d[0], N);
        EXPECT(sameDraws(d[0], d[1], true), "%s: 1 vs 3 threads differ", what);
        ++cases;
      }
      // Group max skips the excluded rows.
      const int64_t groups = 1 + static_cast<int64_t>(rng() % std::min<int64_t>(N, 50));
      std::vector<float> gs(static_cast<size_t>(B * groups));
      std::vector<int32_t> gr(static_cast<size_t>(B * groups));
      nc::ScoreRequest r = p.req();
      r.exclusions = e.rows.data();
      r.exclusionOffsets = e.offsets.data();
      nc::cpuBackend().scoreGroupMax(r, groups, gs.data(), gr.data());
      for (int64_t b = 0; b < B; ++b) {
        for (int64_t g = 0; g < groups; ++g) {
          double best = -kInf;
          int64_t bi = -1;
          for (int64_t j = g * N / groups; j < (g + 1) * N / groups; ++j) {
            if (!e.flags[b * N + j]) continue;
            const double sv = static_cast<float>(S[b * N + j]);
            if (sv > best) {
              best = sv;
              bi = j;
            }
          }
          const int32_t got = gr[b * groups + g];
          if (bi < 0) {
            EXPECT(got == -1, "exclusions groupMax: b=%lld g=%lld got %d, want none", (long long)b, (long long)g, got);
          } else {
            EXPECT(got >= 0 && e.flags[b * N + got] &&
                       std::fabs(S[b * N + got] - best) < 1e-4 * (1 + std::fabs(best)),
                   "exclusions groupMax: b=%lld g=%lld got %d want %lld", (long long)b, (long long)g, got,
                   (long long)bi);
          }
        }
      }
      // scoreMatrix ignores exclusions.
      std::vector<float> m(static_cast<size_t>(B * N));
      nc::cpuBackend().scoreMatrix(r, m.data());
      bool finite = true;
      for (float v : m) finite = finite && std::isfinite(v);
      EXPECT(finite, "scoreMatrix must ignore exclusions");
    }
  }
  nc::cpu::setForceBaseline(false);

  // Bad lists: ERR_ARGUMENT.
  Problem p = makeProblem(rng, 2, 4, {10}, nc::DType::Float32, 1.0, 1.0f);
  const std::vector<std::vector<int32_t>> badRows = {{0, 10}, {-1, 0}, {0, 1}};
  const std::vector<std::vector<int32_t>> badOffsets = {{0, 1, 2}, {0, 1, 2}, {1, 1, 2}};
  for (size_t i = 0; i <= badRows.size(); ++i) {
    bool threw = false;
    std::vector<int32_t> idx(2);
    std::vector<float> sc(2), lse(2);
    nc::SampleOutput out{idx.data(), sc.data(), lse.data(), nullptr};
    nc::ScoreRequest r = p.req();
    const std::vector<int32_t> decreasing = {0, 2, 1};
    if (i < badRows.size()) {
      r.exclusions = badRows[i].data();
      r.exclusionOffsets = badOffsets[i].data();
    } else {
      r.exclusions = badRows[2].data();
      r.exclusionOffsets = decreasing.data();
    }
    try {
      nc::cpuBackend().scoreAndSample(r, nc::SampleParams{}, out);
    } catch (const nc::Error& e) {
      threw = e.code() == "ERR_ARGUMENT";
    }
    EXPECT(threw, "bad exclusion list %zu must throw ERR_ARGUMENT", i);
  }
  std::printf("exclusions: %d cases ok\n", cases);
}

}  // namespace

int main() {
  const auto f = nc::cpu::detectedFeatures();
  std::printf("cpu: avx2=%d fma=%d f16c=%d avx512f/bw/vl/dq=%d%d%d%d tier=%s usable:", f.avx2, f.fma, f.f16c,
              f.avx512f, f.avx512bw, f.avx512vl, f.avx512dq, nc::cpu::tierName().c_str());
  for (const std::string& t : nc::cpu::usableTiers()) std::printf(" %s", t.c_str());
  std::printf("\n");
  testPhiloxTiers();
  testEdgeCases();
  uint64_t seed = 11;
  for (const std::string& tier : nc::cpu::usableTiers()) testRandomShapes(tier, seed++);
  testTiersAgree();
  testBaselineVsNeon();
  testLsePrecision();
  for (const std::string& tier : nc::cpu::usableTiers()) testThresholdExchange(tier);
  testSampleCandidates();
  testChiSquare();
  testExclusions();
  if (failures) {
    std::printf("%d failure(s)\n", failures);
    return 1;
  }
  std::printf("all kernel tests passed\n");
  return 0;
}
