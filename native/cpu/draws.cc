#include "draws.h"

#include <limits>

namespace nc {
namespace cpu {

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

double loadRelaxed(const double* x) {
  double v;
  __atomic_load(x, &v, __ATOMIC_RELAXED);
  return v;
}

void storeRelaxed(double* x, double v) { __atomic_store(x, &v, __ATOMIC_RELAXED); }

}  // namespace

void KBestBuffer::init(int64_t queries, int64_t k) {
  draws.assign(static_cast<size_t>(queries * k), Draw{0.0, -1, 0.0f});
  count.assign(static_cast<size_t>(queries), 0);
  thresh.assign(static_cast<size_t>(queries), -kInf);
  dirty.clear();
  view = KBest{k, draws.data(), count.data(), thresh.data(), nullptr};
}

void KBestBuffer::clear() {
  std::fill(count.begin(), count.end(), 0);
  std::fill(thresh.begin(), thresh.end(), -kInf);
}

void KBestBuffer::trackChanges() {
  dirty.assign(count.size(), 0);
  view.dirty = dirty.data();
}

void SharedBest::init(int64_t batch, int64_t k) {
  enabled_ = true;
  lists_.init(batch, k);
  tmp_.resize(static_cast<size_t>(k));
}

void SharedBest::import(KBest* tk, int64_t batch) const {
  for (int64_t b = 0; b < batch; ++b) {
    const double v = loadRelaxed(lists_.thresh.data() + b);
    if (v > tk->thresh[b]) tk->thresh[b] = v;
  }
}

void SharedBest::publish(KBest* tk, int64_t batch) {
  std::lock_guard<std::mutex> lock(mutex_);
  KBest& u = lists_.view;
  for (int64_t b = 0; b < batch; ++b) {
    if (!tk->dirty[b]) continue;
    tk->dirty[b] = 0;
    mergeLists(&u, b, *tk, b, tmp_.data());
    const Draw& kth = u.draws[b * u.k + u.k - 1];
    if (u.count[b] == u.k && kth.p > u.thresh[b]) storeRelaxed(u.thresh + b, kth.p);
  }
}

void writeDraws(const KBest& tk, int64_t b, int32_t* indices, float* scores) {
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const Draw* L = tk.draws + b * tk.k;
  const int32_t n = tk.count[b];
  for (int64_t i = 0; i < tk.k; ++i) {
    indices[i] = i < n ? L[i].idx : -1;
    scores[i] = i < n ? L[i].s : nan;
  }
}

void mergeThreadLists(std::vector<KBestBuffer>& lists, int64_t batch, SampleOutput& out) {
  KBest& dst = lists[0].view;
  const int64_t k = dst.k;
  std::vector<Draw> tmp(static_cast<size_t>(k));
  for (int64_t b = 0; b < batch; ++b) {
    for (size_t t = 1; t < lists.size(); ++t) mergeLists(&dst, b, lists[t].view, b, tmp.data());
    writeDraws(dst, b, out.indices + b * k, out.scores + b * k);
  }
}

}  // namespace cpu
}  // namespace nc
