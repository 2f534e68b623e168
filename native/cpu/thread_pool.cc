// The kernels' thread pool: persistent workers, one job at a time (concurrent
// callers, e.g. two worker_threads, queue on runMutex), and the chunk loop
// every kernel runs on it.
//
// POSIX mutexes and condition variables, not std::condition_variable: GCC 12
// gave condition_variable::wait a new symbol version (GLIBCXX_3.4.30), which
// would tie the prebuilt addon to a recent libstdc++. Windows keeps std::.
#include "thread_pool.h"

#include <algorithm>
#include <atomic>
#include <thread>
#include <vector>

#if defined(_WIN32)
#include <condition_variable>
#include <mutex>
#else
#include <pthread.h>
#endif

#include "common.h"

namespace nc {
namespace cpu {

namespace {

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

/// The shared state of one runChunks call.
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

}  // namespace

int resolveThreads(int requested) {
  int hw = static_cast<int>(std::thread::hardware_concurrency());
  if (hw < 1) hw = 1;
  int t = requested > 0 ? requested : hw;
  return std::min(t, 256);
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

}  // namespace cpu
}  // namespace nc
