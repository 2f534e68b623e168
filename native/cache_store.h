// The cache store: per column one contiguous row-major block [size, width],
// plus O(1) bookkeeping per row (see cache_store.cc for the age order).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "common.h"

namespace nc {

struct ColumnSpec {
  std::string name;
  DType storage;   // Int32 for int32 features
  int64_t width;   // product of the feature shape
};

/// One update, already validated by the caller (TypeScript). Values are host
/// float32 (float columns) or int32 (int columns), row-major.
struct CacheUpdate {
  bool useLru = true;
  // Refresh: numUpdated rows; updatedValues[c] is null for columns not refreshed.
  int64_t numUpdated = 0;
  std::vector<const void*> updatedValues;
  const int32_t* updatedIndices = nullptr;
  const uint8_t* updatedMask = nullptr;  // null = all rows on
  // Insert: numNew rows with a value for every column.
  int64_t numNew = 0;
  std::vector<const void*> newValues;
  const uint8_t* newMask = nullptr;      // null = all rows on
  // Out (optional): the rows chosen for the unmasked new items, in order
  // (room for numNew entries; the first m are written).
  int32_t* insertedRows = nullptr;
};

class CacheStore {
 public:
  /// A cache of `size` rows, all zeros, ages 0, nothing filled. Throws nc::Error.
  CacheStore(std::vector<ColumnSpec> columns, int64_t size);
  ~CacheStore();
  CacheStore(const CacheStore&) = delete;
  CacheStore& operator=(const CacheStore&) = delete;

  int64_t size() const { return size_; }
  int numColumns() const { return static_cast<int>(columns_.size()); }
  const ColumnSpec& column(int c) const { return columns_[c]; }
  int columnIndex(const std::string& name) const;  // -1 if absent

  /// Raw storage of column c: size * width elements of column(c).storage.
  const void* columnData(int c) const;
  /// 1 where a row was written by an insert, a refresh or initialize(values).
  const uint8_t* filled() const { return filled_.data(); }

  /// Replaces the whole state: values[c] (float32/int32, size*width) or null
  /// for zeros; ages (size) or null for zeros; rows with data become filled.
  void initialize(const std::vector<const void*>& values, const int32_t* ages);
  /// DESIGN §3 steps 2–4. Checks unmasked indices first; throws before mutating.
  void update(const CacheUpdate& u);

  void readColumn(int c, void* out) const;                     // float32 / int32
  void readAge(int32_t* out) const;
  void gatherRows(int c, const int32_t* rows, int64_t n, void* out) const;  // float32 / int32

  /// Bytes of per-row bookkeeping (for the memory report).
  size_t bookkeepingBytesPerRow() const;
  size_t dataBytes() const;

 private:
  struct Impl;
  std::vector<ColumnSpec> columns_;
  int64_t size_;
  std::vector<uint8_t> filled_;
  std::unique_ptr<Impl> impl_;
};

}  // namespace nc
