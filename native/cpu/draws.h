// Storage of the k-best lists (kbest.h) and what the sampling kernels do with
// them across threads: the threshold exchange and the final merge.
// Baseline-compiled files only.
#pragma once
#include <cstdint>
#include <mutex>
#include <vector>

#include "kbest.h"
#include "kernels.h"

namespace nc {
namespace cpu {

/// The storage behind a KBest view: `queries` lists of capacity k.
struct KBestBuffer {
  std::vector<Draw> draws;
  std::vector<int32_t> count;
  std::vector<double> thresh;
  std::vector<uint8_t> dirty;
  KBest view{};

  void init(int64_t queries, int64_t k);
  /// Empties every list and resets the thresholds to -inf.
  void clear();
  /// Marks changed queries (for publishing to a SharedBest).
  void trackChanges();
};

/// Threshold exchange between threads (scoreAndSample, Gumbel, threads > 1).
///
/// Each thread's list only sees its own chunks, so its k-th best rises as if N
/// were divided by the thread count. At the end of each chunk a thread merges
/// its changed lists into per-query union lists (the k best distinct elements,
/// deduplicated by index, that any thread has published) under a mutex, and at
/// the start of each chunk it raises its filter thresholds to the union's k-th
/// perturbed score. That value is the k-th best exact perturbed score of k
/// distinct elements, so no element below it is among the k best of all: the
/// filters skip such elements (with their margin) and every true winner still
/// reaches its own thread's list, whatever the timing. Timing changes which
/// elements are filtered, never the draws.
class SharedBest {
 public:
  bool enabled() const { return enabled_; }
  void init(int64_t batch, int64_t k);
  /// Raises tk's filter thresholds to the published bounds.
  void import(KBest* tk, int64_t batch) const;
  /// Merges tk's changed lists into the union lists.
  void publish(KBest* tk, int64_t batch);

 private:
  bool enabled_ = false;
  std::mutex mutex_;
  KBestBuffer lists_;      // under mutex_, except thresh (relaxed atomics)
  std::vector<Draw> tmp_;  // merge buffer, under mutex_
};

/// The k best of all threads' lists of each query into out.indices / out.scores
/// (-1 / NaN where a query has fewer than k). Merges into lists[0].
void mergeThreadLists(std::vector<KBestBuffer>& lists, int64_t batch, SampleOutput& out);

/// List b of tk as k output entries (-1 / NaN past its count).
void writeDraws(const KBest& tk, int64_t b, int32_t* indices, float* scores);

}  // namespace cpu
}  // namespace nc
