// GPU benchmark of one negative-cache scoring step, without Node.
//
// Times cudaBackend().scoreAndSample (fused score + Gumbel-max + logsumexp, the
// whole synchronous call: query upload, kernels, results back) on a cache of
// N bfloat16 rows of width D against B queries, for each bf16 query split,
// plus the lse-only pass, Gumbel-top-64 and the topK group max. Then measures,
// on a smaller cache, how often the draws equal the CPU backend's (same seed).
// Compare with /work/shared/peers/torch_step.py on the same GPU (see
// bench/cuda_step.sh, which runs both).
//
//   cuda_step [--n 1048576] [--d 768] [--b 1024] [--runs 20] [--splits 1,2,3]
//             [--scale 20] [--agree-n 65536] [--agree-b 256] [--no-simt] [--json]
//
// Prints a table on stderr and, with --json, one JSON object per line on stdout.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "backend.h"
#include "half.h"
#ifdef NEGCACHE_WITH_CUDA
#include <cuda_runtime.h>

#include "cuda/cuda_backend.h"
#endif

namespace {

struct Args {
  int64_t n = 1048576, d = 768, b = 1024, runs = 20, agreeN = 65536, agreeB = 256;
  float scale = 20.0f;
  std::vector<int> splits{1, 2, 3};
  bool json = false, simt = true;
};

Args parse(int argc, char** argv) {
  Args a;
  for (int i = 1; i < argc; ++i) {
    const std::string k = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "missing value after %s\n", k.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (k == "--n") a.n = std::stoll(next());
    else if (k == "--d") a.d = std::stoll(next());
    else if (k == "--b") a.b = std::stoll(next());
    else if (k == "--runs") a.runs = std::stoll(next());
    else if (k == "--scale") a.scale = std::stof(next());
    else if (k == "--agree-n") a.agreeN = std::stoll(next());
    else if (k == "--agree-b") a.agreeB = std::stoll(next());
    else if (k == "--json") a.json = true;
    else if (k == "--no-simt") a.simt = false;
    else if (k == "--splits") {
      a.splits.clear();
      std::string s = next();
      for (size_t p = 0; p < s.size();) {
        const size_t q = s.find(',', p);
        a.splits.push_back(std::stoi(s.substr(p, q == std::string::npos ? std::string::npos : q - p)));
        p = q == std::string::npos ? s.size() : q + 1;
      }
    } else {
      std::fprintf(stderr, "unknown argument %s\n", k.c_str());
      std::exit(2);
    }
  }
  return a;
}

/// xorshift64* with an approximate standard normal (sum of 4 uniforms, scaled).
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  float uniform() { return static_cast<float>((next() >> 40) * (1.0 / 16777216.0)); }
  float normal() { return (uniform() + uniform() + uniform() + uniform() - 2.0f) * 1.7320508f; }
};

double medianOf(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v.empty() ? 0.0 : v[v.size() / 2];
}

template <typename Fn>
double timeMs(int64_t runs, Fn&& fn) {
  for (int i = 0; i < 2; ++i) fn();  // warm-up (first call allocates the workspace)
  std::vector<double> t;
  for (int64_t i = 0; i < runs; ++i) {
    const auto t0 = std::chrono::steady_clock::now();
    fn();
    t.push_back(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count());
  }
  return medianOf(t);
}

std::string jsonEscape(const std::string& s) {
  std::string o;
  for (char c : s) {
    if (c == '"' || c == '\\') o += '\\';
    o += c;
  }
  return o;
}

}  // namespace

int main(int argc, char** argv) {
  const Args a = parse(argc, argv);
#ifndef NEGCACHE_WITH_CUDA
  std::fprintf(stderr, "SKIP: built without CUDA\n");
  return 0;
#else
  std::string why;
  if (!nc::cuda::available(&why)) {
    std::fprintf(stderr, "SKIP: no usable CUDA device: %s\n", why.c_str());
    return 0;
  }
  try {
    const std::string device = nc::cuda::deviceDescription();
    std::fprintf(stderr, "device: %s\nN=%lld D=%lld B=%lld bfloat16 rows, scale %g, %lld runs (median)\n",
                 device.c_str(), static_cast<long long>(a.n), static_cast<long long>(a.d),
                 static_cast<long long>(a.b), a.scale, static_cast<long long>(a.runs));

    // The cache: N x D bf16 rows ~ N(0,1) written straight into device memory
    // (every row a candidate: scoreEmptyRows, as the PyTorch peer scores all).
    const nc::Backend& gpu = nc::cuda::cudaBackend();
    const auto store = gpu.createStore({nc::ColumnSpec{"emb", nc::DType::BFloat16, a.d}}, a.n);
    {
      Rng r(1);
      const int64_t slice = 16384;
      std::vector<uint16_t> buf(static_cast<size_t>(slice * a.d));
      void* dst = const_cast<void*>(store->columnData(0));
      for (int64_t r0 = 0; r0 < a.n; r0 += slice) {
        const int64_t rows = std::min(slice, a.n - r0);
        for (int64_t i = 0; i < rows * a.d; ++i) buf[static_cast<size_t>(i)] = nc::floatToBFloat16(r.normal());
        if (cudaMemcpy(static_cast<uint16_t*>(dst) + r0 * a.d, buf.data(), static_cast<size_t>(rows * a.d) * 2,
                       cudaMemcpyHostToDevice) != cudaSuccess) {
          std::fprintf(stderr, "cudaMemcpy failed\n");
          return 1;
        }
      }
    }
    std::vector<float> queries(static_cast<size_t>(a.b * a.d));
    {
      Rng r(2);
      const float inv = 1.0f / std::sqrt(static_cast<float>(a.d));
      for (float& q : queries) q = r.normal() * inv;
    }
    nc::ScoreRequest req;
    req.queries = queries.data();
    req.batch = a.b;
    req.dim = a.d;
    req.segments.push_back(store->segment(0));
    req.scale = a.scale;
    req.scoreEmptyRows = true;

    const int64_t kMax = 64;
    std::vector<int32_t> idx(static_cast<size_t>(a.b * kMax));
    std::vector<float> sc(static_cast<size_t>(a.b * kMax)), lse(static_cast<size_t>(a.b));
    std::vector<int64_t> cand(static_cast<size_t>(a.b));
    std::vector<float> gScores(static_cast<size_t>(a.b * 64));
    std::vector<int32_t> gRows(static_cast<size_t>(a.b * 64));
    nc::SampleOutput out{idx.data(), sc.data(), lse.data(), cand.data()};

    const double flop = 2.0 * static_cast<double>(a.b) * static_cast<double>(a.n) * static_cast<double>(a.d);
    auto report = [&](const std::string& variant, int splits, double ms) {
      std::fprintf(stderr, "  %-22s splits=%d  %9.3f ms  %7.1f TFLOP/s (dot products)\n", variant.c_str(), splits, ms,
                   flop / ms * 1e-9);
      if (a.json)
        std::printf(
            "{\"impl\": \"negcache-cuda\", \"variant\": \"%s\", \"splits\": %d, \"device\": \"%s\", \"dtype\": "
            "\"bfloat16\", \"n\": %lld, \"d\": %lld, \"b\": %lld, \"median_ms\": %.3f, \"tflops\": %.1f}\n",
            variant.c_str(), splits, jsonEscape(device).c_str(), static_cast<long long>(a.n),
            static_cast<long long>(a.d), static_cast<long long>(a.b), ms, flop / ms * 1e-9);
      std::fflush(stdout);
    };

    std::vector<int> splitsList = a.splits;
    if (a.simt) splitsList.push_back(0);
    for (int s : splitsList) {
      nc::cuda::setQuerySplits(s);
      const int64_t runs = s == 0 ? std::max<int64_t>(3, a.runs / 5) : a.runs;
      nc::SampleParams gumbel;
      gumbel.seed = 7;
      double ms = timeMs(runs, [&] { gpu.scoreAndSample(req, gumbel, out); });
      report("fused-gumbel-k1", s, ms);
      if (s == 0) continue;
      nc::SampleParams none;
      none.mode = nc::SampleMode::None;
      ms = timeMs(runs, [&] { gpu.scoreAndSample(req, none, out); });
      report("fused-lse-only", s, ms);
      nc::SampleParams top64 = gumbel;
      top64.numDraws = kMax;
      ms = timeMs(runs, [&] { gpu.scoreAndSample(req, top64, out); });
      report("fused-gumbel-k64", s, ms);
      ms = timeMs(runs, [&] { gpu.scoreGroupMax(req, 64, gScores.data(), gRows.data()); });
      report("group-max-64", s, ms);
    }

    // Agreement with the CPU backend on a smaller cache (same bf16 rows, same seed).
    const int64_t an = a.agreeN, ab = a.agreeB;
    std::vector<float> rows(static_cast<size_t>(an * a.d)), aq(static_cast<size_t>(ab * a.d));
    {
      Rng r(3);
      for (float& v : rows) v = r.normal();
      const float inv = 1.0f / std::sqrt(static_cast<float>(a.d));
      for (float& v : aq) v = r.normal() * inv;
    }
    const auto cpuStore = nc::cpuBackend().createStore({nc::ColumnSpec{"emb", nc::DType::BFloat16, a.d}}, an);
    const auto gpuStore = gpu.createStore({nc::ColumnSpec{"emb", nc::DType::BFloat16, a.d}}, an);
    cpuStore->initialize({rows.data()}, nullptr);
    gpuStore->initialize({rows.data()}, nullptr);
    nc::ScoreRequest creq, greq;
    creq.queries = greq.queries = aq.data();
    creq.batch = greq.batch = ab;
    creq.dim = greq.dim = a.d;
    creq.scale = greq.scale = a.scale;
    creq.segments.push_back(cpuStore->segment(0));
    greq.segments.push_back(gpuStore->segment(0));
    const int calls = 4;
    const int64_t k = 8;
    std::vector<int32_t> ci(static_cast<size_t>(ab * k)), gi(static_cast<size_t>(ab * k));
    std::vector<float> cs(static_cast<size_t>(ab * k)), gs(static_cast<size_t>(ab * k));
    std::vector<float> cl(static_cast<size_t>(ab)), gl(static_cast<size_t>(ab));
    nc::SampleOutput co{ci.data(), cs.data(), cl.data(), nullptr}, go{gi.data(), gs.data(), gl.data(), nullptr};
    for (int s : std::vector<int>{0, 1, 2, 3}) {
      nc::cuda::setQuerySplits(s);
      int64_t same1 = 0, sameK = 0, sameMax = 0, total1 = 0, totalK = 0;
      double lseDiff = 0.0;
      for (int c = 0; c < calls; ++c) {
        for (int mode = 0; mode < 2; ++mode) {
          nc::SampleParams p;
          p.mode = mode == 0 ? nc::SampleMode::Gumbel : nc::SampleMode::MaxScore;
          p.numDraws = k;
          p.seed = 11;
          p.call = static_cast<uint64_t>(c);
          nc::cpuBackend().scoreAndSample(creq, p, co);
          gpu.scoreAndSample(greq, p, go);
          for (int64_t b = 0; b < ab; ++b) {
            if (mode == 0) {
              same1 += ci[static_cast<size_t>(b * k)] == gi[static_cast<size_t>(b * k)];
              ++total1;
              for (int64_t t = 0; t < k; ++t) sameK += ci[static_cast<size_t>(b * k + t)] == gi[static_cast<size_t>(b * k + t)];
              totalK += k;
              lseDiff = std::max(lseDiff, static_cast<double>(std::fabs(cl[static_cast<size_t>(b)] - gl[static_cast<size_t>(b)])));
            } else {
              sameMax += ci[static_cast<size_t>(b * k)] == gi[static_cast<size_t>(b * k)];
            }
          }
        }
      }
      const double g1 = static_cast<double>(same1) / total1, gk = static_cast<double>(sameK) / totalK,
                   mx = static_cast<double>(sameMax) / total1;
      std::fprintf(stderr,
                   "  agreement with CPU, splits=%d: first Gumbel draw %.4f, all 8 draws %.4f, max-score %.4f, "
                   "max |lse diff| %.2e  (N=%lld, B=%lld, %d calls)\n",
                   s, g1, gk, mx, lseDiff, static_cast<long long>(an), static_cast<long long>(ab), calls);
      if (a.json)
        std::printf("{\"impl\": \"negcache-cuda-agreement\", \"splits\": %d, \"n\": %lld, \"d\": %lld, \"b\": %lld, "
                    "\"gumbel_first_draw\": %.5f, \"gumbel_top8\": %.5f, \"max_score\": %.5f, \"lse_max_abs_diff\": %.3g}\n",
                    s, static_cast<long long>(an), static_cast<long long>(a.d), static_cast<long long>(ab), g1, gk, mx,
                    lseDiff);
      std::fflush(stdout);
    }
  } catch (const nc::Error& e) {
    std::fprintf(stderr, "error %s: %s\n", e.code().c_str(), e.what());
    return 1;
  }
  return 0;
#endif
}
