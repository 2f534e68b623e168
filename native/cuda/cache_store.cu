// The CUDA cache store: row data and filled flags in device memory, ages and
// the insertion order on the host.
//
// The host bookkeeping is an nc::CacheStore with a single int32 column of
// width 1 that is never read: its update() validates, picks the rows for the
// new items (CacheUpdate::insertedRows) and keeps ages and filled flags with
// exactly the CPU semantics. The real rows are then converted to their
// storage type on the host and scattered to the device, refresh first, insert
// second, so an insert that lands on a refreshed row wins as on the CPU.
#include <algorithm>
#include <cstring>
#include <limits>
#include <utility>

#include "../half.h"
#include "cuda_backend.h"
#include "cuda_check.cuh"

namespace nc {
namespace cuda {

namespace {

template <typename T>
__global__ void scatterRowsKernel(T* __restrict__ dst, const T* __restrict__ src, const int32_t* __restrict__ rows,
                                  int64_t n, int64_t width) {
  const int64_t total = n * width;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / width, k = e - i * width;
    dst[static_cast<int64_t>(rows[i]) * width + k] = src[e];
  }
}

template <typename T>
__global__ void gatherRowsKernel(T* __restrict__ dst, const T* __restrict__ src, const int32_t* __restrict__ rows,
                                 int64_t n, int64_t width) {
  const int64_t total = n * width;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / width, k = e - i * width;
    dst[e] = src[static_cast<int64_t>(rows[i]) * width + k];
  }
}

__global__ void setFlagsKernel(uint8_t* __restrict__ flags, const int32_t* __restrict__ rows, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    flags[rows[i]] = 1;
}

unsigned gridFor(int64_t work) {
  const int64_t blocks = (work + 255) / 256;
  return static_cast<unsigned>(std::max<int64_t>(1, std::min<int64_t>(blocks, 65535)));
}

/// Host float32/int32 rows -> storage bytes (row i of out = row src[i] of in).
void packRows(const ColumnSpec& col, const void* in, const int32_t* src, int64_t n, std::vector<uint8_t>& out) {
  const int64_t w = col.width;
  const size_t eb = dtypeBytes(col.storage);
  out.resize(static_cast<size_t>(n * w) * eb);
  for (int64_t i = 0; i < n; ++i) {
    const int64_t s = src ? src[i] : i;
    void* dst = out.data() + static_cast<size_t>(i * w) * eb;
    switch (col.storage) {
      case DType::Float32:
      case DType::Int32:
        std::memcpy(dst, static_cast<const uint8_t*>(in) + static_cast<size_t>(s * w) * 4, static_cast<size_t>(w) * 4);
        break;
      case DType::Float16:
        floatToHalfN(static_cast<const float*>(in) + s * w, static_cast<uint16_t*>(dst), w);
        break;
      case DType::BFloat16:
        floatToBFloat16N(static_cast<const float*>(in) + s * w, static_cast<uint16_t*>(dst), w);
        break;
    }
  }
}

/// Storage bytes -> host float32/int32 (n*width elements).
void unpackRows(const ColumnSpec& col, const uint8_t* in, int64_t count, void* out) {
  switch (col.storage) {
    case DType::Float32:
    case DType::Int32:
      std::memcpy(out, in, static_cast<size_t>(count) * 4);
      break;
    case DType::Float16:
      halfToFloatN(reinterpret_cast<const uint16_t*>(in), static_cast<float*>(out), count);
      break;
    case DType::BFloat16:
      bfloat16ToFloatN(reinterpret_cast<const uint16_t*>(in), static_cast<float*>(out), count);
      break;
  }
}

inline bool on(const uint8_t* mask, int64_t i) { return mask == nullptr || mask[i] != 0; }

void requireDevice() {
  std::string why;
  NC_CHECK(available(&why), "ERR_CUDA", "negative-cache: no usable CUDA device: " + why);
}

}  // namespace

CudaCacheStore::CudaCacheStore(std::vector<ColumnSpec> columns, int64_t size)
    : columns_(std::move(columns)), size_(size) {
  // The bookkeeping store checks the size; the columns are checked here.
  book_ = std::make_unique<CacheStore>(std::vector<ColumnSpec>{ColumnSpec{"__bookkeeping", DType::Int32, 1}}, size);
  for (const ColumnSpec& c : columns_) {
    NC_CHECK(c.width >= 1, "ERR_ARGUMENT", "column '" + c.name + "' must have width >= 1");
    NC_CHECK(static_cast<int32_t>(c.storage) >= 0 && static_cast<int32_t>(c.storage) <= 3, "ERR_ARGUMENT",
             "column '" + c.name + "' has an unknown storage type");
    NC_CHECK(c.width <= (std::numeric_limits<int64_t>::max() / 8) / size, "ERR_ARGUMENT",
             "column '" + c.name + "' is too large");
  }
  requireDevice();
  try {
    for (const ColumnSpec& c : columns_) {
      const size_t bytes = static_cast<size_t>(size) * static_cast<size_t>(c.width) * dtypeBytes(c.storage);
      void* p = nullptr;
      NC_CUDA_CHECK(cudaMalloc(&p, bytes));
      data_.push_back(p);
      NC_CUDA_CHECK(cudaMemset(p, 0, bytes));
    }
    NC_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&filledDevice_), static_cast<size_t>(size)));
    NC_CUDA_CHECK(cudaMemset(filledDevice_, 0, static_cast<size_t>(size)));
  } catch (...) {
    for (void* p : data_) cudaFree(p);
    if (filledDevice_) cudaFree(filledDevice_);
    throw;
  }
}

CudaCacheStore::~CudaCacheStore() {
  for (void* p : data_) cudaFree(p);
  if (filledDevice_) cudaFree(filledDevice_);
}

int CudaCacheStore::columnIndex(const std::string& name) const {
  for (size_t c = 0; c < columns_.size(); ++c)
    if (columns_[c].name == name) return static_cast<int>(c);
  return -1;
}

const uint8_t* CudaCacheStore::filled() const { return book_->filled(); }

void CudaCacheStore::initialize(const std::vector<const void*>& values, const int32_t* ages) {
  NC_CHECK(values.size() == columns_.size(), "ERR_ARGUMENT", "initialize: one value array per column expected");
  bool anyData = false;
  // Upload in slices so the host staging stays small for big caches.
  const int64_t sliceRows = std::max<int64_t>(1, (int64_t{1} << 24) / 4);
  std::vector<uint8_t> staging;
  for (size_t c = 0; c < columns_.size(); ++c) {
    const ColumnSpec& col = columns_[c];
    const size_t rowBytes = static_cast<size_t>(col.width) * dtypeBytes(col.storage);
    if (values[c] == nullptr) {
      NC_CUDA_CHECK(cudaMemset(data_[c], 0, static_cast<size_t>(size_) * rowBytes));
      continue;
    }
    anyData = true;
    const int64_t rowsPerSlice = std::max<int64_t>(1, sliceRows / col.width);
    for (int64_t r0 = 0; r0 < size_; r0 += rowsPerSlice) {
      const int64_t n = std::min(rowsPerSlice, size_ - r0);
      const void* src = static_cast<const uint8_t*>(values[c]) + static_cast<size_t>(r0 * col.width) * 4;
      packRows(col, src, nullptr, n, staging);
      NC_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(data_[c]) + static_cast<size_t>(r0) * rowBytes, staging.data(),
                               static_cast<size_t>(n) * rowBytes, cudaMemcpyHostToDevice));
    }
  }
  NC_CUDA_CHECK(cudaMemset(filledDevice_, anyData ? 1 : 0, static_cast<size_t>(size_)));
  std::vector<int32_t> marker;
  if (anyData) marker.assign(static_cast<size_t>(size_), 0);
  book_->initialize({anyData ? marker.data() : nullptr}, ages);
}

void CudaCacheStore::uploadRows(int c, const void* hostValues, const int32_t* srcRows, const int32_t* dstRows,
                                int64_t n) {
  if (n == 0) return;
  const ColumnSpec& col = columns_[static_cast<size_t>(c)];
  std::vector<uint8_t> packed;
  packRows(col, hostValues, srcRows, n, packed);
  DeviceBuffer<uint8_t> staging(packed.size());
  DeviceBuffer<int32_t> rows(static_cast<size_t>(n));
  NC_CUDA_CHECK(cudaMemcpy(staging.get(), packed.data(), packed.size(), cudaMemcpyHostToDevice));
  NC_CUDA_CHECK(cudaMemcpy(rows.get(), dstRows, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice));
  const int64_t work = n * col.width;
  if (dtypeBytes(col.storage) == 2) {
    scatterRowsKernel<uint16_t><<<gridFor(work), 256>>>(static_cast<uint16_t*>(data_[c]),
                                                        reinterpret_cast<const uint16_t*>(staging.get()), rows.get(),
                                                        n, col.width);
  } else {
    scatterRowsKernel<uint32_t><<<gridFor(work), 256>>>(static_cast<uint32_t*>(data_[c]),
                                                        reinterpret_cast<const uint32_t*>(staging.get()), rows.get(),
                                                        n, col.width);
  }
  NC_CUDA_CHECK_LAUNCH();
  NC_CUDA_CHECK(cudaDeviceSynchronize());  // staging is freed on return
}

void CudaCacheStore::update(const CacheUpdate& u) {
  const size_t nCols = columns_.size();
  NC_CHECK(u.numUpdated >= 0 && u.numNew >= 0, "ERR_ARGUMENT", "update: negative row count");
  NC_CHECK(u.numUpdated == 0 || u.updatedValues.size() == nCols, "ERR_ARGUMENT",
           "update: one updated-value slot per column expected");
  NC_CHECK(u.numNew == 0 || u.newValues.size() == nCols, "ERR_ARGUMENT",
           "update: one new-value array per column expected");
  for (size_t c = 0; u.numNew > 0 && c < nCols; ++c)
    NC_CHECK(u.newValues[c] != nullptr, "ERR_ARGUMENT", "update: newItems missing a column");

  // Host bookkeeping first: it checks every index and the insert count and
  // throws before changing anything.
  std::vector<int32_t> marker(static_cast<size_t>(u.numNew), 0);
  std::vector<int32_t> inserted(static_cast<size_t>(u.numNew), -1);
  CacheUpdate book;
  book.useLru = u.useLru;
  book.numUpdated = u.numUpdated;
  book.updatedValues.assign(1, nullptr);
  book.updatedIndices = u.updatedIndices;
  book.updatedMask = u.updatedMask;
  book.numNew = u.numNew;
  book.newValues.assign(1, u.numNew > 0 ? marker.data() : nullptr);
  book.newMask = u.newMask;
  book.insertedRows = inserted.data();
  book_->update(book);

  // Refresh: the later i wins for a repeated row.
  std::vector<std::pair<int32_t, int32_t>> refresh;  // (row, i)
  for (int64_t i = 0; i < u.numUpdated; ++i)
    if (on(u.updatedMask, i)) refresh.emplace_back(u.updatedIndices[i], static_cast<int32_t>(i));
  std::sort(refresh.begin(), refresh.end());
  std::vector<int32_t> refreshSrc, refreshDst;
  for (size_t t = 0; t < refresh.size(); ++t) {
    if (t + 1 < refresh.size() && refresh[t + 1].first == refresh[t].first) continue;
    refreshDst.push_back(refresh[t].first);
    refreshSrc.push_back(refresh[t].second);
  }
  std::vector<int32_t> insertSrc, insertDst;
  for (int64_t i = 0, j = 0; i < u.numNew; ++i) {
    if (!on(u.newMask, i)) continue;
    insertSrc.push_back(static_cast<int32_t>(i));
    insertDst.push_back(inserted[static_cast<size_t>(j++)]);
  }
  const int64_t nr = static_cast<int64_t>(refreshDst.size()), ni = static_cast<int64_t>(insertDst.size());
  for (size_t c = 0; c < nCols && nr > 0; ++c)
    if (u.updatedValues[c] != nullptr)
      uploadRows(static_cast<int>(c), u.updatedValues[c], refreshSrc.data(), refreshDst.data(), nr);
  for (size_t c = 0; c < nCols && ni > 0; ++c)
    uploadRows(static_cast<int>(c), u.newValues[c], insertSrc.data(), insertDst.data(), ni);
  std::vector<int32_t> touched(refreshDst);
  touched.insert(touched.end(), insertDst.begin(), insertDst.end());
  if (!touched.empty()) {
    DeviceBuffer<int32_t> rows(touched.size());
    NC_CUDA_CHECK(cudaMemcpy(rows.get(), touched.data(), touched.size() * 4, cudaMemcpyHostToDevice));
    setFlagsKernel<<<gridFor(static_cast<int64_t>(touched.size())), 256>>>(filledDevice_, rows.get(),
                                                                          static_cast<int64_t>(touched.size()));
    NC_CUDA_CHECK_LAUNCH();
    NC_CUDA_CHECK(cudaDeviceSynchronize());
  }
  if (u.insertedRows != nullptr)
    std::copy(inserted.begin(), inserted.begin() + ni, u.insertedRows);
}

void CudaCacheStore::readColumn(int c, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "readColumn: no such column");
  const ColumnSpec& col = columns_[static_cast<size_t>(c)];
  const int64_t count = size_ * col.width;
  if (dtypeBytes(col.storage) == 4) {
    NC_CUDA_CHECK(cudaMemcpy(out, data_[static_cast<size_t>(c)], static_cast<size_t>(count) * 4, cudaMemcpyDeviceToHost));
    return;
  }
  std::vector<uint8_t> raw(static_cast<size_t>(count) * 2);
  NC_CUDA_CHECK(cudaMemcpy(raw.data(), data_[static_cast<size_t>(c)], raw.size(), cudaMemcpyDeviceToHost));
  unpackRows(col, raw.data(), count, out);
}

void CudaCacheStore::readAge(int32_t* out) const { book_->readAge(out); }

void CudaCacheStore::gatherRows(int c, const int32_t* rows, int64_t n, void* out) const {
  NC_CHECK(c >= 0 && c < numColumns(), "ERR_ARGUMENT", "gatherRows: no such column");
  NC_CHECK(n >= 0, "ERR_ARGUMENT", "gatherRows: negative row count");
  for (int64_t i = 0; i < n; ++i)
    NC_CHECK(rows[i] >= 0 && rows[i] < size_, "ERR_ARGUMENT",
             "gatherRows: row " + std::to_string(rows[i]) + " is outside [0, " + std::to_string(size_) + ")");
  if (n == 0) return;
  const ColumnSpec& col = columns_[static_cast<size_t>(c)];
  const size_t eb = dtypeBytes(col.storage);
  const int64_t count = n * col.width;
  DeviceBuffer<int32_t> dRows(static_cast<size_t>(n));
  DeviceBuffer<uint8_t> dOut(static_cast<size_t>(count) * eb);
  NC_CUDA_CHECK(cudaMemcpy(dRows.get(), rows, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice));
  if (eb == 2) {
    gatherRowsKernel<uint16_t><<<gridFor(count), 256>>>(reinterpret_cast<uint16_t*>(dOut.get()),
                                                        static_cast<const uint16_t*>(data_[static_cast<size_t>(c)]),
                                                        dRows.get(), n, col.width);
  } else {
    gatherRowsKernel<uint32_t><<<gridFor(count), 256>>>(reinterpret_cast<uint32_t*>(dOut.get()),
                                                        static_cast<const uint32_t*>(data_[static_cast<size_t>(c)]),
                                                        dRows.get(), n, col.width);
  }
  NC_CUDA_CHECK_LAUNCH();
  std::vector<uint8_t> raw(static_cast<size_t>(count) * eb);
  NC_CUDA_CHECK(cudaMemcpy(raw.data(), dOut.get(), raw.size(), cudaMemcpyDeviceToHost));
  unpackRows(col, raw.data(), count, out);
}

size_t CudaCacheStore::bookkeepingBytesPerRow() const {
  return book_->bookkeepingBytesPerRow() + 4;  // + the unused int32 marker column
}

size_t CudaCacheStore::dataBytes() const {
  size_t total = static_cast<size_t>(size_);  // device filled flags
  for (const ColumnSpec& c : columns_) total += static_cast<size_t>(size_) * c.width * dtypeBytes(c.storage);
  return total;
}

}  // namespace cuda
}  // namespace nc
