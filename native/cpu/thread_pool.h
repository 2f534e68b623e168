// The CPU kernels' persistent thread pool (thread_pool.cc).
#pragma once
#include <cstdint>

namespace nc {
namespace cpu {

/// Threads for `requested` (0 = the hardware concurrency), at most 256.
int resolveThreads(int requested);

/// Runs body(ctx, chunk, slot) for every chunk in [0, chunks) on up to
/// `threads` pool threads (slot < threads; slot 0 is the caller) and waits.
/// Chunks are taken in order from an atomic counter. Throws nc::Error
/// ERR_NATIVE when a body threw.
void runChunks(int threads, int64_t chunks, void (*body)(void* ctx, int64_t chunk, int slot), void* ctx);

}  // namespace cpu
}  // namespace nc
