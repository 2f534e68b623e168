// The request of the full-cache log-sum-exp (Backend::cacheLse): per query b,
//
//   lse[b]      = log sum_j exp(S[b, j]) over the candidates j, plus extra row b
//   weighted[b] = sum_j softmax_b(j) e_j      (the same candidates and weights)
//
// with S = scale * (q . e) as in ScoreRequest. `weighted` is the gradient of
// lse[b] with respect to q_b divided by scale, so the caller's backward needs
// no second pass over the cache. See docs/kernels.md "Full-cache log-sum-exp".
#pragma once
#include <cstdint>

namespace nc {

struct CacheLseOutput {
  float* lse;            // batch: -inf when a query has no candidate
  float* weighted;       // batch x dim: zeros when a query has no candidate
  int64_t* candidates;   // batch: candidates counted (extra row included); may be null
};

}  // namespace nc
