// Test hook of the CPU full-cache log-sum-exp (lse_grad.cc).
#pragma once
#include <cstdint>

namespace nc {
namespace cpu {

/// Chunks whose partials are held at once (0 = by shape, the default). The
/// outputs do not depend on it (partials are folded one chunk at a time, in
/// chunk order); the C++ test checks that with small waves.
void setLseWaveChunks(int64_t chunks);

}  // namespace cpu
}  // namespace nc
