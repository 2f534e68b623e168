// The cache store interface: per column one contiguous row-major block
// [size, width] in the memory of a backend (host for the CPU backend, device
// for CUDA), plus the host bookkeeping every backend shares: the age order
// (age_order.h) and the filled flags. The checks and the update semantics
// (DESIGN §3 steps 2-4) live here once; a backend only moves rows.
#pragma once
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "age_order.h"
#include "common.h"
#include "kernels.h"

namespace nc {

class Backend;

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
  virtual ~CacheStore();
  CacheStore(const CacheStore&) = delete;
  CacheStore& operator=(const CacheStore&) = delete;

  /// The backend whose memory holds the rows and whose kernels read them.
  const Backend& backend() const { return backend_; }
  int64_t size() const { return size_; }
  int numColumns() const { return static_cast<int>(columns_.size()); }
  const ColumnSpec& column(int c) const { return columns_[static_cast<size_t>(c)]; }

  /// Raw storage of column c in the backend's memory: size * width elements
  /// of column(c).storage.
  virtual const void* columnData(int c) const = 0;
  /// Host copy of the flags: 1 where a row was written by an insert, a
  /// refresh or initialize(values).
  const uint8_t* filled() const { return filled_.data(); }
  /// Column c as a kernel segment of this backend.
  Segment segment(int c) const;

  /// Replaces the whole state: values[c] (float32/int32, size*width) or null
  /// for zeros; ages (size) or null for zeros; rows with data become filled.
  void initialize(const std::vector<const void*>& values, const int32_t* ages);
  /// DESIGN §3 steps 2-4. Checks unmasked indices first; throws before mutating.
  void update(const CacheUpdate& u);

  void readColumn(int c, void* out) const;                                  // float32 / int32
  void readAge(int32_t* out) const { ages_.readAges(out); }
  void gatherRows(int c, const int32_t* rows, int64_t n, void* out) const;  // float32 / int32

  /// Host bytes of per-row bookkeeping (age order and filled flag).
  size_t bookkeepingBytesPerRow() const { return AgeOrder::kBytesPerRow + sizeof(uint8_t); }
  /// Bytes of the rows (and of any flags) in the backend's memory.
  virtual size_t dataBytes() const = 0;
  /// Host bytes this store holds (reported to the JS engine).
  virtual size_t hostBytes() const = 0;

  // Raw rows, for checkpoints (checkpoint.h): the stored bytes of a column
  // (column(c).storage elements, little-endian), rows [first, first + n).
  /// Bytes of one stored row of column c.
  size_t rawRowBytes(int c) const { return static_cast<size_t>(column(c).width) * dtypeBytes(column(c).storage); }
  /// The whole column c in host memory (size * rawRowBytes(c) bytes) when the
  /// rows live there, nullptr otherwise (then use copyRawOut / copyRawIn).
  virtual void* rawHostColumn(int c) { (void)c; return nullptr; }
  const void* rawHostColumn(int c) const { return const_cast<CacheStore*>(this)->rawHostColumn(c); }
  /// Copies rows [first, first + n) of column c out to host memory `out`.
  virtual void copyRawOut(int c, int64_t first, int64_t n, void* out) const = 0;
  /// Overwrites rows [first, first + n) of column c with host bytes `in`
  /// (the filled flags and ages are not touched: see restoreState).
  virtual void copyRawIn(int c, int64_t first, int64_t n, const void* in) = 0;
  /// Replaces the ages (size entries) and the filled flags (size entries,
  /// 0/1) after the rows were written with copyRawIn (checkpoint restore).
  void restoreState(const int32_t* ages, const uint8_t* filled);
  /// Age of row r (for streaming the ages out without a copy of them all).
  int32_t ageOf(int32_t r) const { return ages_.age(r); }

 protected:
  /// Checks the size and the columns; throws nc::Error ERR_ARGUMENT.
  CacheStore(const Backend& backend, std::vector<ColumnSpec> columns, int64_t size);

  // What a backend implements. Host values are float32 / int32 rows; every
  // index has been checked.
  /// The filled flags in the backend's memory (what the kernels read).
  virtual const uint8_t* kernelFilled() const = 0;
  /// Column c := values (size rows), or zeros when values is null.
  virtual void writeColumn(int c, const void* values) = 0;
  /// Row dst[i] of column c := row src[i] of values, for i < n (dst distinct).
  virtual void writeRows(int c, const void* values, const int32_t* src, const int32_t* dst, int64_t n) = 0;
  /// filled() changed at rows[0..n) (set to 1), or everywhere when rows is null.
  virtual void filledChanged(const int32_t* rows, int64_t n) = 0;
  /// Rows rows[0..n) of column c (all rows in order when rows is null) as host values.
  virtual void readRows(int c, const int32_t* rows, int64_t n, void* out) const = 0;

  const std::vector<ColumnSpec> columns_;
  const int64_t size_;

 private:
  const Backend& backend_;
  std::vector<uint8_t> filled_;
  AgeOrder ages_;
  // Scratch of update(), reused between calls.
  std::vector<std::pair<int32_t, int32_t>> refresh_;
  std::vector<int32_t> refreshSrc_, refreshDst_, insertSrc_, chosen_, touched_;
};

}  // namespace nc
