// The CPU backend's cache store: rows in host memory, 64-byte aligned.
#pragma once
#include <vector>

#include "cache_store.h"

namespace nc {
namespace cpu {

class CpuCacheStore final : public CacheStore {
 public:
  /// A cache of `size` rows, all zeros, ages 0, nothing filled. Throws nc::Error.
  CpuCacheStore(std::vector<ColumnSpec> columns, int64_t size);
  ~CpuCacheStore() override;

  const void* columnData(int c) const override { return data_.at(static_cast<size_t>(c)); }
  size_t dataBytes() const override;
  size_t hostBytes() const override;
  void* rawHostColumn(int c) override { return data_.at(static_cast<size_t>(c)); }
  void copyRawOut(int c, int64_t first, int64_t n, void* out) const override;
  void copyRawIn(int c, int64_t first, int64_t n, const void* in) override;

 private:
  const uint8_t* kernelFilled() const override { return filled(); }
  void writeColumn(int c, const void* values) override;
  void writeRows(int c, const void* values, const int32_t* src, const int32_t* dst, int64_t n) override;
  void filledChanged(const int32_t*, int64_t) override {}
  void readRows(int c, const int32_t* rows, int64_t n, void* out) const override;

  size_t rowBytes(int c) const;

  std::vector<void*> data_;  // per column, size * width elements
};

}  // namespace cpu
}  // namespace nc
