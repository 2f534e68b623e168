// The CPU kernels' run-time ISA dispatch (dispatch.cc): detected features,
// the tier cap (NEGATIVE_CACHE_ISA) and the switch to force the baseline tier.
#pragma once
#include <cstdint>
#include <string>
#include <vector>

namespace nc {
namespace cpu {

/// What the CPU and the OS offer (whether or not a tier uses it).
struct Features {
  bool avx2, fma, f16c;
  bool avx512f, avx512bw, avx512vl, avx512dq, avx512bf16;
  bool amxTile, amxBf16;
  bool neon;  // aarch64 Advanced SIMD (every Armv8-A CPU)
};
Features detectedFeatures();

/// Forces the baseline (SSE2) tier even on an AVX2 CPU; also set by the
/// environment variable NEGATIVE_CACHE_FORCE_BASELINE=1 at load.
void setForceBaseline(bool force);
bool usingAvx2();

/// The tier names a cap may give, lowest first ("baseline", "avx2",
/// "avx512", "amx"; "neon" on aarch64): the cap lets a tier run only when it
/// is at most the named one. Names without a compiled tier are valid caps.
const std::vector<std::string>& isaCapNames();
/// Sets the cap: a name of isaCapNames(), or "" for none. False (and no
/// change) for an unknown name. The environment variable NEGATIVE_CACHE_ISA
/// sets it at load.
bool setIsaCap(const std::string& name);
/// The cap in force ("" = none).
std::string isaCap();
/// NEGATIVE_CACHE_ISA's value when it named no known tier ("" otherwise);
/// that value is ignored.
std::string invalidIsaEnv();
/// The name of the tier the kernels use now.
std::string tierName();
/// The tiers this CPU can run (compiled in and supported), best first.
std::vector<std::string> usableTiers();

/// The float32 multiply-add peak of a usable tier on `threads` threads (0 =
/// all): GFLOP/s over about `seconds` of the tier's peak probe. Negative when
/// the tier is not usable or has no probe.
double measurePeakGflops(const std::string& tier, int threads, double seconds);

}  // namespace cpu
}  // namespace nc
