// The CPU kernels' run-time ISA dispatch (dispatch.cc): detected features and
// the switch to force the baseline tier.
#pragma once

namespace nc {
namespace cpu {

struct Features {
  bool avx2, fma, f16c;  // x86-64
  bool neon;             // aarch64 Advanced SIMD (every Armv8-A CPU)
};
Features detectedFeatures();
/// Forces the baseline tier (SSE2 on x86-64, plain C++ elsewhere) even where a
/// better one runs; also set by the environment variable
/// NEGATIVE_CACHE_FORCE_BASELINE=1 at load.
void setForceBaseline(bool force);
bool usingAvx2();
/// The name of the tier in use: "avx2", "neon" or "baseline".
const char* tierName();

}  // namespace cpu
}  // namespace nc
