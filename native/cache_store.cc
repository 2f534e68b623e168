// The backend-independent half of every cache store: checks, the update
// semantics (which rows a refresh and an insert write, in which order), the
// ages and the host filled flags.
#include "cache_store.h"

#include <algorithm>
#include <limits>

namespace nc {

namespace {

inline bool on(const uint8_t* mask, int64_t i) { return mask == nullptr || mask[i] != 0; }

/// size, after checking it and the columns.
int64_t checkedSize(const std::vector<ColumnSpec>& columns, int64_t size) {
  NC_CHECK(size >= 1 && size <= std::numeric_limits<int32_t>::max(), "ERR_ARGUMENT",
           "cache size must be in [1, 2^31-1]; got " + std::to_string(size));
  for (const ColumnSpec& c : columns) {
    NC_CHECK(c.width >= 1, "ERR_ARGUMENT", "column '" + c.name + "' must have width >= 1");
    NC_CHECK(static_cast<int32_t>(c.storage) >= 0 && static_cast<int32_t>(c.storage) <= 3, "ERR_ARGUMENT",
             "column '" + c.name + "' has an unknown storage type");
    NC_CHECK(c.width <= (std::numeric_limits<int64_t>::max() / 8) / size, "ERR_ARGUMENT",
             "column '" + c.name + "' is too large");
  }
  return size;
}

}  // namespace

CacheStore::CacheStore(const Backend& backend, std::vector<ColumnSpec> columns, int64_t size)
    : columns_(std::move(columns)),
      size_(checkedSize(columns_, size)),
      backend_(backend),
      filled_(static_cast<size_t>(size), 0),
      ages_(size) {}

CacheStore::~CacheStore() = default;

Segment CacheStore::segment(int c) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "segment: no such column");
  return Segment{columnData(c), column(c).storage, size_, kernelFilled()};
}

void CacheStore::initialize(const std::vector<const void*>& values, const int32_t* ages) {
  NC_CHECK(values.size() == columns_.size(), "ERR_ARGUMENT", "initialize: one value array per column expected");
  bool anyData = false;
  for (size_t c = 0; c < columns_.size(); ++c) {
    writeColumn(static_cast<int>(c), values[c]);
    anyData = anyData || values[c] != nullptr;
  }
  std::fill(filled_.begin(), filled_.end(), anyData ? 1 : 0);
  filledChanged(nullptr, size_);
  ages_.reset(ages);
}

void CacheStore::restoreState(const int32_t* ages, const uint8_t* filled) {
  NC_CHECK(ages != nullptr && filled != nullptr, "ERR_ARGUMENT", "restoreState: ages and filled flags required");
  for (int64_t r = 0; r < size_; ++r) filled_[static_cast<size_t>(r)] = filled[r] != 0 ? 1 : 0;
  filledChanged(nullptr, size_);
  ages_.reset(ages);
}

void CacheStore::update(const CacheUpdate& u) {
  const int64_t nCols = static_cast<int64_t>(columns_.size());
  // Checks that protect memory (the TypeScript layer has checked the rest).
  NC_CHECK(u.numUpdated >= 0 && u.numNew >= 0, "ERR_ARGUMENT", "update: negative row count");
  NC_CHECK(u.numNew == 0 || static_cast<int64_t>(u.newValues.size()) == nCols, "ERR_ARGUMENT",
           "update: one new-value array per column expected");
  if (u.numUpdated > 0) {
    NC_CHECK(static_cast<int64_t>(u.updatedValues.size()) == nCols, "ERR_ARGUMENT",
             "update: one updated-value slot per column expected");
    NC_CHECK(u.updatedIndices != nullptr, "ERR_ARGUMENT", "update: updatedIndices missing");
    for (int64_t i = 0; i < u.numUpdated; ++i) {
      if (!on(u.updatedMask, i)) continue;
      const int32_t r = u.updatedIndices[i];
      NC_CHECK(r >= 0 && r < size_, "ERR_ARGUMENT",
               "update: updatedItemIndices[" + std::to_string(i) + "] = " + std::to_string(r) +
                   " is outside [0, " + std::to_string(size_) + ")");
    }
  }
  insertSrc_.clear();
  if (u.numNew > 0) {
    for (int64_t c = 0; c < nCols; ++c)
      NC_CHECK(u.newValues[c] != nullptr, "ERR_ARGUMENT", "update: newItems missing a column");
    for (int64_t i = 0; i < u.numNew; ++i)
      if (on(u.newMask, i)) insertSrc_.push_back(static_cast<int32_t>(i));
    NC_CHECK(static_cast<int64_t>(insertSrc_.size()) <= size_, "ERR_ARGUMENT",
             "update: " + std::to_string(insertSrc_.size()) + " new items do not fit in a cache of " +
                 std::to_string(size_) + " rows");
  }
  const int64_t m = static_cast<int64_t>(insertSrc_.size());

  // 2. Refresh rows, sorted by row; a later item wins for a repeated row.
  refresh_.clear();
  for (int64_t i = 0; i < u.numUpdated; ++i)
    if (on(u.updatedMask, i)) refresh_.emplace_back(u.updatedIndices[i], static_cast<int32_t>(i));
  std::sort(refresh_.begin(), refresh_.end());
  refreshSrc_.clear();
  refreshDst_.clear();
  for (size_t t = 0; t < refresh_.size(); ++t) {
    if (t + 1 < refresh_.size() && refresh_[t + 1].first == refresh_[t].first) continue;
    refreshDst_.push_back(refresh_[t].first);
    refreshSrc_.push_back(refresh_[t].second);
  }
  const int64_t nr = static_cast<int64_t>(refreshDst_.size());

  // 2-4 on the ages: the rows for the new items.
  chosen_.resize(static_cast<size_t>(m));
  ages_.step(refreshDst_.data(), nr, u.useLru, m, chosen_.data());

  // The rows: refresh first, insert second, so an insert that lands on a
  // refreshed row wins.
  for (int64_t c = 0; c < nCols && nr > 0; ++c)
    if (u.updatedValues[c] != nullptr)
      writeRows(static_cast<int>(c), u.updatedValues[c], refreshSrc_.data(), refreshDst_.data(), nr);
  for (int64_t c = 0; c < nCols && m > 0; ++c)
    writeRows(static_cast<int>(c), u.newValues[c], insertSrc_.data(), chosen_.data(), m);
  touched_.assign(refreshDst_.begin(), refreshDst_.end());
  touched_.insert(touched_.end(), chosen_.begin(), chosen_.end());
  for (int32_t r : touched_) filled_[static_cast<size_t>(r)] = 1;
  if (!touched_.empty()) filledChanged(touched_.data(), static_cast<int64_t>(touched_.size()));
  if (u.insertedRows != nullptr) std::copy(chosen_.begin(), chosen_.end(), u.insertedRows);
}

void CacheStore::readColumn(int c, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "readColumn: no such column");
  readRows(c, nullptr, size_, out);
}

void CacheStore::gatherRows(int c, const int32_t* rows, int64_t n, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "gatherRows: no such column");
  NC_CHECK(n >= 0, "ERR_ARGUMENT", "gatherRows: negative row count");
  for (int64_t i = 0; i < n; ++i)
    NC_CHECK(rows[i] >= 0 && rows[i] < size_, "ERR_ARGUMENT",
             "gatherRows: row " + std::to_string(rows[i]) + " is outside [0, " + std::to_string(size_) + ")");
  if (n > 0) readRows(c, rows, n, out);
}

}  // namespace nc
