// The seam between the CPU tiling driver (driver.h, baseline ISA) and the ISA
// tiers. A tier is a micro-kernel (row conversion + one score block) and
// epilogues (what consumes a score block), each in its own object file
// compiled for its ISA (tier_baseline.cc, tier_avx2.cc, tier_avx512.cc and
// tier_amx.cc on x86-64, tier_neon.cc on aarch64; an SVE tier would plug in
// the same way) and chosen by one dispatch table (dispatch.cc). See docs/kernels.md "ISA tiers".
//
// Only plain structs and function declarations live here: an inline function
// or template instantiated in an ISA translation unit would emit a weak
// symbol the linker may also pick for baseline callers (SIGILL on CPUs
// without that ISA).
#pragma once
#include <cstdint>

#include "kbest.h"
#include "rng.h"

namespace nc {
namespace cpu {

/// Rows of cache scored together; a multiple of the AVX2 micro-kernel's 6 rows.
constexpr int64_t kTileRows = 24;
/// Queries are packed in blocks of this many (the micro-kernels' width).
constexpr int64_t kQueryBlock = 16;
/// Most query blocks a micro-kernel's gemmBlocks scores in one pass over a
/// tile's rows (the score scratch holds this many blocks).
constexpr int64_t kMaxGemmBlocks = 4;

/// Sparse (query, column) pairs that passed the score filter, waiting to be
/// handled 8 at a time with one Philox call (AVX2 epilogue). Lives per thread
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
  uint32_t noiseRow0;     // noise row of query 0 (SampleParams::rowOffset)
  int32_t mode;           // 0 Gumbel, 1 MaxScore, 2 none (lse only)
  float invTemp;
  double invTempD;
  NoiseKey key;
  float* lseMax;          // [kQueryBlock] running max of the current chunk (this block)
  double* lseSum;         // [kQueryBlock] running sum of exp(S - lseMax)
  KBest* topk;            // per thread; lists indexed by global query
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

/// One scored block handed to the weighted-sum epilogue of the full-cache
/// log-sum-exp (lse_grad.cc), after sampleTile (mode none) has updated the
/// block's lse partials from oldMax to newMax: for each valid query i,
///   acc_i = acc_i * exp(oldMax[i] - newMax[i]) + sum_r exp(sb[r][i] - newMax[i]) * rows[r]
/// where terms with a weight below kLseGradSkip may be left out (see there).
struct LseGradTile {
  const float* sb;            // [nrows][kQueryBlock] scores S
  int64_t nrows, qcount, dim;
  const float* const* rows;   // nrows pointers to dim float32 values (the tile rows)
  const float* oldMax;        // [kQueryBlock] the chunk's running max before this block
  const float* newMax;        // [kQueryBlock] ... and after it
  float* acc;                 // [qcount][dim] the chunk's weighted sums of these queries
};

/// Weights exp(S - running max) below this are left out of the weighted sum:
/// the running max is at most the final one and every chunk's sum of weights
/// is at least 1, so a chunk (at most 8192 rows) drops less than 2^-27 of its
/// weight, below the float32 rounding of the sums (docs/kernels.md).
constexpr float kLseGradSkip = 9.094947017729282e-13f;  // 2^-40

/// The micro-kernel of a tier.
struct MicroKernel {
  /// n values of storage (1 f16, 2 bf16) to float32.
  void (*convertRow)(const void* src, int32_t storage, int64_t n, float* dst);
  /// sb[r][i] = scale * (rows[r] . q_i) for r < nrows, i < 16; qblk is one
  /// block of the query pack, [dim][16].
  void (*gemmBlock)(const float* qblk, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                    float* sb);
  /// Optional (null = gemmBlock per block): scores nblk (1..kMaxGemmBlocks)
  /// consecutive blocks of the query pack, starting at qblk, in one pass over
  /// the rows; block i goes to sb + i * kTileRows * kQueryBlock. Same values
  /// as gemmBlock (fewer loads per multiply-add: each row broadcast serves
  /// nblk blocks).
  void (*gemmBlocks)(const float* qblk, int64_t nblk, int64_t dim, const float* const* rows, int64_t nrows,
                     float scale, float* sb);
  /// The tier's peak probe: `iters` rounds of independent multiply-adds in
  /// the tier's widest float32 unit, returning the floating-point operations
  /// done (bench: the machine's own peak per tier). Null = no probe.
  double (*peakLoop)(int64_t iters);
  /// Optional (null = none; the AMX tier): scores bfloat16 rows as they are
  /// stored, against the query packs split into bfloat16 hi and lo parts
  /// (Prepared::qhi / qlo, each [bpad/16][kpad/2][16][2]). rows holds nrows
  /// (<= kTileRows) rows of kpad (a multiple of 32) bfloat16 values each,
  /// zero past dim, rowBytes apart (64-byte aligned for speed: misaligned
  /// tile loads are 2.5x slower); qhi / qlo point at the first of nblk
  /// (1..kMaxGemmBlocks) consecutive blocks, and block i's scores (scale
  /// applied) go to sb + i * kTileRows * kQueryBlock, as gemmBlocks.
  /// rowsLo: null, or (float16 rows split by splitRowF16) the rows' low
  /// parts, laid out as rows; the scores then add rowsLo . hi.
  void (*gemmBlocksBf16)(const uint16_t* qhi, const uint16_t* qlo, int64_t nblk, int64_t kpad, const uint16_t* rows,
                         const uint16_t* rowsLo, int64_t rowBytes, int64_t nrows, float scale, float* sb);
  /// With gemmBlocksBf16: called on the calling thread before its first and
  /// after its last gemmBlocksBf16 of a chunk (AMX: load the tile
  /// configuration, release the tiles), so that another user of the tiles on
  /// that thread between two kernel calls does no harm.
  void (*bf16Begin)();
  void (*bf16End)();
  /// Optional (null: float16 rows are converted to float32 instead): a
  /// float16 row of n values as bfloat16 hi and lo parts of kpad values each
  /// (hi + lo = the value exactly; zero past n).
  void (*splitRowF16)(const uint16_t* src, int64_t n, int64_t kpad, uint16_t* hi, uint16_t* lo);
  /// With gemmBlocksBf16: 1 when none of n float16 (storage 1) or bfloat16
  /// (2) values is inf or NaN. A tile holding one is scored in float32
  /// instead: the split products would turn inf * (a zero lo part) into NaN
  /// where float32 gives +-inf.
  int32_t (*finite16)(const uint16_t* src, int32_t storage, int64_t n);
};

/// The epilogues of a tier (lse + draws; group max; lse-gradient weighted sum).
struct Epilogue {
  void (*sampleTile)(const SampleTile* t);
  void (*groupMaxTile)(const GroupTile* t);
  /// The tier's Philox on 8 independent counters: words[4 * l + i] =
  /// noiseBlock(key, rows[l], colBlocks[l]).v[i] (checked against the scalar
  /// definition in rng.h by test/cpp/kernels_test.cc).
  void (*noiseBlocks8)(const NoiseKey* key, const uint32_t* rows, const uint32_t* colBlocks, uint32_t* words);
  /// The weighted sum of the full-cache log-sum-exp (LseGradTile).
  void (*lseGradTile)(const LseGradTile* t);
};

/// A row of the dispatch table: a micro-kernel and the epilogue it feeds.
struct Tier {
  const char* name;
  const MicroKernel* kernel;
  const Epilogue* epilogue;
};

/// The tier the kernels use now (dispatch.cc).
Tier currentTier();

// Each tier object file exports its parts (null when its ISA is not compiled in).
const MicroKernel* baselineMicroKernel();
const Epilogue* baselineEpilogue();
const MicroKernel* avx2MicroKernel();
const Epilogue* avx2Epilogue();
const MicroKernel* avx512MicroKernel();
const Epilogue* avx512Epilogue();
/// The AMX tier's own parts (peakLoop, gemmBlocksBf16, bf16Begin, bf16End;
/// the rest null), from tier_amx.cc.
const MicroKernel* amxTileParts();
/// The AVX-512 kernel with those parts (dispatch.cc); its epilogue is avx512Epilogue().
const MicroKernel* amxMicroKernel();
// Defined only in aarch64 builds (tier_neon.cc is compiled only there).
const MicroKernel* neonMicroKernel();
const Epilogue* neonEpilogue();

}  // namespace cpu
}  // namespace nc
