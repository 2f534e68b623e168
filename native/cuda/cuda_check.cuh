// Internal to native/cuda: the one macro every CUDA runtime call goes through,
// small device-memory helpers, the grid size of the elementwise kernels and
// the store factory.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "../cache_store.h"
#include "../common.h"

namespace nc {
namespace cuda {

[[noreturn]] void throwCudaError(cudaError_t err, const char* call, const char* file, int line);

/// Throws ERR_CUDA with the reason when no device can be used.
void requireDevice();

/// The CUDA backend's store (cache_store.cu), for CudaBackend::createStore.
std::unique_ptr<CacheStore> createCudaStore(std::vector<ColumnSpec> columns, int64_t size);

}  // namespace cuda
}  // namespace nc

/// Checks a cudaError_t; throws nc::Error("ERR_CUDA" or "ERR_OUT_OF_MEMORY",
/// "<call>: <cuda error> (file:line)").
#define NC_CUDA_CHECK(call)                                                 \
  do {                                                                      \
    const cudaError_t ncCudaErr_ = (call);                                  \
    if (ncCudaErr_ != cudaSuccess)                                          \
      ::nc::cuda::throwCudaError(ncCudaErr_, #call, __FILE__, __LINE__);   \
  } while (0)

/// Checks the launch of the kernel just issued.
#define NC_CUDA_CHECK_LAUNCH() NC_CUDA_CHECK(cudaGetLastError())

namespace nc {
namespace cuda {

/// Device buffer owned by a scope (freed without throwing).
template <typename T>
class DeviceBuffer {
 public:
  DeviceBuffer() = default;
  explicit DeviceBuffer(size_t count) { reset(count); }
  ~DeviceBuffer() {
    if (ptr_) cudaFree(ptr_);
  }
  DeviceBuffer(const DeviceBuffer&) = delete;
  DeviceBuffer& operator=(const DeviceBuffer&) = delete;
  void reset(size_t count) {
    if (ptr_) cudaFree(ptr_);
    ptr_ = nullptr;
    count_ = 0;
    if (count == 0) return;
    NC_CUDA_CHECK(cudaMalloc(reinterpret_cast<void**>(&ptr_), count * sizeof(T)));
    count_ = count;
  }
  /// Grows (never shrinks) to at least count elements; contents are lost.
  void reserve(size_t count) {
    if (count > count_) reset(count);
  }
  T* get() const { return ptr_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

/// Blocks of 256 threads for `work` elements of a grid-stride kernel.
inline unsigned gridFor(int64_t work) {
  const int64_t blocks = (work + 255) / 256;
  return static_cast<unsigned>(blocks < 1 ? 1 : blocks > 65535 ? 65535 : blocks);
}

}  // namespace cuda
}  // namespace nc
