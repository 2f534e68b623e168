// libFuzzer target: the scoring entry points of nc::Backend (CPU) —
// scoreAndSample, scoreGroupMax, scoreMatrix, sampleCandidates — with
// fuzzer-chosen batch, dim, segments (rows, storage, filled flags or none),
// scale, mode, numDraws, threads and ISA tier, and sometimes arguments the
// core must refuse (nc::Error, nothing written). Outputs are checked against a
// float64 reference: with small values, scores and lse within a tolerance and
// MaxScore draws among the best; with raw bits (NaN, inf), only that every
// draw is -1 or a distinct candidate row. Built by scripts/fuzz.sh.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "backend.h"
#include "cpu/dispatch.h"
#include "groups.h"
#include "half.h"

namespace {

const float kInfF = std::numeric_limits<float>::infinity();
const double kInf = std::numeric_limits<double>::infinity();

[[noreturn]] void fail(const char* what, double a = 0, double b = 0) {
  std::fprintf(stderr, "fuzz_kernels: %s (%.9g, %.9g)\n", what, a, b);
  std::abort();
}

struct Seg {
  nc::DType storage;
  int64_t rows;
  std::vector<float> f32;
  std::vector<uint16_t> h;
  std::vector<uint8_t> filled;  // empty: null (every row a candidate)
  bool hasFilled;
  float value(int64_t i) const {
    if (storage == nc::DType::Float32) return f32[static_cast<size_t>(i)];
    if (storage == nc::DType::Float16) return nc::halfToFloat(h[static_cast<size_t>(i)]);
    return nc::bfloat16ToFloat(h[static_cast<size_t>(i)]);
  }
};

float niceValue(FuzzedDataProvider& fdp) {
  return static_cast<float>(fdp.ConsumeIntegralInRange<int32_t>(-32, 32)) / 8.0f;
}

float rawValue(FuzzedDataProvider& fdp) {
  const uint32_t u = fdp.ConsumeIntegral<uint32_t>();
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct Problem {
  bool nice;
  int64_t batch, dim, n = 0;
  std::vector<float> q;
  std::vector<Seg> segs;
  float scale;
  bool scoreEmptyRows;
  int threads;
  // Reference, per query and global row: S (double) and whether a candidate.
  std::vector<double> S, absS;
  std::vector<uint8_t> cand;

  nc::ScoreRequest request() const {
    nc::ScoreRequest r;
    r.queries = q.empty() ? nullptr : q.data();
    r.batch = batch;
    r.dim = dim;
    r.scale = scale;
    r.scoreEmptyRows = scoreEmptyRows;
    r.threads = threads;
    for (const Seg& s : segs) {
      nc::Segment g;
      g.storage = s.storage;
      g.rows = s.rows;
      g.data = s.storage == nc::DType::Float32 ? static_cast<const void*>(s.f32.data())
                                               : static_cast<const void*>(s.h.data());
      if (s.rows == 0) g.data = nullptr;
      g.filled = s.hasFilled ? s.filled.data() : nullptr;
      r.segments.push_back(g);
    }
    return r;
  }

  void reference() {
    S.assign(static_cast<size_t>(batch * n), 0.0);
    absS.assign(static_cast<size_t>(batch * n), 0.0);
    cand.assign(static_cast<size_t>(n), 0);
    int64_t base = 0;
    for (const Seg& s : segs) {
      for (int64_t r = 0; r < s.rows; ++r) {
        cand[static_cast<size_t>(base + r)] = scoreEmptyRows || !s.hasFilled || s.filled[static_cast<size_t>(r)] != 0;
        for (int64_t b = 0; b < batch; ++b) {
          double acc = 0, mag = 0;
          for (int64_t d = 0; d < dim; ++d) {
            const double x = q[static_cast<size_t>(b * dim + d)], e = s.value(r * dim + d);
            acc += x * e;
            mag += std::fabs(x * e);
          }
          S[static_cast<size_t>(b * n + base + r)] = acc * scale;
          absS[static_cast<size_t>(b * n + base + r)] = mag * std::fabs(scale);
        }
      }
      base += s.rows;
    }
  }
  double tol(int64_t b, int64_t j) const { return 1e-5 * absS[static_cast<size_t>(b * n + j)] + 1e-6; }
};

bool build(FuzzedDataProvider& fdp, Problem& p) {
  p.nice = fdp.ConsumeIntegralInRange<int>(0, 4) != 0;
  p.batch = fdp.ConsumeIntegralInRange<int64_t>(0, 9);
  p.dim = fdp.ConsumeIntegralInRange<int64_t>(1, 40);
  const int nSegs = fdp.ConsumeIntegralInRange<int>(0, 3);
  for (int i = 0; i < nSegs; ++i) {
    Seg s;
    s.storage = static_cast<nc::DType>(fdp.ConsumeIntegralInRange<int>(0, 2));
    s.rows = fdp.ConsumeIntegralInRange<int64_t>(0, fdp.ConsumeBool() ? 7 : 300);
    s.hasFilled = fdp.ConsumeBool();
    const int64_t len = s.rows * p.dim;
    if (s.storage == nc::DType::Float32) {
      s.f32.resize(static_cast<size_t>(len));
      for (auto& x : s.f32) x = p.nice ? niceValue(fdp) : rawValue(fdp);
    } else {
      s.h.resize(static_cast<size_t>(len));
      for (auto& x : s.h) {
        const float v = p.nice ? niceValue(fdp) : rawValue(fdp);
        x = s.storage == nc::DType::Float16 ? nc::floatToHalf(v) : nc::floatToBFloat16(v);
      }
    }
    if (s.hasFilled) {
      s.filled.resize(static_cast<size_t>(s.rows));
      const int density = fdp.ConsumeIntegralInRange<int>(0, 4);
      for (auto& f : s.filled) f = fdp.ConsumeIntegralInRange<int>(0, 3) < density ? fdp.ConsumeIntegral<uint8_t>() | 1 : 0;
    }
    p.n += s.rows;
    p.segs.push_back(std::move(s));
  }
  p.q.resize(static_cast<size_t>(p.batch * p.dim));
  for (auto& x : p.q) x = p.nice ? niceValue(fdp) : rawValue(fdp);
  p.scale = p.nice ? static_cast<float>(fdp.ConsumeIntegralInRange<int>(-16, 16)) / 4.0f
                   : static_cast<float>(fdp.ConsumeFloatingPointInRange<double>(-1e30, 1e30));
  p.scoreEmptyRows = fdp.ConsumeBool();
  p.threads = fdp.ConsumeIntegralInRange<int>(0, 4);
  return true;
}

nc::SampleParams params(FuzzedDataProvider& fdp, int64_t cols) {
  nc::SampleParams sp;
  sp.mode = static_cast<nc::SampleMode>(fdp.ConsumeIntegralInRange<int>(0, 2));
  sp.invTemp = fdp.ConsumeBool() ? static_cast<double>(fdp.ConsumeIntegralInRange<int>(-40, 40)) / 8.0
                                 : fdp.ConsumeFloatingPointInRange<double>(-3.4028234663852886e38, 3.4028234663852886e38);
  sp.numDraws = fdp.ConsumeIntegralInRange<int64_t>(1, std::max<int64_t>(1, cols + 3));
  sp.seed = fdp.ConsumeIntegral<uint64_t>() >> 11;
  sp.call = fdp.ConsumeIntegral<uint64_t>() >> 11;
  return sp;
}

struct Out {
  std::vector<int32_t> idx;
  std::vector<float> scores, lse;
  std::vector<int64_t> cands;
  nc::SampleOutput view(int64_t batch, int64_t k) {
    idx.assign(static_cast<size_t>(batch * k) + 1, -7);
    scores.assign(static_cast<size_t>(batch * k) + 1, 7.0f);
    lse.assign(static_cast<size_t>(batch) + 1, 7.0f);
    cands.assign(static_cast<size_t>(batch) + 1, -7);
    return nc::SampleOutput{idx.data(), scores.data(), lse.data(), cands.data()};
  }
  void checkGuards(int64_t batch, int64_t k) const {
    if (idx[static_cast<size_t>(batch * k)] != -7 || scores[static_cast<size_t>(batch * k)] != 7.0f ||
        lse[static_cast<size_t>(batch)] != 7.0f || cands[static_cast<size_t>(batch)] != -7)
      fail("a kernel wrote past its outputs");
  }
};

/// Draws of query b: -1 or distinct candidate columns, the -1s last, as many
/// draws as min(k, candidates) (mode != None).
void checkDraws(const int32_t* idx, int64_t k, int64_t cols, int64_t nCand, const uint8_t* isCand,
                nc::SampleMode mode, bool exactCount = true) {
  std::vector<int32_t> seen;
  int64_t drawn = 0;
  for (int64_t i = 0; i < k; ++i) {
    const int32_t j = idx[i];
    if (j == -1) continue;
    if (mode == nc::SampleMode::None) fail("mode None drew a row", static_cast<double>(j));
    if (j < 0 || j >= cols) fail("draw out of range", static_cast<double>(j), static_cast<double>(cols));
    if (!isCand[j]) fail("drew a row that is not a candidate", static_cast<double>(j));
    if (drawn != i) fail("a draw after a -1");
    seen.push_back(j);
    ++drawn;
  }
  std::sort(seen.begin(), seen.end());
  if (std::adjacent_find(seen.begin(), seen.end()) != seen.end()) fail("the same row drawn twice");
  // NaN scores (raw inputs: inf * 0) are candidates that cannot be drawn: then fewer draws.
  if (mode != nc::SampleMode::None && (exactCount ? drawn != std::min(k, nCand) : drawn > std::min(k, nCand)))
    fail("wrong number of draws", static_cast<double>(drawn), static_cast<double>(std::min(k, nCand)));
}

void fuzzScoreAndSample(FuzzedDataProvider& fdp, const Problem& p) {
  const nc::SampleParams sp = params(fdp, p.n);
  if (std::getenv("FUZZ_DEBUG")) {
    std::fprintf(stderr, "nice %d batch %ld dim %ld n %ld scale %g empty %d threads %d | mode %d invTemp %g k %ld seed %lu call %lu\n",
                 p.nice, (long)p.batch, (long)p.dim, (long)p.n, p.scale, p.scoreEmptyRows, p.threads, (int)sp.mode, sp.invTemp,
                 (long)sp.numDraws, (unsigned long)sp.seed, (unsigned long)sp.call);
    for (const Seg& s : p.segs) std::fprintf(stderr, "  seg storage %d rows %ld filled %d\n", (int)s.storage, (long)s.rows, s.hasFilled);
    for (float x : p.q) std::fprintf(stderr, "  q %g\n", x);
  }
  Out o;
  nc::SampleOutput out = o.view(p.batch, sp.numDraws);
  nc::cpuBackend().scoreAndSample(p.request(), sp, out);
  o.checkGuards(p.batch, sp.numDraws);
  int64_t nCand = 0;
  for (auto c : p.cand) nCand += c;
  for (int64_t b = 0; b < p.batch; ++b) {
    if (o.cands[static_cast<size_t>(b)] != nCand)
      fail("candidate count", static_cast<double>(o.cands[static_cast<size_t>(b)]), static_cast<double>(nCand));
    const int32_t* idx = o.idx.data() + b * sp.numDraws;
    checkDraws(idx, sp.numDraws, p.n, nCand, p.cand.data(), sp.mode, p.nice);
    if (!p.nice) continue;
    // Scores at the draws, lse, and MaxScore's choice.
    double M = -kInf, best = -kInf, bestTol = 0;
    for (int64_t j = 0; j < p.n; ++j) {
      if (!p.cand[static_cast<size_t>(j)]) continue;
      const double s = p.S[static_cast<size_t>(b * p.n + j)];
      M = std::max(M, s);
      if (s > best) best = s, bestTol = p.tol(b, j);
    }
    double sum = 0, lseTol = 1e-4;
    for (int64_t j = 0; j < p.n; ++j)
      if (p.cand[static_cast<size_t>(j)]) {
        sum += std::exp(p.S[static_cast<size_t>(b * p.n + j)] - M);
        lseTol = std::max(lseTol, 2 * p.tol(b, j));
      }
    const double lse = nCand > 0 ? M + std::log(sum) : -kInf;
    const float got = o.lse[static_cast<size_t>(b)];
    if (nCand == 0 ? got != -kInfF : !(std::fabs(got - lse) <= lseTol + 1e-5 * std::fabs(lse)))
      fail("lse differs from the reference", got, lse);
    for (int64_t i = 0; i < sp.numDraws; ++i) {
      const int32_t j = idx[i];
      const float s = o.scores[static_cast<size_t>(b * sp.numDraws + i)];
      if (j < 0) {
        if (!std::isnan(s)) fail("no draw but a score", s);
        continue;
      }
      const double want = p.S[static_cast<size_t>(b * p.n + j)];
      if (!(std::fabs(s - want) <= p.tol(b, j))) fail("score at the draw differs", s, want);
      if (sp.mode == nc::SampleMode::MaxScore && i == 0 && want < best - bestTol - p.tol(b, j))
        fail("MaxScore did not take the best row", want, best);
    }
  }
}

void fuzzGroupMax(FuzzedDataProvider& fdp, const Problem& p) {
  const int64_t groups = fdp.ConsumeIntegralInRange<int64_t>(p.n == 0 ? 0 : 1, std::max<int64_t>(1, p.n));
  std::vector<float> gs(static_cast<size_t>(p.batch * groups) + 1, 7.0f);
  std::vector<int32_t> gr(static_cast<size_t>(p.batch * groups) + 1, -7);
  nc::cpuBackend().scoreGroupMax(p.request(), groups, gs.data(), gr.data());
  if (gs.back() != 7.0f || gr.back() != -7) fail("scoreGroupMax wrote past its outputs");
  for (int64_t b = 0; b < p.batch; ++b)
    for (int64_t g = 0; g < groups; ++g) {
      const int64_t lo = nc::groupStart(g, p.n, groups), hi = nc::groupStart(g + 1, p.n, groups);
      bool any = false;
      double best = -kInf, bestTol = 0;
      for (int64_t j = lo; j < hi; ++j)
        if (p.cand[static_cast<size_t>(j)]) {
          any = true;
          const double s = p.S[static_cast<size_t>(b * p.n + j)];
          if (s > best) best = s, bestTol = p.tol(b, j);
        }
      const int32_t r = gr[static_cast<size_t>(b * groups + g)];
      const float s = gs[static_cast<size_t>(b * groups + g)];
      if (!any) {
        if (r != -1 || s != -kInfF) fail("a group without candidates has a row", r, s);
        continue;
      }
      if (!p.nice) {
        // NaN scores may leave a group without a winner; a winner must be in the group.
        if (r != -1 && (r < lo || r >= hi || !p.cand[static_cast<size_t>(r)])) fail("group row outside its group", r);
        continue;
      }
      if (r < lo || r >= hi || !p.cand[static_cast<size_t>(r)]) fail("group row outside its group", r);
      const double want = p.S[static_cast<size_t>(b * p.n + r)];
      if (!(std::fabs(s - want) <= p.tol(b, r))) fail("group score differs", s, want);
      if (want < best - bestTol - p.tol(b, r)) fail("group row is not the group's best", want, best);
    }
}

void fuzzMatrix(const Problem& p) {
  std::vector<float> m(static_cast<size_t>(p.batch * p.n) + 1, 7.0f);
  nc::cpuBackend().scoreMatrix(p.request(), m.data());
  if (m.back() != 7.0f) fail("scoreMatrix wrote past its output");
  if (!p.nice) return;
  for (int64_t i = 0; i < p.batch * p.n; ++i)
    if (!(std::fabs(m[static_cast<size_t>(i)] - p.S[static_cast<size_t>(i)]) <= p.tol(i / std::max<int64_t>(p.n, 1), i % std::max<int64_t>(p.n, 1))))
      fail("scoreMatrix differs", m[static_cast<size_t>(i)], p.S[static_cast<size_t>(i)]);
}

void fuzzCandidates(FuzzedDataProvider& fdp) {
  const int64_t batch = fdp.ConsumeIntegralInRange<int64_t>(0, 9);
  const int64_t cols = fdp.ConsumeIntegralInRange<int64_t>(0, 200);
  std::vector<float> s(static_cast<size_t>(batch * cols));
  const bool raw = fdp.ConsumeBool();
  for (auto& x : s) {
    const int kind = fdp.ConsumeIntegralInRange<int>(0, 3);
    x = kind == 0 ? -kInfF : raw ? rawValue(fdp) : niceValue(fdp);
  }
  const nc::SampleParams sp = params(fdp, cols);
  const int threads = fdp.ConsumeIntegralInRange<int>(0, 4);
  Out o;
  nc::SampleOutput out = o.view(batch, sp.numDraws);
  nc::cpuBackend().sampleCandidates(s.empty() ? nullptr : s.data(), batch, cols, sp, threads, out);
  o.checkGuards(batch, sp.numDraws);
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<uint8_t> isCand(static_cast<size_t>(cols));
    int64_t n = 0;
    for (int64_t j = 0; j < cols; ++j) {
      const float v = s[static_cast<size_t>(b * cols + j)];
      isCand[static_cast<size_t>(j)] = v != -kInfF && !std::isnan(v);
      n += isCand[static_cast<size_t>(j)];
    }
    if (o.cands[static_cast<size_t>(b)] != n) fail("sampleCandidates: candidate count");
    // +inf scores are refused by the binding; here they only must not break the draws' shape.
    bool hasInf = false;
    for (int64_t j = 0; j < cols; ++j) hasInf = hasInf || s[static_cast<size_t>(b * cols + j)] == kInfF;
    if (!hasInf) checkDraws(o.idx.data() + b * sp.numDraws, sp.numDraws, cols, n, isCand.data(), sp.mode, !raw);
  }
}

/// Arguments the core must refuse with nc::Error before writing anything.
void fuzzRefusals(FuzzedDataProvider& fdp, const Problem& p) {
  nc::ScoreRequest r = p.request();
  nc::SampleParams sp;
  int64_t groups = 1;
  bool grouped = false;
  const int which = fdp.ConsumeIntegralInRange<int>(0, 7);
  if (std::getenv("FUZZ_DEBUG")) std::fprintf(stderr, "refusal case %d n %ld batch %ld\n", which, (long)p.n, (long)p.batch);
  switch (which) {
    case 0: r.batch = -fdp.ConsumeIntegralInRange<int64_t>(1, 1 << 30); break;
    case 1: r.dim = -fdp.ConsumeIntegralInRange<int64_t>(0, 1 << 30); break;
    case 2: r.scale = fdp.ConsumeBool() ? kInfF : std::numeric_limits<float>::quiet_NaN(); break;
    case 3: sp.numDraws = -fdp.ConsumeIntegralInRange<int64_t>(0, 1 << 30); break;
    case 4: sp.mode = static_cast<nc::SampleMode>(fdp.ConsumeIntegralInRange<int32_t>(3, 1 << 30)); break;
    case 5:
      sp.invTemp = fdp.ConsumeBool() ? std::numeric_limits<double>::quiet_NaN()
                                     : (fdp.ConsumeBool() ? -1 : 1) * fdp.ConsumeFloatingPointInRange<double>(3.5e38, 1e308);
      break;
    case 6: r.segments.push_back(nc::Segment{p.q.data(), nc::DType::Int32, 1, nullptr}); break;
    default:
      grouped = true;
      groups = fdp.ConsumeBool() ? 0 : p.n + fdp.ConsumeIntegralInRange<int64_t>(1, 1 << 30);
      break;
  }
  Out o;
  nc::SampleOutput out = o.view(0, 1);
  int refused = 0;
  try {
    if (!grouped) nc::cpuBackend().scoreAndSample(r, sp, out);
    else nc::cpuBackend().scoreGroupMax(r, groups, nullptr, nullptr);
  } catch (const nc::Error&) {
    refused = 1;
  }
  if (!refused) fail("bad arguments were accepted");
  o.checkGuards(0, 1);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  FuzzedDataProvider fdp(data, len);
  nc::cpu::setForceBaseline(fdp.ConsumeBool());
  const int op = fdp.ConsumeIntegralInRange<int>(0, 4);
  if (op == 3) {
    fuzzCandidates(fdp);
    return 0;
  }
  Problem p;
  build(fdp, p);
  p.reference();
  switch (op) {
    case 0: fuzzScoreAndSample(fdp, p); break;
    case 1:
      if (p.n > 0) fuzzGroupMax(fdp, p);
      break;
    case 2: fuzzMatrix(p); break;
    default: fuzzRefusals(fdp, p); break;
  }
  return 0;
}
