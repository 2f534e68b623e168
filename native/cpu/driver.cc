#include "driver.h"

#include <cmath>

#include "half.h"
#include "thread_pool.h"

namespace nc {
namespace cpu {

void prepare(const ScoreRequest& req, Prepared& p) {
  p.req = &req;
  p.batch = req.batch;
  p.dim = req.dim;
  p.bpad = (req.batch + kQueryBlock - 1) / kQueryBlock * kQueryBlock;
  p.segStart.clear();
  int64_t n = 0;
  for (const Segment& s : req.segments) {
    p.segStart.push_back(n);
    n += s.rows;
  }
  p.segStart.push_back(n);
  p.n = n;
  p.excl.build(req);
  p.qt.assign(static_cast<size_t>(p.bpad * p.dim), 0.0f);
  for (int64_t b = 0; b < p.batch; ++b) {
    float* blk = p.qt.data() + (b / kQueryBlock) * kQueryBlock * p.dim + (b % kQueryBlock);
    const float* q = req.queries + b * p.dim;
    for (int64_t d = 0; d < p.dim; ++d) blk[d * kQueryBlock] = q[d];
  }
}

void packBf16Queries(Prepared& p, const MicroKernel& mk) {
  p.bf16 = p.f16Split = false;
  if (mk.gemmBlocksBf16 == nullptr || mk.finite16 == nullptr || p.req == nullptr || p.req->segments.empty()) return;
  const DType st = p.req->segments[0].storage;
  if (st != DType::BFloat16 && !(st == DType::Float16 && mk.splitRowF16 != nullptr)) return;
  for (const Segment& s : p.req->segments)
    if (s.storage != st) return;
  p.bf16 = true;
  p.f16Split = st == DType::Float16;
  p.kpad = (p.dim + 31) / 32 * 32;
  const size_t size = static_cast<size_t>(p.bpad * p.kpad);
  p.qhi.assign(size, 0);
  p.qlo.assign(size, 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    // Block b / 16, pair d / 2, query b % 16, element d % 2.
    const int64_t base = (b / kQueryBlock) * kQueryBlock * p.kpad + (b % kQueryBlock) * 2;
    const float* q = p.req->queries + b * p.dim;
    for (int64_t d = 0; d < p.dim; ++d) {
      uint16_t hi = floatToBFloat16(q[d]);
      // A finite value that rounds to infinity is truncated instead, so that
      // hi + lo stays the value; a non-finite value is all in hi.
      if (std::isfinite(q[d]) && !std::isfinite(bfloat16ToFloat(hi))) hi = static_cast<uint16_t>(floatBits(q[d]) >> 16);
      const int64_t at = base + (d / 2) * 2 * kQueryBlock + (d % 2);
      p.qhi[at] = hi;
      p.qlo[at] = std::isfinite(q[d]) ? floatToBFloat16(q[d] - bfloat16ToFloat(hi)) : 0;
    }
  }
}

int64_t chunkRowsFor(int64_t n) {
  int64_t c = (n + 63) / 64;  // enough chunks to balance threads that finish unevenly
  c = (c + kTileRows - 1) / kTileRows * kTileRows;
  return std::max<int64_t>(8 * kTileRows, std::min<int64_t>(c, 8192));
}

RowChunks rowChunks(int64_t n, int requestedThreads) {
  RowChunks c;
  c.rows = chunkRowsFor(n);
  c.count = (n + c.rows - 1) / c.rows;
  c.threads = static_cast<int>(std::min<int64_t>(resolveThreads(requestedThreads), std::max<int64_t>(c.count, 1)));
  return c;
}

int64_t countCandidates(const Prepared& p) {
  const ScoreRequest& req = *p.req;
  int64_t c = 0;
  for (const Segment& s : req.segments) {
    if (req.scoreEmptyRows || s.filled == nullptr) {
      c += s.rows;
    } else {
      for (int64_t i = 0; i < s.rows; ++i) c += s.filled[i] != 0;
    }
  }
  return c;
}

void countCandidatesPerQuery(const Prepared& p, int64_t* out) {
  const int64_t all = countCandidates(p);
  p.excl.countCandidates(*p.req, out);
  for (int64_t b = 0; b < p.batch; ++b) out[b] = all - out[b];
}

void Scratch::init(const Prepared& p) {
  rowbuf.resize(static_cast<size_t>(kSuperRows * p.dim));
  if (p.bf16) bfbuf.assign(static_cast<size_t>(kSuperRows * p.kpad), 0);
  if (p.f16Split) bflo.assign(static_cast<size_t>(kSuperRows * p.kpad), 0);
  sb.assign(static_cast<size_t>(kMaxGemmBlocks * kTileRows * kQueryBlock), 0.0f);
  rowPtr.resize(kSuperRows);
  rawRow.assign(kSuperRows, nullptr);
  rowIdx.resize(kSuperRows);
  rowGroup.resize(kSuperRows);
  hits.resize(kSuperTiles);
}

std::vector<Scratch> makeScratch(const Prepared& p, int threads) {
  std::vector<Scratch> s(static_cast<size_t>(threads));
  for (Scratch& x : s) x.init(p);
  return s;
}

}  // namespace cpu
}  // namespace nc
