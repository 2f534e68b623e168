// The dispatch table of the CPU tiers and the CPU feature detection it uses.
// Tiers are listed best first; the first whose features the CPU has (and whose
// object file was compiled for them) runs, and the baseline tier, last,
// always can. A new tier is one row here plus its object files (tier.h).
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "dispatch.h"
#include "tier.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define NC_X86 1
#include <cpuid.h>
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
  Features f{false, false, false, false};
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
  // The OS must save the ymm state (XCR0 bits 1 and 2).
  unsigned xlo = 0, xhi = 0;
  __asm__ volatile("xgetbv" : "=a"(xlo), "=d"(xhi) : "c"(0));
  if ((xlo & 6u) != 6u) return f;
  unsigned maxLeaf = __get_cpuid_max(0, nullptr);
  bool avx2 = false;
  if (maxLeaf >= 7) {
    __cpuid_count(7, 0, a, b, c, d);
    avx2 = (b >> 5) & 1;
  }
  f.avx2 = avx2;
  f.fma = fma;
  f.f16c = f16c;
#endif
  return f;
}

bool envForcesBaseline() {
  const char* v = std::getenv("NEGATIVE_CACHE_FORCE_BASELINE");
  return v != nullptr && v[0] != '\0' && std::strcmp(v, "0") != 0;
}

const Features kDetected = probe();
std::atomic<bool> gForceBaseline{envForcesBaseline()};

/// A row of the dispatch table.
struct TierEntry {
  const char* name;
  bool (*usable)(const Features& f);
  const MicroKernel* (*kernel)();
  const Epilogue* (*epilogue)();
};

bool hasAvx2(const Features& f) { return f.avx2 && f.fma && f.f16c; }
bool always(const Features&) { return true; }
#if defined(__aarch64__)
bool hasNeon(const Features& f) { return f.neon; }
#endif

const TierEntry kTiers[] = {
#if defined(__aarch64__)
    {"neon", hasNeon, neonMicroKernel, neonEpilogue},
#else
    {"avx2", hasAvx2, avx2MicroKernel, avx2Epilogue},
#endif
    {"baseline", always, baselineMicroKernel, baselineEpilogue},
};
constexpr int kNumTiers = static_cast<int>(sizeof(kTiers) / sizeof(kTiers[0]));

}  // namespace

Features detectedFeatures() { return kDetected; }

void setForceBaseline(bool force) { gForceBaseline.store(force); }

Tier currentTier() {
  const int first = gForceBaseline.load() ? kNumTiers - 1 : 0;
  for (int i = first; i < kNumTiers; ++i) {
    const TierEntry& e = kTiers[i];
    if (e.usable(kDetected) && e.kernel() != nullptr && e.epilogue() != nullptr)
      return Tier{e.name, e.kernel(), e.epilogue()};
  }
  const TierEntry& b = kTiers[kNumTiers - 1];
  return Tier{b.name, b.kernel(), b.epilogue()};
}

bool usingAvx2() {
  const MicroKernel* k = avx2MicroKernel();
  return k != nullptr && currentTier().kernel == k;
}

const char* tierName() { return currentTier().name; }

}  // namespace cpu
}  // namespace nc
