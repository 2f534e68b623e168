// The dispatch table of the CPU tiers and the CPU feature detection it uses.
// Tiers are listed best first; the first whose features the CPU has (and whose
// object file was compiled for them), within the cap, runs, and the baseline
// tier, last, always can. A new tier is one row here plus its object files
// (tier.h).
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdlib>
#include <cstring>

#include "dispatch.h"
#include "thread_pool.h"
#include "tier.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define NC_X86 1
#include <cpuid.h>
#endif
#if defined(NC_X86) && defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#if defined(__aarch64__) && defined(__linux__)
#include <sys/auxv.h>
#ifndef HWCAP_ASIMD
#define HWCAP_ASIMD (1 << 1)
#endif
#endif

namespace nc {
namespace cpu {

namespace {

Features probe() {
  Features f{};
#if defined(__aarch64__)
#if defined(__linux__)
  f.neon = (getauxval(AT_HWCAP) & HWCAP_ASIMD) != 0;
#else
  f.neon = true;  // Advanced SIMD is part of Armv8-A
#endif
#endif
#ifdef NC_X86
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1, avx = (c >> 28) & 1;
  const bool fma = (c >> 12) & 1, f16c = (c >> 29) & 1;
  if (!osxsave || !avx) return f;
  // The OS must save the ymm state (XCR0 bits 1 and 2); zmm needs bits 5-7,
  // AMX tiles bits 17-18.
  unsigned xlo = 0, xhi = 0;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  if ((xlo & 6u) != 6u) return f;
  const bool zmmState = (xlo & 0xE0u) == 0xE0u, tileState = (xlo & 0x60000u) == 0x60000u;
  const unsigned maxLeaf = __get_cpuid_max(0, nullptr);
  if (maxLeaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    f.avx2 = (b >> 5) & 1;
    f.avx512f = zmmState && ((b >> 16) & 1);
    f.avx512dq = zmmState && ((b >> 17) & 1);
    f.avx512bw = zmmState && ((b >> 30) & 1);
    f.avx512vl = zmmState && ((b >> 31) & 1);
    f.amxBf16 = tileState && ((d >> 22) & 1);
    f.amxTile = tileState && ((d >> 24) & 1);
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    f.avx512bf16 = zmmState && ((a1 >> 5) & 1);
  }
  f.fma = fma;
  f.f16c = f16c;
#endif
  return f;
}

bool envForcesBaseline() {
  const char* v = std::getenv("NEGATIVE_CACHE_FORCE_BASELINE");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

/// A row of the dispatch table; `rank` is its place in isaCapNames().
struct TierEntry {
  const char* name;
  int rank;
  bool (*usable)(const Features& f);
  const MicroKernel* (*kernel)();
  const Epilogue* (*epilogue)();
};

bool hasAvx2(const Features& f) { return f.avx2 && f.fma && f.f16c; }
bool hasAvx512(const Features& f) {
  return f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.fma && f.f16c;
}
/// Linux gives a process the AMX tile data state only on request
/// (arch_prctl ARCH_REQ_XCOMP_PERM for XFEATURE_XTILEDATA); asked once, at
/// the first check. Other systems: assumed usable when XCR0 enables it.
bool amxPermitted() {
#if defined(NC_X86) && defined(__linux__)
  static const bool granted = [] {
    constexpr long kArchReqXcompPerm = 0x1023, kXfeatureXtiledata = 18;
    return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
  }();
  return granted;
#else
  return true;
#endif
}
bool hasAmx(const Features& f) { return hasAvx512(f) && f.amxTile && f.amxBf16 && amxPermitted(); }
bool always(const Features&) { return true; }
#if defined(__aarch64__)
bool hasNeon(const Features& f) { return f.neon; }
#endif

}  // namespace

const MicroKernel* amxMicroKernel() {
  static const MicroKernel* const kernel = []() -> const MicroKernel* {
    static MicroKernel k{};
    const MicroKernel* base = avx512MicroKernel();
    const MicroKernel* tiles = amxTileParts();
    if (base == nullptr || tiles == nullptr) return nullptr;
    k = *base;
    k.peakLoop = tiles->peakLoop;
    k.gemmBlocksBf16 = tiles->gemmBlocksBf16;
    k.bf16Begin = tiles->bf16Begin;
    k.bf16End = tiles->bf16End;
    k.splitRowF16 = tiles->splitRowF16;
    k.finite16 = tiles->finite16;
    return &k;
  }();
  return kernel;
}

namespace {

const TierEntry kTiers[] = {
#if defined(__aarch64__)
    {"neon", 1, hasNeon, neonMicroKernel, neonEpilogue},
#else
    {"amx", 3, hasAmx, amxMicroKernel, avx512Epilogue},
    {"avx512", 2, hasAvx512, avx512MicroKernel, avx512Epilogue},
    {"avx2", 1, hasAvx2, avx2MicroKernel, avx2Epilogue},
#endif
    {"baseline", 0, always, baselineMicroKernel, baselineEpilogue},
};
constexpr int kNumTiers = static_cast<int>(sizeof(kTiers) / sizeof(kTiers[0]));

#if defined(__aarch64__)
const std::vector<std::string> kCapNames = {"baseline", "neon"};
#else
const std::vector<std::string> kCapNames = {"baseline", "avx2", "avx512", "amx"};
#endif

int capRank(const std::string& name) {
  for (size_t i = 0; i < kCapNames.size(); ++i)
    if (kCapNames[i] == name) return static_cast<int>(i);
  return -1;
}

const Features kDetected = probe();
std::atomic<bool> gForceBaseline{envForcesBaseline()};

std::string envIsa() {
  const char* v = std::getenv("NEGATIVE_CACHE_ISA");
  return v == nullptr ? std::string() : std::string(v);
}
const std::string kEnvIsa = envIsa();
const bool kEnvIsaValid = kEnvIsa.empty() || capRank(kEnvIsa) >= 0;
/// The cap as a rank; large = none.
std::atomic<int> gCapRank{kEnvIsaValid && !kEnvIsa.empty() ? capRank(kEnvIsa) : 1 << 20};

bool entryRuns(const TierEntry& e) {
  return e.usable(kDetected) && e.kernel() != nullptr && e.epilogue() != nullptr;
}

const TierEntry& currentEntry() {
  const int cap = gForceBaseline.load() ? 0 : gCapRank.load();
  for (int i = 0; i < kNumTiers; ++i) {
    const TierEntry& e = kTiers[i];
    if (e.rank <= cap && entryRuns(e)) return e;
  }
  return kTiers[kNumTiers - 1];
}

struct PeakCtx {
  double (*loop)(int64_t);
  int64_t iters;
  double flops[256];
};

void peakBody(void* p, int64_t chunk, int) {
  PeakCtx* c = static_cast<PeakCtx*>(p);
  c->flops[chunk] = c->loop(c->iters);
}

}  // namespace

Features detectedFeatures() { return kDetected; }

void setForceBaseline(bool force) { gForceBaseline.store(force); }

Tier currentTier() {
  const TierEntry& e = currentEntry();
  return Tier{e.name, e.kernel(), e.epilogue()};
}

bool usingAvx2() {
  const MicroKernel* k = avx2MicroKernel();
  return k != nullptr && currentTier().kernel == k;
}

const std::vector<std::string>& isaCapNames() { return kCapNames; }

bool setIsaCap(const std::string& name) {
  if (name.empty()) {
    gCapRank.store(1 << 20);
    return true;
  }
  const int r = capRank(name);
  if (r < 0) return false;
  gCapRank.store(r);
  return true;
}

std::string isaCap() {
  const int r = gCapRank.load();
  return r >= 0 && r < static_cast<int>(kCapNames.size()) ? kCapNames[r] : std::string();
}

std::string invalidIsaEnv() { return kEnvIsaValid ? std::string() : kEnvIsa; }

std::string tierName() { return currentEntry().name; }

std::vector<std::string> usableTiers() {
  std::vector<std::string> out;
  for (const TierEntry& e : kTiers)
    if (entryRuns(e)) out.push_back(e.name);
  return out;
}

double measurePeakGflops(const std::string& tier, int threads, double seconds) {
  const TierEntry* entry = nullptr;
  for (const TierEntry& e : kTiers)
    if (tier == e.name && entryRuns(e)) entry = &e;
  if (entry == nullptr || entry->kernel()->peakLoop == nullptr) return -1.0;
  const int t = resolveThreads(threads);
  PeakCtx ctx;
  ctx.loop = entry->kernel()->peakLoop;
  // Calibrate on one thread, then run every thread for about `seconds`.
  using clock = std::chrono::steady_clock;
  int64_t iters = 1 << 12;
  double dt = 0;
  for (;;) {
    const auto t0 = clock::now();
    ctx.loop(iters);
    dt = std::chrono::duration<double>(clock::now() - t0).count();
    if (dt > 0.02 || iters >= (int64_t(1) << 36)) break;
    iters *= 4;
  }
  ctx.iters = dt > 0 ? std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(iters) * (seconds / dt)))
                     : iters;
  const auto t0 = clock::now();
  runChunks(t, t, peakBody, &ctx);
  dt = std::chrono::duration<double>(clock::now() - t0).count();
  double flops = 0;
  for (int i = 0; i < t; ++i) flops += ctx.flops[i];
  return flops / dt * 1e-9;
}

}  // namespace cpu
}  // namespace nc
