// The CUDA backend against the CPU backend on random inputs: the store
// (updates, ages, filled flags, reads, gathers, rejected updates) and every
// kernel (scoreMatrix, scoreAndSample in Gumbel / max-score / lse-only mode
// with k >= 1, scoreGroupMax) for float32 / float16 / bfloat16 rows, several
// segments, partly filled caches, and each bf16 query split. Draws may differ
// only where perturbed scores nearly tie, so draws are compared as agreement
// rates with a floor per precision, and the rates are printed.
//
// Without a usable device (or without CUDA in the build) it prints "SKIP"
// and exits 0.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#ifdef NEGCACHE_WITH_CUDA
#include "cuda/cuda_backend.h"
#include "test_util.h"
#endif

#ifndef NEGCACHE_WITH_CUDA
int main() {
  std::printf("SKIP: built without CUDA\n");
  return 0;
}
#else

namespace {

struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 7) {}
  uint64_t next() {
    s ^= s >> 12;
    s ^= s << 25;
    s ^= s >> 27;
    return s * 2685821657736338717ull;
  }
  double uniform() { return static_cast<double>(next() >> 11) * (1.0 / 9007199254740992.0); }
  int64_t below(int64_t n) { return static_cast<int64_t>(uniform() * static_cast<double>(n)); }
  float normal() {
    const double u = uniform() + 1e-300, v = uniform();
    return static_cast<float>(std::sqrt(-2.0 * std::log(u)) * std::cos(6.283185307179586 * v));
  }
};

std::vector<nc::ColumnSpec> storeColumns() {
  return {{"f32", nc::DType::Float32, 3}, {"f16", nc::DType::Float16, 5}, {"bf16", nc::DType::BFloat16, 4},
          {"id", nc::DType::Int32, 2}};
}

/// Host values for n rows of every column.
struct Rows {
  std::vector<std::vector<float>> f;
  std::vector<int32_t> i;
  std::vector<const void*> ptrs(const std::vector<nc::ColumnSpec>& cols) const {
    std::vector<const void*> p;
    size_t fi = 0;
    for (const auto& c : cols) p.push_back(c.storage == nc::DType::Int32 ? static_cast<const void*>(i.data())
                                                                         : static_cast<const void*>(f[fi++].data()));
    return p;
  }
};

Rows randomRows(Rng& r, const std::vector<nc::ColumnSpec>& cols, int64_t n) {
  Rows rows;
  for (const auto& c : cols) {
    if (c.storage == nc::DType::Int32) {
      rows.i.resize(static_cast<size_t>(n * c.width));
      for (auto& v : rows.i) v = static_cast<int32_t>(r.below(1000000)) - 500000;
    } else {
      std::vector<float> v(static_cast<size_t>(n * c.width));
      for (auto& x : v) x = r.normal() * 3.0f;
      rows.f.push_back(std::move(v));
    }
  }
  return rows;
}

bool sameState(const nc::CacheStore& cpu, const nc::CacheStore& gpu) {
  bool ok = true;
  const int64_t n = cpu.size();
  for (int c = 0; c < cpu.numColumns(); ++c) {
    const int64_t count = n * cpu.column(c).width;
    std::vector<uint32_t> x(static_cast<size_t>(count)), y(static_cast<size_t>(count));
    cpu.readColumn(c, x.data());
    gpu.readColumn(c, y.data());
    if (x != y) ok = false;
  }
  std::vector<int32_t> ax(static_cast<size_t>(n)), ay(static_cast<size_t>(n));
  cpu.readAge(ax.data());
  gpu.readAge(ay.data());
  if (ax != ay) ok = false;
  if (std::memcmp(cpu.filled(), gpu.filled(), static_cast<size_t>(n)) != 0) ok = false;
  return ok;
}

void testStore() {
  Rng r(1);
  const auto cols = storeColumns();
  const int64_t size = 37;
  const auto cpuStore = nc::cpuBackend().createStore(cols, size);
  const auto gpuStore = nc::cuda::cudaBackend().createStore(cols, size);
  nc::CacheStore& cpu = *cpuStore;
  nc::CacheStore& gpu = *gpuStore;
  EXPECT(sameState(cpu, gpu), "fresh stores differ");
  for (int step = 0; step < 60; ++step) {
    if (step == 25) {  // initialize with explicit (some negative) ages
      Rows init = randomRows(r, cols, size);
      std::vector<int32_t> ages(static_cast<size_t>(size));
      for (auto& a : ages) a = static_cast<int32_t>(r.below(9)) - 3;
      cpu.initialize(init.ptrs(cols), ages.data());
      gpu.initialize(init.ptrs(cols), ages.data());
      EXPECT(sameState(cpu, gpu), "after initialize");
      continue;
    }
    nc::CacheUpdate u;
    u.useLru = step % 3 != 0;
    u.numUpdated = r.below(12);
    u.numNew = r.below(14);
    Rows upd = randomRows(r, cols, u.numUpdated), add = randomRows(r, cols, u.numNew);
    std::vector<int32_t> idx(static_cast<size_t>(u.numUpdated));
    std::vector<uint8_t> umask(static_cast<size_t>(u.numUpdated)), nmask(static_cast<size_t>(u.numNew));
    for (auto& v : idx) v = static_cast<int32_t>(r.below(size / 2));  // repeats likely
    for (size_t i = 0; i < umask.size(); ++i) {
      umask[i] = r.uniform() < 0.8;
      if (!umask[i]) idx[i] = 1000 + static_cast<int32_t>(i);  // masked out: ignored whatever the index
    }
    for (auto& v : nmask) v = r.uniform() < 0.8;
    u.updatedValues = upd.ptrs(cols);
    u.updatedValues[static_cast<size_t>(r.below(4))] = nullptr;  // one column not refreshed
    u.updatedIndices = idx.data();
    u.updatedMask = step % 2 ? umask.data() : nullptr;
    if (!u.updatedMask)
      for (auto& v : idx) v = static_cast<int32_t>(r.below(size));
    u.newValues = add.ptrs(cols);
    u.newMask = step % 4 ? nmask.data() : nullptr;
    std::vector<int32_t> insCpu(static_cast<size_t>(u.numNew), -7), insGpu(static_cast<size_t>(u.numNew), -7);
    nc::CacheUpdate uc = u, ug = u;
    uc.insertedRows = insCpu.data();
    ug.insertedRows = insGpu.data();
    cpu.update(uc);
    gpu.update(ug);
    EXPECT(insCpu == insGpu, "step %d: inserted rows differ", step);
    EXPECT(sameState(cpu, gpu), "step %d: state differs", step);
  }
  // A rejected update changes nothing on either side.
  {
    std::vector<int32_t> bad{3, size};
    Rows upd = randomRows(r, cols, 2);
    nc::CacheUpdate u;
    u.numUpdated = 2;
    u.updatedValues = upd.ptrs(cols);
    u.updatedIndices = bad.data();
    bool threwCpu = false, threwGpu = false;
    try { cpu.update(u); } catch (const nc::Error&) { threwCpu = true; }
    try { gpu.update(u); } catch (const nc::Error& e) { threwGpu = e.code() == "ERR_ARGUMENT"; }
    EXPECT(threwCpu && threwGpu, "bad index accepted (cpu %d gpu %d)", threwCpu, threwGpu);
    EXPECT(sameState(cpu, gpu), "state changed by a rejected update");
  }
  // Gathers.
  for (int c = 0; c < 4; ++c) {
    std::vector<int32_t> rows{0, 36, 5, 5, 17};
    const int64_t w = cols[static_cast<size_t>(c)].width;
    std::vector<uint32_t> x(static_cast<size_t>(5 * w)), y(static_cast<size_t>(5 * w));
    cpu.gatherRows(c, rows.data(), 5, x.data());
    gpu.gatherRows(c, rows.data(), 5, y.data());
    EXPECT(x == y, "gatherRows column %d differs", c);
  }
  std::printf("store: %s\n", failures ? "FAILED" : "ok");
}

struct KernelCase {
  nc::DType storage;
  int64_t dim, batch;
  std::vector<int64_t> segRows;
  double fill;
  bool scoreEmpty;
  float scale;
};

const char* storageName(nc::DType t) {
  return t == nc::DType::Float32 ? "float32" : t == nc::DType::Float16 ? "float16" : "bfloat16";
}

void testKernels(const KernelCase& kc, int splits, uint64_t seed) {
  Rng r(seed);
  nc::cuda::setQuerySplits(splits);
  const bool tensor = kc.storage == nc::DType::BFloat16 && splits > 0 && kc.dim % 8 == 0;
  // Score tolerance (relative to 1 + |S|) and agreement floors by precision.
  const double tol = !tensor ? 2e-5 : splits == 1 ? 3e-2 : splits == 2 ? 5e-4 : 2e-5;
  const double floor1 = !tensor || splits == 3 ? 0.99 : splits == 2 ? 0.97 : 0.5;
  const int before = failures;
  std::vector<std::unique_ptr<nc::CacheStore>> cpuStores;
  std::vector<std::unique_ptr<nc::CacheStore>> gpuStores;
  nc::ScoreRequest creq, greq;
  std::vector<float> queries(static_cast<size_t>(kc.batch * kc.dim));
  for (auto& q : queries) q = r.normal() / std::sqrt(static_cast<float>(kc.dim));
  creq.queries = greq.queries = queries.data();
  creq.batch = greq.batch = kc.batch;
  creq.dim = greq.dim = kc.dim;
  creq.scale = greq.scale = kc.scale;
  creq.scoreEmptyRows = greq.scoreEmptyRows = kc.scoreEmpty;
  int64_t n = 0;
  for (int64_t rows : kc.segRows) {
    std::vector<nc::ColumnSpec> cols{{"emb", kc.storage, kc.dim}};
    cpuStores.push_back(nc::cpuBackend().createStore(cols, rows));
    gpuStores.push_back(nc::cuda::cudaBackend().createStore(cols, rows));
    std::vector<int32_t> idx;
    for (int64_t i = 0; i < rows; ++i)
      if (r.uniform() < kc.fill) idx.push_back(static_cast<int32_t>(i));
    std::vector<float> vals(idx.size() * static_cast<size_t>(kc.dim));
    for (auto& v : vals) v = r.normal();
    nc::CacheUpdate u;
    u.numUpdated = static_cast<int64_t>(idx.size());
    u.updatedValues = {vals.data()};
    u.updatedIndices = idx.data();
    if (!idx.empty()) {
      cpuStores.back()->update(u);
      gpuStores.back()->update(u);
    }
    creq.segments.push_back(cpuStores.back()->segment(0));
    greq.segments.push_back(gpuStores.back()->segment(0));
    n += rows;
  }
  auto near = [&](double a, double b) { return std::fabs(a - b) <= tol * (1.0 + std::fabs(b)); };

  // scoreMatrix
  std::vector<float> cm(static_cast<size_t>(kc.batch * n)), gm(cm.size());
  nc::cpuBackend().scoreMatrix(creq, cm.data());
  nc::cuda::cudaBackend().scoreMatrix(greq, gm.data());
  double worst = 0.0;
  for (size_t i = 0; i < cm.size(); ++i) worst = std::max(worst, std::fabs(cm[i] - gm[i]) / (1.0 + std::fabs(cm[i])));
  EXPECT(worst <= tol, "scoreMatrix: max relative difference %.3g > %.3g", worst, tol);

  // scoreAndSample
  double agreeSum = 0.0;
  int agreeRuns = 0;
  for (int mode = 0; mode < 3; ++mode) {
    for (int64_t k : {int64_t{1}, int64_t{5}}) {
      nc::SampleParams p;
      p.mode = static_cast<nc::SampleMode>(mode);
      p.numDraws = k;
      p.seed = 0x1234567890ull + seed;
      p.call = 3;
      p.invTemp = mode == 0 ? 0.7 : 1.0;
      std::vector<int32_t> ci(static_cast<size_t>(kc.batch * k)), gi(ci.size());
      std::vector<float> cs(ci.size()), gs(ci.size()), cl(static_cast<size_t>(kc.batch)), gl(cl.size());
      std::vector<int64_t> cc(cl.size()), gc(cl.size());
      nc::SampleOutput co{ci.data(), cs.data(), cl.data(), cc.data()}, go{gi.data(), gs.data(), gl.data(), gc.data()};
      nc::cpuBackend().scoreAndSample(creq, p, co);
      nc::cuda::cudaBackend().scoreAndSample(greq, p, go);
      EXPECT(cc == gc, "mode %d k %lld: candidate counts differ", mode, static_cast<long long>(k));
      for (int64_t b = 0; b < kc.batch; ++b) {
        if (cl[static_cast<size_t>(b)] == -INFINITY) {
          EXPECT(gl[static_cast<size_t>(b)] == -INFINITY, "lse of an empty query must be -inf");
        } else {
          EXPECT(near(gl[static_cast<size_t>(b)], cl[static_cast<size_t>(b)]), "lse %lld: gpu %g cpu %g",
                 static_cast<long long>(b), gl[static_cast<size_t>(b)], cl[static_cast<size_t>(b)]);
        }
      }
      int64_t same = 0;
      for (size_t i = 0; i < ci.size(); ++i) {
        if (ci[i] == gi[i]) {
          ++same;
          if (ci[i] >= 0) EXPECT(near(gs[i], cs[i]), "draw score %zu: gpu %g cpu %g", i, gs[i], cs[i]);
          else EXPECT(std::isnan(gs[i]), "missing draw must have a NaN score");
        } else {
          EXPECT(ci[i] >= 0 && gi[i] >= 0, "draw %zu present on one side only (cpu %d gpu %d)", i, ci[i], gi[i]);
        }
      }
      const double agree = static_cast<double>(same) / static_cast<double>(ci.size());
      if (mode != 2) {
        agreeSum += agree;
        ++agreeRuns;
      }
      EXPECT(agree >= floor1, "mode %d k %lld: draws agree %.4f < %.2f", mode, static_cast<long long>(k), agree, floor1);
    }
  }

  // scoreGroupMax
  for (int64_t groups : {int64_t{1}, int64_t{7}, std::min<int64_t>(n, 300)}) {
    std::vector<float> cs(static_cast<size_t>(kc.batch * groups)), gs(cs.size());
    std::vector<int32_t> cr(cs.size()), gr(cs.size());
    nc::cpuBackend().scoreGroupMax(creq, groups, cs.data(), cr.data());
    nc::cuda::cudaBackend().scoreGroupMax(greq, groups, gs.data(), gr.data());
    int64_t same = 0;
    for (size_t i = 0; i < cs.size(); ++i) {
      if (cr[i] == gr[i]) {
        ++same;
        if (cr[i] < 0) EXPECT(gs[i] == -INFINITY, "empty group must be -inf");
        else EXPECT(near(gs[i], cs[i]), "group score %zu: gpu %g cpu %g", i, gs[i], cs[i]);
      } else {
        EXPECT(cr[i] >= 0 && gr[i] >= 0, "group %zu empty on one side only", i);
      }
    }
    const double agree = static_cast<double>(same) / static_cast<double>(cs.size());
    EXPECT(agree >= floor1, "groups %lld: rows agree %.4f < %.2f", static_cast<long long>(groups), agree, floor1);
  }
  std::printf("kernels %-8s dim %3lld batch %3lld rows %7lld fill %.2f%s splits %d: max rel score diff %.2e, "
              "draw agreement %.4f  %s\n",
              storageName(kc.storage), static_cast<long long>(kc.dim), static_cast<long long>(kc.batch),
              static_cast<long long>(n), kc.fill, kc.scoreEmpty ? " (all rows)" : "", splits, worst,
              agreeRuns ? agreeSum / agreeRuns : 1.0, failures == before ? "ok" : "FAILED");
}

}  // namespace

int main() {
  std::string why;
  if (!nc::cuda::available(&why)) {
    std::printf("SKIP: no usable CUDA device: %s\n", why.c_str());
    return 0;
  }
  try {
    std::printf("device: %s\n", nc::cuda::deviceDescription().c_str());
    testStore();
    const std::vector<KernelCase> cases{
        {nc::DType::Float32, 40, 150, {300, 1000}, 0.7, false, 3.0f},
        {nc::DType::Float16, 37, 70, {129, 1, 513}, 0.5, false, 2.0f},
        {nc::DType::BFloat16, 64, 150, {300, 1000}, 0.7, false, 3.0f},
        {nc::DType::BFloat16, 36, 33, {777}, 0.9, true, 1.0f},      // dim % 8 != 0: SIMT path
        {nc::DType::BFloat16, 128, 300, {70000}, 1.0, false, 20.0f},  // many tiles and chunks
        {nc::DType::Float32, 16, 5, {64}, 0.05, false, 1.0f},        // mostly empty
    };
    uint64_t seed = 100;
    for (const KernelCase& kc : cases) {
      if (kc.storage == nc::DType::BFloat16) {
        for (int s : {0, 1, 2, 3}) testKernels(kc, s, ++seed);
      } else {
        testKernels(kc, 2, ++seed);
      }
    }
  } catch (const nc::Error& e) {
    std::printf("FAIL: %s: %s\n", e.code().c_str(), e.what());
    return 1;
  }
  std::printf(failures ? "%d FAILURES\n" : "all passed\n", failures);
  return failures ? 1 : 0;
}

#endif
