// The NEON tier (Armv8-A Advanced SIMD, which every aarch64 CPU has): the
// micro-kernel and the epilogues. Compiled only for aarch64 (CMakeLists.txt
// leaves *_neon.cc out elsewhere) and listed in the dispatch table only there
// (dispatch.cc). NEON is the aarch64 baseline, so unlike the AVX2 tier nothing
// here can be entered on a CPU without it; it still follows the same shape:
// everything in an anonymous namespace, philoxRound instantiated with a lane
// type of its own.
//
// Same semantics and draws as the other tiers: the score filters and the noise
// bound only skip what cannot be drawn (with the margin of kbest.h), and every
// decision is the shared float64 offer (offerGumbel / offerDraw). Lanes are 4
// consecutive queries of a block; the noise words come from a 4-lane Philox
// (vmull_u32 for the 32x32->64 products).
#include "tier.h"

#if defined(__aarch64__) && defined(__ARM_NEON)
#include <arm_neon.h>

#include <cmath>
#include <limits>

#include "common.h"

namespace nc {
namespace cpu {
namespace {

constexpr float kInfF = std::numeric_limits<float>::infinity();

// --- conversions -------------------------------------------------------------

void convertRowNeon(const void* src, int32_t storage, int64_t n, float* dst) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  int64_t i = 0;
  if (storage == static_cast<int32_t>(DType::Float16)) {
    // FCVT: exact, subnormals kept (FPCR.FZ16 is off), NaN quieted with its payload.
    for (; i + 8 <= n; i += 8) {
      const float16x8_t x = vreinterpretq_f16_u16(vld1q_u16(h + i));
      vst1q_f32(dst + i, vcvt_f32_f16(vget_low_f16(x)));
      vst1q_f32(dst + i + 4, vcvt_high_f32_f16(x));
    }
    if (i < n) {
      uint16_t tmp[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      float out[8];
      for (int64_t t = 0; t < n - i; ++t) tmp[t] = h[i + t];
      const float16x8_t x = vreinterpretq_f16_u16(vld1q_u16(tmp));
      vst1q_f32(out, vcvt_f32_f16(vget_low_f16(x)));
      vst1q_f32(out + 4, vcvt_high_f32_f16(x));
      for (int64_t t = 0; t < n - i; ++t) dst[i + t] = out[t];
    }
  } else {
    for (; i + 8 <= n; i += 8) {
      const uint16x8_t x = vld1q_u16(h + i);
      vst1q_f32(dst + i, vreinterpretq_f32_u32(vshll_n_u16(vget_low_u16(x), 16)));
      vst1q_f32(dst + i + 4, vreinterpretq_f32_u32(vshll_high_n_u16(x, 16)));
    }
    for (; i < n; ++i) {
      const uint32_t u = static_cast<uint32_t>(h[i]) << 16;
      vst1q_lane_f32(dst + i, vreinterpretq_f32_u32(vdupq_n_u32(u)), 0);
    }
  }
}

// --- GEMM: 4 cache rows x 16 queries micro-kernel ------------------------------

void gemmBlockNeon(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                   float* sb) {
  for (int64_t rg = 0; rg < nrows; rg += 4) {
    const int64_t valid = nrows - rg < 4 ? nrows - rg : 4;
    const float* r0 = rows[rg];
    const float* r1 = rows[rg + (valid > 1 ? 1 : 0)];
    const float* r2 = rows[rg + (valid > 2 ? 2 : 0)];
    const float* r3 = rows[rg + (valid > 3 ? 3 : 0)];
    float32x4_t c[4][4];
    for (int r = 0; r < 4; ++r)
      for (int k = 0; k < 4; ++k) c[r][k] = vdupq_n_f32(0.0f);
    for (int64_t d = 0; d < dim; ++d) {
      const float* qd = q + d * kQueryBlock;
      const float32x4_t a0 = vld1q_f32(qd), a1 = vld1q_f32(qd + 4);
      const float32x4_t a2 = vld1q_f32(qd + 8), a3 = vld1q_f32(qd + 12);
      const float e[4] = {r0[d], r1[d], r2[d], r3[d]};
      for (int r = 0; r < 4; ++r) {
        c[r][0] = vfmaq_n_f32(c[r][0], a0, e[r]);
        c[r][1] = vfmaq_n_f32(c[r][1], a1, e[r]);
        c[r][2] = vfmaq_n_f32(c[r][2], a2, e[r]);
        c[r][3] = vfmaq_n_f32(c[r][3], a3, e[r]);
      }
    }
    for (int64_t r = 0; r < valid; ++r) {
      float* o = sb + (rg + r) * kQueryBlock;
      for (int k = 0; k < 4; ++k) vst1q_f32(o + 4 * k, vmulq_n_f32(c[r][k], scale));
    }
  }
}

// --- vector exp (relative error ~1e-7 on the clamped range) ------------------
// The polynomial of the AVX2 tier; NaN propagates (vminq/vmaxq keep NaN).

float32x4_t exp4(float32x4_t x) {
  x = vminq_f32(x, vdupq_n_f32(88.3f));
  x = vmaxq_f32(x, vdupq_n_f32(-87.3f));
  const float32x4_t n = vrndnq_f32(vmulq_n_f32(x, 1.44269504088896341f));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693359375f));
  r = vfmsq_f32(r, n, vdupq_n_f32(-2.12194440e-4f));
  float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

// --- Philox4x32-10 on 4 counters -------------------------------------------------

/// The lane type of philoxRound (rng.h): 4 words.
struct NeonLanes {
  using V = uint32x4_t;
  static V splat(uint32_t x) { return vdupq_n_u32(x); }
  static void mulhilo(V m, V x, V& hi, V& lo) {
    const uint32x4_t p01 = vreinterpretq_u32_u64(vmull_u32(vget_low_u32(x), vget_low_u32(m)));
    const uint32x4_t p23 = vreinterpretq_u32_u64(vmull_high_u32(x, m));
    lo = vuzp1q_u32(p01, p23);  // little-endian: the low word of each product comes first
    hi = vuzp2q_u32(p01, p23);
  }
  static V xor3(V a, V b, V c) { return veorq_u32(veorq_u32(a, b), c); }
};

using RoundKeys = PhiloxKeys<NeonLanes>;

// --- sampling epilogue ---------------------------------------------------------

/// Bit l set where lane l of the mask is all ones.
int laneBits(uint32x4_t m) {
  static const uint32_t kBit[4] = {1, 2, 4, 8};
  return static_cast<int>(vaddvq_u32(vandq_u32(m, vld1q_u32(kBit))));
}

struct LaneThresholds {
  float32x4_t t;     // k-th perturbed score (float), -inf while fewer than k
  float32x4_t low;   // t - Gumbel max - margin: below it no noise can reach t
  float32x4_t marg;  // 1e-3 (1 + |t|)
};

LaneThresholds loadThresholds(const double* thresh, int64_t b0, int64_t valid) {
  float tl[4];
  for (int l = 0; l < 4; ++l) tl[l] = l < valid ? static_cast<float>(thresh[b0 + l]) : 0.0f;
  LaneThresholds r;
  r.t = vld1q_f32(tl);
  r.marg = vmulq_n_f32(vaddq_f32(vdupq_n_f32(1.0f), vabsq_f32(r.t)), 1e-3f);
  r.low = vsubq_f32(vsubq_f32(r.t, vdupq_n_f32(kGumbelMax)), r.marg);
  return r;
}

/// Lanes whose noise may lift d above t: G = -log(-log u) <= -log(1 - u), so a
/// lane cannot reach t when 1 - u > exp(d - t + margin); 1 - u is taken rounded
/// down, (~w >> 1) * 2^-31. NaN bounds pass (the exact offer drops NaN).
int boundPass(uint32x4_t w, float32x4_t d, const LaneThresholds& th) {
  const float32x4_t oneMinusU = vmulq_n_f32(vcvtq_f32_u32(vshrq_n_u32(vmvnq_u32(w), 1)), 4.656612873077392578125e-10f);
  const float32x4_t bound = exp4(vaddq_f32(vsubq_f32(d, th.t), th.marg));
  return laneBits(vmvnq_u32(vcgtq_f32(oneMinusU, bound)));
}

void sampleTileNeon(const SampleTile* t) {
  if (t->flushOnly) return;  // no queue on this path
  const int64_t nrows = t->nrows;
  KBest* tk = t->topk;
  RoundKeys rk;
  if (t->mode == 0) makePhiloxKeys(t->key, rk);
  const float32x4_t negInf = vdupq_n_f32(-kInfF);
  for (int64_t h = 0; h < t->qcount; h += 4) {
    const float* sb = t->sb + h;  // these 4 queries of the block
    const int64_t b0 = t->qbase + h;
    const int64_t valid = t->qcount - h < 4 ? t->qcount - h : 4;
    const int validMask = (1 << valid) - 1;
    // Logsumexp partial (padded lanes are computed and ignored): a running max
    // and a float64 sum of exp(s - max); -inf scores add 0, a lane still at
    // -inf keeps its sum.
    float32x4_t m = negInf;
    for (int64_t r = 0; r < nrows; ++r) m = vmaxq_f32(m, vld1q_f32(sb + r * kQueryBlock));
    const float32x4_t oldM = vld1q_f32(t->lseMax + h);
    const float32x4_t newM = vmaxq_f32(oldM, m);
    const uint32x4_t live = vcgtq_f32(newM, negInf);
    const float32x4_t rescale = vbslq_f32(vceqq_f32(oldM, newM), vdupq_n_f32(1.0f), exp4(vsubq_f32(oldM, newM)));
    float32x4_t sum = vdupq_n_f32(0.0f);
    for (int64_t r = 0; r < nrows; ++r) {
      const float32x4_t s = vld1q_f32(sb + r * kQueryBlock);
      const float32x4_t e = exp4(vsubq_f32(s, newM));
      sum = vaddq_f32(sum, vreinterpretq_f32_u32(vandq_u32(vreinterpretq_u32_f32(e), vandq_u32(live, vcgtq_f32(s, negInf)))));
    }
    float64x2_t s0 = vld1q_f64(t->lseSum + h), s1 = vld1q_f64(t->lseSum + h + 2);
    s0 = vfmaq_f64(vcvt_f64_f32(vget_low_f32(sum)), s0, vcvt_f64_f32(vget_low_f32(rescale)));
    s1 = vfmaq_f64(vcvt_high_f64_f32(sum), s1, vcvt_high_f64_f32(rescale));
    vst1q_f64(t->lseSum + h, s0);
    vst1q_f64(t->lseSum + h + 2, s1);
    vst1q_f32(t->lseMax + h, newM);
    if (t->mode == 2) continue;

    // Draws: the float filters pick the lanes, the float64 offers decide.
    LaneThresholds th = loadThresholds(tk->thresh, b0, valid);
    if (t->mode == 1) {
      // MaxScore: s >= float(t) keeps every s whose float64 value is >= t.
      for (int64_t r = 0; r < nrows; ++r) {
        const float32x4_t s = vld1q_f32(sb + r * kQueryBlock);
        // !(s < t): NaN goes to the offer; S = -inf (an excluded row) never does.
        int bits = laneBits(vandq_u32(vmvnq_u32(vcltq_f32(s, th.t)), vcgtq_f32(s, negInf))) & validMask;
        if (bits == 0) continue;
        while (bits) {
          const int l = __builtin_ctz(bits);
          bits &= bits - 1;
          const float sv = sb[r * kQueryBlock + l];
          offerDraw(tk, b0 + l, t->rowIdx[r], sv, static_cast<double>(sv));
        }
        th = loadThresholds(tk->thresh, b0, valid);
      }
      continue;
    }
    const float32x4_t invTemp = vdupq_n_f32(t->invTemp);
    const uint32x4_t rowsV = vaddq_u32(vdupq_n_u32(static_cast<uint32_t>(b0) + t->noiseRow0), uint32x4_t{0, 1, 2, 3});
    uint32_t lastBlock = 0;
    bool haveBlock = false;
    uint32x4_t words[4];
    for (int64_t r = 0; r < nrows; ++r) {
      const float32x4_t s = vld1q_f32(sb + r * kQueryBlock);
      const float32x4_t d = vmulq_f32(s, invTemp);
      // Score filter: d + Gmax + margin < t cannot be drawn (NaN goes to the offer).
      const int pass = laneBits(vandq_u32(vmvnq_u32(vcltq_f32(d, th.low)), vcgtq_f32(s, negInf))) & validMask;
      if (pass == 0) continue;
      const uint32_t j = static_cast<uint32_t>(t->rowIdx[r]);
      if (!haveBlock || (j >> 2) != lastBlock) {
        philoxLanes(vdupq_n_u32(j >> 2), rowsV, rk, words);
        lastBlock = j >> 2;
        haveBlock = true;
      }
      const uint32x4_t w = words[j & 3];
      int bits = pass & boundPass(w, d, th);
      if (bits == 0) continue;
      uint32_t wl[4];
      vst1q_u32(wl, w);
      while (bits) {
        const int l = __builtin_ctz(bits);
        bits &= bits - 1;
        offerGumbel(tk, b0 + l, static_cast<int32_t>(j), sb[r * kQueryBlock + l], t->invTempD, wl[l]);
      }
      th = loadThresholds(tk->thresh, b0, valid);
    }
  }
}

// --- group max epilogue --------------------------------------------------------

void groupMaxTileNeon(const GroupTile* t) {
  const int64_t bpad = t->bpad;
  for (int64_t r = 0; r < t->nrows; ++r) {
    const float* s = t->sb + r * kQueryBlock;
    float* gm = t->gmax + t->rowGroup[r] * bpad;
    int32_t* gi = t->gidx + t->rowGroup[r] * bpad;
    const int32x4_t jv = vdupq_n_s32(t->rowIdx[r]);
    for (int64_t b = 0; b < kQueryBlock; b += 4) {
      const float32x4_t sv = vld1q_f32(s + b);
      const float32x4_t cur = vld1q_f32(gm + b);
      const uint32x4_t gt = vcgtq_f32(sv, cur);  // strictly greater: the first row wins ties
      vst1q_f32(gm + b, vbslq_f32(gt, sv, cur));
      vst1q_s32(gi + b, vbslq_s32(gt, jv, vld1q_s32(gi + b)));
    }
  }
}

void noiseBlocks8Neon(const NoiseKey* key, const uint32_t* rows, const uint32_t* colBlocks, uint32_t* words) {
  RoundKeys rk;
  makePhiloxKeys(*key, rk);
  for (int half = 0; half < 2; ++half) {
    uint32x4_t w[4];
    philoxLanes(vld1q_u32(colBlocks + 4 * half), vld1q_u32(rows + 4 * half), rk, w);
    // Lane-major out: words[4 * l + i] = w[i] lane l (a 4x4 transpose).
    uint32x4x4_t out;
    out.val[0] = w[0];
    out.val[1] = w[1];
    out.val[2] = w[2];
    out.val[3] = w[3];
    vst4q_u32(words + 16 * half, out);
  }
}

const MicroKernel kNeonKernel = {convertRowNeon, gemmBlockNeon, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr};
const Epilogue kNeonEpilogue = {sampleTileNeon, groupMaxTileNeon, noiseBlocks8Neon};

}  // namespace

const MicroKernel* neonMicroKernel() { return &kNeonKernel; }
const Epilogue* neonEpilogue() { return &kNeonEpilogue; }

}  // namespace cpu
}  // namespace nc

#else

namespace nc {
namespace cpu {
const MicroKernel* neonMicroKernel() { return nullptr; }
const Epilogue* neonEpilogue() { return nullptr; }
}  // namespace cpu
}  // namespace nc

#endif
