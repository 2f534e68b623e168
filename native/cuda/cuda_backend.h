// The CUDA backend: the same interface as the CPU cache store (cache_store.h)
// and kernels (kernels.h), with the cache rows in device memory. This header
// has no CUDA includes, so plain C++ (the binding, the tests) can use it; it
// is only compiled in when the build defines NEGCACHE_WITH_CUDA.
//
// Every call is synchronous (results are on the host when it returns) and
// throws nc::Error: "ERR_CUDA" for a failed CUDA call (message names the call,
// the CUDA error and file:line), "ERR_ARGUMENT" for bad arguments,
// "ERR_OUT_OF_MEMORY" when device memory runs out.
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "../cache_store.h"
#include "../common.h"
#include "../kernels.h"

namespace nc {
namespace cuda {

/// True when a CUDA device can be used; otherwise false and *why (if given)
/// holds the reason (no driver, no device, driver too old). Never throws.
bool available(std::string* why = nullptr);
/// Number of visible CUDA devices (0 when unavailable). Never throws.
int deviceCount();
/// "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs)" for the current device. Throws ERR_CUDA.
std::string deviceDescription();

/// Bf16 storage is scored on tensor cores with the float32 queries split into
/// `splits` bfloat16 terms (1: fastest, query rounded to bf16; 2: ~16-bit
/// query mantissa; 3: ~24 bits, as float32). 0 scores bf16 rows on the float32
/// SIMT path like float32/float16 storage. Default 2, or the environment
/// variable NEGATIVE_CACHE_CUDA_SPLITS (0-3) read at the first call.
void setQuerySplits(int splits);
int querySplits();

/// A cache whose columns live in device memory. Ages and the insertion order
/// are kept on the host by a bookkeeping-only nc::CacheStore (one int32
/// column), so they follow the CPU semantics exactly; `filled` is kept on both
/// sides. Same method contract as nc::CacheStore.
class CudaCacheStore {
 public:
  /// A cache of `size` rows, all zeros, ages 0, nothing filled. Throws nc::Error.
  CudaCacheStore(std::vector<ColumnSpec> columns, int64_t size);
  ~CudaCacheStore();
  CudaCacheStore(const CudaCacheStore&) = delete;
  CudaCacheStore& operator=(const CudaCacheStore&) = delete;

  int64_t size() const { return size_; }
  int numColumns() const { return static_cast<int>(columns_.size()); }
  const ColumnSpec& column(int c) const { return columns_[c]; }
  int columnIndex(const std::string& name) const;

  /// Device pointer to column c (size * width elements of its storage).
  const void* columnData(int c) const { return data_.at(static_cast<size_t>(c)); }
  /// Device pointer to the filled flags (size bytes).
  const uint8_t* filledDevice() const { return filledDevice_; }
  /// Host copy of the filled flags (kept in step with the device).
  const uint8_t* filled() const;

  /// Same as nc::CacheStore::initialize (host values, converted on upload).
  void initialize(const std::vector<const void*>& values, const int32_t* ages);
  /// Same as nc::CacheStore::update; checks before mutating. The rows are
  /// scattered to the device after the host bookkeeping succeeded.
  void update(const CacheUpdate& u);

  void readColumn(int c, void* out) const;                 // host float32 / int32
  void readAge(int32_t* out) const;
  void gatherRows(int c, const int32_t* rows, int64_t n, void* out) const;  // host float32 / int32

  size_t bookkeepingBytesPerRow() const;  // host bytes per row
  size_t dataBytes() const;               // device bytes

 private:
  void uploadRows(int c, const void* hostValues, const int32_t* srcRows, const int32_t* dstRows, int64_t n);

  std::vector<ColumnSpec> columns_;
  int64_t size_;
  std::vector<void*> data_;        // device
  uint8_t* filledDevice_ = nullptr;
  std::unique_ptr<CacheStore> book_;  // host bookkeeping: ages, order, filled
};

/// DESIGN §3 kernels on the device; same contracts as nc::scoreAndSample etc.
/// in kernels.h, except that Segment::data and Segment::filled are device
/// pointers (CudaCacheStore::columnData / filledDevice). Queries and outputs
/// are host memory. ScoreRequest::threads is ignored.
void scoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out);
void scoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores, int32_t* groupRows);
/// The candidate matrix is a small host matrix (batch x groups): sampled on
/// the host with the CPU kernel, so results are identical to the CPU backend.
inline void sampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params,
                             int threads, SampleOutput& out) {
  nc::sampleCandidates(scores, batch, cols, params, threads, out);
}
void scoreMatrix(const ScoreRequest& req, float* out);

}  // namespace cuda
}  // namespace nc
