// The topK groups of the global index space: group g of `groups` over n rows
// is [floor(g*n/groups), floor((g+1)*n/groups)), for 1 <= groups <= n < 2^31
// (so g*n fits in int64). One definition for the CPU and CUDA kernels (the
// JS kernels compute the same bounds).
#pragma once
#include <stdint.h>

#include "hd.h"

namespace nc {

/// First row of group g (g = groups gives n).
NC_HD inline int64_t groupStart(int64_t g, int64_t n, int64_t groups) { return g * n / groups; }

/// The group of row j: the largest g with groupStart(g) <= j.
NC_HD inline int64_t groupOf(int64_t j, int64_t n, int64_t groups) { return ((j + 1) * groups - 1) / n; }

}  // namespace nc
