// Device discovery and the CUDA error policy.
#include <cstdlib>
#include <mutex>
#include <string>

#include "cuda_backend.h"
#include "cuda_check.cuh"

namespace nc {
namespace cuda {

void throwCudaError(cudaError_t err, const char* call, const char* file, int line) {
  cudaGetLastError();  // clear a sticky launch error so the next call starts clean
  const std::string msg = std::string("CUDA: ") + call + " failed: " + cudaGetErrorName(err) + " (" +
                          cudaGetErrorString(err) + ") (" + file + ":" + std::to_string(line) + ")";
  throw Error(err == cudaErrorMemoryAllocation ? "ERR_OUT_OF_MEMORY" : "ERR_CUDA", msg);
}

namespace {

struct Probe {
  bool ok = false;
  int count = 0;
  std::string why;
};

// The minimum compute capability the kernels are built for (CMake: sm_80 PTX, sm_90 SASS).
constexpr int kMinMajor = 8;

const Probe& probe() {
  static Probe p;
  static std::once_flag once;
  std::call_once(once, [] {
    int n = 0;
    const cudaError_t err = cudaGetDeviceCount(&n);
    if (err != cudaSuccess) {
      cudaGetLastError();
      p.why = std::string("cudaGetDeviceCount failed: ") + cudaGetErrorName(err) + " (" + cudaGetErrorString(err) + ")";
      return;
    }
    p.count = n;
    if (n == 0) {
      p.why = "no CUDA device is visible";
      return;
    }
    int device = 0;
    cudaDeviceProp prop;
    if (cudaGetDevice(&device) != cudaSuccess || cudaGetDeviceProperties(&prop, device) != cudaSuccess) {
      cudaGetLastError();
      p.why = "cudaGetDeviceProperties failed";
      return;
    }
    if (prop.major < kMinMajor) {
      p.why = std::string("device ") + prop.name + " has compute capability " + std::to_string(prop.major) + "." +
              std::to_string(prop.minor) + "; the CUDA kernels need 8.0 or newer";
      return;
    }
    const cudaError_t ctx = cudaFree(nullptr);  // creates the context: fails early on a broken setup
    if (ctx != cudaSuccess) {
      cudaGetLastError();
      p.why = std::string("creating a CUDA context failed: ") + cudaGetErrorName(ctx) + " (" + cudaGetErrorString(ctx) + ")";
      return;
    }
    p.ok = true;
  });
  return p;
}

int splitsFromEnv() {
  const char* v = std::getenv("NEGATIVE_CACHE_CUDA_SPLITS");
  if (v && v[0] >= '0' && v[0] <= '3' && v[1] == '\0') return v[0] - '0';
  return 2;
}

int gSplits = -1;
std::mutex gSplitsMutex;

}  // namespace

void requireDevice() {
  std::string why;
  NC_CHECK(available(&why), "ERR_CUDA", "negative-cache: no usable CUDA device: " + why);
}

bool available(std::string* why) {
  const Probe& p = probe();
  if (why) *why = p.ok ? std::string() : p.why;
  return p.ok;
}

int deviceCount() { return probe().count; }

std::string deviceDescription() {
  NC_CHECK(available(), "ERR_CUDA", "no usable CUDA device: " + probe().why);
  int device = 0;
  NC_CUDA_CHECK(cudaGetDevice(&device));
  cudaDeviceProp prop;
  NC_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + " (sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         std::to_string(prop.multiProcessorCount) + " SMs, " +
         std::to_string(static_cast<long long>(prop.totalGlobalMem >> 20)) + " MiB)";
}

void setQuerySplits(int splits) {
  NC_CHECK(splits >= 0 && splits <= 3, "ERR_ARGUMENT", "query splits must be 0, 1, 2 or 3; got " + std::to_string(splits));
  std::lock_guard<std::mutex> lock(gSplitsMutex);
  gSplits = splits;
}

int querySplits() {
  std::lock_guard<std::mutex> lock(gSplitsMutex);
  if (gSplits < 0) gSplits = splitsFromEnv();
  return gSplits;
}

}  // namespace cuda
}  // namespace nc
