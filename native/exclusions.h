// Per-query exclusions of a ScoreRequest (kernels.h): rows that are not among
// one query's candidates (the handler's accidental hits: cached copies of the
// query's own positive). Normalized once per call; the kernels then walk
// them alongside their row loops at O(1) per tile (docs/kernels.md
// "Per-query exclusions").
#pragma once
#include <cstdint>
#include <vector>

#include "kernels.h"

namespace nc {

/// Checks the request's exclusion arrays against batch and n rows (nc::Error
/// ERR_ARGUMENT): both null or both given, offsets[0] = 0, non-decreasing,
/// every row in [0, n).
void checkExclusions(const ScoreRequest& req, int64_t n);

/// The exclusions of a checked request, normalized.
struct Exclusions {
  /// Per query, sorted and without repeats (CSR): query b's rows are
  /// rows[offsets[b] .. offsets[b + 1]). Empty when the request has none.
  std::vector<int32_t> offsets, rows;
  /// The same (row, query) pairs sorted by row, then query.
  std::vector<int32_t> pairRow, pairQuery;

  bool empty() const { return rows.empty(); }
  void build(const ScoreRequest& req);
  /// out[b] = how many of query b's excluded rows are candidates (filled
  /// rows, or every row with scoreEmptyRows); out has batch entries.
  void countCandidates(const ScoreRequest& req, int64_t* out) const;
};

/// One excluded (tile row, query) pair of a tile.
struct ExclusionHit {
  int32_t tileRow;
  int32_t query;
};

/// Walks the (row, query) pairs alongside a loop over increasing rows.
class ExclusionCursor {
 public:
  /// Positioned at the first pair whose row is >= beginRow.
  ExclusionCursor(const Exclusions& ex, int64_t beginRow);
  /// The pairs whose row is one of rowIdx[0 .. nrows) (increasing, all >=
  /// the rows of earlier calls) into hits (cleared first); moves past them.
  void tile(const int32_t* rowIdx, int64_t nrows, std::vector<ExclusionHit>& hits, int64_t base = 0);

 private:
  const Exclusions* ex_;
  size_t pos_;
};

/// Sets sb[hit.tileRow * stride + (hit.query - qbase)] = -inf for the hits
/// whose query is in [qbase, qbase + width).
void maskExclusionHits(const std::vector<ExclusionHit>& hits, int64_t qbase, int64_t width, int64_t stride,
                       float* sb);

}  // namespace nc
