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
#include <vector>

#include "exclusions.h"
#include "kernels.h"
#include "tier.h"

namespace nc {
namespace cpu {

/// A checked request with the queries packed for the micro-kernels.
struct Prepared {
  int64_t batch = 0, dim = 0, bpad = 0, n = 0;
  std::vector<float> qt;                 // [bpad/16][dim][16]
  std::vector<int64_t> segStart;         // global start of each segment (+ n at the end)
  int64_t indexBase = 0;                 // added to the rows' indices (SampleParams::columnOffset)
  Exclusions excl;                       // the request's per-query exclusions, normalized
  const ScoreRequest* req = nullptr;
  // The bfloat16 tile path (MicroKernel::gemmBlocksBf16), set by packBf16Queries.
  bool bf16 = false;
  int64_t kpad = 0;                      // dim rounded up to 32
  std::vector<uint16_t> qhi, qlo;        // [bpad/16][kpad/2][16][2]: bf16(q), bf16(q - hi)
};

void prepare(const ScoreRequest& req, Prepared& p);
/// Turns on the bfloat16 tile path for kernel mk when it has one and every
/// segment stores bfloat16: packs the queries' hi and lo parts. Call after
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

/// Per-thread scratch of the tile loop.
struct Scratch {
  std::vector<float> rowbuf;   // kTileRows x dim (converted half rows)
  std::vector<uint16_t> bfbuf; // kTileRows x kpad bfloat16 rows (Prepared::bf16), zero past dim
  std::vector<float> sb;       // kMaxGemmBlocks x kTileRows x kQueryBlock scores (epilogues read the first block)
  std::vector<const float*> rowPtr;
  std::vector<int32_t> rowIdx, rowGroup;
  std::vector<ExclusionHit> hits;  // excluded (tile row, query) pairs of the current tile
  PendingDraws pending{};
  void init(const Prepared& p);
};

/// One Scratch per thread.
std::vector<Scratch> makeScratch(const Prepared& p, int threads);

/// Walks global rows [begin, end) in order, gathers candidate rows (every row
/// when allRows) into tiles and, per block of kQueryBlock queries, scores the
/// tile into sc.sb with the micro-kernel and calls onBlock(nrows, qbase).
/// Unless allRows (scoreMatrix), the request's excluded (query, row) scores
/// are -inf in the block: not candidates for any epilogue. With p.bf16 the
/// rows are copied as they are into sc.bfbuf and scored by gemmBlocksBf16
/// (sc.rowPtr is then not set: epilogues that read rows need float32).
template <typename OnBlock>
void forEachTile(const Prepared& p, const MicroKernel& mk, bool allRows, int64_t begin, int64_t end, Scratch& sc,
                 OnBlock&& onBlock) {
  const ScoreRequest& req = *p.req;
  const bool exclude = !allRows && !p.excl.empty();
  ExclusionCursor cursor(p.excl, exclude ? begin : 0);
  int64_t nrows = 0;
  auto flush = [&] {
    if (nrows == 0) return;
    if (exclude) cursor.tile(sc.rowIdx.data(), nrows, sc.hits, p.indexBase);  // rowIdx holds indexBase + request row
    for (int64_t qb = 0; qb < p.bpad; qb += kQueryBlock) {
      const int64_t inGroup = (qb / kQueryBlock) % kMaxGemmBlocks;
      if (p.bf16) {
        if (inGroup == 0) {
          const int64_t nblk = std::min(kMaxGemmBlocks, (p.bpad - qb) / kQueryBlock);
          const int64_t off = qb * p.kpad;
          mk.gemmBlocksBf16(p.qhi.data() + off, p.qlo.data() + off, nblk, p.kpad, sc.bfbuf.data(), nrows, req.scale,
                            sc.sb.data());
        } else {
          std::copy_n(sc.sb.data() + inGroup * kTileRows * kQueryBlock, nrows * kQueryBlock, sc.sb.data());
        }
      } else if (mk.gemmBlocks == nullptr) {
        mk.gemmBlock(p.qt.data() + qb * p.dim, p.dim, sc.rowPtr.data(), nrows, req.scale, sc.sb.data());
      } else if (inGroup == 0) {
        // Up to kMaxGemmBlocks blocks at once into sb; block 0 is in place.
        const int64_t nblk = std::min(kMaxGemmBlocks, (p.bpad - qb) / kQueryBlock);
        mk.gemmBlocks(p.qt.data() + qb * p.dim, nblk, p.dim, sc.rowPtr.data(), nrows, req.scale, sc.sb.data());
      } else {
        // The epilogues read block 0 of sb (its scores were consumed already).
        std::copy_n(sc.sb.data() + inGroup * kTileRows * kQueryBlock, nrows * kQueryBlock, sc.sb.data());
      }
      // Per-(query, row) exclusions (docs/kernels.md): the one place every
      // score block passes before any epilogue sees it.
      if (exclude && !sc.hits.empty()) maskExclusionHits(sc.hits, qb, kQueryBlock, kQueryBlock, sc.sb.data());
      onBlock(nrows, qb);
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
        std::copy_n(reinterpret_cast<const uint16_t*>(src), p.dim, sc.bfbuf.data() + nrows * p.kpad);
      } else if (s.storage == DType::Float32) {
        sc.rowPtr[nrows] = reinterpret_cast<const float*>(src);
      } else {
        float* dst = sc.rowbuf.data() + nrows * p.dim;
        mk.convertRow(src, static_cast<int32_t>(s.storage), p.dim, dst);
        sc.rowPtr[nrows] = dst;
      }
      sc.rowIdx[nrows] = static_cast<int32_t>(j + p.indexBase);
      if (++nrows == kTileRows) flush();
    }
  }
  flush();
}

}  // namespace cpu
}  // namespace nc
