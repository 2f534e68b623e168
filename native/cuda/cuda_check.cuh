// Internal to native/cuda: the one macro every CUDA runtime call goes through,
// and small device-memory helpers.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../common.h"

namespace nc {
namespace cuda {

[[noreturn]] void throwCudaError(cudaError_t err, const char* call, const char* file, int line);

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
  size_t size() const { return count_; }

 private:
  T* ptr_ = nullptr;
  size_t count_ = 0;
};

}  // namespace cuda
}  // namespace nc
