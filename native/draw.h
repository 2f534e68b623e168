// One drawn (or candidate) element and the total order of the k-best lists,
// shared by the CPU lists (native/cpu/kbest.h) and the CUDA heaps
// (native/cuda/kernels.cu).
#pragma once
#include <stdint.h>

#include "hd.h"

namespace nc {

struct Draw {
  double p;     // perturbed score (Gumbel) or score (max-score)
  int32_t idx;  // global row (scoreAndSample) or column (sampleCandidates)
  float s;      // the score S at the element
};
static_assert(sizeof(Draw) == 16, "Draw is 16 bytes");

/// True when (pa, ja) ranks before (pb, jb): larger p first, then the smaller index.
NC_HD inline bool drawBefore(double pa, int32_t ja, double pb, int32_t jb) {
  return pa > pb || (pa == pb && ja < jb);
}

}  // namespace nc
