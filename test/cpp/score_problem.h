// Shared by the C++ kernel tests: a random scoring problem (queries, cache
// segments in float32 / float16 / bfloat16, filled flags) with its float64
// reference scores, and the truncating half conversions used to make it.
#pragma once
#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <vector>

#include "kernels.h"

namespace {

uint16_t toHalf(float x) {  // truncating float32 -> float16 (normal range, else 0)
  uint32_t u;
  std::memcpy(&u, &x, 4);
  const uint32_t sign = (u >> 16) & 0x8000u;
  const int e = static_cast<int>((u >> 23) & 0xff) - 127 + 15;
  if (e <= 0) return static_cast<uint16_t>(sign);
  if (e >= 31) return static_cast<uint16_t>(sign | 0x7bffu);
  return static_cast<uint16_t>(sign | (e << 10) | ((u >> 13) & 0x3ffu));
}
float fromHalf(uint16_t h) {
  const int e = (h >> 10) & 0x1f, m = h & 0x3ff;
  const float v = e == 0 ? std::ldexp(static_cast<float>(m), -24)
                         : std::ldexp(static_cast<float>(m + 1024), e - 25);
  return (h & 0x8000) ? -v : v;
}
uint16_t toBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  return static_cast<uint16_t>(u >> 16);
}
float fromBf16(uint16_t h) {
  const uint32_t u = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

struct SegmentData {
  nc::DType storage;
  int64_t rows;
  std::vector<float> f32;       // as stored (after conversion), for the reference
  std::vector<uint16_t> half;   // storage for f16 / bf16
  std::vector<uint8_t> filled;  // empty = null
};

struct Problem {
  int64_t batch, dim;
  std::vector<float> queries;
  std::vector<SegmentData> segs;
  float scale;
  bool scoreEmptyRows;
  nc::ScoreRequest req() const {
    nc::ScoreRequest r;
    r.queries = queries.data();
    r.batch = batch;
    r.dim = dim;
    r.scale = scale;
    r.scoreEmptyRows = scoreEmptyRows;
    for (const SegmentData& s : segs) {
      nc::Segment g;
      g.storage = s.storage;
      g.rows = s.rows;
      g.data = s.storage == nc::DType::Float32 ? static_cast<const void*>(s.f32.data())
                                               : static_cast<const void*>(s.half.data());
      g.filled = s.filled.empty() ? nullptr : s.filled.data();
      r.segments.push_back(g);
    }
    return r;
  }
  int64_t n() const {
    int64_t n = 0;
    for (const SegmentData& s : segs) n += s.rows;
    return n;
  }
  // Reference scores (float64 of the stored values) and candidate flags;
  // absS (optional): scale * sum_d |q_d r_d|, the size of a score's rounding.
  void reference(std::vector<double>& S, std::vector<uint8_t>& cand, std::vector<double>* absS = nullptr) const {
    const int64_t N = n();
    S.assign(static_cast<size_t>(batch * N), 0.0);
    if (absS != nullptr) absS->assign(static_cast<size_t>(batch * N), 0.0);
    cand.assign(static_cast<size_t>(N), 1);
    int64_t j0 = 0;
    for (const SegmentData& s : segs) {
      for (int64_t i = 0; i < s.rows; ++i) {
        const int64_t j = j0 + i;
        if (!scoreEmptyRows && !s.filled.empty()) cand[j] = s.filled[i] != 0;
        for (int64_t b = 0; b < batch; ++b) {
          double acc = 0, mag = 0;
          for (int64_t d = 0; d < dim; ++d) {
            const double t = static_cast<double>(queries[b * dim + d]) * s.f32[i * dim + d];
            acc += t;
            mag += std::fabs(t);
          }
          S[b * N + j] = scale * acc;
          if (absS != nullptr) (*absS)[b * N + j] = std::fabs(scale) * mag;
        }
      }
      j0 += s.rows;
    }
  }
};

Problem makeProblem(std::mt19937_64& rng, int64_t batch, int64_t dim, const std::vector<int64_t>& rows,
                    nc::DType storage, double fillFrac, float scale) {
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::uniform_real_distribution<double> ud(0.0, 1.0);
  Problem p;
  p.batch = batch;
  p.dim = dim;
  p.scale = scale;
  p.scoreEmptyRows = false;
  p.queries.resize(static_cast<size_t>(batch * dim));
  for (float& q : p.queries) q = nd(rng) / std::sqrt(static_cast<float>(dim));
  for (int64_t r : rows) {
    SegmentData s;
    s.storage = storage;
    s.rows = r;
    s.f32.resize(static_cast<size_t>(r * dim));
    if (storage != nc::DType::Float32) s.half.resize(static_cast<size_t>(r * dim));
    for (int64_t i = 0; i < r * dim; ++i) {
      const float v = nd(rng);
      if (storage == nc::DType::Float16) {
        s.half[i] = toHalf(v);
        s.f32[i] = fromHalf(s.half[i]);
      } else if (storage == nc::DType::BFloat16) {
        s.half[i] = toBf16(v);
        s.f32[i] = fromBf16(s.half[i]);
      } else {
        s.f32[i] = v;
      }
    }
    if (fillFrac < 1.0) {
      s.filled.resize(static_cast<size_t>(r));
      for (auto& f : s.filled) f = ud(rng) < fillFrac;
    }
    p.segs.push_back(std::move(s));
  }
  return p;
}

}  // namespace
