// The CPU tiling driver, shared by every CPU kernel (baseline-compiled files
// only: it has templates and std::vector).
//
// Work layout: the concatenated index space [0, N) is cut into ~64 chunks
// whose boundaries depend only on N (never on the thread count); threads of
// the pool (thread_pool.h) take chunks in order. Within a chunk, candidate
// rows are gathered into tiles of kTileRows rows; each tile is scored by the
// tier's micro-kernel against one block of kQueryBlock queries at a time (a
// 24 x 16 block that stays in L1, never B x N) and the block goes to the
// kernel's epilogue. Every output is the same for any number of threads.
#pragma once
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <vector>

#include "aligned.h"
#include "exclusions.h"
#include "kernels.h"
#include "tier.h"

namespace nc {
namespace cpu {

/// A checked request with the queries packed for the micro-kernels.
struct Prepared {
  int64_t batch = 0, dim = 0, bpad = 0, n = 0;
  AlignedVector<float> qt;               // [bpad/16][dim][16]
  std::vector<int64_t> segStart;         // global start of each segment (+ n at the end)
  int64_t indexBase = 0;                 // added to the rows' indices (SampleParams::columnOffset)
  Exclusions excl;                       // the request's per-query exclusions, normalized
  const ScoreRequest* req = nullptr;
  // The bfloat16 tile path (MicroKernel::gemmBlocksBf16), set by packBf16Queries.
  bool bf16 = false;
  bool f16Split = false;                 // the rows are float16, split into bf16 hi + lo (MicroKernel::splitRowF16)
  int64_t kpad = 0;                      // dim rounded up to 32
  AlignedVector<uint16_t> qhi, qlo;      // [bpad/16][kpad/2][16][2]: bf16(q), bf16(q - hi)
};

void prepare(const ScoreRequest& req, Prepared& p);
/// Turns on the bfloat16 tile path for kernel mk when it has one and every
/// segment stores bfloat16 (or float16, when mk can split float16 rows into
/// two bfloat16 parts): packs the queries' hi and lo parts. Call after
/// prepare and before makeScratch.
void packBf16Queries(Prepared& p, const MicroKernel& mk);

/// Rows per chunk: a function of N only (outputs must not depend on threads).
int64_t chunkRowsFor(int64_t n);

/// The row chunks of [0, n) and the threads that share them.
struct RowChunks {
  int64_t rows = 0, count = 0;  // rows per chunk, chunks
  int threads = 1;
};
RowChunks rowChunks(int64_t n, int requestedThreads);

/// Candidates of every query before exclusions (the same for all queries).
int64_t countCandidates(const Prepared& p);
/// Candidates of each query: countCandidates minus its excluded candidates.
void countCandidatesPerQuery(const Prepared& p, int64_t* out);

/// Tiles gathered before scoring: for each group of kMaxGemmBlocks query
/// blocks the tiles are scored one after the other, so the group's query
/// packs are read once from L2 per super tile instead of once per tile.
constexpr int64_t kSuperTiles = 4;
constexpr int64_t kSuperRows = kSuperTiles * kTileRows;

/// Per-thread scratch of the tile loop.
struct Scratch {
  std::vector<float> rowbuf;   // kSuperRows x dim (converted half rows)
  AlignedVector<uint16_t> bfbuf; // kSuperRows x kpad bfloat16 rows (Prepared::bf16), zero past dim
  AlignedVector<uint16_t> bflo;  // kSuperRows x kpad: their low parts (Prepared::f16Split)
  AlignedVector<float> sb;     // kMaxGemmBlocks x kTileRows x kQueryBlock scores of one tile
  std::vector<const float*> rowPtr;        // kSuperRows
  std::vector<const uint16_t*> rawRow;     // kSuperRows: the stored rows (Prepared::bf16)
  std::vector<int32_t> rowIdx, rowGroup;   // kSuperRows
  std::vector<std::vector<ExclusionHit>> hits;  // per tile of the super tile: excluded (tile row, query) pairs
  PendingDraws pending{};
  void init(const Prepared& p);
};

/// One Scratch per thread.
std::vector<Scratch> makeScratch(const Prepared& p, int threads);

/// One scored block handed to forEachTile's callback: rows first ..
/// first + nrows of the super tile against queries qb .. qb + 15.
struct TileView {
  int64_t nrows, qb, first;
  const float* sb;             // [nrows][kQueryBlock] scores
  const int32_t* rowIdx;       // global index of each row (indexBase added)
  const float* const* rowPtr;  // float32 rows (not set on the bfloat16 tile path)
};

/// Walks global rows [begin, end) in order, gathers candidate rows (every row
/// when allRows) into tiles of kTileRows, kSuperTiles tiles at a time, scores
/// them with the micro-kernel and calls onBlock(const TileView&) for every
/// (tile, block of kQueryBlock queries); for each query block the tiles come
/// in row order. Unless allRows (scoreMatrix), the request's excluded
/// (query, row) scores are -inf in the block: not candidates for any
/// epilogue. With p.bf16 the rows are scored as they are stored by
/// gemmBlocksBf16, in place or copied into sc.bfbuf (rowPtr is then not set:
/// epilogues that read rows need float32).
template <typename OnBlock>
void forEachTile(const Prepared& p, const MicroKernel& mk, bool allRows, int64_t begin, int64_t end, Scratch& sc,
                 OnBlock&& onBlock) {
  const ScoreRequest& req = *p.req;
  const bool exclude = !allRows && !p.excl.empty();
  ExclusionCursor cursor(p.excl, exclude ? begin : 0);
  int64_t nrows = 0;  // rows of the super tile
  auto flush = [&] {
    if (nrows == 0) return;
    const int64_t ntiles = (nrows + kTileRows - 1) / kTileRows;
    if (exclude)  // rowIdx holds indexBase + request row
      for (int64_t t = 0; t < ntiles; ++t)
        cursor.tile(sc.rowIdx.data() + t * kTileRows, std::min(kTileRows, nrows - t * kTileRows), sc.hits[t],
                    p.indexBase);
    // The tile path (p.bf16): bfloat16 rows are read in place when a full
    // tile of consecutive 64-byte aligned rows of width kpad, else copied
    // into bfbuf; float16 rows are split into bfbuf / bflo. A tile holding
    // an inf or NaN is converted to float32 and scored as on the float path
    // (tileFloat).
    const uint16_t* tileRows[kSuperTiles] = {};
    const uint16_t* tileLo[kSuperTiles] = {};
    int64_t tileRowBytes[kSuperTiles] = {};
    bool tileFloat[kSuperTiles] = {};
    if (p.bf16) {
      const int32_t storage = static_cast<int32_t>(p.f16Split ? DType::Float16 : DType::BFloat16);
      for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t r0 = t * kTileRows, tr = std::min(kTileRows, nrows - r0);
        bool finite = true;
        for (int64_t r = 0; finite && r < tr; ++r) finite = mk.finite16(sc.rawRow[r0 + r], storage, p.dim) != 0;
        if (!finite) {
          tileFloat[t] = true;
          for (int64_t r = 0; r < tr; ++r) {
            float* dst = sc.rowbuf.data() + (r0 + r) * p.dim;
            mk.convertRow(sc.rawRow[r0 + r], storage, p.dim, dst);
            sc.rowPtr[r0 + r] = dst;
          }
          continue;
        }
        if (p.f16Split) {
          uint16_t* hi = sc.bfbuf.data() + r0 * p.kpad;
          uint16_t* lo = sc.bflo.data() + r0 * p.kpad;
          for (int64_t r = 0; r < tr; ++r)
            mk.splitRowF16(sc.rawRow[r0 + r], p.dim, p.kpad, hi + r * p.kpad, lo + r * p.kpad);
          tileRows[t] = hi;
          tileLo[t] = lo;
          tileRowBytes[t] = p.kpad * 2;
          continue;
        }
        const uint16_t* first = sc.rawRow[r0];
        bool inPlace = tr == kTileRows && p.kpad == p.dim && reinterpret_cast<uintptr_t>(first) % 64 == 0;
        for (int64_t r = 1; inPlace && r < tr; ++r) inPlace = sc.rawRow[r0 + r] == first + r * p.dim;
        if (inPlace) {
          tileRows[t] = first;
          tileRowBytes[t] = p.dim * 2;
        } else {
          uint16_t* dst = sc.bfbuf.data() + r0 * p.kpad;
          for (int64_t r = 0; r < tr; ++r) std::copy_n(sc.rawRow[r0 + r], p.dim, dst + r * p.kpad);
          tileRows[t] = dst;
          tileRowBytes[t] = p.kpad * 2;
        }
      }
    }
    for (int64_t qg = 0; qg < p.bpad; qg += kMaxGemmBlocks * kQueryBlock) {
      const int64_t nblk = std::min(kMaxGemmBlocks, (p.bpad - qg) / kQueryBlock);
      for (int64_t t = 0; t < ntiles; ++t) {
        const int64_t r0 = t * kTileRows, tr = std::min(kTileRows, nrows - r0);
        float* sb = sc.sb.data();
        if (p.bf16 && !tileFloat[t]) {
          mk.gemmBlocksBf16(p.qhi.data() + qg * p.kpad, p.qlo.data() + qg * p.kpad, nblk, p.kpad, tileRows[t], tileLo[t],
                            tileRowBytes[t], tr, req.scale, sb);
        } else if (mk.gemmBlocks != nullptr) {
          mk.gemmBlocks(p.qt.data() + qg * p.dim, nblk, p.dim, sc.rowPtr.data() + r0, tr, req.scale, sb);
        } else {
          for (int64_t b = 0; b < nblk; ++b)
            mk.gemmBlock(p.qt.data() + (qg + b * kQueryBlock) * p.dim, p.dim, sc.rowPtr.data() + r0, tr, req.scale,
                         sb + b * kTileRows * kQueryBlock);
        }
        for (int64_t b = 0; b < nblk; ++b) {
          float* blk = sb + b * kTileRows * kQueryBlock;
          const int64_t qb = qg + b * kQueryBlock;
          // Per-(query, row) exclusions (docs/kernels.md): the one place every
          // score block passes before any epilogue sees it.
          if (exclude && !sc.hits[t].empty()) maskExclusionHits(sc.hits[t], qb, kQueryBlock, kQueryBlock, blk);
          onBlock(TileView{tr, qb, r0, blk, sc.rowIdx.data() + r0, sc.rowPtr.data() + r0});
        }
      }
    }
    nrows = 0;
  };
  struct Bf16Scope {  // bf16Begin / bf16End around the chunk, also when a callback throws
    const MicroKernel* mk;
    explicit Bf16Scope(const MicroKernel* k) : mk(k) {
      if (mk != nullptr && mk->bf16Begin != nullptr) mk->bf16Begin();
    }
    ~Bf16Scope() {
      if (mk != nullptr && mk->bf16End != nullptr) mk->bf16End();
    }
  } bf16Scope(p.bf16 ? &mk : nullptr);
  size_t seg = static_cast<size_t>(
      std::upper_bound(p.segStart.begin(), p.segStart.end(), begin) - p.segStart.begin() - 1);
  for (int64_t j = begin; j < end;) {
    while (seg + 1 < p.segStart.size() && p.segStart[seg + 1] <= j) ++seg;
    const Segment& s = req.segments[seg];
    const int64_t segEnd = std::min(end, p.segStart[seg + 1]);
    const bool check = !allRows && !req.scoreEmptyRows && s.filled != nullptr;
    const size_t esize = dtypeBytes(s.storage);
    for (; j < segEnd; ++j) {
      const int64_t local = j - p.segStart[seg];
      if (check && s.filled[local] == 0) continue;
      const char* src = static_cast<const char*>(s.data) + local * p.dim * esize;
      if (p.bf16) {
        sc.rawRow[nrows] = reinterpret_cast<const uint16_t*>(src);
      } else if (s.storage == DType::Float32) {
        sc.rowPtr[nrows] = reinterpret_cast<const float*>(src);
      } else {
        float* dst = sc.rowbuf.data() + nrows * p.dim;
        mk.convertRow(src, static_cast<int32_t>(s.storage), p.dim, dst);
        sc.rowPtr[nrows] = dst;
      }
      sc.rowIdx[nrows] = static_cast<int32_t>(j + p.indexBase);
      if (++nrows == kSuperRows) flush();
    }
  }
  flush();
}

}  // namespace cpu
}  // namespace nc
