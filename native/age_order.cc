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
// tail then has age >= 0 > -1, and no age wraps). reset() can set any ages
// (negative ones, or INT32_MAX which wraps on the next step); such a state
// takes the exact O(N log N) path below until it is regular again.
#include "age_order.h"

#include <algorithm>
#include <limits>
#include <numeric>

namespace nc {

namespace {

constexpr int32_t kNil = -1;

inline int32_t wrapSub(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) - static_cast<uint32_t>(b));
}
inline int32_t wrapAdd(int32_t a, int32_t b) {
  return static_cast<int32_t>(static_cast<uint32_t>(a) + static_cast<uint32_t>(b));
}

}  // namespace

AgeOrder::AgeOrder(int64_t size)
    : size_(size),
      prev_(static_cast<size_t>(size), kNil),
      next_(static_cast<size_t>(size), kNil),
      stamp_(static_cast<size_t>(size), 0),
      head_(kNil),
      tail_(kNil) {
  for (int32_t r = 0; r < static_cast<int32_t>(size); ++r) append(r);
}

int32_t AgeOrder::age(int32_t r) const { return wrapSub(counter_, stamp_[r]); }

void AgeOrder::readAges(int32_t* out) const {
  for (int64_t r = 0; r < size_; ++r) out[r] = age(static_cast<int32_t>(r));
}

void AgeOrder::unlink(int32_t r) {
  const int32_t p = prev_[r], n = next_[r];
  if (p == kNil) head_ = n; else next_[p] = n;
  if (n == kNil) tail_ = p; else prev_[n] = p;
  prev_[r] = next_[r] = kNil;
}

void AgeOrder::append(int32_t r) {
  prev_[r] = tail_;
  next_[r] = kNil;
  if (tail_ == kNil) head_ = r; else next_[tail_] = r;
  tail_ = r;
}

void AgeOrder::reset(const int32_t* ages) {
  if (ages != nullptr) {
    rebuild(ages);
  } else {
    const std::vector<int32_t> zeros(static_cast<size_t>(size_), 0);
    rebuild(zeros.data());
  }
}

/// The list from explicit ages: order (age desc, index asc); counter 0.
void AgeOrder::rebuild(const int32_t* ages) {
  counter_ = 0;
  bool allEqual = true;
  for (int64_t r = 0; r < size_; ++r) {
    stamp_[r] = wrapSub(0, ages[r]);
    if (ages[r] != ages[0]) allEqual = false;
  }
  std::vector<int32_t> order;
  if (!allEqual) {
    order.resize(static_cast<size_t>(size_));
    std::iota(order.begin(), order.end(), 0);
    std::sort(order.begin(), order.end(), [ages](int32_t a, int32_t b) {
      return ages[a] != ages[b] ? ages[a] > ages[b] : a < b;
    });
  }
  head_ = tail_ = kNil;
  for (int64_t i = 0; i < size_; ++i) append(allEqual ? static_cast<int32_t>(i) : order[static_cast<size_t>(i)]);
}

void AgeOrder::step(const int32_t* refreshed, int64_t numRefreshed, bool useLru, int64_t m, int32_t* chosen) {
  // Regular state: every age in [0, INT32_MAX). The list is ordered by age, so
  // the head holds the largest age and the tail the smallest.
  const bool regular = age(tail_) >= 0 && age(head_) < std::numeric_limits<int32_t>::max();
  if (!regular) {
    exactStep(refreshed, numRefreshed, useLru, m, chosen);
    return;
  }
  const int32_t newStamp = wrapAdd(counter_, 1);  // age -1 now, 0 after the step
  // With LRU the refreshed rows become the youngest: to the tail, by index.
  if (useLru) {
    for (int64_t i = 0; i < numRefreshed; ++i) unlink(refreshed[i]);
    for (int64_t i = 0; i < numRefreshed; ++i) {
      append(refreshed[i]);
      stamp_[refreshed[i]] = newStamp;
    }
  }
  if (m > 0) {
    // The m oldest rows in list order.
    int32_t r = head_;
    for (int64_t j = 0; j < m; ++j) {
      chosen[j] = r;
      r = next_[r];
    }
    // The youngest rows (age -1) now: the chosen ones and, with LRU, the
    // refreshed ones; the chosen ones may include some of the refreshed (when
    // m exceeds the older rows). Re-append all at once, by index.
    written_.assign(chosen, chosen + m);
    if (useLru) written_.insert(written_.end(), refreshed, refreshed + numRefreshed);
    std::sort(written_.begin(), written_.end());
    written_.erase(std::unique(written_.begin(), written_.end()), written_.end());
    for (int32_t row : written_) unlink(row);
    for (int32_t row : written_) {
      append(row);
      stamp_[row] = newStamp;
    }
  }
  counter_ = newStamp;  // every age += 1
}

/// The reference semantics on materialized ages, then a rebuild.
void AgeOrder::exactStep(const int32_t* refreshed, int64_t numRefreshed, bool useLru, int64_t m, int32_t* chosen) {
  std::vector<int32_t> ages(static_cast<size_t>(size_));
  readAges(ages.data());
  if (useLru)
    for (int64_t i = 0; i < numRefreshed; ++i) ages[refreshed[i]] = -1;
  if (m > 0) {
    std::vector<int32_t> order(static_cast<size_t>(size_));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + m, order.end(), [&](int32_t a, int32_t b) {
      return ages[a] != ages[b] ? ages[a] > ages[b] : a < b;
    });
    for (int64_t j = 0; j < m; ++j) {
      chosen[j] = order[static_cast<size_t>(j)];
      ages[chosen[j]] = -1;
    }
  }
  for (auto& a : ages) a = wrapAdd(a, 1);
  rebuild(ages.data());
}

}  // namespace nc
