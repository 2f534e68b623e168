// CPU feature detection for the runtime dispatch of the kernels.
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels.h"
#include "kernels_impl.h"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define NC_X86 1
#include <cpuid.h>
#endif

namespace nc {
namespace cpu {

namespace {

Features probe() {
  Features f{false, false, false};
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

}  // namespace

Features detectedFeatures() { return kDetected; }

void setForceBaseline(bool force) { gForceBaseline.store(force); }

bool usingAvx2() {
  return !gForceBaseline.load() && kDetected.avx2 && kDetected.fma && kDetected.f16c &&
         avx2Ops() != nullptr;
}

}  // namespace cpu
}  // namespace nc
