#include "exclusions.h"

#include <algorithm>
#include <limits>
#include <numeric>

#include "common.h"

namespace nc {

void checkExclusions(const ScoreRequest& req, int64_t n) {
  const bool rows = req.exclusions != nullptr, offs = req.exclusionOffsets != nullptr;
  NC_CHECK(rows == offs, "ERR_ARGUMENT", "exclusions and exclusionOffsets must be given together");
  if (!offs) return;
  const int32_t* o = req.exclusionOffsets;
  NC_CHECK(o[0] == 0, "ERR_ARGUMENT", "exclusionOffsets[0] must be 0");
  for (int64_t b = 0; b < req.batch; ++b)
    NC_CHECK(o[b + 1] >= o[b], "ERR_ARGUMENT", "exclusionOffsets must be non-decreasing");
  const int64_t total = o[req.batch];
  for (int64_t i = 0; i < total; ++i)
    NC_CHECK(req.exclusions[i] >= 0 && req.exclusions[i] < n, "ERR_ARGUMENT", "exclusions must be rows in [0, N)");
}

void Exclusions::build(const ScoreRequest& req) {
  offsets.clear();
  rows.clear();
  pairRow.clear();
  pairQuery.clear();
  if (req.exclusionOffsets == nullptr || req.exclusionOffsets[req.batch] == 0) return;
  offsets.assign(static_cast<size_t>(req.batch + 1), 0);
  rows.reserve(static_cast<size_t>(req.exclusionOffsets[req.batch]));
  for (int64_t b = 0; b < req.batch; ++b) {
    const size_t start = rows.size();
    rows.insert(rows.end(), req.exclusions + req.exclusionOffsets[b], req.exclusions + req.exclusionOffsets[b + 1]);
    std::sort(rows.begin() + start, rows.end());
    rows.erase(std::unique(rows.begin() + start, rows.end()), rows.end());
    offsets[b + 1] = static_cast<int32_t>(rows.size());
  }
  // (row, query) order: sort the pair indices by row; queries come out
  // ascending within a row because the sort is stable over query-major input.
  std::vector<int32_t> order(rows.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t c) { return rows[a] < rows[c]; });
  std::vector<int32_t> queryOf(rows.size());
  for (int64_t b = 0; b < req.batch; ++b)
    for (int32_t i = offsets[b]; i < offsets[b + 1]; ++i) queryOf[i] = static_cast<int32_t>(b);
  pairRow.resize(rows.size());
  pairQuery.resize(rows.size());
  for (size_t i = 0; i < order.size(); ++i) {
    pairRow[i] = rows[order[i]];
    pairQuery[i] = queryOf[order[i]];
  }
}

void Exclusions::countCandidates(const ScoreRequest& req, int64_t* out) const {
  for (int64_t b = 0; b < req.batch; ++b) out[b] = 0;
  if (empty()) return;
  // Segment of each excluded row: walk the rows of each query (sorted) with the segment bounds.
  std::vector<int64_t> segStart;
  int64_t n = 0;
  for (const Segment& s : req.segments) {
    segStart.push_back(n);
    n += s.rows;
  }
  segStart.push_back(n);
  for (int64_t b = 0; b < req.batch; ++b) {
    size_t seg = 0;
    int64_t c = 0;
    for (int32_t i = offsets[b]; i < offsets[b + 1]; ++i) {
      const int64_t j = rows[i];
      while (segStart[seg + 1] <= j) ++seg;
      const Segment& s = req.segments[seg];
      c += (req.scoreEmptyRows || s.filled == nullptr || s.filled[j - segStart[seg]] != 0) ? 1 : 0;
    }
    out[b] = c;
  }
}

ExclusionCursor::ExclusionCursor(const Exclusions& ex, int64_t beginRow) : ex_(&ex) {
  pos_ = static_cast<size_t>(std::lower_bound(ex.pairRow.begin(), ex.pairRow.end(), beginRow) - ex.pairRow.begin());
}

void ExclusionCursor::tile(const int32_t* rowIdx, int64_t nrows, std::vector<ExclusionHit>& hits, int64_t base) {
  hits.clear();
  if (nrows == 0) return;
  const std::vector<int32_t>& pr = ex_->pairRow;
  const size_t end = pr.size();
  const int64_t last = rowIdx[nrows - 1] - base;
  int64_t r = 0;
  for (; pos_ < end && pr[pos_] <= last; ++pos_) {
    const int64_t j = pr[pos_];
    while (rowIdx[r] - base < j) ++r;  // r < nrows: rowIdx[nrows - 1] - base = last >= j
    if (rowIdx[r] - base == j) hits.push_back(ExclusionHit{static_cast<int32_t>(r), ex_->pairQuery[pos_]});
    // else: row j is not in the tile (not a candidate): nothing to mask
  }
}

void maskExclusionHits(const std::vector<ExclusionHit>& hits, int64_t qbase, int64_t width, int64_t stride,
                       float* sb) {
  for (const ExclusionHit& h : hits) {
    const int64_t q = h.query - qbase;
    if (q >= 0 && q < width) sb[h.tileRow * stride + q] = -std::numeric_limits<float>::infinity();
  }
}

}  // namespace nc
