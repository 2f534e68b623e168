#include "cpu_store.h"

#include <cstdlib>
#include <cstring>
#include <new>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "backend.h"
#include "rows.h"

namespace nc {
namespace cpu {

namespace {

// Columns of 2 MiB or more are mapped from the kernel, which hands out zeroed
// pages on first touch: no memset pass over the whole cache at creation (a
// load then first-touches the rows as it copies them in, once), and
// MADV_HUGEPAGE asks for 2 MiB pages, which take 512 times fewer page faults
// to fill (and fewer TLB misses to scan). Smaller ones come from the heap.
constexpr size_t kMapBytes = size_t{2} << 20;

size_t roundedBytes(size_t bytes) {
  const size_t alignment = 64;
  size_t rounded = (bytes + alignment - 1) / alignment * alignment;
  return rounded == 0 ? alignment : rounded;
}

void* allocZeroed(size_t bytes) {
  const size_t rounded = roundedBytes(bytes);
#if defined(__linux__)
  if (rounded >= kMapBytes) {
    void* p = ::mmap(nullptr, rounded, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) throw std::bad_alloc();
#ifdef MADV_HUGEPAGE
    ::madvise(p, rounded, MADV_HUGEPAGE);  // advice only: ignored where THP is off
#endif
    return p;
  }
#endif
  void* p = nullptr;
  if (posix_memalign(&p, 64, rounded) != 0 || p == nullptr) throw std::bad_alloc();
  std::memset(p, 0, rounded);
  return p;
}

void freeZeroed(void* p, size_t bytes) {
  if (p == nullptr) return;
  const size_t rounded = roundedBytes(bytes);
#if defined(__linux__)
  if (rounded >= kMapBytes) {
    ::munmap(p, rounded);
    return;
  }
#endif
  std::free(p);
}

}  // namespace

CpuCacheStore::CpuCacheStore(std::vector<ColumnSpec> columns, int64_t size)
    : CacheStore(cpuBackend(), std::move(columns), size) {
  data_.reserve(columns_.size());
  try {
    for (size_t c = 0; c < columns_.size(); ++c)
      data_.push_back(allocZeroed(static_cast<size_t>(size_) * rowBytes(static_cast<int>(c))));
  } catch (...) {
    for (size_t c = 0; c < data_.size(); ++c)
      freeZeroed(data_[c], static_cast<size_t>(size_) * rowBytes(static_cast<int>(c)));
    throw;
  }
}

CpuCacheStore::~CpuCacheStore() {
  for (size_t c = 0; c < data_.size(); ++c)
    freeZeroed(data_[c], static_cast<size_t>(size_) * rowBytes(static_cast<int>(c)));
}

size_t CpuCacheStore::rowBytes(int c) const {
  const ColumnSpec& col = column(c);
  return static_cast<size_t>(col.width) * dtypeBytes(col.storage);
}

void CpuCacheStore::writeColumn(int c, const void* values) {
  void* base = data_[static_cast<size_t>(c)];
  if (values == nullptr) {
    std::memset(base, 0, static_cast<size_t>(size_) * rowBytes(c));
    return;
  }
  packRows(column(c).storage, column(c).width, values, nullptr, size_, base);
}

void CpuCacheStore::writeRows(int c, const void* values, const int32_t* src, const int32_t* dst, int64_t n) {
  const ColumnSpec& col = column(c);
  char* base = static_cast<char*>(data_[static_cast<size_t>(c)]);
  const size_t rb = rowBytes(c);
  for (int64_t i = 0; i < n; ++i)
    packRows(col.storage, col.width, values, src + i, 1, base + static_cast<size_t>(dst[i]) * rb);
}

void CpuCacheStore::readRows(int c, const int32_t* rows, int64_t n, void* out) const {
  const ColumnSpec& col = column(c);
  const char* base = static_cast<const char*>(data_[static_cast<size_t>(c)]);
  if (rows == nullptr) {
    unpackElements(col.storage, base, n * col.width, out);
    return;
  }
  const size_t rb = rowBytes(c), outRow = static_cast<size_t>(col.width) * 4;
  for (int64_t i = 0; i < n; ++i)
    unpackElements(col.storage, base + static_cast<size_t>(rows[i]) * rb, col.width,
                   static_cast<char*>(out) + static_cast<size_t>(i) * outRow);
}

void CpuCacheStore::copyRawOut(int c, int64_t first, int64_t n, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns() && first >= 0 && n >= 0 && first + n <= size_, "ERR_ARGUMENT",
           "copyRawOut: rows outside the cache");
  const size_t rb = rowBytes(c);
  std::memcpy(out, static_cast<const char*>(data_[static_cast<size_t>(c)]) + static_cast<size_t>(first) * rb,
              static_cast<size_t>(n) * rb);
}

void CpuCacheStore::copyRawIn(int c, int64_t first, int64_t n, const void* in) {
  NC_CHECK(c >= 0 && c < numColumns() && first >= 0 && n >= 0 && first + n <= size_, "ERR_ARGUMENT",
           "copyRawIn: rows outside the cache");
  const size_t rb = rowBytes(c);
  std::memcpy(static_cast<char*>(data_[static_cast<size_t>(c)]) + static_cast<size_t>(first) * rb, in,
              static_cast<size_t>(n) * rb);
}

size_t CpuCacheStore::dataBytes() const {
  size_t total = 0;
  for (int c = 0; c < numColumns(); ++c) total += static_cast<size_t>(size_) * rowBytes(c);
  return total;
}

size_t CpuCacheStore::hostBytes() const {
  return dataBytes() + bookkeepingBytesPerRow() * static_cast<size_t>(size_);
}

}  // namespace cpu
}  // namespace nc
