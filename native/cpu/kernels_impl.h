// Internal interface between the kernel driver (kernels.cc, baseline ISA) and
// the per-ISA tile functions (kernels.cc baseline, kernels_avx2.cc).
//
// Only plain structs and function declarations live here: an inline function
// or template instantiated in an AVX2 translation unit would emit a weak
// symbol the linker may also pick for baseline callers (SIGILL on CPUs
// without AVX2).
#pragma once
#include <cstdint>

namespace nc {
namespace cpu {

/// Rows of cache scored together; a multiple of the AVX2 micro-kernel's 6 rows.
constexpr int64_t kTileRows = 24;
/// Queries are packed in blocks of this many (the micro-kernel's width).
constexpr int64_t kQueryBlock = 16;
/// Largest standard Gumbel value gumbelFromWord can return is
/// -log(-log((2^32 - 0.5) / 2^32)) = 22.87; the filters use this bound.
constexpr float kGumbelMax = 23.0f;

/// Per-thread draw lists: per query up to k entries sorted by (perturbed
/// score descending, index ascending).
struct TopK {
  int64_t k;
  double* p;        // [batch * k] perturbed scores
  int32_t* idx;     // [batch * k] global rows / columns
  float* s;         // [batch * k] scores
  int32_t* count;   // [batch]
  double* thresh;   // [batch] filter threshold: the k-th perturbed score (-inf
                    // while fewer than k), or a larger bound imported from the
                    // other threads' lists
  uint8_t* dirty;   // [batch] set when the list changed; null = not tracked
};

/// Philox key and the call words of the counter (see rng.h).
struct NoiseKey {
  uint32_t k0, k1, c2, c3;
};

/// Sparse (query, column) pairs that passed the score filter, waiting to be
/// handled 8 at a time with one Philox call (AVX2 path). Lives per thread
/// across tiles; flushed when full and at the end of each chunk.
struct PendingDraws {
  // 8 lanes plus room for a row's lanes appended past them (vector stores).
  int32_t j[16];
  int32_t b[16];
  float s[16];
  int32_t n;
};

/// One scored block (tile rows x one block of kQueryBlock queries) handed to
/// the sampling epilogue.
struct SampleTile {
  const float* sb;        // [nrows][kQueryBlock] scores S (scale applied)
  int64_t nrows;
  int64_t qbase, qcount;  // global index of the block's first query; valid queries (<= 16)
  const int32_t* rowIdx;  // global index (noise column) of each tile row
  int32_t mode;           // 0 Gumbel, 1 MaxScore, 2 none (lse only)
  float invTemp;
  double invTempD;
  NoiseKey key;
  float* lseMax;          // [kQueryBlock] running max of the current chunk (this block)
  double* lseSum;         // [kQueryBlock] running sum of exp(S - lseMax)
  TopK* topk;
  PendingDraws* pending;  // per thread
  int32_t flushOnly;      // 1: only flush `pending` (end of a chunk)
};

/// One scored tile handed to the group-max epilogue (topK grouping).
struct GroupTile {
  const float* sb;         // [nrows][kQueryBlock]
  int64_t nrows, bpad;     // bpad: leading dimension of gmax / gidx
  const int32_t* rowIdx;   // global rows, increasing
  const int32_t* rowGroup; // chunk-local group of each row
  float* gmax;             // [groupsInChunk][bpad], offset to this query block
  int32_t* gidx;           // [groupsInChunk][bpad], offset to this query block
};

struct IsaOps {
  /// n values of storage (1 f16, 2 bf16) to float32.
  void (*convertRow)(const void* src, int32_t storage, int64_t n, float* dst);
  /// sb[r][i] = scale * (rows[r] . q_i) for r < nrows, i < 16; qblk is one
  /// block of the query pack, [dim][16].
  void (*gemmBlock)(const float* qblk, int64_t dim, const float* const* rows, int64_t nrows,
                    float scale, float* sb);
  void (*sampleTile)(const SampleTile* t);
  void (*groupMaxTile)(const GroupTile* t);
};

/// The AVX2/FMA/F16C tile functions (kernels_avx2.cc); null when not compiled.
const IsaOps* avx2Ops();

/// Offers a draw to query b's list (exact comparison, ties -> smaller index).
/// Returns the query's new threshold. Baseline-compiled.
double offerDraw(TopK* tk, int64_t b, int32_t j, float s, double p);
/// Exact Gumbel draw: p = invTemp * s + gumbelFromWord(word) in float64, then
/// offerDraw. Baseline-compiled so every path computes the same value.
double offerGumbel(TopK* tk, int64_t b, int32_t j, float s, double invTemp, uint32_t word);
/// Margin (in perturbed-score units) the float filters keep around threshold t.
float filterMargin(double t);

}  // namespace cpu
}  // namespace nc
