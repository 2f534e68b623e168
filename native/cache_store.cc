// The cache store.
//
// Ages are not stored: a step counter advances by one per update and each row
// keeps the counter value at which it was last written (its stamp), so
// age[r] = counter - stamp[r] in wrapping int32 arithmetic, which is exactly
// what the reference's "every age += 1" does to an int32 age.
//
// Insertion needs the rows in the order (age desc, index asc). The rows are
// kept in a doubly linked list in that order, oldest at the head. All rows
// written by one update get the same (newest) stamp, so an update only unlinks
// the rows it writes and appends them, sorted by index, at the tail: O(m log m)
// for m written rows, whatever the cache size.
//
// That holds while every age is in [0, INT32_MAX) before the update (the list
// tail then has age >= 0 > -1, and no age wraps). initCache can set any ages
// (negative ones, or INT32_MAX which wraps on the next step); such a state
// takes the exact O(N log N) path below until it is regular again.
#include "cache_store.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <new>
#include <numeric>

#include "half.h"

namespace nc {

namespace {

constexpr int32_t kNil = -1;

void* allocZeroed(size_t bytes) {
  const size_t alignment = 64;
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  if (rounded == 0) rounded = alignment;
  void* p = nullptr;
  if (posix_memalign(&p, alignment, rounded) != 0 || p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return p;
}

inline int32_t wrapSub(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
}
inline int32_t wrapAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

}  // namespace

struct CacheStore::Impl {
  std::vector<void*> data;      // per column, 64-byte aligned, size * width elements
  std::vector<int32_t> prev, next, stamp;
  int32_t head = kNil, tail = kNil;
  int32_t counter = 0;
  // scratch, reused between updates (O(m))
  std::vector<int32_t> refreshed, chosen, written;

  ~Impl() {
    for (void* p : data) std::free(p);
  }

  int32_t age(int32_t r) const { return wrapSub(counter, stamp[r]); }

  void unlink(int32_t r) {
    const int32_t p = prev[r], n = next[r];
    if (p == kNil) head = n; else next[p] = n;
    if (n == kNil) tail = p; else prev[n] = p;
    prev[r] = next[r] = kNil;
  }
  void append(int32_t r) {
    prev[r] = tail;
    next[r] = kNil;
    if (tail == kNil) head = r; else next[tail] = r;
    tail = r;
  }
  /// Rebuilds the list from explicit ages: order (age desc, index asc); counter 0.
  void rebuild(const int32_t* ages, int64_t size) {
    counter = 0;
    bool allEqual = true;
    for (int64_t r = 0; r < size; ++r) {
      stamp[r] = wrapSub(0, ages[r]);
      if (ages[r] != ages[0]) allEqual = false;
    }
    std::vector<int32_t> order;
    if (!allEqual) {
      order.resize(static_cast<size_t>(size));
      std::iota(order.begin(), order.end(), 0);
      std::sort(order.begin(), order.end(), [ages](int32_t a, int32_t b) {
        return ages[a] != ages[b] ? ages[a] > ages[b] : a < b;
      });
    }
    head = tail = kNil;
    for (int64_t i = 0; i < size; ++i) append(allEqual ? static_cast<int32_t>(i) : order[static_cast<size_t>(i)]);
  }
};

CacheStore::CacheStore(std::vector<ColumnSpec> columns, int64_t size)
    : columns_(std::move(columns)), size_(size) {
  NC_CHECK(size >= 1 && size <= std::numeric_limits<int32_t>::max(), "ERR_ARGUMENT",
           "cache size must be in [1, 2^31-1]; got " + std::to_string(size));
  for (const ColumnSpec& c : columns_) {
    NC_CHECK(c.width >= 1, "ERR_ARGUMENT", "column '" + c.name + "' must have width >= 1");
    NC_CHECK(static_cast<int32_t>(c.storage) >= 0 && static_cast<int32_t>(c.storage) <= 3, "ERR_ARGUMENT",
             "column '" + c.name + "' has an unknown storage type");
    NC_CHECK(c.width <= (std::numeric_limits<int64_t>::max() / 8) / size, "ERR_ARGUMENT",
             "column '" + c.name + "' is too large");
  }
  impl_ = std::make_unique<Impl>();
  impl_->data.reserve(columns_.size());
  for (const ColumnSpec& c : columns_) {
    impl_->data.push_back(allocZeroed(static_cast<size_t>(size) * static_cast<size_t>(c.width) * dtypeBytes(c.storage)));
  }
  const size_t n = static_cast<size_t>(size);
  filled_.assign(n, 0);
  impl_->prev.assign(n, kNil);
  impl_->next.assign(n, kNil);
  impl_->stamp.assign(n, 0);
  for (int32_t r = 0; r < static_cast<int32_t>(size); ++r) impl_->append(r);
}

CacheStore::~CacheStore() = default;

int CacheStore::columnIndex(const std::string& name) const {
  for (size_t c = 0; c < columns_.size(); ++c)
    if (columns_[c].name == name) return static_cast<int>(c);
  return -1;
}

const void* CacheStore::columnData(int c) const { return impl_->data.at(static_cast<size_t>(c)); }

namespace {

/// Writes `rows` rows of host values (float32 / int32) into storage rows.
void writeRow(const ColumnSpec& col, void* base, int64_t row, const void* src, int64_t srcRow) {
  const int64_t w = col.width;
  switch (col.storage) {
    case DType::Float32:
      std::memcpy(static_cast<float*>(base) + row * w, static_cast<const float*>(src) + srcRow * w, sizeof(float) * w);
      break;
    case DType::Int32:
      std::memcpy(static_cast<int32_t*>(base) + row * w, static_cast<const int32_t*>(src) + srcRow * w,
                  sizeof(int32_t) * w);
      break;
    case DType::Float16:
      floatToHalfN(static_cast<const float*>(src) + srcRow * w, static_cast<uint16_t*>(base) + row * w, w);
      break;
    case DType::BFloat16:
      floatToBFloat16N(static_cast<const float*>(src) + srcRow * w, static_cast<uint16_t*>(base) + row * w, w);
      break;
  }
}

void readRows(const ColumnSpec& col, const void* base, int64_t row, int64_t n, void* out) {
  const int64_t w = col.width;
  switch (col.storage) {
    case DType::Float32:
      std::memcpy(out, static_cast<const float*>(base) + row * w, sizeof(float) * w * n);
      break;
    case DType::Int32:
      std::memcpy(out, static_cast<const int32_t*>(base) + row * w, sizeof(int32_t) * w * n);
      break;
    case DType::Float16:
      halfToFloatN(static_cast<const uint16_t*>(base) + row * w, static_cast<float*>(out), w * n);
      break;
    case DType::BFloat16:
      bfloat16ToFloatN(static_cast<const uint16_t*>(base) + row * w, static_cast<float*>(out), w * n);
      break;
  }
}

inline bool on(const uint8_t* mask, int64_t i) { return mask == nullptr || mask[i] != 0; }

}  // namespace

void CacheStore::initialize(const std::vector<const void*>& values, const int32_t* ages) {
  NC_CHECK(values.size() == columns_.size(), "ERR_ARGUMENT", "initialize: one value array per column expected");
  bool anyData = false;
  for (size_t c = 0; c < columns_.size(); ++c) {
    const ColumnSpec& col = columns_[c];
    void* base = impl_->data[c];
    if (values[c] == nullptr) {
      std::memset(base, 0, static_cast<size_t>(size_) * col.width * dtypeBytes(col.storage));
      continue;
    }
    anyData = true;
    if (col.storage == DType::Float32 || col.storage == DType::Int32) {
      std::memcpy(base, values[c], static_cast<size_t>(size_) * col.width * 4);
    } else {
      for (int64_t r = 0; r < size_; ++r) writeRow(col, base, r, values[c], r);
    }
  }
  std::fill(filled_.begin(), filled_.end(), anyData ? 1 : 0);
  if (ages != nullptr) {
    impl_->rebuild(ages, size_);
  } else {
    std::vector<int32_t> zeros(static_cast<size_t>(size_), 0);
    impl_->rebuild(zeros.data(), size_);
  }
}

void CacheStore::update(const CacheUpdate& u) {
  Impl& s = *impl_;
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
  int64_t m = 0;
  if (u.numNew > 0) {
    for (int64_t c = 0; c < nCols; ++c)
      NC_CHECK(u.newValues[c] != nullptr, "ERR_ARGUMENT", "update: newItems missing a column");
    for (int64_t i = 0; i < u.numNew; ++i) m += on(u.newMask, i) ? 1 : 0;
    NC_CHECK(m <= size_, "ERR_ARGUMENT",
             "update: " + std::to_string(m) + " new items do not fit in a cache of " + std::to_string(size_) + " rows");
  }

  // Step 2's row write, shared by both paths: the values of refresh item i
  // into its row (only the refreshed columns); returns the row.
  auto refreshRow = [&](int64_t i) {
    const int32_t r = u.updatedIndices[i];
    for (int64_t c = 0; c < nCols; ++c)
      if (u.updatedValues[c] != nullptr) writeRow(columns_[c], s.data[c], r, u.updatedValues[c], i);
    filled_[r] = 1;
    return r;
  };

  // Regular state: every age in [0, INT32_MAX) -> O(m log m) path. The list
  // is ordered by age, so the head holds the largest age and the tail the smallest.
  const bool regular = s.age(s.tail) >= 0 && s.age(s.head) < std::numeric_limits<int32_t>::max();
  if (!regular) {
    // Exact slow path: materialize ages, apply the reference semantics, rebuild.
    std::vector<int32_t> ages(static_cast<size_t>(size_));
    readAge(ages.data());
    for (int64_t i = 0; i < u.numUpdated; ++i) {
      if (!on(u.updatedMask, i)) continue;
      const int32_t r = refreshRow(i);
      if (u.useLru) ages[r] = -1;
    }
    if (m > 0) {
      std::vector<int32_t> order(static_cast<size_t>(size_));
      std::iota(order.begin(), order.end(), 0);
      std::partial_sort(order.begin(), order.begin() + m, order.end(), [&](int32_t a, int32_t b) {
        return ages[a] != ages[b] ? ages[a] > ages[b] : a < b;
      });
      int64_t j = 0;
      for (int64_t i = 0; i < u.numNew; ++i) {
        if (!on(u.newMask, i)) continue;
        const int32_t r = order[static_cast<size_t>(j)];
        if (u.insertedRows != nullptr) u.insertedRows[j] = r;
        ++j;
        for (int64_t c = 0; c < nCols; ++c) writeRow(columns_[c], s.data[c], r, u.newValues[c], i);
        filled_[r] = 1;
        ages[r] = -1;
      }
    }
    for (auto& a : ages) a = wrapAdd(a, 1);
    s.rebuild(ages.data(), size_);
    return;
  }

  // 2. Refresh: write rows in order (a later i wins); with LRU the rows become
  // the youngest (age -1): unlink them and append them sorted by index.
  s.refreshed.clear();
  for (int64_t i = 0; i < u.numUpdated; ++i) {
    if (!on(u.updatedMask, i)) continue;
    s.refreshed.push_back(refreshRow(i));
  }
  std::sort(s.refreshed.begin(), s.refreshed.end());
  s.refreshed.erase(std::unique(s.refreshed.begin(), s.refreshed.end()), s.refreshed.end());
  const int32_t newStamp = wrapAdd(s.counter, 1);  // age -1 now, 0 after the step
  if (u.useLru) {
    for (int32_t r : s.refreshed) s.unlink(r);
    for (int32_t r : s.refreshed) {
      s.append(r);
      s.stamp[r] = newStamp;
    }
  }

  // 3. Insert: the m oldest rows in list order.
  s.chosen.clear();
  if (m > 0) {
    int32_t r = s.head;
    for (int64_t j = 0; j < m; ++j) {
      s.chosen.push_back(r);
      r = s.next[r];
    }
    int64_t j = 0;
    for (int64_t i = 0; i < u.numNew; ++i) {
      if (!on(u.newMask, i)) continue;
      const int32_t row = s.chosen[static_cast<size_t>(j)];
      if (u.insertedRows != nullptr) u.insertedRows[j] = row;
      ++j;
      for (int64_t c = 0; c < nCols; ++c) writeRow(columns_[c], s.data[c], row, u.newValues[c], i);
      filled_[row] = 1;
    }
    // The youngest rows (age -1) now: the chosen ones and, with LRU, the
    // refreshed ones not chosen; all go to the tail sorted by index.
    s.written.clear();
    for (int32_t row : s.chosen) s.written.push_back(row);
    if (u.useLru) {
      // Refreshed rows sit at the tail already; the chosen ones may include
      // some of them (when m exceeds the older rows). Re-append all at once.
      for (int32_t row : s.refreshed) s.written.push_back(row);
    }
    std::sort(s.written.begin(), s.written.end());
    s.written.erase(std::unique(s.written.begin(), s.written.end()), s.written.end());
    for (int32_t row : s.written) s.unlink(row);
    for (int32_t row : s.written) {
      s.append(row);
      s.stamp[row] = newStamp;
    }
  }
  // 4. Every age += 1.
  s.counter = newStamp;
}

void CacheStore::readColumn(int c, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "readColumn: no such column");
  readRows(columns_[c], impl_->data[c], 0, size_, out);
}

void CacheStore::readAge(int32_t* out) const {
  for (int64_t r = 0; r < size_; ++r) out[r] = impl_->age(static_cast<int32_t>(r));
}

void CacheStore::gatherRows(int c, const int32_t* rows, int64_t n, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "gatherRows: no such column");
  for (int64_t i = 0; i < n; ++i)
    NC_CHECK(rows[i] >= 0 && rows[i] < size_, "ERR_ARGUMENT",
             "gatherRows: row " + std::to_string(rows[i]) + " is outside [0, " + std::to_string(size_) + ")");
  const ColumnSpec& col = columns_[c];
  const size_t rowBytesOut = static_cast<size_t>(col.width) * 4;
  for (int64_t i = 0; i < n; ++i)
    readRows(col, impl_->data[c], rows[i], 1, static_cast<char*>(out) + static_cast<size_t>(i) * rowBytesOut);
}

size_t CacheStore::bookkeepingBytesPerRow() const {
  return 3 * sizeof(int32_t) + sizeof(uint8_t);  // prev, next, stamp, filled
}

size_t CacheStore::dataBytes() const {
  size_t total = 0;
  for (const ColumnSpec& c : columns_) total += static_cast<size_t>(size_) * c.width * dtypeBytes(c.storage);
  return total;
}

}  // namespace nc
