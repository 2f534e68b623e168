// The CUDA backend: the Backend interface (backend.h) with the cache rows and
// the filled flags in device memory; ages, insertion order and a host copy of
// the flags are the shared host bookkeeping of every CacheStore, so they
// follow the CPU semantics exactly. This header has no CUDA includes, so
// plain C++ (the binding, the tests) can use it; it exists only in builds
// that define NEGCACHE_WITH_CUDA (linking negcache_cuda).
//
// Every call is synchronous (results are on the host when it returns) and
// throws nc::Error: "ERR_CUDA" for a failed CUDA call (message names the call,
// the CUDA error and file:line), "ERR_ARGUMENT" for bad arguments,
// "ERR_OUT_OF_MEMORY" when device memory runs out.
//
// Kernel requests: Segment::data and Segment::filled are device pointers
// (CacheStore::segment of a CUDA store); queries and outputs are host
// memory; ScoreRequest::threads is ignored. sampleCandidates works on a small
// host matrix and runs the CPU kernel, so its draws are the CPU's.
#pragma once
#include <string>

#include "../backend.h"

namespace nc {
namespace cuda {

/// The CUDA backend.
const Backend& cudaBackend();

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

}  // namespace cuda
}  // namespace nc
