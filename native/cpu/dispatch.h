// The CPU kernels' run-time ISA dispatch (dispatch.cc): detected features and
// the switch to force the baseline tier.
#pragma once

namespace nc {
namespace cpu {

struct Features {
  bool avx2, fma, f16c;
};
Features detectedFeatures();
/// Forces the baseline (SSE2) tier even on an AVX2 CPU; also set by the
/// environment variable NEGATIVE_CACHE_FORCE_BASELINE=1 at load.
void setForceBaseline(bool force);
bool usingAvx2();

}  // namespace cpu
}  // namespace nc
