// A minimal growable array on 64-byte aligned memory, for the buffers the
// tile kernels read and write whole cache lines of (AMX tile loads from a
// misaligned address were measured 2.5x slower: docs/kernels.md "AMX").
// Baseline-compiled code only (a template: never instantiate it in a tier
// file, see tier.h).
#pragma once
#include <cstddef>
#include <cstdlib>
#include <cstring>
#include <new>

namespace nc {
namespace cpu {

template <class T>
class AlignedVector {
 public:
  AlignedVector() = default;
  AlignedVector(const AlignedVector&) = delete;
  AlignedVector& operator=(const AlignedVector&) = delete;
  AlignedVector(AlignedVector&& o) noexcept : p_(o.p_), n_(o.n_) {
    o.p_ = nullptr;
    o.n_ = 0;
  }
  AlignedVector& operator=(AlignedVector&& o) noexcept {
    if (this != &o) {
      std::free(p_);
      p_ = o.p_;
      n_ = o.n_;
      o.p_ = nullptr;
      o.n_ = 0;
    }
    return *this;
  }
  ~AlignedVector() { std::free(p_); }

  /// n copies of v (the old contents are dropped).
  void assign(size_t n, const T& v) {
    if (n != n_) {
      std::free(p_);
      p_ = nullptr;
      n_ = 0;
      if (n > 0) {
        void* q = nullptr;
        const size_t bytes = (n * sizeof(T) + 63) / 64 * 64;
        if (posix_memalign(&q, 64, bytes) != 0 || q == nullptr) throw std::bad_alloc();
        p_ = static_cast<T*>(q);
        n_ = n;
      }
    }
    for (size_t i = 0; i < n_; ++i) p_[i] = v;
  }
  T* data() { return p_; }
  const T* data() const { return p_; }
  size_t size() const { return n_; }
  T& operator[](size_t i) { return p_[i]; }
  const T& operator[](size_t i) const { return p_[i]; }

 private:
  T* p_ = nullptr;
  size_t n_ = 0;
};

}  // namespace cpu
}  // namespace nc
