// The CUDA cache store: row data and filled flags in device memory. The host
// bookkeeping (ages, insertion order, the host copy of the flags) and the
// update semantics are the shared CacheStore's; this file only moves rows:
// host values are converted to their storage type on the host (rows.h) and
// scattered to the device.
#include <algorithm>
#include <utility>

#include "../rows.h"
#include "cuda_backend.h"
#include "cuda_check.cuh"

namespace nc {
namespace cuda {

namespace {

/// dst[rows[i] * width + k] = src[i * width + k] (scatter) or the reverse (gather).
template <typename T, bool Scatter>
__global__ void moveRowsKernel(T* __restrict__ dst, const T* __restrict__ src, const int32_t* __restrict__ rows,
                               int64_t n, int64_t width) {
  const int64_t total = n * width;
  for (int64_t e = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; e < total;
       e += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t i = e / width, k = e - i * width;
    const int64_t r = static_cast<int64_t>(rows[i]) * width + k;
    if (Scatter) dst[r] = src[e]; else dst[e] = src[r];
  }
}

__global__ void setFlagsKernel(uint8_t* __restrict__ flags, const int32_t* __restrict__ rows, int64_t n) {
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x)
    flags[rows[i]] = 1;
}

/// Scatters (or gathers) n rows of `width` elements of `bytes` (2 or 4) each.
template <bool Scatter>
void moveRows(size_t bytes, void* dst, const void* src, const int32_t* rows, int64_t n, int64_t width) {
  const int64_t work = n * width;
  if (bytes == 2) {
    moveRowsKernel<uint16_t, Scatter><<<gridFor(work), 256>>>(static_cast<uint16_t*>(dst),
                                                             static_cast<const uint16_t*>(src), rows, n, width);
  } else {
    moveRowsKernel<uint32_t, Scatter><<<gridFor(work), 256>>>(static_cast<uint32_t*>(dst),
                                                             static_cast<const uint32_t*>(src), rows, n, width);
  }
  NC_CUDA_CHECK_LAUNCH();
}

class CudaCacheStore final : public CacheStore {
 public:
  CudaCacheStore(std::vector<ColumnSpec> columns, int64_t size)
      : CacheStore(cudaBackend(), std::move(columns), size) {
    requireDevice();
    try {
      for (int c = 0; c < numColumns(); ++c) {
        const size_t bytes = static_cast<size_t>(size_) * rowBytes(c);
        void* p = nullptr;
        NC_CUDA_CHECK(cudaMalloc(&p, bytes));
        data_.push_back(p);
        NC_CUDA_CHECK(cudaMemset(p, 0, bytes));
      }
      NC_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&filledDevice_), static_cast<size_t>(size_)));
      NC_CUDA_CHECK(cudaMemset(filledDevice_, 0, static_cast<size_t>(size_)));
    } catch (...) {
      release();
      throw;
    }
  }
  ~CudaCacheStore() override { release(); }

  const void* columnData(int c) const override { return data_.at(static_cast<size_t>(c)); }

  size_t dataBytes() const override {
    size_t total = static_cast<size_t>(size_);  // device filled flags
    for (int c = 0; c < numColumns(); ++c) total += static_cast<size_t>(size_) * rowBytes(c);
    return total;
  }
  size_t hostBytes() const override { return bookkeepingBytesPerRow() * static_cast<size_t>(size_); }

  // Checkpoints: the rows stay on the device, so they move through host
  // buffers of the caller (checkpoint.cc streams in chunks).
  void copyRawOut(int c, int64_t first, int64_t n, void* out) const override {
    NC_CHECK(c >= 0 && c < numColumns() && first >= 0 && n >= 0 && first + n <= size_, "ERR_ARGUMENT",
             "copyRawOut: rows outside the cache");
    const size_t rb = rowBytes(c);
    if (n == 0) return;
    NC_CUDA_CHECK(cudaMemcpy(out, static_cast<const uint8_t*>(data_[static_cast<size_t>(c)]) + static_cast<size_t>(first) * rb,
                             static_cast<size_t>(n) * rb, cudaMemcpyDeviceToHost));
  }
  void copyRawIn(int c, int64_t first, int64_t n, const void* in) override {
    NC_CHECK(c >= 0 && c < numColumns() && first >= 0 && n >= 0 && first + n <= size_, "ERR_ARGUMENT",
             "copyRawIn: rows outside the cache");
    const size_t rb = rowBytes(c);
    if (n == 0) return;
    NC_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(data_[static_cast<size_t>(c)]) + static_cast<size_t>(first) * rb, in,
                             static_cast<size_t>(n) * rb, cudaMemcpyHostToDevice));
  }

 private:
  const uint8_t* kernelFilled() const override { return filledDevice_; }

  size_t rowBytes(int c) const { return static_cast<size_t>(column(c).width) * dtypeBytes(column(c).storage); }

  void release() {
    for (void* p : data_) cudaFree(p);
    data_.clear();
    if (filledDevice_) cudaFree(filledDevice_);
    filledDevice_ = nullptr;
  }

  void writeColumn(int c, const void* values) override {
    const ColumnSpec& col = column(c);
    const size_t rb = rowBytes(c);
    if (values == nullptr) {
      NC_CUDA_CHECK(cudaMemset(data_[static_cast<size_t>(c)], 0, static_cast<size_t>(size_) * rb));
      return;
    }
    // Upload in slices so the host staging stays small for big caches.
    const int64_t rowsPerSlice = std::max<int64_t>(1, ((int64_t{1} << 24) / 4) / col.width);
    std::vector<uint8_t> staging;
    for (int64_t r0 = 0; r0 < size_; r0 += rowsPerSlice) {
      const int64_t n = std::min(rowsPerSlice, size_ - r0);
      staging.resize(static_cast<size_t>(n) * rb);
      packRows(col.storage, col.width, static_cast<const uint8_t*>(values) + static_cast<size_t>(r0 * col.width) * 4,
               nullptr, n, staging.data());
      NC_CUDA_CHECK(cudaMemcpy(static_cast<uint8_t*>(data_[static_cast<size_t>(c)]) + static_cast<size_t>(r0) * rb,
                               staging.data(), staging.size(), cudaMemcpyHostToDevice));
    }
  }

  void writeRows(int c, const void* values, const int32_t* src, const int32_t* dst, int64_t n) override {
    const ColumnSpec& col = column(c);
    std::vector<uint8_t> packed(static_cast<size_t>(n) * rowBytes(c));
    packRows(col.storage, col.width, values, src, n, packed.data());
    DeviceBuffer<uint8_t> staging(packed.size());
    DeviceBuffer<int32_t> rows(static_cast<size_t>(n));
    NC_CUDA_CHECK(cudaMemcpy(staging.get(), packed.data(), packed.size(), cudaMemcpyHostToDevice));
    NC_CUDA_CHECK(cudaMemcpy(rows.get(), dst, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice));
    moveRows<true>(dtypeBytes(col.storage), data_[static_cast<size_t>(c)], staging.get(), rows.get(), n, col.width);
    NC_CUDA_CHECK(cudaDeviceSynchronize());  // staging is freed on return
  }

  void filledChanged(const int32_t* rows, int64_t n) override {
    if (rows == nullptr) {
      NC_CUDA_CHECK(cudaMemcpy(filledDevice_, filled(), static_cast<size_t>(size_), cudaMemcpyHostToDevice));
      return;
    }
    DeviceBuffer<int32_t> dRows(static_cast<size_t>(n));
    NC_CUDA_CHECK(cudaMemcpy(dRows.get(), rows, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice));
    setFlagsKernel<<<gridFor(n), 256>>>(filledDevice_, dRows.get(), n);
    NC_CUDA_CHECK_LAUNCH();
    NC_CUDA_CHECK(cudaDeviceSynchronize());
  }

  void readRows(int c, const int32_t* rows, int64_t n, void* out) const override {
    const ColumnSpec& col = column(c);
    const size_t eb = dtypeBytes(col.storage);
    const int64_t count = n * col.width;
    const void* data = data_[static_cast<size_t>(c)];
    DeviceBuffer<int32_t> dRows;
    DeviceBuffer<uint8_t> gathered;
    if (rows != nullptr) {
      dRows.reset(static_cast<size_t>(n));
      gathered.reset(static_cast<size_t>(count) * eb);
      NC_CUDA_CHECK(cudaMemcpy(dRows.get(), rows, static_cast<size_t>(n) * 4, cudaMemcpyHostToDevice));
      moveRows<false>(eb, gathered.get(), data, dRows.get(), n, col.width);
      data = gathered.get();
    }
    if (eb == 4) {
      NC_CUDA_CHECK(cudaMemcpy(out, data, static_cast<size_t>(count) * 4, cudaMemcpyDeviceToHost));
      return;
    }
    std::vector<uint8_t> raw(static_cast<size_t>(count) * eb);
    NC_CUDA_CHECK(cudaMemcpy(raw.data(), data, raw.size(), cudaMemcpyDeviceToHost));
    unpackElements(col.storage, raw.data(), count, out);
  }

  std::vector<void*> data_;  // device, per column
  uint8_t* filledDevice_ = nullptr;
};

}  // namespace

std::unique_ptr<CacheStore> createCudaStore(std::vector<ColumnSpec> columns, int64_t size) {
  return std::make_unique<CudaCacheStore>(std::move(columns), size);
}

}  // namespace cuda
}  // namespace nc
