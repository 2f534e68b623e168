// The scoring kernels on the device: one streaming pass over the cache rows
// per call, never a batch x N score matrix in global memory.
//
// Tiling. A CTA of 256 threads owns 128 queries and a contiguous chunk of
// 128-row tiles of one segment. Per tile it computes the 128 x 128 block of
// dot products into shared memory (St[row][query], transposed so that the
// epilogue reads it without bank conflicts), then runs the epilogue on it:
// thread (query lq, half h) walks the 64 rows h*64.. of the tile in
// ascending order and keeps, in registers, the running logsumexp state and the
// threshold of its own draw list; the list itself (a binary heap of the k
// best perturbed scores, worst at the root) lives in global scratch and is
// only touched when a row can enter it. A merge kernel combines the
// per-(chunk, half) partial states of each query.
//
// Dot products. float32 and float16 rows, and bfloat16 rows when the query
// split is 0, use a SIMT float32 kernel (fmaf, rows converted exactly).
// bfloat16 rows otherwise use tensor cores (WMMA bf16 16x16x16, float32
// accumulate) with the float32 query split into `splits` bfloat16 terms
// (q = q1 + q2 + q3), so the error of the query rounding is about 2^-8, 2^-16
// or 2^-24 relative for 1, 2 or 3 terms; the rows are exact in bf16.
//
// Noise. rng.h, the same definition as the CPU: Philox4x32-10 on (col/4,
// query row, call) keyed by the seed; the exact float64 Gumbel is only computed for rows that can enter
// the list: g <= 23 for every word, and g = -log(-log u) <= -log(1-u), so a
// row is skipped when invTemp*s + 23 < T or invTemp*s - log(1-u) < T (float
// checks with a margin; T = the list's current k-th best perturbed score).
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <mma.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <mutex>
#include <vector>

#include "../draw.h"
#include "../groups.h"
#include "../half.h"
#include "../exclusions.h"
#include "../rng.h"
#include "cuda_backend.h"
#include "cuda_check.cuh"

namespace nc {
namespace cuda {

namespace {

constexpr int kBQ = 128;       // queries per CTA
constexpr int kBN = 128;       // cache rows per tile
constexpr int kThreads = 256;
constexpr int kSP = kBQ + 4;   // float stride of St rows (multiple of 4 for WMMA stores)
constexpr int kStBytes = kBN * kSP * 4;

enum EpilogueMode : int { kSample = 0, kGroupMax = 1, kMatrix = 2 };

struct TileParams {
  const float* queries;           // [batch][dim] float32 (SIMT path)
  const __nv_bfloat16* qsplit;    // [splits][bpad][dpad] bf16 (tensor path)
  int64_t batch, dim, bpad, dpad;
  const void* rows;               // segment rows (device), numRows x dim
  int64_t numRows;
  const uint8_t* filled;          // device flags or null (= every row is a candidate)
  int64_t colOffset;              // global index of the segment's row 0
  int64_t totalCols;              // N over all segments
  float scale;
  int mode;                       // EpilogueMode
  int64_t tilesPerChunk;
  int64_t chunkBase;              // global chunk index of this segment's chunk 0
  // Per-query exclusions (kSample, kGroupMax; null = none): query q's global
  // rows exclRows[exclOffsets[q] .. exclOffsets[q + 1]), sorted, no repeats.
  const int32_t* exclRows;
  const int32_t* exclOffsets;
  // kSample
  int sampleMode;                 // SampleMode
  float invTempF;
  double invTemp;
  int64_t k;                      // list capacity (0: no draws)
  NoiseKey key;
  int64_t indexBase;              // SampleParams::columnOffset: added to sampled indices (noise column)
  uint32_t noiseRow0;             // SampleParams::rowOffset: noise row of query 0
  Draw* lists;               // [list][k], list = (chunk * 2 + half) * bpad + query
  int32_t* listCount;             // [list]
  float* partMax;                 // [list]
  float* partSum;                 // [list]
  int32_t* partCount;             // [list]
  // kGroupMax
  int64_t groups;
  unsigned long long* groupKeys;  // [batch][groups], 0 = empty
  // kMatrix
  float* matrix;                  // [batch][totalCols]
};

// ---------------------------------------------------------------------------
// Draw lists: binary heaps, worst entry at the root; ties -> smaller row wins.

/// (pa, ja) ranks after (pb, jb) in the lists' total order (draw.h).
__device__ __forceinline__ bool worse(double pa, int32_t ja, double pb, int32_t jb) {
  return drawBefore(pb, jb, pa, ja);
}

__device__ void heapSiftDown(Draw* h, int64_t n, int64_t i, Draw e) {
  for (;;) {
    const int64_t l = 2 * i + 1;
    if (l >= n) break;
    int64_t w = l;
    if (l + 1 < n && worse(h[l + 1].p, h[l + 1].idx, h[l].p, h[l].idx)) w = l + 1;
    if (worse(h[w].p, h[w].idx, e.p, e.idx)) {
      h[i] = h[w];
      i = w;
    } else {
      break;
    }
  }
  h[i] = e;
}

/// Offers an entry; keeps the k best. Updates the count and threshold state.
__device__ void offerDraw(Draw* h, int64_t k, int32_t& count, bool& full, double& thr, double p, int32_t j,
                          float s) {
  const Draw e{p, j, s};
  if (count < k) {
    int64_t i = count++;
    while (i > 0) {
      const int64_t parent = (i - 1) / 2;
      if (worse(e.p, e.idx, h[parent].p, h[parent].idx)) {
        h[i] = h[parent];
        i = parent;
      } else {
        break;
      }
    }
    h[i] = e;
    if (count == k) {
      full = true;
      thr = h[0].p;
    }
  } else if (worse(h[0].p, h[0].idx, p, j)) {
    heapSiftDown(h, k, 0, e);
    thr = h[0].p;
  }
}

/// Sorts a heap of n entries in place, best first.
__device__ void heapSortBestFirst(Draw* h, int64_t n) {
  for (int64_t end = n - 1; end > 0; --end) {
    const Draw worst = h[0];
    const Draw last = h[end];
    h[end] = worst;
    heapSiftDown(h, end, 0, last);
  }
}

// ---------------------------------------------------------------------------
// Orderable keys for the group max: larger key = larger score, then smaller row.

__device__ __forceinline__ unsigned long long groupKey(float s, int64_t j) {
  uint32_t u = __float_as_uint(s);
  u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  return (static_cast<unsigned long long>(u) << 32) | (0xFFFFFFFFull - static_cast<unsigned long long>(j));
}

// ---------------------------------------------------------------------------
// Row types of the SIMT tile: storage element and its exact float32 (half.h).

struct F32Rows {
  using T = float;
  __device__ static float load(float v) { return v; }
};
struct F16Rows {
  using T = uint16_t;
  __device__ static float load(uint16_t v) { return halfToFloat(v); }
};
struct BF16Rows {
  using T = uint16_t;
  __device__ static float load(uint16_t v) { return bfloat16ToFloat(v); }
};

// ---------------------------------------------------------------------------
// Dot-product tile producers. Each leaves St[n][q] = q . row (unscaled) in
// shared memory and ends with a barrier.

/// SIMT float32: each thread computes 8 queries x 8 rows.
template <typename Rows>
struct SimtTile {
  using T = typename Rows::T;
  static constexpr int kBK = 16;
  static constexpr int kSmemBytes = kStBytes > 2 * kBK * kSP * 4 ? kStBytes : 2 * kBK * kSP * 4;

  __device__ static void run(const TileParams& p, int64_t q0, int64_t n0, unsigned char* smem) {
    float* As = reinterpret_cast<float*>(smem);  // [kBK][kSP], queries
    float* Bs = As + kBK * kSP;                  // [kBK][kSP], rows
    const int t = threadIdx.x;
    const int tq = t & 15, tn = t >> 4;
    const T* rows = static_cast<const T*>(p.rows);
    float acc[8][8];
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) acc[i][jj] = 0.0f;

    for (int64_t k0 = 0; k0 < p.dim; k0 += kBK) {
      for (int e = t; e < kBQ * kBK; e += kThreads) {
        const int r = e / kBK, kk = e % kBK;
        const int64_t q = q0 + r, k = k0 + kk;
        As[kk * kSP + r] = (q < p.batch && k < p.dim) ? p.queries[q * p.dim + k] : 0.0f;
        const int64_t n = n0 + r;
        Bs[kk * kSP + r] = (n < p.numRows && k < p.dim) ? Rows::load(rows[n * p.dim + k]) : 0.0f;
      }
      __syncthreads();
#pragma unroll
      for (int kk = 0; kk < kBK; ++kk) {
        float a[8], b[8];
#pragma unroll
        for (int i = 0; i < 8; ++i) a[i] = As[kk * kSP + tq + 16 * i];
#pragma unroll
        for (int jj = 0; jj < 8; ++jj) b[jj] = Bs[kk * kSP + tn + 16 * jj];
#pragma unroll
        for (int i = 0; i < 8; ++i)
#pragma unroll
          for (int jj = 0; jj < 8; ++jj) acc[i][jj] = fmaf(a[i], b[jj], acc[i][jj]);
      }
      __syncthreads();
    }
    float* St = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int i = 0; i < 8; ++i)
#pragma unroll
      for (int jj = 0; jj < 8; ++jj) St[(tn + 16 * jj) * kSP + tq + 16 * i] = acc[i][jj];
    __syncthreads();
  }
};

__device__ __forceinline__ void cpAsync16(void* smemPtr, const void* gmem, int srcBytes) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smemPtr));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(srcBytes));
}
__device__ __forceinline__ void cpAsyncCommit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cpAsyncWait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

/// Tensor cores: bf16 rows x `Splits` bf16 query terms, float32 accumulate.
/// 8 warps as 2 (queries) x 4 (rows); a warp owns 64 queries x 32 rows.
template <int Splits>
struct MmaTile {
  static constexpr int kBK = 32;
  static constexpr int kLd = kBK + 8;  // bf16 elements per staged row (80 bytes: ldmatrix without conflicts)
  static constexpr int kStages = Splits >= 3 ? 2 : 3;
  static constexpr int kStageElems = (Splits + 1) * kBQ * kLd;  // Splits query tiles + 1 row tile
  static constexpr int kStagingBytes = kStages * kStageElems * 2;
  static constexpr int kSmemBytes = kStBytes > kStagingBytes ? kStBytes : kStagingBytes;

  __device__ static void load(const TileParams& p, int64_t q0, int64_t n0, int64_t k0, __nv_bfloat16* stage) {
    const int t = threadIdx.x;
    const __nv_bfloat16* rows = static_cast<const __nv_bfloat16*>(p.rows);
    // Query terms: always in bounds (padded to bpad x dpad with zeros).
#pragma unroll
    for (int s = 0; s < Splits; ++s) {
      for (int e = t; e < kBQ * 4; e += kThreads) {
        const int r = e >> 2, c = e & 3;
        const __nv_bfloat16* src = p.qsplit + (static_cast<int64_t>(s) * p.bpad + q0 + r) * p.dpad + k0 + c * 8;
        cpAsync16(stage + (s * kBQ + r) * kLd + c * 8, src, 16);
      }
    }
    // Rows: zero-filled past the segment end and past dim (dim % 8 == 0 here).
    for (int e = t; e < kBN * 4; e += kThreads) {
      const int r = e >> 2, c = e & 3;
      const int64_t n = n0 + r, k = k0 + c * 8;
      const int64_t valid = (n < p.numRows) ? max(int64_t{0}, min(int64_t{8}, p.dim - k)) : 0;
      const __nv_bfloat16* src = valid > 0 ? rows + n * p.dim + k : rows;
      cpAsync16(stage + (Splits * kBQ + r) * kLd + c * 8, src, static_cast<int>(valid * 2));
    }
  }

  __device__ static void run(const TileParams& p, int64_t q0, int64_t n0, unsigned char* smem) {
    using namespace nvcuda;
    __nv_bfloat16* staging = reinterpret_cast<__nv_bfloat16*>(smem);
    const int warp = threadIdx.x >> 5;
    const int wq = warp & 1, wn = warp >> 1;
    wmma::fragment<wmma::accumulator, 16, 16, 16, float> acc[4][2];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j) wmma::fill_fragment(acc[i][j], 0.0f);

    const int64_t kTiles = p.dpad / kBK;
#pragma unroll
    for (int s = 0; s < kStages - 1; ++s) {
      if (s < kTiles) load(p, q0, n0, s * kBK, staging + s * kStageElems);
      cpAsyncCommit();
    }
    for (int64_t kt = 0; kt < kTiles; ++kt) {
      cpAsyncWait<kStages - 2>();
      __syncthreads();
      const int64_t next = kt + kStages - 1;
      if (next < kTiles) load(p, q0, n0, next * kBK, staging + (next % kStages) * kStageElems);
      cpAsyncCommit();
      const __nv_bfloat16* stage = staging + (kt % kStages) * kStageElems;
      const __nv_bfloat16* Bs = stage + Splits * kBQ * kLd;
#pragma unroll
      for (int kk = 0; kk < kBK; kk += 16) {
        wmma::fragment<wmma::matrix_b, 16, 16, 16, __nv_bfloat16, wmma::col_major> b[2];
#pragma unroll
        for (int j = 0; j < 2; ++j) wmma::load_matrix_sync(b[j], Bs + (wn * 32 + j * 16) * kLd + kk, kLd);
        // Smallest query term first: a little less rounding in the sum.
#pragma unroll
        for (int s = Splits - 1; s >= 0; --s) {
          const __nv_bfloat16* As = stage + s * kBQ * kLd;
#pragma unroll
          for (int i = 0; i < 4; ++i) {
            wmma::fragment<wmma::matrix_a, 16, 16, 16, __nv_bfloat16, wmma::row_major> a;
            wmma::load_matrix_sync(a, As + (wq * 64 + i * 16) * kLd + kk, kLd);
#pragma unroll
            for (int j = 0; j < 2; ++j) wmma::mma_sync(acc[i][j], a, b[j], acc[i][j]);
          }
        }
      }
    }
    cpAsyncWait<0>();
    __syncthreads();  // staging is reused as St below
    float* St = reinterpret_cast<float*>(smem);
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
      for (int j = 0; j < 2; ++j)
        wmma::store_matrix_sync(St + (wn * 32 + j * 16) * kSP + wq * 64 + i * 16, acc[i][j], kSP,
                                wmma::mem_col_major);
    __syncthreads();
  }
};

// ---------------------------------------------------------------------------
// The fused pass: tile producer + epilogue.

template <class Tile>
__global__ void __launch_bounds__(kThreads, 2) scoreTilesKernel(const TileParams p) {
  extern __shared__ __align__(128) unsigned char smem[];
  __shared__ uint8_t candidate[kBN];

  const int64_t q0 = static_cast<int64_t>(blockIdx.x) * kBQ;
  const int64_t chunk = blockIdx.y;
  const int64_t numTiles = (p.numRows + kBN - 1) / kBN;
  const int64_t tileBegin = chunk * p.tilesPerChunk;
  const int64_t tileEnd = min(numTiles, tileBegin + p.tilesPerChunk);

  const int lq = threadIdx.x & (kBQ - 1);
  const int half = threadIdx.x / kBQ;
  const int64_t q = q0 + lq;
  const bool active = q < p.batch;
  const int64_t list = ((p.chunkBase + chunk) * 2 + half) * p.bpad + q;

  // Sample state.
  float lseMax = -INFINITY, lseSum = 0.0f;
  int32_t cand = 0, count = 0;
  bool full = false;
  double thr = -INFINITY;
  Draw* heap = (p.mode == kSample && p.k > 0) ? p.lists + list * p.k : nullptr;
  int64_t noiseGroup = -1;
  Philox4x32 words{};

  // Exclusions: a cursor into this query's sorted rows, following the
  // thread's rows (increasing: tiles in order, columns in order).
  int32_t exCur = 0, exEnd = 0;
  int64_t exNext = INT64_MAX;
  if (p.exclOffsets != nullptr && active && p.mode != kMatrix) {
    exCur = p.exclOffsets[q];
    exEnd = p.exclOffsets[q + 1];
    const int64_t j0 = p.colOffset + tileBegin * kBN + half * (kBN / 2);
    int32_t lo = exCur, hi = exEnd;
    while (lo < hi) {
      const int32_t mid = lo + (hi - lo) / 2;
      if (p.exclRows[mid] < j0) lo = mid + 1;
      else hi = mid;
    }
    exCur = lo;
    if (exCur < exEnd) exNext = p.exclRows[exCur];
  }
  auto excluded = [&](int64_t j) -> bool {
    if (j < exNext) return false;
    while (exCur < exEnd && p.exclRows[exCur] < j) ++exCur;
    exNext = exCur < exEnd ? p.exclRows[exCur] : INT64_MAX;
    return exNext == j;
  };

  for (int64_t tile = tileBegin; tile < tileEnd; ++tile) {
    const int64_t n0 = tile * kBN;
    __syncthreads();  // the previous epilogue is done with St
    if (threadIdx.x < kBN) {
      const int64_t n = n0 + threadIdx.x;
      candidate[threadIdx.x] = (n < p.numRows && (p.filled == nullptr || p.filled[n] != 0)) ? 1 : 0;
    }
    Tile::run(p, q0, n0, smem);
    const float* St = reinterpret_cast<const float*>(smem);

    if (p.mode == kMatrix) {
      for (int e = threadIdx.x; e < kBQ * kBN; e += kThreads) {
        const int qq = e / kBN, c = e % kBN;
        const int64_t qi = q0 + qq, n = n0 + c;
        if (qi < p.batch && n < p.numRows) p.matrix[qi * p.totalCols + p.colOffset + n] = p.scale * St[c * kSP + qq];
      }
      continue;
    }
    if (!active) continue;
    const int cBegin = half * (kBN / 2), cEnd = cBegin + kBN / 2;

    if (p.mode == kGroupMax) {
      int64_t g = -1, nextStart = 0;
      unsigned long long best = 0;
      for (int c = cBegin; c < cEnd; ++c) {
        if (!candidate[c]) continue;
        const int64_t j = p.colOffset + n0 + c;
        if (excluded(j)) continue;
        if (g < 0 || j >= nextStart) {
          if (best) atomicMax(p.groupKeys + q * p.groups + g, best);
          g = groupOf(j, p.totalCols, p.groups);
          nextStart = groupStart(g + 1, p.totalCols, p.groups);
          best = 0;
        }
        const unsigned long long key = groupKey(p.scale * St[c * kSP + lq], j);
        if (key > best) best = key;
      }
      if (best) atomicMax(p.groupKeys + q * p.groups + g, best);
      continue;
    }

    // kSample
    for (int c = cBegin; c < cEnd; ++c) {
      if (!candidate[c]) continue;
      const int64_t jl = p.colOffset + n0 + c;  // the request's row: what exclusions name
      if (excluded(jl)) continue;
      const float s = p.scale * St[c * kSP + lq];
      const int64_t j = p.indexBase + jl;
      ++cand;
      if (s > lseMax) {
        lseSum = (lseMax == -INFINITY ? 0.0f : lseSum * __expf(lseMax - s)) + 1.0f;
        lseMax = s;
      } else {
        lseSum += __expf(s - lseMax);
      }
      if (heap == nullptr) continue;
      if (p.sampleMode == static_cast<int>(SampleMode::MaxScore)) {
        const double ps = static_cast<double>(s);
        if (full && ps < thr) continue;
        offerDraw(heap, p.k, count, full, thr, ps, static_cast<int32_t>(j), s);
        continue;
      }
      // Gumbel: cheap float filters first (with a margin), exact float64 last.
      const float v = p.invTempF * s;
      const float thrF = full ? static_cast<float>(thr) - (1e-3f + 1e-5f * fabsf(static_cast<float>(thr))) : -INFINITY;
      const float slack = 1e-6f * fabsf(v);
      if (full && v + kGumbelMax + slack < thrF) continue;
      if ((j >> 2) != noiseGroup) {
        noiseGroup = j >> 2;
        words = noiseBlock(p.key, static_cast<uint32_t>(q) + p.noiseRow0, static_cast<uint32_t>(noiseGroup));
      }
      const int lane = static_cast<int>(j & 3);
      // Constant indices keep `words` in registers.
      const uint32_t word = lane == 0 ? words.v[0] : lane == 1 ? words.v[1] : lane == 2 ? words.v[2] : words.v[3];
      if (full) {
        const float oneMinusU = (static_cast<float>(0xFFFFFFFFu - word) + 0.5f) * 2.3283064365386963e-10f;
        if (v - __logf(oneMinusU) + slack < thrF) continue;
      }
      const double pp = p.invTemp * static_cast<double>(s) + gumbelFromWord(word);
      offerDraw(heap, p.k, count, full, thr, pp, static_cast<int32_t>(j), s);
    }
  }

  if (p.mode == kSample && active) {
    p.partMax[list] = lseMax;
    p.partSum[list] = lseSum;
    p.partCount[list] = cand;
    p.listCount[list] = count;
    if (heap != nullptr) heapSortBestFirst(heap, count);
  }
}

/// Splits float32 queries into `splits` bf16 terms, padded to bpad x dpad.
__global__ void splitQueriesKernel(const float* __restrict__ q, int64_t batch, int64_t dim, int64_t bpad, int64_t dpad,
                                   int splits, __nv_bfloat16* __restrict__ out) {
  const int64_t total = bpad * dpad;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = e / dpad, k = e - b * dpad;
    float r = (b < batch && k < dim) ? q[b * dim + k] : 0.0f;
    for (int s = 0; s < splits; ++s) {
      const uint16_t h = floatToBFloat16(r);
      out[s * total + e] = __ushort_as_bfloat16(h);
      r -= bfloat16ToFloat(h);
    }
  }
}

/// One warp per query: combines the partial logsumexp states and merges the
/// sorted draw lists (best first) into the first k draws.
__global__ void mergeSampleKernel(const TileParams p, int64_t numLists, int64_t draws, int32_t* __restrict__ cursors,
                                  int32_t* __restrict__ outIdx, float* __restrict__ outScore,
                                  float* __restrict__ outLse, int64_t* __restrict__ outCount) {
  const int lane = threadIdx.x & 31;
  const int64_t q = static_cast<int64_t>(blockIdx.x) * (blockDim.x / 32) + (threadIdx.x >> 5);
  if (q >= p.batch) return;
  auto listOf = [&](int64_t l) { return l * p.bpad + q; };  // l = chunk * 2 + half

  double m = -INFINITY;
  for (int64_t l = lane; l < numLists; l += 32)
    if (p.partCount[listOf(l)] > 0) m = fmax(m, static_cast<double>(p.partMax[listOf(l)]));
  for (int o = 16; o > 0; o >>= 1) m = fmax(m, __shfl_xor_sync(0xffffffffu, m, o));
  double sum = 0.0;
  long long cnt = 0;
  for (int64_t l = lane; l < numLists; l += 32) {
    const int64_t id = listOf(l);
    if (p.partCount[id] > 0) {
      sum += static_cast<double>(p.partSum[id]) * exp(static_cast<double>(p.partMax[id]) - m);
      cnt += p.partCount[id];
    }
    cursors[q * numLists + l] = 0;
  }
  for (int o = 16; o > 0; o >>= 1) {
    sum += __shfl_xor_sync(0xffffffffu, sum, o);
    cnt += __shfl_xor_sync(0xffffffffu, cnt, o);
  }
  if (lane == 0) {
    outLse[q] = cnt > 0 ? static_cast<float>(m + log(sum)) : -INFINITY;
    if (outCount) outCount[q] = cnt;
  }
  __syncwarp();

  for (int64_t r = 0; r < draws; ++r) {
    double bp = -INFINITY;
    int32_t bj = -1;
    float bs = NAN;
    int64_t bl = -1;
    if (p.k > 0) {
      for (int64_t l = lane; l < numLists; l += 32) {
        const int64_t id = listOf(l);
        const int32_t c = cursors[q * numLists + l];
        if (c >= p.listCount[id]) continue;
        const Draw e = p.lists[id * p.k + c];
        if (bl < 0 || worse(bp, bj, e.p, e.idx)) {
          bp = e.p;
          bj = e.idx;
          bs = e.s;
          bl = l;
        }
      }
    }
    for (int o = 16; o > 0; o >>= 1) {
      const double op = __shfl_xor_sync(0xffffffffu, bp, o);
      const int32_t oj = __shfl_xor_sync(0xffffffffu, bj, o);
      const float os = __shfl_xor_sync(0xffffffffu, bs, o);
      const long long ol = __shfl_xor_sync(0xffffffffu, static_cast<long long>(bl), o);
      if (ol >= 0 && (bl < 0 || worse(bp, bj, op, oj))) {
        bp = op;
        bj = oj;
        bs = os;
        bl = ol;
      }
    }
    if (lane == 0) {
      outIdx[q * draws + r] = bl >= 0 ? bj : -1;
      outScore[q * draws + r] = bl >= 0 ? bs : NAN;
    }
    if (bl >= 0 && lane == static_cast<int>(bl % 32)) cursors[q * numLists + bl] += 1;
    __syncwarp();
  }
}

__global__ void finishGroupMaxKernel(const unsigned long long* __restrict__ keys, int64_t count,
                                     float* __restrict__ scores, int32_t* __restrict__ rows) {
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < count;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const unsigned long long key = keys[e];
    if (key == 0) {
      scores[e] = -INFINITY;
      rows[e] = -1;
      continue;
    }
    uint32_t u = static_cast<uint32_t>(key >> 32);
    u = (u & 0x80000000u) ? (u & 0x7FFFFFFFu) : ~u;
    scores[e] = __uint_as_float(u);
    rows[e] = static_cast<int32_t>(0xFFFFFFFFull - (key & 0xFFFFFFFFull));
  }
}

// ---------------------------------------------------------------------------
// Host side.

using KernelFn = void (*)(const TileParams);

struct KernelChoice {
  KernelFn fn;
  int smemBytes;
  bool tensor;
};

KernelChoice chooseKernel(DType storage, int64_t dim, int splits) {
  switch (storage) {
    case DType::Float32:
      return {scoreTilesKernel<SimtTile<F32Rows>>, SimtTile<F32Rows>::kSmemBytes, false};
    case DType::Float16:
      return {scoreTilesKernel<SimtTile<F16Rows>>, SimtTile<F16Rows>::kSmemBytes, false};
    case DType::BFloat16:
      if (splits == 0 || dim % 8 != 0)
        return {scoreTilesKernel<SimtTile<BF16Rows>>, SimtTile<BF16Rows>::kSmemBytes, false};
      if (splits == 1) return {scoreTilesKernel<MmaTile<1>>, MmaTile<1>::kSmemBytes, true};
      if (splits == 2) return {scoreTilesKernel<MmaTile<2>>, MmaTile<2>::kSmemBytes, true};
      return {scoreTilesKernel<MmaTile<3>>, MmaTile<3>::kSmemBytes, true};
    default:
      throw Error("ERR_ARGUMENT", "CUDA kernels: segments must be float32, float16 or bfloat16 rows");
  }
}

int multiProcessors() {
  int device = 0, sms = 0;
  NC_CUDA_CHECK(cudaGetDevice(&device));
  NC_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  return sms;
}

/// Work split of one segment: chunks of tiles, enough CTAs for one full wave.
struct SegmentPlan {
  KernelChoice kernel;
  int64_t tiles = 0, tilesPerChunk = 1, chunks = 0, chunkBase = 0, colOffset = 0;
};

/// Scratch reused between calls (one call at a time).
struct Workspace {
  std::mutex mutex;
  DeviceBuffer<float> queries;
  DeviceBuffer<__nv_bfloat16> qsplit;
  DeviceBuffer<Draw> lists;
  DeviceBuffer<int32_t> listCount, partCount, cursors, outIdx;
  DeviceBuffer<float> partMax, partSum, outScore, outLse;
  DeviceBuffer<int64_t> outCount;
  DeviceBuffer<unsigned long long> groupKeys;
  DeviceBuffer<float> matrix;
  DeviceBuffer<int32_t> exclRows, exclOffsets;
};

Workspace& workspace() {
  static Workspace* w = new Workspace();  // never destroyed: outlives static destruction order
  return *w;
}

/// Uploads the (checked) request's queries and plans every segment.
std::vector<SegmentPlan> prepare(const ScoreRequest& req, Workspace& ws, TileParams& p, int64_t listEntries) {
  requireDevice();
  int64_t total = 0;
  for (const Segment& s : req.segments) total += s.rows;
  const int splits = querySplits();
  p = TileParams{};
  p.batch = req.batch;
  p.dim = req.dim;
  p.bpad = (req.batch + kBQ - 1) / kBQ * kBQ;
  p.dpad = (req.dim + 31) / 32 * 32;
  p.totalCols = total;
  p.scale = req.scale;

  const size_t qCount = static_cast<size_t>(req.batch * req.dim);
  ws.queries.reserve(std::max<size_t>(qCount, 1));
  if (qCount > 0)
    NC_CUDA_CHECK(cudaMemcpy(ws.queries.get(), req.queries, qCount * 4, cudaMemcpyHostToDevice));
  p.queries = ws.queries.get();

  const int sms = multiProcessors();
  const int64_t qBlocks = std::max<int64_t>(1, p.bpad / kBQ);
  std::vector<SegmentPlan> plans;
  bool anyTensor = false;
  int64_t chunkBase = 0, colOffset = 0;
  for (const Segment& s : req.segments) {
    SegmentPlan plan;
    plan.kernel = chooseKernel(s.storage, req.dim, splits);
    plan.colOffset = colOffset;
    colOffset += s.rows;
    plan.tiles = (s.rows + kBN - 1) / kBN;
    if (plan.tiles > 0) {
      NC_CUDA_CHECK(cudaFuncSetAttribute(plan.kernel.fn, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                         plan.kernel.smemBytes));
      int perSm = 0;
      NC_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, plan.kernel.fn, kThreads,
                                                                  plan.kernel.smemBytes));
      int64_t chunks = (static_cast<int64_t>(std::max(1, perSm)) * sms + qBlocks - 1) / qBlocks;
      // Keep the draw lists within ~256 MiB.
      if (listEntries > 0) {
        const int64_t perChunk = 2 * p.bpad * listEntries * static_cast<int64_t>(sizeof(Draw));
        chunks = std::min<int64_t>(chunks, std::max<int64_t>(1, (int64_t{256} << 20) / perChunk));
      }
      chunks = std::max<int64_t>(1, std::min<int64_t>(chunks, plan.tiles));
      plan.tilesPerChunk = (plan.tiles + chunks - 1) / chunks;
      plan.chunks = (plan.tiles + plan.tilesPerChunk - 1) / plan.tilesPerChunk;
      NC_CHECK(plan.chunks <= 65535, "ERR_ARGUMENT", "CUDA kernels: too many chunks");
    }
    plan.chunkBase = chunkBase;
    chunkBase += plan.chunks;
    anyTensor = anyTensor || (plan.kernel.tensor && plan.tiles > 0);
    plans.push_back(plan);
  }
  if (anyTensor) {
    const size_t n = static_cast<size_t>(splits) * static_cast<size_t>(p.bpad * p.dpad);
    ws.qsplit.reserve(n);
    splitQueriesKernel<<<gridFor(p.bpad * p.dpad), 256>>>(ws.queries.get(), req.batch, req.dim, p.bpad, p.dpad,
                                                          splits, ws.qsplit.get());
    NC_CUDA_CHECK_LAUNCH();
    p.qsplit = ws.qsplit.get();
  }
  return plans;
}

/// Uploads the request's exclusions, normalized (exclusions.h), into p.
void uploadExclusions(const ScoreRequest& req, Workspace& ws, TileParams& p) {
  p.exclRows = nullptr;
  p.exclOffsets = nullptr;
  Exclusions ex;
  ex.build(req);
  if (ex.empty()) return;
  ws.exclRows.reserve(ex.rows.size());
  ws.exclOffsets.reserve(ex.offsets.size());
  NC_CUDA_CHECK(cudaMemcpy(ws.exclRows.get(), ex.rows.data(), ex.rows.size() * 4, cudaMemcpyHostToDevice));
  NC_CUDA_CHECK(
      cudaMemcpy(ws.exclOffsets.get(), ex.offsets.data(), ex.offsets.size() * 4, cudaMemcpyHostToDevice));
  p.exclRows = ws.exclRows.get();
  p.exclOffsets = ws.exclOffsets.get();
}

void launchSegments(const ScoreRequest& req, const std::vector<SegmentPlan>& plans, TileParams p) {
  const unsigned qBlocks = static_cast<unsigned>(std::max<int64_t>(1, p.bpad / kBQ));
  for (size_t i = 0; i < plans.size(); ++i) {
    const SegmentPlan& plan = plans[i];
    if (plan.tiles == 0) continue;
    const Segment& s = req.segments[i];
    p.rows = s.data;
    p.numRows = s.rows;
    p.filled = req.scoreEmptyRows ? nullptr : s.filled;
    p.colOffset = plan.colOffset;
    p.tilesPerChunk = plan.tilesPerChunk;
    p.chunkBase = plan.chunkBase;
    const dim3 grid(qBlocks, static_cast<unsigned>(plan.chunks));
    plan.kernel.fn<<<grid, kThreads, plan.kernel.smemBytes>>>(p);
    NC_CUDA_CHECK_LAUNCH();
  }
}

int64_t totalChunks(const std::vector<SegmentPlan>& plans) {
  int64_t n = 0;
  for (const SegmentPlan& s : plans) n += s.chunks;
  return n;
}

class CudaBackend final : public Backend {
 public:
  const char* name() const override { return "cuda"; }
  std::unique_ptr<CacheStore> createStore(std::vector<ColumnSpec> columns, int64_t size) const override {
    return createCudaStore(std::move(columns), size);
  }

 protected:
  void runScoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const override;
  void runScoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores,
                        int32_t* groupRows) const override;
  /// The candidate matrix is a small host matrix (batch x groups): sampled on
  /// the host with the CPU kernel, so results are identical to the CPU backend.
  void runSampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params, int threads,
                           SampleOutput& out) const override {
    cpuBackend().sampleCandidates(scores, batch, cols, params, threads, out);
  }
  void runScoreMatrix(const ScoreRequest& req, float* out) const override;
};

}  // namespace

const Backend& cudaBackend() {
  static const CudaBackend backend;
  return backend;
}

void CudaBackend::runScoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) const {
  Workspace& ws = workspace();
  std::lock_guard<std::mutex> lock(ws.mutex);
  const int64_t k = params.mode == SampleMode::None ? 0 : params.numDraws;
  TileParams p;
  const std::vector<SegmentPlan> plans = prepare(req, ws, p, k);
  if (req.batch == 0) return;
  uploadExclusions(req, ws, p);
  const int64_t draws = params.numDraws;
  const int64_t chunks = totalChunks(plans);
  const int64_t numLists = 2 * chunks;
  const size_t lists = static_cast<size_t>(numLists * p.bpad);
  p.mode = kSample;
  p.sampleMode = static_cast<int>(params.mode);
  p.invTemp = params.invTemp;
  p.invTempF = static_cast<float>(params.invTemp);
  p.k = k;
  p.key = noiseKey(params.seed, params.call);
  p.indexBase = params.columnOffset;
  p.noiseRow0 = static_cast<uint32_t>(params.rowOffset);
  ws.listCount.reserve(std::max<size_t>(lists, 1));
  ws.partCount.reserve(std::max<size_t>(lists, 1));
  ws.partMax.reserve(std::max<size_t>(lists, 1));
  ws.partSum.reserve(std::max<size_t>(lists, 1));
  if (k > 0) ws.lists.reserve(std::max<size_t>(lists * static_cast<size_t>(k), 1));
  ws.cursors.reserve(std::max<size_t>(static_cast<size_t>(req.batch * numLists), 1));
  ws.outIdx.reserve(std::max<size_t>(static_cast<size_t>(req.batch * draws), 1));
  ws.outScore.reserve(std::max<size_t>(static_cast<size_t>(req.batch * draws), 1));
  ws.outLse.reserve(static_cast<size_t>(req.batch));
  ws.outCount.reserve(static_cast<size_t>(req.batch));
  p.lists = k > 0 ? ws.lists.get() : nullptr;
  p.listCount = ws.listCount.get();
  p.partCount = ws.partCount.get();
  p.partMax = ws.partMax.get();
  p.partSum = ws.partSum.get();
  if (lists > 0) NC_CUDA_CHECK(cudaMemset(ws.partCount.get(), 0, lists * 4));  // segments with no tiles
  if (lists > 0) NC_CUDA_CHECK(cudaMemset(ws.listCount.get(), 0, lists * 4));
  launchSegments(req, plans, p);
  mergeSampleKernel<<<static_cast<unsigned>((req.batch + 3) / 4), 128>>>(
      p, numLists, draws, ws.cursors.get(), ws.outIdx.get(), ws.outScore.get(), ws.outLse.get(), ws.outCount.get());
  NC_CUDA_CHECK_LAUNCH();
  if (draws > 0) {
    NC_CUDA_CHECK(cudaMemcpy(out.indices, ws.outIdx.get(), static_cast<size_t>(req.batch * draws) * 4,
                             cudaMemcpyDeviceToHost));
    NC_CUDA_CHECK(cudaMemcpy(out.scores, ws.outScore.get(), static_cast<size_t>(req.batch * draws) * 4,
                             cudaMemcpyDeviceToHost));
  }
  NC_CUDA_CHECK(cudaMemcpy(out.lse, ws.outLse.get(), static_cast<size_t>(req.batch) * 4, cudaMemcpyDeviceToHost));
  if (out.candidates)
    NC_CUDA_CHECK(cudaMemcpy(out.candidates, ws.outCount.get(), static_cast<size_t>(req.batch) * 8,
                             cudaMemcpyDeviceToHost));
}

void CudaBackend::runScoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores,
                                   int32_t* groupRows) const {
  Workspace& ws = workspace();
  std::lock_guard<std::mutex> lock(ws.mutex);
  TileParams p;
  const std::vector<SegmentPlan> plans = prepare(req, ws, p, 0);
  if (req.batch == 0) return;
  uploadExclusions(req, ws, p);
  const size_t count = static_cast<size_t>(req.batch * groups);
  ws.groupKeys.reserve(count);
  ws.outScore.reserve(count);
  ws.outIdx.reserve(count);
  NC_CUDA_CHECK(cudaMemset(ws.groupKeys.get(), 0, count * sizeof(unsigned long long)));
  p.mode = kGroupMax;
  p.groups = groups;
  p.groupKeys = ws.groupKeys.get();
  launchSegments(req, plans, p);
  finishGroupMaxKernel<<<gridFor(static_cast<int64_t>(count)), 256>>>(ws.groupKeys.get(), static_cast<int64_t>(count),
                                                                      ws.outScore.get(), ws.outIdx.get());
  NC_CUDA_CHECK_LAUNCH();
  NC_CUDA_CHECK(cudaMemcpy(groupScores, ws.outScore.get(), count * 4, cudaMemcpyDeviceToHost));
  NC_CUDA_CHECK(cudaMemcpy(groupRows, ws.outIdx.get(), count * 4, cudaMemcpyDeviceToHost));
}

void CudaBackend::runScoreMatrix(const ScoreRequest& req, float* out) const {
  Workspace& ws = workspace();
  std::lock_guard<std::mutex> lock(ws.mutex);
  TileParams p;
  const std::vector<SegmentPlan> plans = prepare(req, ws, p, 0);
  const size_t count = static_cast<size_t>(req.batch * p.totalCols);
  if (count == 0) return;
  ws.matrix.reserve(count);
  p.mode = kMatrix;
  p.matrix = ws.matrix.get();
  launchSegments(req, plans, p);
  NC_CUDA_CHECK(cudaMemcpy(out, ws.matrix.get(), count * 4, cudaMemcpyDeviceToHost));
}

}  // namespace cuda
}  // namespace nc
