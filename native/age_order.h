// The LRU/FIFO age bookkeeping of a cache store (DESIGN §3 steps 2-4 on the
// ages), shared by the CPU and CUDA stores: O(1) memory per row, O(m log m)
// per update of m written rows (see age_order.cc).
#pragma once
#include <cstddef>
#include <cstdint>
#include <vector>

namespace nc {

class AgeOrder {
 public:
  /// `size` rows, all of age 0 (size in [1, 2^31-1], checked by the store).
  explicit AgeOrder(int64_t size);

  /// Replaces every age (null = all 0).
  void reset(const int32_t* ages);

  /// One update step on the ages: with LRU the rows `refreshed` (sorted,
  /// distinct, in range) become the youngest; then the m rows that are the
  /// oldest (age desc, index asc; m <= size) are chosen for the new items,
  /// written to chosen[0..m) in that order, and become the youngest; then
  /// every age grows by one (wrapping int32, as the reference's "age += 1").
  void step(const int32_t* refreshed, int64_t numRefreshed, bool useLru, int64_t m, int32_t* chosen);

  int32_t age(int32_t row) const;
  void readAges(int32_t* out) const;

  /// Host bytes per row (prev, next, stamp).
  static constexpr size_t kBytesPerRow = 3 * sizeof(int32_t);

 private:
  void unlink(int32_t r);
  void append(int32_t r);
  void rebuild(const int32_t* ages);
  void exactStep(const int32_t* refreshed, int64_t numRefreshed, bool useLru, int64_t m, int32_t* chosen);

  int64_t size_;
  std::vector<int32_t> prev_, next_, stamp_;
  int32_t head_, tail_;
  int32_t counter_ = 0;
  std::vector<int32_t> written_;  // scratch, reused between steps
};

}  // namespace nc
