// The CPU kernels: driver (threads, chunks, tiles, merge) and the baseline
// (SSE2) tile functions. The AVX2/FMA/F16C tile functions are in
// kernels_avx2.cc and are chosen at run time (see usingAvx2()).
//
// Work layout: the concatenated index space [0, N) is cut into ~64 chunks
// whose boundaries depend only on N (never on the thread count); threads of a
// persistent pool take chunks from an atomic counter. Within a chunk,
// candidate rows are gathered into tiles of kTileRows rows; each tile is
// scored against one block of kQueryBlock queries at a time (a 24 x 16 block
// that stays in L1, never B x N) and the block goes through an epilogue:
// per-chunk running max / sum for the logsumexp, and per-thread k-best lists
// for the draws. The per-chunk lse partials are combined in chunk order and
// the k-best lists are exact under a total order, so every output is the same
// for any number of threads.
#include <algorithm>
#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#if defined(_WIN32)
#include <condition_variable>
#else
#include <pthread.h>
#endif

#if defined(__SSE2__)
#include <emmintrin.h>
#endif

#include "kernels.h"
#include "kernels_impl.h"
#include "rng.h"

namespace nc {
namespace cpu {

// ---------------------------------------------------------------------------
// Draw lists (shared by every ISA path; baseline-compiled).

double offerDraw(TopK* tk, int64_t b, int32_t j, float s, double p) {
  if (std::isnan(p)) return tk->thresh[b];
  const int64_t k = tk->k;
  double* P = tk->p + b * k;
  int32_t* I = tk->idx + b * k;
  float* S = tk->s + b * k;
  int32_t n = tk->count[b];
  if (n == k) {
    if (!(p > P[k - 1] || (p == P[k - 1] && j < I[k - 1]))) return tk->thresh[b];
    --n;  // drop the last entry
  }
  int64_t pos = n;
  while (pos > 0 && (p > P[pos - 1] || (p == P[pos - 1] && j < I[pos - 1]))) {
    P[pos] = P[pos - 1];
    I[pos] = I[pos - 1];
    S[pos] = S[pos - 1];
    --pos;
  }
  P[pos] = p;
  I[pos] = j;
  S[pos] = s;
  tk->count[b] = n + 1;
  if (tk->dirty != nullptr) tk->dirty[b] = 1;
  // The filter threshold may already be above this list's k-th entry (imported
  // from the other threads' lists, see sampleChunk); it never goes down.
  if (n + 1 == k && P[k - 1] > tk->thresh[b]) tk->thresh[b] = P[k - 1];
  return tk->thresh[b];
}

double offerGumbel(TopK* tk, int64_t b, int32_t j, float s, double invTemp, uint32_t word) {
  const double p = invTemp * static_cast<double>(s) + gumbelFromWord(word);
  return offerDraw(tk, b, j, s, p);
}

float filterMargin(double t) {
  return static_cast<float>(1e-3 * (1.0 + std::fabs(t)));
}

namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();
constexpr float kInfF = std::numeric_limits<float>::infinity();

// ---------------------------------------------------------------------------
// Baseline tile functions (SSE2; written so GCC vectorizes the inner loops).

float halfBitsToFloat(uint16_t h) {
  const uint32_t sign = static_cast<uint32_t>(h & 0x8000u) << 16;
  uint32_t exp = (h >> 10) & 0x1fu;
  uint32_t mant = h & 0x3ffu;
  uint32_t bits;
  if (exp == 0x1fu) {
    bits = sign | 0x7f800000u | (mant << 13);
  } else if (exp != 0) {
    bits = sign | ((exp + 112u) << 23) | (mant << 13);
  } else if (mant == 0) {
    bits = sign;
  } else {
    // Subnormal half: normalize.
    int e = -1;
    do {
      ++e;
      mant <<= 1;
    } while ((mant & 0x400u) == 0);
    bits = sign | ((112u - static_cast<uint32_t>(e)) << 23) | ((mant & 0x3ffu) << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void convertRowBase(const void* src, int32_t storage, int64_t n, float* dst) {
  const uint16_t* h = static_cast<const uint16_t*>(src);
  if (storage == static_cast<int32_t>(DType::Float16)) {
    for (int64_t i = 0; i < n; ++i) dst[i] = halfBitsToFloat(h[i]);
  } else {
    for (int64_t i = 0; i < n; ++i) {
      const uint32_t bits = static_cast<uint32_t>(h[i]) << 16;
      std::memcpy(dst + i, &bits, 4);
    }
  }
}

#if defined(__SSE2__)
// 2 rows x 16 queries with SSE2 (8 accumulators), multiply then add.
void gemmBlockBase(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                   float* sb) {
  const __m128 vscale = _mm_set1_ps(scale);
  for (int64_t r = 0; r < nrows; r += 2) {
    const float* e0 = rows[r];
    const float* e1 = rows[r + 1 < nrows ? r + 1 : r];
    __m128 a0 = _mm_setzero_ps(), a1 = _mm_setzero_ps(), a2 = _mm_setzero_ps(), a3 = _mm_setzero_ps();
    __m128 b0 = _mm_setzero_ps(), b1 = _mm_setzero_ps(), b2 = _mm_setzero_ps(), b3 = _mm_setzero_ps();
    for (int64_t d = 0; d < dim; ++d) {
      const float* qd = q + d * kQueryBlock;
      const __m128 q0 = _mm_loadu_ps(qd), q1 = _mm_loadu_ps(qd + 4);
      const __m128 q2 = _mm_loadu_ps(qd + 8), q3 = _mm_loadu_ps(qd + 12);
      const __m128 x = _mm_set1_ps(e0[d]), y = _mm_set1_ps(e1[d]);
      a0 = _mm_add_ps(a0, _mm_mul_ps(x, q0));
      a1 = _mm_add_ps(a1, _mm_mul_ps(x, q1));
      a2 = _mm_add_ps(a2, _mm_mul_ps(x, q2));
      a3 = _mm_add_ps(a3, _mm_mul_ps(x, q3));
      b0 = _mm_add_ps(b0, _mm_mul_ps(y, q0));
      b1 = _mm_add_ps(b1, _mm_mul_ps(y, q1));
      b2 = _mm_add_ps(b2, _mm_mul_ps(y, q2));
      b3 = _mm_add_ps(b3, _mm_mul_ps(y, q3));
    }
    float* o = sb + r * kQueryBlock;
    _mm_storeu_ps(o, _mm_mul_ps(a0, vscale));
    _mm_storeu_ps(o + 4, _mm_mul_ps(a1, vscale));
    _mm_storeu_ps(o + 8, _mm_mul_ps(a2, vscale));
    _mm_storeu_ps(o + 12, _mm_mul_ps(a3, vscale));
    if (r + 1 < nrows) {
      _mm_storeu_ps(o + 16, _mm_mul_ps(b0, vscale));
      _mm_storeu_ps(o + 20, _mm_mul_ps(b1, vscale));
      _mm_storeu_ps(o + 24, _mm_mul_ps(b2, vscale));
      _mm_storeu_ps(o + 28, _mm_mul_ps(b3, vscale));
    }
  }
}
#else
void gemmBlockBase(const float* q, int64_t dim, const float* const* rows, int64_t nrows, float scale,
                   float* sb) {
  for (int64_t r = 0; r < nrows; ++r) {
    const float* e = rows[r];
    float acc[kQueryBlock];
    for (int k = 0; k < kQueryBlock; ++k) acc[k] = 0.0f;
    for (int64_t d = 0; d < dim; ++d) {
      const float ed = e[d];
      const float* qd = q + d * kQueryBlock;
      for (int k = 0; k < kQueryBlock; ++k) acc[k] += ed * qd[k];
    }
    float* out = sb + r * kQueryBlock;
    for (int k = 0; k < kQueryBlock; ++k) out[k] = scale * acc[k];
  }
}
#endif

void sampleTileBase(const SampleTile* t) {
  if (t->flushOnly) return;  // no queue on this path
  const int64_t nrows = t->nrows;
  for (int64_t i = 0; i < t->qcount; ++i) {
    const int64_t b = t->qbase + i;
    const float* col = t->sb + i;
    // Logsumexp partial of the chunk.
    float m = -kInfF;
    for (int64_t r = 0; r < nrows; ++r) m = std::max(m, col[r * kQueryBlock]);
    float M = t->lseMax[i];
    double sum = t->lseSum[i];
    if (m > M) {
      sum *= std::exp(static_cast<double>(M) - m);
      M = m;
    }
    if (M > -kInfF) {
      float tileSum = 0.0f;
      for (int64_t r = 0; r < nrows; ++r) tileSum += std::exp(col[r * kQueryBlock] - M);
      sum += tileSum;
    }
    t->lseMax[i] = M;
    t->lseSum[i] = sum;
    if (t->mode == 2) continue;
    // Draws.
    TopK* tk = t->topk;
    double T = tk->thresh[b];
    if (t->mode == 1) {
      for (int64_t r = 0; r < nrows; ++r) {
        const float s = col[r * kQueryBlock];
        if (!(static_cast<double>(s) < T)) T = offerDraw(tk, b, t->rowIdx[r], s, s);
      }
      continue;
    }
    uint32_t lastBlock = 0xffffffffu;
    bool haveBlock = false;
    Philox4x32 words{};
    for (int64_t r = 0; r < nrows; ++r) {
      const float s = col[r * kQueryBlock];
      const double d = t->invTempD * s;
      const double margin = filterMargin(T);
      if (d + kGumbelMax + margin < T) continue;
      const uint32_t j = static_cast<uint32_t>(t->rowIdx[r]);
      if (!haveBlock || (j >> 2) != lastBlock) {
        words = philox4x32_10(j >> 2, static_cast<uint32_t>(b), t->key.c2, t->key.c3, t->key.k0,
                              t->key.k1);
        lastBlock = j >> 2;
        haveBlock = true;
      }
      const uint32_t w = words.v[j & 3];
      // -log(-log u) <= -log(1 - u): skip when even that bound cannot reach T.
      if (T > -kInf) {
        const double oneMinusU = (static_cast<double>(~w) + 0.5) * (1.0 / 4294967296.0);
        if (oneMinusU > std::exp(d - T + margin)) continue;
      }
      T = offerGumbel(tk, b, static_cast<int32_t>(j), s, t->invTempD, w);
    }
  }
}

void groupMaxTileBase(const GroupTile* t) {
  for (int64_t r = 0; r < t->nrows; ++r) {
    const float* s = t->sb + r * kQueryBlock;
    const int64_t g = t->rowGroup[r];
    float* gm = t->gmax + g * t->bpad;
    int32_t* gi = t->gidx + g * t->bpad;
    const int32_t j = t->rowIdx[r];
    for (int64_t i = 0; i < kQueryBlock; ++i) {
      if (s[i] > gm[i]) {
        gm[i] = s[i];
        gi[i] = j;
      }
    }
  }
}

const IsaOps kBaselineOps = {convertRowBase, gemmBlockBase, sampleTileBase, groupMaxTileBase};

const IsaOps& currentOps() {
  if (usingAvx2()) return *avx2Ops();
  return kBaselineOps;
}

// ---------------------------------------------------------------------------
// Thread pool: persistent workers; one job at a time (concurrent callers,
// e.g. two worker_threads, queue on runMutex).
//
// POSIX mutexes and condition variables, not std::condition_variable: GCC 12
// gave condition_variable::wait a new symbol version (GLIBCXX_3.4.30), which
// would tie the prebuilt addon to a recent libstdc++. Windows keeps std::.

#if defined(_WIN32)
class Lock {
 public:
  explicit Lock(std::mutex& m) : lock_(m) {}
  std::unique_lock<std::mutex>& get() { return lock_; }

 private:
  std::unique_lock<std::mutex> lock_;
};
using Mutex = std::mutex;
using CondVar = std::condition_variable;
void waitOn(CondVar& cv, Lock& lock) { cv.wait(lock.get()); }
void notifyAll(CondVar& cv) { cv.notify_all(); }
#else
class Mutex {
 public:
  Mutex() { pthread_mutex_init(&m_, nullptr); }
  ~Mutex() { pthread_mutex_destroy(&m_); }
  Mutex(const Mutex&) = delete;
  Mutex& operator=(const Mutex&) = delete;
  pthread_mutex_t* native() { return &m_; }

 private:
  pthread_mutex_t m_;
};

class Lock {
 public:
  explicit Lock(Mutex& m) : m_(m) { pthread_mutex_lock(m_.native()); }
  ~Lock() { pthread_mutex_unlock(m_.native()); }
  Lock(const Lock&) = delete;
  Lock& operator=(const Lock&) = delete;
  Mutex& mutex() { return m_; }

 private:
  Mutex& m_;
};

class CondVar {
 public:
  CondVar() { pthread_cond_init(&c_, nullptr); }
  ~CondVar() { pthread_cond_destroy(&c_); }
  CondVar(const CondVar&) = delete;
  CondVar& operator=(const CondVar&) = delete;
  pthread_cond_t* native() { return &c_; }

 private:
  pthread_cond_t c_;
};

void waitOn(CondVar& cv, Lock& lock) { pthread_cond_wait(cv.native(), lock.mutex().native()); }
void notifyAll(CondVar& cv) { pthread_cond_broadcast(cv.native()); }
#endif

class Pool {
 public:
  using Fn = void (*)(void* ctx, int slot);

  /// Runs fn(ctx, slot) on `threads` threads (slot 0 = the caller) and waits.
  void run(int threads, Fn fn, void* ctx) {
    Lock runLock(runMutex_);
    if (threads <= 1) {
      fn(ctx, 0);
      return;
    }
    {
      Lock lock(mutex_);
      while (static_cast<int>(workers_.size()) < threads - 1) {
        const int index = static_cast<int>(workers_.size());
        workers_.emplace_back([this, index] { loop(index); });
      }
      fn_ = fn;
      ctx_ = ctx;
      active_ = threads - 1;
      remaining_ = threads - 1;
      ++generation_;
    }
    notifyAll(wake_);
    fn(ctx, 0);
    Lock lock(mutex_);
    while (remaining_ != 0) waitOn(done_, lock);
  }

 private:
  void loop(int index) {
    uint64_t seen = 0;
    {
      Lock lock(mutex_);
      seen = generation_ - 1;  // a worker created for a job joins that job
    }
    for (;;) {
      Fn fn;
      void* ctx;
      {
        Lock lock(mutex_);
        while (generation_ == seen) waitOn(wake_, lock);
        seen = generation_;
        if (index >= active_) continue;
        fn = fn_;
        ctx = ctx_;
      }
      fn(ctx, index + 1);
      {
        Lock lock(mutex_);
        if (--remaining_ == 0) notifyAll(done_);
      }
    }
  }

  Mutex runMutex_, mutex_;
  CondVar wake_, done_;
  std::vector<std::thread> workers_;
  uint64_t generation_ = 0;
  int active_ = 0, remaining_ = 0;
  Fn fn_ = nullptr;
  void* ctx_ = nullptr;
};

Pool& pool() {
  static Pool* p = new Pool();  // never destroyed: workers live until exit
  return *p;
}

int resolveThreads(int requested) {
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  if (hw < 1) hw = 1;
  int t = requested > 0 ? requested : hw;
  return std::min(t, 256);
}

// ---------------------------------------------------------------------------
// Request preparation.

struct Prepared {
  int64_t batch = 0, dim = 0, bpad = 0, n = 0;
  std::vector<float> qt;                 // [bpad/16][dim][16]
  std::vector<int64_t> segStart;         // global start of each segment (+ n at the end)
  const ScoreRequest* req = nullptr;
};

void prepare(const ScoreRequest& req, Prepared& p) {
  NC_CHECK(req.batch >= 0, "ERR_ARGUMENT", "batch must be >= 0");
  NC_CHECK(req.dim >= 1, "ERR_ARGUMENT", "dim must be >= 1");
  NC_CHECK(req.batch == 0 || req.queries != nullptr, "ERR_ARGUMENT", "queries is null");
  p.req = &req;
  p.batch = req.batch;
  p.dim = req.dim;
  p.bpad = (req.batch + kQueryBlock - 1) / kQueryBlock * kQueryBlock;
  p.segStart.clear();
  int64_t n = 0;
  for (const Segment& s : req.segments) {
    NC_CHECK(s.rows >= 0, "ERR_ARGUMENT", "segment rows must be >= 0");
    NC_CHECK(s.rows == 0 || s.data != nullptr, "ERR_ARGUMENT", "segment data is null");
    NC_CHECK(s.storage == DType::Float32 || s.storage == DType::Float16 ||
                 s.storage == DType::BFloat16,
             "ERR_ARGUMENT", "segment storage must be a float type");
    p.segStart.push_back(n);
    n += s.rows;
  }
  NC_CHECK(n <= 0x7fffffffLL, "ERR_ARGUMENT", "too many cache rows (more than 2^31 - 1)");
  p.segStart.push_back(n);
  p.n = n;
  p.qt.assign(static_cast<size_t>(p.bpad * p.dim), 0.0f);
  for (int64_t b = 0; b < p.batch; ++b) {
    float* blk = p.qt.data() + (b / kQueryBlock) * kQueryBlock * p.dim + (b % kQueryBlock);
    const float* q = req.queries + b * p.dim;
    for (int64_t d = 0; d < p.dim; ++d) blk[d * kQueryBlock] = q[d];
  }
}

/// Rows per chunk: a function of N only (outputs must not depend on threads).
int64_t chunkRowsFor(int64_t n) {
  int64_t c = (n + 63) / 64;  // enough chunks to balance threads that finish unevenly
  c = (c + kTileRows - 1) / kTileRows * kTileRows;
  return std::max<int64_t>(8 * kTileRows, std::min<int64_t>(c, 8192));
}

/// Per-thread scratch of the tile loop.
struct Scratch {
  std::vector<float> rowbuf;   // kTileRows x dim (converted half rows)
  std::vector<float> sb;       // kTileRows x kQueryBlock scores
  std::vector<const float*> rowPtr;
  std::vector<int32_t> rowIdx, rowGroup;
  PendingDraws pending{};
  void init(const Prepared& p) {
    rowbuf.resize(static_cast<size_t>(kTileRows * p.dim));
    sb.resize(static_cast<size_t>(kTileRows * kQueryBlock));
    rowPtr.resize(kTileRows);
    rowIdx.resize(kTileRows);
    rowGroup.resize(kTileRows);
  }
};

/// Walks global rows [begin, end) in order, gathers candidate rows into tiles
/// and, per block of kQueryBlock queries, scores the tile into sc.sb and calls
/// onBlock(nrows, qbase).
template <typename OnTile>
void forEachTile(const Prepared& p, const IsaOps& ops, bool allRows, int64_t begin, int64_t end,
                 Scratch& sc, OnTile&& onBlock) {
  const ScoreRequest& req = *p.req;
  int64_t nrows = 0;
  auto flush = [&] {
    if (nrows == 0) return;
    for (int64_t qb = 0; qb < p.bpad; qb += kQueryBlock) {
      ops.gemmBlock(p.qt.data() + qb * p.dim, p.dim, sc.rowPtr.data(), nrows, req.scale, sc.sb.data());
      onBlock(nrows, qb);
    }
    nrows = 0;
  };
  size_t seg = static_cast<size_t>(
      std::upper_bound(p.segStart.begin(), p.segStart.end(), begin) - p.segStart.begin() - 1);
  for (int64_t j = begin; j < end;) {
    while (seg + 1 < p.segStart.size() && p.segStart[seg + 1] <= j) ++seg;
    const Segment& s = req.segments[seg];
    const int64_t segEnd = std::min(end, p.segStart[seg + 1]);
    const bool check = !allRows && !req.scoreEmptyRows && s.filled != nullptr;
    const size_t esize = dtypeBytes(s.storage);
    for (; j < segEnd; ++j) {
      const int64_t local = j - p.segStart[seg];
      if (check && s.filled[local] == 0) continue;
      const char* src = static_cast<const char*>(s.data) + local * p.dim * esize;
      if (s.storage == DType::Float32) {
        sc.rowPtr[nrows] = reinterpret_cast<const float*>(src);
      } else {
        float* dst = sc.rowbuf.data() + nrows * p.dim;
        ops.convertRow(src, static_cast<int32_t>(s.storage), p.dim, dst);
        sc.rowPtr[nrows] = dst;
      }
      sc.rowIdx[nrows] = static_cast<int32_t>(j);
      if (++nrows == kTileRows) flush();
    }
  }
  flush();
}

int64_t countCandidates(const Prepared& p) {
  const ScoreRequest& req = *p.req;
  int64_t c = 0;
  for (const Segment& s : req.segments) {
    if (req.scoreEmptyRows || s.filled == nullptr) {
      c += s.rows;
    } else {
      for (int64_t i = 0; i < s.rows; ++i) c += s.filled[i] != 0;
    }
  }
  return c;
}

/// Runs body(chunk, slot) for every chunk on `threads` threads.
struct ChunkJob {
  std::atomic<int64_t> next{0};
  int64_t chunks = 0;
  void (*body)(void* ctx, int64_t chunk, int slot) = nullptr;
  void* ctx = nullptr;
  std::atomic<bool> failed{false};
};

void chunkWorker(void* arg, int slot) {
  ChunkJob* job = static_cast<ChunkJob*>(arg);
  try {
    for (;;) {
      const int64_t c = job->next.fetch_add(1);
      if (c >= job->chunks) break;
      job->body(job->ctx, c, slot);
    }
  } catch (...) {
    job->failed.store(true);
  }
}

void runChunks(int threads, int64_t chunks, void (*body)(void*, int64_t, int), void* ctx) {
  ChunkJob job;
  job.chunks = chunks;
  job.body = body;
  job.ctx = ctx;
  pool().run(static_cast<int>(std::min<int64_t>(threads, std::max<int64_t>(chunks, 1))),
             chunkWorker, &job);
  NC_CHECK(!job.failed.load(), "ERR_NATIVE", "a kernel worker thread failed");
}

// ---------------------------------------------------------------------------
// Draw-list storage and merge.

struct TopKStore {
  std::vector<double> p, thresh;
  std::vector<int32_t> idx, count;
  std::vector<float> s;
  std::vector<uint8_t> dirty;
  TopK view{};
  /// Marks changed queries (for publishing to a SharedBest).
  void trackChanges() {
    dirty.assign(count.size(), 0);
    view.dirty = dirty.data();
  }
  void init(int64_t batch, int64_t k) {
    p.assign(static_cast<size_t>(batch * k), 0.0);
    idx.assign(static_cast<size_t>(batch * k), -1);
    s.assign(static_cast<size_t>(batch * k), 0.0f);
    count.assign(static_cast<size_t>(batch), 0);
    thresh.assign(static_cast<size_t>(batch), -kInf);
    view = TopK{k, p.data(), idx.data(), s.data(), count.data(), thresh.data(), nullptr};
  }
};

void mergeDraws(std::vector<TopKStore>& lists, int64_t batch, int64_t k, SampleOutput& out) {
  struct Entry {
    double p;
    int32_t idx;
    float s;
  };
  std::vector<Entry> all;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  for (int64_t b = 0; b < batch; ++b) {
    all.clear();
    for (TopKStore& l : lists) {
      for (int32_t i = 0; i < l.count[b]; ++i)
        all.push_back({l.p[b * k + i], l.idx[b * k + i], l.s[b * k + i]});
    }
    const int64_t take = std::min<int64_t>(k, static_cast<int64_t>(all.size()));
    std::partial_sort(all.begin(), all.begin() + take, all.end(), [](const Entry& a, const Entry& c) {
      return a.p > c.p || (a.p == c.p && a.idx < c.idx);
    });
    for (int64_t i = 0; i < k; ++i) {
      out.indices[b * k + i] = i < take ? all[i].idx : -1;
      out.scores[b * k + i] = i < take ? all[i].s : nan;
    }
  }
}

NoiseKey makeKey(const SampleParams& sp) {
  return NoiseKey{static_cast<uint32_t>(sp.seed), static_cast<uint32_t>(sp.seed >> 32),
                  static_cast<uint32_t>(sp.call), static_cast<uint32_t>(sp.call >> 32)};
}

void checkParams(const SampleParams& sp) {
  NC_CHECK(sp.mode == SampleMode::Gumbel || sp.mode == SampleMode::MaxScore ||
               sp.mode == SampleMode::None,
           "ERR_ARGUMENT", "unknown sample mode");
  NC_CHECK(sp.numDraws >= 1, "ERR_ARGUMENT", "numDraws must be >= 1");
  NC_CHECK(std::isfinite(sp.invTemp), "ERR_ARGUMENT", "invTemp must be finite");
}

// ---------------------------------------------------------------------------
// Threshold exchange between threads (scoreAndSample, Gumbel, threads > 1).
//
// Each thread's list only sees its own chunks, so its k-th best rises as if N
// were divided by the thread count. At the end of each chunk a thread merges
// its changed lists into per-query union lists (the k best distinct elements,
// deduplicated by index, that any thread has published) under a mutex, and at
// the start of each chunk it raises its filter thresholds to the union's k-th
// perturbed score. That value is the k-th best exact perturbed score of k
// distinct elements, so no element below it is among the k best of all: the
// filters skip such elements (with their margin) and every true winner still
// reaches its own thread's list, whatever the timing. Timing changes which
// elements are filtered, never the draws.

double loadRelaxed(const double* x) {
  double v;
  __atomic_load(x, &v, __ATOMIC_RELAXED);
  return v;
}

void storeRelaxed(double* x, double v) { __atomic_store(x, &v, __ATOMIC_RELAXED); }

struct SharedBest {
  int64_t k = 0;
  std::mutex mutex;
  std::vector<double> p;        // [batch][k] under mutex
  std::vector<int32_t> idx;     // [batch][k] under mutex
  std::vector<int32_t> count;   // [batch] under mutex
  std::vector<double> thresh;   // [batch] the union's k-th (relaxed atomics)
  std::vector<double> tmpP;     // [2k] merge buffer, under mutex
  std::vector<int32_t> tmpI;

  bool enabled() const { return k > 0; }

  void init(int64_t batch, int64_t kk) {
    k = kk;
    p.assign(static_cast<size_t>(batch * k), 0.0);
    idx.assign(static_cast<size_t>(batch * k), -1);
    count.assign(static_cast<size_t>(batch), 0);
    thresh.assign(static_cast<size_t>(batch), -kInf);
    tmpP.resize(static_cast<size_t>(k));
    tmpI.resize(static_cast<size_t>(k));
  }

  /// Raises tk's filter thresholds to the published bounds.
  void import(TopK* tk, int64_t batch) const {
    for (int64_t b = 0; b < batch; ++b) {
      const double v = loadRelaxed(thresh.data() + b);
      if (v > tk->thresh[b]) tk->thresh[b] = v;
    }
  }

  /// Merges tk's changed lists into the union lists.
  void publish(TopK* tk, int64_t batch) {
    std::lock_guard<std::mutex> lock(mutex);
    for (int64_t b = 0; b < batch; ++b) {
      if (!tk->dirty[b]) continue;
      tk->dirty[b] = 0;
      const double* P1 = tk->p + b * k;
      const int32_t* I1 = tk->idx + b * k;
      const int32_t n1 = tk->count[b];
      double* P2 = p.data() + b * k;
      int32_t* I2 = idx.data() + b * k;
      const int32_t n2 = count[b];
      // Both lists are sorted by (p desc, idx asc); an element in both (a
      // thread publishing again) is the same (p, idx) pair, adjacent here.
      int32_t i = 0, j = 0, n = 0;
      while (n < k && (i < n1 || j < n2)) {
        bool takeFirst;
        if (i >= n1) {
          takeFirst = false;
        } else if (j >= n2) {
          takeFirst = true;
        } else {
          takeFirst = P1[i] > P2[j] || (P1[i] == P2[j] && I1[i] <= I2[j]);
        }
        const double pv = takeFirst ? P1[i] : P2[j];
        const int32_t iv = takeFirst ? I1[i] : I2[j];
        if (takeFirst) ++i; else ++j;
        if (n > 0 && tmpI[n - 1] == iv) continue;
        tmpP[n] = pv;
        tmpI[n] = iv;
        ++n;
      }
      std::copy(tmpP.begin(), tmpP.begin() + n, P2);
      std::copy(tmpI.begin(), tmpI.begin() + n, I2);
      count[b] = n;
      if (n == k && P2[k - 1] > thresh[b]) storeRelaxed(thresh.data() + b, P2[k - 1]);
    }
  }
};

// ---------------------------------------------------------------------------
// scoreAndSample.

struct SampleJob {
  const Prepared* p;
  const IsaOps* ops;
  SampleParams params;
  int64_t chunkRows, chunks;
  std::vector<float> lseMax;     // [chunks][bpad]
  std::vector<double> lseSum;    // [chunks][bpad]
  std::vector<Scratch> scratch;  // per slot
  std::vector<TopKStore> topk;   // per slot
  SharedBest shared;             // threads > 1, Gumbel
};

void sampleChunk(void* ctx, int64_t c, int slot) {
  SampleJob& job = *static_cast<SampleJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  SampleTile t{};
  t.sb = sc.sb.data();
  t.rowIdx = sc.rowIdx.data();
  t.mode = static_cast<int32_t>(job.params.mode);
  t.invTemp = static_cast<float>(job.params.invTemp);
  t.invTempD = job.params.invTemp;
  t.key = makeKey(job.params);
  t.topk = job.topk.empty() ? nullptr : &job.topk[slot].view;
  const int64_t begin = c * job.chunkRows, end = std::min(p.n, begin + job.chunkRows);
  t.pending = &sc.pending;
  t.flushOnly = 0;
  // Filter with what the other threads have found (see SharedBest).
  if (job.shared.enabled()) job.shared.import(t.topk, p.batch);
  forEachTile(p, *job.ops, false, begin, end, sc, [&](int64_t nrows, int64_t qb) {
    t.nrows = nrows;
    t.qbase = qb;
    t.qcount = std::min(kQueryBlock, p.batch - qb);
    t.lseMax = job.lseMax.data() + c * p.bpad + qb;
    t.lseSum = job.lseSum.data() + c * p.bpad + qb;
    job.ops->sampleTile(&t);
  });
  if (t.mode == 0) {
    t.flushOnly = 1;
    job.ops->sampleTile(&t);
    if (job.shared.enabled()) job.shared.publish(t.topk, p.batch);
  }
}

// ---------------------------------------------------------------------------
// scoreGroupMax.

struct GroupJob {
  const Prepared* p;
  const IsaOps* ops;
  int64_t groups, groupsPerChunk, chunks;
  float* outScores;
  int32_t* outRows;
  std::vector<Scratch> scratch;
  std::vector<std::vector<float>> gmax;
  std::vector<std::vector<int32_t>> gidx;
};

int64_t groupStart(int64_t g, int64_t n, int64_t groups) {
  // floor(g * N / K) without overflow (N < 2^31, K <= N).
  return static_cast<int64_t>((static_cast<__int128>(g) * n) / groups);
}

void groupChunk(void* ctx, int64_t c, int slot) {
  GroupJob& job = *static_cast<GroupJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  const int64_t g0 = c * job.groupsPerChunk, g1 = std::min(job.groups, g0 + job.groupsPerChunk);
  const int64_t ng = g1 - g0;
  std::vector<float>& gm = job.gmax[slot];
  std::vector<int32_t>& gi = job.gidx[slot];
  std::fill(gm.begin(), gm.begin() + ng * p.bpad, -kInfF);
  std::fill(gi.begin(), gi.begin() + ng * p.bpad, -1);
  GroupTile t{};
  t.sb = sc.sb.data();
  t.bpad = p.bpad;
  t.rowIdx = sc.rowIdx.data();
  t.rowGroup = sc.rowGroup.data();
  const int64_t begin = groupStart(g0, p.n, job.groups), end = groupStart(g1, p.n, job.groups);
  int64_t g = g0;  // group of the next row (rows arrive in increasing order)
  forEachTile(p, *job.ops, false, begin, end, sc, [&](int64_t nrows, int64_t qb) {
    if (qb == 0) {
      for (int64_t r = 0; r < nrows; ++r) {
        const int64_t j = sc.rowIdx[r];
        while (groupStart(g + 1, p.n, job.groups) <= j) ++g;
        sc.rowGroup[r] = static_cast<int32_t>(g - g0);
      }
    }
    t.nrows = nrows;
    t.gmax = gm.data() + qb;
    t.gidx = gi.data() + qb;
    job.ops->groupMaxTile(&t);
  });
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t k = 0; k < ng; ++k) {
      job.outScores[b * job.groups + g0 + k] = gm[k * p.bpad + b];
      job.outRows[b * job.groups + g0 + k] = gi[k * p.bpad + b];
    }
  }
}

// ---------------------------------------------------------------------------
// scoreMatrix.

struct MatrixJob {
  const Prepared* p;
  const IsaOps* ops;
  int64_t chunkRows, chunks;
  float* out;
  std::vector<Scratch> scratch;
};

void matrixChunk(void* ctx, int64_t c, int slot) {
  MatrixJob& job = *static_cast<MatrixJob*>(ctx);
  const Prepared& p = *job.p;
  Scratch& sc = job.scratch[slot];
  const int64_t begin = c * job.chunkRows, end = std::min(p.n, begin + job.chunkRows);
  forEachTile(p, *job.ops, true, begin, end, sc, [&](int64_t nrows, int64_t qb) {
    const int64_t qn = std::min(kQueryBlock, p.batch - qb);
    for (int64_t r = 0; r < nrows; ++r) {
      const int64_t j = sc.rowIdx[r];
      for (int64_t i = 0; i < qn; ++i) job.out[(qb + i) * p.n + j] = sc.sb[r * kQueryBlock + i];
    }
  });
}

// ---------------------------------------------------------------------------
// sampleCandidates (explicit matrix; scalar, parallel over query rows).

struct CandidatesJob {
  const float* scores;
  int64_t batch, cols, rowsPerChunk;
  SampleParams params;
  SampleOutput* out;
  std::vector<TopKStore> topk;  // per slot, 1 query each
};

void candidatesChunk(void* ctx, int64_t c, int slot) {
  CandidatesJob& job = *static_cast<CandidatesJob*>(ctx);
  const int64_t k = job.params.numDraws;
  const NoiseKey key = makeKey(job.params);
  const double invTemp = job.params.invTemp;
  const float nan = std::numeric_limits<float>::quiet_NaN();
  TopKStore& st = job.topk[slot];
  for (int64_t b = c * job.rowsPerChunk; b < std::min(job.batch, (c + 1) * job.rowsPerChunk); ++b) {
    const float* s = job.scores + b * job.cols;
    double M = -kInf;
    int64_t cands = 0;
    for (int64_t j = 0; j < job.cols; ++j) {
      if (s[j] == -kInfF || std::isnan(s[j])) continue;
      ++cands;
      M = std::max(M, static_cast<double>(s[j]));
    }
    if (job.out->candidates) job.out->candidates[b] = cands;
    double sum = 0.0;
    if (cands > 0) {
      for (int64_t j = 0; j < job.cols; ++j) {
        if (s[j] == -kInfF || std::isnan(s[j])) continue;
        sum += std::exp(static_cast<double>(s[j]) - M);
      }
    }
    job.out->lse[b] = cands > 0 ? static_cast<float>(M + std::log(sum)) : -kInfF;
    std::fill(st.count.begin(), st.count.end(), 0);
    st.thresh[0] = -kInf;
    if (job.params.mode != SampleMode::None && cands > 0) {
      TopK* tk = &st.view;
      double T = -kInf;
      uint32_t lastBlock = 0;
      bool haveBlock = false;
      Philox4x32 words{};
      for (int64_t j = 0; j < job.cols; ++j) {
        const float v = s[j];
        if (v == -kInfF || std::isnan(v)) continue;
        if (job.params.mode == SampleMode::MaxScore) {
          if (!(static_cast<double>(v) < T)) T = offerDraw(tk, 0, static_cast<int32_t>(j), v, v);
          continue;
        }
        const double d = invTemp * v;
        const double margin = filterMargin(T);
        if (d + kGumbelMax + margin < T) continue;
        const uint64_t blk = static_cast<uint64_t>(j) >> 2;
        if (!haveBlock || blk != lastBlock) {
          words = philox4x32_10(static_cast<uint32_t>(blk), static_cast<uint32_t>(b), key.c2, key.c3,
                                key.k0, key.k1);
          lastBlock = static_cast<uint32_t>(blk);
          haveBlock = true;
        }
        const uint32_t w = words.v[j & 3];
        if (T > -kInf) {
          const double oneMinusU = (static_cast<double>(~w) + 0.5) * (1.0 / 4294967296.0);
          if (oneMinusU > std::exp(d - T + margin)) continue;
        }
        T = offerGumbel(tk, 0, static_cast<int32_t>(j), v, invTemp, w);
      }
    }
    const int32_t n = st.count[0];
    for (int64_t i = 0; i < k; ++i) {
      job.out->indices[b * k + i] = i < n ? st.idx[i] : -1;
      job.out->scores[b * k + i] = i < n ? st.s[i] : nan;
    }
  }
}

}  // namespace

}  // namespace cpu

// ---------------------------------------------------------------------------
// Public entry points.

using cpu::kTileRows;

void scoreAndSample(const ScoreRequest& req, const SampleParams& params, SampleOutput& out) {
  cpu::checkParams(params);
  NC_CHECK(std::isfinite(req.scale), "ERR_ARGUMENT", "scale must be finite");
  cpu::Prepared p;
  cpu::prepare(req, p);
  if (p.batch == 0) return;
  const int64_t k = params.numDraws;
  const int64_t cands = cpu::countCandidates(p);
  if (out.candidates)
    for (int64_t b = 0; b < p.batch; ++b) out.candidates[b] = cands;
  auto job = std::make_unique<cpu::SampleJob>();
  job->p = &p;
  job->ops = &cpu::currentOps();
  job->params = params;
  job->chunkRows = cpu::chunkRowsFor(p.n);
  job->chunks = (p.n + job->chunkRows - 1) / job->chunkRows;
  job->lseMax.assign(static_cast<size_t>(job->chunks * p.bpad), -std::numeric_limits<float>::infinity());
  job->lseSum.assign(static_cast<size_t>(job->chunks * p.bpad), 0.0);
  const int threads = static_cast<int>(
      std::min<int64_t>(cpu::resolveThreads(req.threads), std::max<int64_t>(job->chunks, 1)));
  job->scratch.resize(threads);
  for (auto& s : job->scratch) s.init(p);
  if (params.mode != SampleMode::None) {
    job->topk.resize(threads);
    for (auto& t : job->topk) t.init(p.batch, k);
    if (threads > 1 && params.mode == SampleMode::Gumbel) {
      job->shared.init(p.batch, k);
      for (auto& t : job->topk) t.trackChanges();
    }
  }
  if (cands > 0) cpu::runChunks(threads, job->chunks, cpu::sampleChunk, job.get());
  // Combine the chunk partials in chunk order (independent of threads).
  for (int64_t b = 0; b < p.batch; ++b) {
    float M = -std::numeric_limits<float>::infinity();
    for (int64_t c = 0; c < job->chunks; ++c) M = std::max(M, job->lseMax[c * p.bpad + b]);
    if (!(M > -std::numeric_limits<float>::infinity())) {
      out.lse[b] = std::isnan(M) ? M : -std::numeric_limits<float>::infinity();
      continue;
    }
    double total = 0.0;
    for (int64_t c = 0; c < job->chunks; ++c) {
      const float m = job->lseMax[c * p.bpad + b];
      if (m > -std::numeric_limits<float>::infinity())
        total += job->lseSum[c * p.bpad + b] * std::exp(static_cast<double>(m) - M);
    }
    out.lse[b] = static_cast<float>(M + std::log(total));
  }
  if (params.mode != SampleMode::None) {
    cpu::mergeDraws(job->topk, p.batch, k, out);
  } else {
    for (int64_t i = 0; i < p.batch * k; ++i) {
      out.indices[i] = -1;
      out.scores[i] = std::numeric_limits<float>::quiet_NaN();
    }
  }
}

void scoreGroupMax(const ScoreRequest& req, int64_t groups, float* groupScores, int32_t* groupRows) {
  NC_CHECK(std::isfinite(req.scale), "ERR_ARGUMENT", "scale must be finite");
  cpu::Prepared p;
  cpu::prepare(req, p);
  NC_CHECK(groups >= 1 && groups <= p.n, "ERR_ARGUMENT", "groups must be in [1, N]");
  if (p.batch == 0) return;
  auto job = std::make_unique<cpu::GroupJob>();
  job->p = &p;
  job->ops = &cpu::currentOps();
  job->groups = groups;
  job->outScores = groupScores;
  job->outRows = groupRows;
  const int64_t groupSize = std::max<int64_t>(1, p.n / groups);
  const int64_t chunkRows = cpu::chunkRowsFor(p.n);
  int64_t gpc = std::max<int64_t>(1, chunkRows / groupSize);
  gpc = std::min<int64_t>(gpc, std::max<int64_t>(1, (1 << 18) / p.bpad));  // <= 2 MB of group state
  job->groupsPerChunk = gpc;
  job->chunks = (groups + gpc - 1) / gpc;
  const int threads = static_cast<int>(
      std::min<int64_t>(cpu::resolveThreads(req.threads), job->chunks));
  job->scratch.resize(threads);
  for (auto& s : job->scratch) s.init(p);
  job->gmax.resize(threads);
  job->gidx.resize(threads);
  for (int i = 0; i < threads; ++i) {
    job->gmax[i].resize(static_cast<size_t>(gpc * p.bpad));
    job->gidx[i].resize(static_cast<size_t>(gpc * p.bpad));
  }
  cpu::runChunks(threads, job->chunks, cpu::groupChunk, job.get());
}

void sampleCandidates(const float* scores, int64_t batch, int64_t cols, const SampleParams& params,
                      int threads, SampleOutput& out) {
  cpu::checkParams(params);
  NC_CHECK(batch >= 0 && cols >= 0, "ERR_ARGUMENT", "batch and cols must be >= 0");
  NC_CHECK(cols <= 0x7fffffffLL, "ERR_ARGUMENT", "cols must be < 2^31");
  if (batch == 0) return;
  auto job = std::make_unique<cpu::CandidatesJob>();
  job->scores = scores;
  job->batch = batch;
  job->cols = cols;
  job->params = params;
  job->out = &out;
  // A few rows per chunk; the chunking does not change any output.
  job->rowsPerChunk = std::max<int64_t>(1, std::min<int64_t>(64, (1 << 16) / std::max<int64_t>(cols, 1)));
  const int64_t chunks = (batch + job->rowsPerChunk - 1) / job->rowsPerChunk;
  const int t = static_cast<int>(std::min<int64_t>(cpu::resolveThreads(threads), chunks));
  job->topk.resize(t);
  for (auto& s : job->topk) s.init(1, params.numDraws);
  cpu::runChunks(t, chunks, cpu::candidatesChunk, job.get());
}

void scoreMatrix(const ScoreRequest& req, float* out) {
  NC_CHECK(std::isfinite(req.scale), "ERR_ARGUMENT", "scale must be finite");
  cpu::Prepared p;
  cpu::prepare(req, p);
  if (p.batch == 0 || p.n == 0) return;
  auto job = std::make_unique<cpu::MatrixJob>();
  job->p = &p;
  job->ops = &cpu::currentOps();
  job->out = out;
  job->chunkRows = cpu::chunkRowsFor(p.n);
  job->chunks = (p.n + job->chunkRows - 1) / job->chunkRows;
  const int threads = static_cast<int>(
      std::min<int64_t>(cpu::resolveThreads(req.threads), job->chunks));
  job->scratch.resize(threads);
  for (auto& s : job->scratch) s.init(p);
  cpu::runChunks(threads, job->chunks, cpu::matrixChunk, job.get());
}

}  // namespace nc
