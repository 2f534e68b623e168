// The checkpoint writer and reader of native stores; the format is in
// docs/checkpoint.md (and mirrored by src/checkpoint.ts for the JS backend).
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <pthread.h>
#include <sys/mman.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <limits>
#include <new>
#include <thread>
#include <utility>

#include "crc32c.h"

namespace nc {
namespace ckpt {

namespace {

static_assert(sizeof(int32_t) == 4, "int32");
#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "the checkpoint format is little-endian; this code assumes a little-endian host"
#endif

constexpr uint64_t kMaxMetaBytes = uint64_t{64} << 20;

void putU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }
void putU64(uint8_t* p, uint64_t v) { std::memcpy(p, &v, 8); }
uint32_t getU32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t getU64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }

// No stat()/fstat(): their glibc 2.33 symbol versions would raise the
// prebuild's glibc floor (docs/install.md). A directory is what opens with
// O_DIRECTORY; a size is what lseek(SEEK_END) says.
bool isDirectory(const std::string& path) {
  const int d = ::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (d < 0) return false;
  ::close(d);
  return true;
}

std::string errnoText(int e) { return std::string(std::strerror(e)) + " (errno " + std::to_string(e) + ")"; }

[[noreturn]] void ioError(const std::string& path, const std::string& what, int e) {
  throw Error("ERR_CHECKPOINT_IO", "negative-cache: checkpoint '" + path + "': " + what + ": " + errnoText(e));
}

void splitPath(const std::string& path, std::string& dir, std::string& base) {
  const size_t slash = path.find_last_of('/');
  if (slash == std::string::npos) {
    dir = ".";
    base = path;
  } else {
    dir = slash == 0 ? "/" : path.substr(0, slash);
    base = path.substr(slash + 1);
  }
}

// ---- the I/O pipeline ------------------------------------------------------
//
// A save copies (and checksums) the file's bytes into a ring of kIoSlots
// aligned buffers while a thread writes the filled ones with pwrite(2); a
// load reads ahead into the same kind of ring on a thread while the caller
// copies (and checksums) the buffer before. The copy is what lets the file go
// through O_DIRECT (aligned buffers, aligned offsets) whatever the layout of
// the sections, and the checksum runs on bytes the copy just put in the
// cache. With O_DIRECT the kernel neither allocates nor copies page-cache
// pages for the file: on a VM whose fresh pages are expensive (first touch
// faults in the hypervisor) that copy was most of a save's time, and its cost
// varied several-fold from one save to the next (docs/checkpoint.md).
//
// POSIX mutex/condition variable rather than std::condition_variable: the
// same libstdc++ symbol-version reason as native/cpu/thread_pool.cc.

class Monitor {
 public:
  Monitor() {
    pthread_mutex_init(&m_, nullptr);
    pthread_cond_init(&cv_, nullptr);
  }
  ~Monitor() {
    pthread_cond_destroy(&cv_);
    pthread_mutex_destroy(&m_);
  }
  Monitor(const Monitor&) = delete;
  Monitor& operator=(const Monitor&) = delete;
  void lock() { pthread_mutex_lock(&m_); }
  void unlock() { pthread_mutex_unlock(&m_); }
  void wait() { pthread_cond_wait(&cv_, &m_); }
  void notifyAll() { pthread_cond_broadcast(&cv_); }

 private:
  pthread_mutex_t m_;
  pthread_cond_t cv_;
};

class Locked {
 public:
  explicit Locked(Monitor& m) : m_(m) { m_.lock(); }
  ~Locked() { m_.unlock(); }
  Locked(const Locked&) = delete;
  Locked& operator=(const Locked&) = delete;

 private:
  Monitor& m_;
};

size_t ioBytes(size_t chunk) {
  const size_t b = std::min(std::max(chunk, kIoAlign), kMaxIoBytes);
  return (b + kIoAlign - 1) / kIoAlign * kIoAlign;
}

/// kIoSlots buffers of `bytes` each, kIoAlign-aligned, in one allocation.
class Ring {
 public:
  explicit Ring(size_t bytes) : bytes_(bytes) {
    void* p = nullptr;
    if (posix_memalign(&p, kIoAlign, bytes * kIoSlots) != 0 || p == nullptr) throw std::bad_alloc();
    base_ = static_cast<uint8_t*>(p);
  }
  ~Ring() { std::free(base_); }
  Ring(const Ring&) = delete;
  Ring& operator=(const Ring&) = delete;
  uint8_t* slot(uint64_t seq) { return base_ + static_cast<size_t>(seq % kIoSlots) * bytes_; }
  size_t bytes() const { return bytes_; }

 private:
  uint8_t* base_ = nullptr;
  size_t bytes_;
};

/// Turns O_DIRECT on (true when the file system took it) or off.
bool setDirect(int fd, bool on) {
#ifdef O_DIRECT
  const int fl = ::fcntl(fd, F_GETFL);
  if (fl < 0) return false;
  const int want = on ? (fl | O_DIRECT) : (fl & ~O_DIRECT);
  return ::fcntl(fd, F_SETFL, want) == 0 && on;
#else
  (void)fd;
  (void)on;
  return false;
#endif
}

/// Copies n bytes and returns the CRC32C continued over them, in pieces that
/// stay in the L2 cache between the copy and the checksum.
uint32_t copyCrc(uint8_t* dst, const uint8_t* src, size_t n, uint32_t crc) {
  constexpr size_t kPiece = size_t{128} << 10;
  for (size_t off = 0; off < n; off += kPiece) {
    const size_t len = std::min(kPiece, n - off);
    std::memcpy(dst + off, src + off, len);
    crc = crc32c(crc, dst + off, len);
  }
  return crc;
}

/// Sequential writer of the temporary file: the caller's bytes are copied
/// into the ring; full buffers are written by the I/O thread (or, for a file
/// that fits in two buffers or when no thread can be started, at once).
class FileWriter {
 public:
  FileWriter(int fd, const std::string& path, int64_t failAfter, size_t chunk, uint64_t totalBytes, IoMode io)
      : fd_(fd), path_(path), failAfter_(failAfter), chunk_(chunk), ring_(ioBytes(std::min<uint64_t>(chunk, totalBytes))) {
    if (io == IoMode::Auto && totalBytes > ring_.bytes()) direct_ = setDirect(fd_, true);
    stats_.direct = direct_;
    if (totalBytes > 2 * ring_.bytes()) {
      try {
        thread_ = std::thread([this] { run(); });
        threaded_ = true;
      } catch (const std::exception&) {
        threaded_ = false;  // no thread: write inline
      }
    }
    stats_.threaded = threaded_;
  }
  ~FileWriter() { stop(); }
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

  void put(const void* data, size_t n) { copy(static_cast<const uint8_t*>(data), n, nullptr); }
  /// put() that returns the CRC32C of the bytes, continuing `crc`.
  uint32_t putCrc(const void* data, size_t n, uint32_t crc) {
    copy(static_cast<const uint8_t*>(data), n, &crc);
    return crc;
  }
  /// Writes what is left and waits for every write; rethrows a write error.
  void finish() {
    if (fill_ > 0) submit();
    if (threaded_) {
      Locked l(m_);
      while (written_ < submitted_ && !error_) m_.wait();
    }
    stop();
    if (error_) std::rethrow_exception(error_);
  }
  IoStats stats() const { return stats_; }

 private:
  void copy(const uint8_t* p, size_t n, uint32_t* crc) {
    while (n > 0) {
      uint8_t* dst = ring_.slot(submitted_) + fill_;
      const size_t k = std::min(n, ring_.bytes() - fill_);
      if (crc != nullptr) *crc = copyCrc(dst, p, k, *crc);
      else std::memcpy(dst, p, k);
      fill_ += k;
      p += k;
      n -= k;
      if (fill_ == ring_.bytes()) submit();
    }
  }
  /// Hands the current buffer over and waits for a free one.
  void submit() {
    const uint64_t off = fileOffset_;
    const size_t len = fill_;
    fileOffset_ += len;
    fill_ = 0;
    if (!threaded_) {
      writeAt(ring_.slot(submitted_), len, off);
      ++submitted_;
      return;
    }
    Locked l(m_);
    lengths_[submitted_ % kIoSlots] = len;
    offsets_[submitted_ % kIoSlots] = off;
    ++submitted_;
    m_.notifyAll();
    while (submitted_ - written_ >= static_cast<uint64_t>(kIoSlots) && !error_) m_.wait();
    if (error_) std::rethrow_exception(error_);
  }
  void run() {
    m_.lock();
    for (;;) {
      while (written_ == submitted_ && !stopping_) m_.wait();
      if (stopping_) break;  // finish() waited for every write; else the save failed
      const uint64_t seq = written_;
      const size_t len = lengths_[seq % kIoSlots];
      const uint64_t off = offsets_[seq % kIoSlots];
      m_.unlock();
      std::exception_ptr err;
      try {
        writeAt(ring_.slot(seq), len, off);
      } catch (...) {
        err = std::current_exception();
      }
      m_.lock();
      if (err) {
        error_ = err;
        m_.notifyAll();
        break;
      }
      ++written_;
      m_.notifyAll();
    }
    m_.unlock();
  }
  void stop() {
    if (!threaded_) return;
    {
      Locked l(m_);
      stopping_ = true;
      m_.notifyAll();
    }
    if (thread_.joinable()) thread_.join();
    threaded_ = false;
  }
  /// pwrite(2) of one buffer at its offset (I/O thread, or inline). Throws.
  void writeAt(const uint8_t* p, size_t n, uint64_t off) {
    if (failAfter_ >= 0 && off + n > static_cast<uint64_t>(failAfter_)) ioError(path_, "write", ENOSPC);
    while (n > 0) {
      // O_DIRECT takes aligned lengths (and offsets): an unaligned tail (the
      // end of the file) goes through the page cache, as does everything
      // after an EINVAL (a file system with other alignment rules).
      size_t step = std::min(n, size_t{1} << 30);
      if (direct_ && step % kIoAlign != 0) {
        if (step >= kIoAlign) step = step / kIoAlign * kIoAlign;
        else direct_ = setDirect(fd_, false);
      }
      const ssize_t w = ::pwrite(fd_, p, step, static_cast<off_t>(off));
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL && direct_) {
          direct_ = setDirect(fd_, false);
          stats_.direct = false;
          continue;
        }
        ioError(path_, "write", errno);
      }
      if (w == 0) ioError(path_, "write", EIO);
      p += w;
      n -= static_cast<size_t>(w);
      off += static_cast<uint64_t>(w);
      if (direct_ && static_cast<size_t>(w) % kIoAlign != 0) direct_ = setDirect(fd_, false);
      if (!direct_) kick(off);
    }
  }
  /// Starts the write-back of what was written since the last call once it
  /// is a chunk or more (Linux, buffered writes): the disk works while the
  /// next buffers are filled, and the final fsync has little left to flush.
  void kick(uint64_t end) {
#ifdef SYNC_FILE_RANGE_WRITE
    if (end > kicked_ && end - kicked_ >= chunk_) {
      ::sync_file_range(fd_, static_cast<off_t>(kicked_), static_cast<off_t>(end - kicked_), SYNC_FILE_RANGE_WRITE);
      kicked_ = end;
    }
#else
    (void)end;
#endif
  }

  int fd_;
  const std::string& path_;
  int64_t failAfter_;
  size_t chunk_;
  Ring ring_;
  bool direct_ = false;
  IoStats stats_;
  uint64_t kicked_ = 0;
  // Producer side.
  size_t fill_ = 0;
  uint64_t fileOffset_ = 0;
  // Shared (m_).
  Monitor m_;
  uint64_t submitted_ = 0, written_ = 0;
  size_t lengths_[kIoSlots] = {};
  uint64_t offsets_[kIoSlots] = {};
  bool stopping_ = false;
  std::exception_ptr error_;
  std::thread thread_;
  bool threaded_ = false;
};

void sectionHeader(FileWriter& w, uint32_t tag, uint32_t index, uint32_t column, uint64_t length) {
  uint8_t h[kSectionHeaderBytes];
  putU32(h, tag);
  putU32(h + 4, index);
  putU32(h + 8, column);
  putU64(h + 12, length);
  putU32(h + 20, crc32c(0, h, 20));
  w.put(h, sizeof h);
}

void trailer(FileWriter& w, uint32_t crc) {
  uint8_t t[4];
  putU32(t, crc);
  w.put(t, 4);
}

void writeBytes(FileWriter& w, uint32_t tag, uint32_t index, const void* data, size_t n) {
  sectionHeader(w, tag, index, 0, n);
  trailer(w, w.putCrc(data, n, 0));
}

void writeStore(FileWriter& w, uint32_t index, const CacheStore& s, size_t chunk, std::vector<uint8_t>& staging) {
  const int64_t size = s.size();
  // AGES: computed per row into the staging buffer, chunk by chunk.
  {
    sectionHeader(w, kAges, index, 0, static_cast<uint64_t>(size) * 4);
    const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(std::min(chunk, kMaxIoBytes) / 4));
    staging.resize(static_cast<size_t>(std::min(rows, size)) * 4);
    uint32_t crc = 0;
    for (int64_t r0 = 0; r0 < size; r0 += rows) {
      const int64_t n = std::min(rows, size - r0);
      int32_t* out = reinterpret_cast<int32_t*>(staging.data());
      for (int64_t i = 0; i < n; ++i) out[i] = s.ageOf(static_cast<int32_t>(r0 + i));
      crc = w.putCrc(staging.data(), static_cast<size_t>(n) * 4, crc);
    }
    trailer(w, crc);
  }
  writeBytes(w, kFill, index, s.filled(), static_cast<size_t>(size));
  for (int c = 0; c < s.numColumns(); ++c) {
    const size_t rb = s.rawRowBytes(c);
    const uint64_t bytes = static_cast<uint64_t>(size) * rb;
    sectionHeader(w, kData, index, static_cast<uint32_t>(c), bytes);
    const uint8_t* host = static_cast<const uint8_t*>(s.rawHostColumn(c));
    uint32_t crc = 0;
    if (host != nullptr) {
      crc = w.putCrc(host, static_cast<size_t>(bytes), 0);  // straight from the store's memory
    } else {
      const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(chunk / rb));
      for (int64_t r0 = 0; r0 < size; r0 += rows) {
        const int64_t n = std::min(rows, size - r0);
        staging.resize(static_cast<size_t>(n) * rb);
        s.copyRawOut(c, r0, n, staging.data());
        crc = w.putCrc(staging.data(), staging.size(), crc);
      }
    }
    trailer(w, crc);
  }
}

/// Bytes of the whole file a request writes.
uint64_t fileBytes(const SaveRequest& req) {
  const uint64_t framing = kSectionHeaderBytes + 4;
  uint64_t n = kFileHeaderBytes + framing + req.meta.size();
  for (const CacheStore* s : req.stores) {
    const uint64_t rows = static_cast<uint64_t>(s->size());
    n += 2 * framing + rows * 5;
    for (int c = 0; c < s->numColumns(); ++c) n += framing + rows * s->rawRowBytes(c);
  }
  for (const std::string& b : req.blobs) n += framing + b.size();
  return n;
}

std::atomic<uint64_t> tmpCounter{0};

}  // namespace

std::string tagName(uint32_t tag) {
  std::string s(4, '?');
  for (int i = 0; i < 4; ++i) {
    const char ch = static_cast<char>((tag >> (8 * i)) & 0xff);
    s[static_cast<size_t>(i)] = (ch >= 32 && ch < 127) ? ch : '?';
  }
  return s;
}

void save(const SaveRequest& req, IoStats* stats) {
  NC_CHECK(!req.path.empty(), "ERR_ARGUMENT", "checkpoint path is empty");
  NC_CHECK(req.chunkBytes >= 4096, "ERR_ARGUMENT", "checkpoint chunk must be at least 4096 bytes");
  for (const CacheStore* s : req.stores) NC_CHECK(s != nullptr, "ERR_ARGUMENT", "checkpoint: null store");
  std::string dir, base;
  splitPath(req.path, dir, base);
  if (base.empty()) ioError(req.path, "the path names a directory", EISDIR);
  if (isDirectory(req.path)) ioError(req.path, "the path is a directory", EISDIR);
  const std::string tmp = (dir == "/" ? "" : dir) + "/." + base + ".tmp-" + std::to_string(::getpid()) + "-" +
                          std::to_string(tmpCounter.fetch_add(1));
  const int fd = ::open(tmp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
  if (fd < 0) ioError(req.path, "cannot create the temporary file '" + tmp + "'", errno);
  bool closed = false;
  try {
    FileWriter w(fd, req.path, req.failAfterBytes, req.chunkBytes, fileBytes(req), req.io);
    const uint32_t sections =
        static_cast<uint32_t>(1 + req.blobs.size()) + [&] {
          uint32_t n = 0;
          for (const CacheStore* s : req.stores) n += 2 + static_cast<uint32_t>(s->numColumns());
          return n;
        }();
    uint8_t h[kFileHeaderBytes];
    std::memcpy(h, kMagic, 8);
    putU32(h + 8, kVersion);
    putU32(h + 12, sections);
    putU32(h + 16, 0);
    putU32(h + 20, crc32c(0, h, 20));
    w.put(h, sizeof h);
    writeBytes(w, kMeta, 0, req.meta.data(), req.meta.size());
    std::vector<uint8_t> staging;
    for (size_t i = 0; i < req.stores.size(); ++i)
      writeStore(w, static_cast<uint32_t>(i), *req.stores[i], req.chunkBytes, staging);
    for (size_t i = 0; i < req.blobs.size(); ++i)
      writeBytes(w, kBlob, static_cast<uint32_t>(i), req.blobs[i].data(), req.blobs[i].size());
    w.finish();
    if (stats != nullptr) *stats = w.stats();
    if (::fsync(fd) != 0) ioError(req.path, "fsync of the temporary file", errno);
    closed = true;
    if (::close(fd) != 0) ioError(req.path, "close of the temporary file", errno);
    if (::rename(tmp.c_str(), req.path.c_str()) != 0) ioError(req.path, "rename of the temporary file", errno);
  } catch (...) {
    if (!closed) ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) ioError(req.path, "open of the folder for fsync", errno);
  const int rc = ::fsync(dfd);
  const int e = errno;
  ::close(dfd);
  if (rc != 0 && e != EINVAL) ioError(req.path, "fsync of the folder", e);
}

// ---- Reader -----------------------------------------------------------------

namespace {

/// Whether most of a file is in the page cache (then buffered reads are a
/// memory copy and O_DIRECT would go to the disk again): mincore(2) of up to
/// 256 windows of 64 pages spread over the file.
bool mostlyCached(int fd, uint64_t size) {
  const long pageSize = ::sysconf(_SC_PAGESIZE);
  if (pageSize <= 0 || size == 0) return false;
  const uint64_t page = static_cast<uint64_t>(pageSize), pages = (size + page - 1) / page;
  void* map = ::mmap(nullptr, static_cast<size_t>(size), PROT_READ, MAP_SHARED, fd, 0);
  if (map == MAP_FAILED) return false;
  constexpr uint64_t kWindows = 256, kWindowPages = 64;
  unsigned char v[kWindowPages];
  uint64_t seen = 0, resident = 0;
  const uint64_t windows = std::min<uint64_t>(kWindows, (pages + kWindowPages - 1) / kWindowPages);
  for (uint64_t w = 0; w < windows; ++w) {
    const uint64_t first = pages <= kWindows * kWindowPages ? w * kWindowPages : w * (pages - kWindowPages) / (windows - 1 == 0 ? 1 : windows - 1);
    const uint64_t n = std::min(kWindowPages, pages - first);
    if (::mincore(static_cast<uint8_t*>(map) + first * page, static_cast<size_t>(std::min(n * page, size - first * page)), v) != 0) break;
    for (uint64_t i = 0; i < n; ++i) resident += v[i] & 1;
    seen += n;
  }
  ::munmap(map, static_cast<size_t>(size));
  return seen > 0 && resident * 2 >= seen;
}

}  // namespace

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23  // Linux 5.14; older kernels answer EINVAL and the copy faults the pages itself
#endif

/// Faults in (MADV_POPULATE_WRITE, which leaves the contents alone) the
/// memory a load is about to copy rows into, on a thread of its own, ahead of
/// the copy: a new store's pages are allocated and zeroed on first touch, and
/// on a VM fresh memory costs as much as the disk read (docs/checkpoint.md).
/// Joined before readStore returns or throws, so it never outlives the store.
class Populator {
 public:
  Populator() = default;
  ~Populator() { stop(); }
  Populator(const Populator&) = delete;
  Populator& operator=(const Populator&) = delete;
  /// Queues [p, p + n). Starts the thread on the first call.
  void post(void* p, size_t n) {
    const long pageSize = ::sysconf(_SC_PAGESIZE);
    if (pageSize <= 0 || n < kMinBytes) return;
    const uintptr_t page = static_cast<uintptr_t>(pageSize);
    const uintptr_t a = (reinterpret_cast<uintptr_t>(p) + page - 1) / page * page;
    const uintptr_t b = (reinterpret_cast<uintptr_t>(p) + n) / page * page;
    if (b <= a) return;
    {
      Locked l(m_);
      regions_.push_back({a, b});
      m_.notifyAll();
    }
    if (!started_) {
      try {
        thread_ = std::thread([this] { run(); });
        started_ = true;
      } catch (const std::exception&) {
        // no thread: the copy faults the pages as it goes
      }
    }
  }
  void stop() {
    if (!started_) return;
    {
      Locked l(m_);
      stopping_ = true;
      m_.notifyAll();
    }
    thread_.join();
    started_ = false;
  }

 private:
  static constexpr size_t kMinBytes = size_t{8} << 20;
  static constexpr size_t kStep = size_t{2} << 20;
  void run() {
    size_t next = 0;
    for (;;) {
      uintptr_t a, b;
      {
        Locked l(m_);
        while (next == regions_.size() && !stopping_) m_.wait();
        if (stopping_) return;
        a = regions_[next].first;
        b = regions_[next].second;
        ++next;
      }
      for (uintptr_t p = a; p < b; p += kStep) {
        {
          Locked l(m_);
          if (stopping_) return;
        }
        const size_t len = static_cast<size_t>(std::min<uintptr_t>(kStep, b - p));
        if (::madvise(reinterpret_cast<void*>(p), len, MADV_POPULATE_WRITE) != 0) return;  // unsupported: give up
      }
    }
  }
  Monitor m_;
  std::vector<std::pair<uintptr_t, uintptr_t>> regions_;
  bool stopping_ = false;
  std::thread thread_;
  bool started_ = false;
};

/// The read-ahead pipeline: slot `seq` of the ring holds the file's bytes
/// [seq·B, seq·B + B); the I/O thread fills slots up to kIoSlots ahead of the
/// one the caller reads (for a small file, or without a thread, the caller
/// fills each slot itself when it gets there).
struct Reader::Stream {
  Stream(int fd, uint64_t size, size_t chunk, IoMode io) : fd_(fd), size_(size), ring_(ioBytes(std::min<uint64_t>(chunk, size))) {
    if (io == IoMode::Auto && size > ring_.bytes() && !mostlyCached(fd, size)) direct_ = setDirect(fd, true);
    stats.direct = direct_;
    if (size > 2 * ring_.bytes()) {
      try {
        thread_ = std::thread([this] { run(); });
        threaded_ = true;
      } catch (const std::exception&) {
        threaded_ = false;
      }
    }
    stats.threaded = threaded_;
  }
  ~Stream() {
    if (!threaded_) return;
    {
      Locked l(m_);
      stopping_ = true;
      m_.notifyAll();
    }
    thread_.join();
  }
  Stream(const Stream&) = delete;
  Stream& operator=(const Stream&) = delete;

  /// The next unread bytes (*p, the count); 0 at the end of the file or on
  /// a read error (then *err is the errno).
  size_t next(const uint8_t** p, int* err) {
    for (;;) {
      const size_t k = static_cast<size_t>(cur_ % kIoSlots);
      if (!have_) {
        if (threaded_) {
          Locked l(m_);
          while (produced_ <= cur_) m_.wait();
        } else {
          lens_[k] = fill(cur_, &errs_[k]);
        }
        have_ = true;
        pos_ = 0;
      }
      if (pos_ < lens_[k]) {
        *p = ring_.slot(cur_) + pos_;
        return lens_[k] - pos_;
      }
      if (errs_[k] != 0) {
        *err = errs_[k];
        return 0;
      }
      if (final(cur_)) return 0;
      if (threaded_) {
        Locked l(m_);
        released_ = cur_ + 1;
        m_.notifyAll();
      }
      ++cur_;
      have_ = false;
    }
  }
  void consume(size_t n) { pos_ += n; }

  IoStats stats;

 private:
  bool final(uint64_t seq) const {
    const size_t k = static_cast<size_t>(seq % kIoSlots);
    return errs_[k] != 0 || lens_[k] < ring_.bytes() || seq * ring_.bytes() + lens_[k] >= size_;
  }
  void run() {
    for (uint64_t seq = 0;; ++seq) {
      {
        Locked l(m_);
        while (seq - released_ >= static_cast<uint64_t>(kIoSlots) && !stopping_) m_.wait();
        if (stopping_) return;
      }
      const size_t k = static_cast<size_t>(seq % kIoSlots);
      int err = 0;
      const size_t len = fill(seq, &err);
      Locked l(m_);
      lens_[k] = len;
      errs_[k] = err;
      produced_ = seq + 1;
      m_.notifyAll();
      if (final(seq)) return;
    }
  }
  /// Reads slot `seq` from the file (the I/O thread, or the caller inline);
  /// returns the bytes read, short at the end of the file or on an error.
  size_t fill(uint64_t seq, int* err) {
    *err = 0;
    const uint64_t off = seq * ring_.bytes();
    if (off >= size_) return 0;
    const size_t want = static_cast<size_t>(std::min<uint64_t>(ring_.bytes(), size_ - off));
    uint8_t* dst = ring_.slot(seq);
    size_t got = 0;
    while (got < want) {
      // O_DIRECT: aligned offset and length (the slot has room for the
      // rounded-up tail); anything odd drops back to buffered reads.
      const size_t len = direct_ ? (want - got + kIoAlign - 1) / kIoAlign * kIoAlign : want - got;
      const ssize_t r = ::pread(fd_, dst + got, len, static_cast<off_t>(off + got));
      if (r < 0) {
        if (errno == EINTR) continue;
        if (errno == EINVAL && direct_) {
          direct_ = setDirect(fd_, false);
          stats.direct = false;
          continue;
        }
        *err = errno;
        break;
      }
      if (r == 0) break;  // the file ends early (it shrank): the caller reports the truncation
      got += static_cast<size_t>(r);
      if (direct_ && static_cast<size_t>(r) % kIoAlign != 0) direct_ = setDirect(fd_, false);
    }
    return std::min(got, want);
  }

  int fd_;
  uint64_t size_;
  Ring ring_;
  bool direct_ = false;
  // Slots (lens_/errs_ of a slot are written before produced_ passes it).
  size_t lens_[kIoSlots] = {};
  int errs_[kIoSlots] = {};
  // Caller side.
  uint64_t cur_ = 0;
  size_t pos_ = 0;
  bool have_ = false;
  // Shared (m_).
  Monitor m_;
  uint64_t produced_ = 0, released_ = 0;
  bool stopping_ = false;
  std::thread thread_;
  bool threaded_ = false;
};

Reader::Reader(const std::string& path, size_t chunkBytes, IoMode io)
    : path_(path), chunk_(std::max<size_t>(chunkBytes, 4096)) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) ioError(path, "cannot open", errno);
  try {
    if (isDirectory(path)) ioError(path, "the path is a directory", EISDIR);
    const off_t end = ::lseek(fd_, 0, SEEK_END);
    if (end < 0 || ::lseek(fd_, 0, SEEK_SET) != 0) ioError(path, "not a regular file (cannot seek)", errno);
    fileSize_ = static_cast<uint64_t>(end);
#ifdef POSIX_FADV_SEQUENTIAL
    ::posix_fadvise(fd_, 0, 0, POSIX_FADV_SEQUENTIAL);
#endif
    uint8_t h[kFileHeaderBytes];
    if (fileSize_ < kFileHeaderBytes) corrupt("truncated: " + std::to_string(fileSize_) + " bytes, shorter than the header");
    in_.reset(new Stream(fd_, fileSize_, chunk_, io));
    stats_ = in_->stats;
    readExact(h, sizeof h, "the file header");
    if (std::memcmp(h, kMagic, 8) != 0) corrupt("not a negative-cache checkpoint (bad magic bytes)");
    if (crc32c(0, h, 20) != getU32(h + 20)) corrupt("file header checksum mismatch");
    const uint32_t version = getU32(h + 8);
    if (version != kVersion || getU32(h + 16) != 0) {
      throw Error("ERR_CHECKPOINT_VERSION", "negative-cache: cannot load checkpoint '" + path_ + "': format version " +
                                                std::to_string(version) + " (flags " + std::to_string(getU32(h + 16)) +
                                                "); this version of negative-cache reads format version " +
                                                std::to_string(kVersion));
    }
    sections_ = getU32(h + 12);
    if (sections_ < 1) corrupt("the header announces no sections");
    const uint64_t n = sectionHeader(kMeta, 0, 0, -1, "the META section");
    if (n > kMaxMetaBytes) corrupt("META section of " + std::to_string(n) + " bytes (at most 64 MiB)");
    meta_.resize(static_cast<size_t>(n));
    const uint32_t crc = readCrc(&meta_[0], meta_.size(), 0, "the META section");
    sectionTrailer(crc, "the META section");
  } catch (...) {
    close();
    throw;
  }
}

Reader::~Reader() { close(); }

void Reader::close() {
  if (in_) stats_ = in_->stats;
  in_.reset();  // stops the read-ahead before the descriptor goes
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

IoStats Reader::ioStats() const { return in_ ? in_->stats : stats_; }

void Reader::corrupt(const std::string& what) const {
  throw Error("ERR_CHECKPOINT_CORRUPT", "negative-cache: cannot load checkpoint '" + path_ + "': " + what);
}

uint32_t Reader::readCrc(void* dst, size_t n, uint32_t crc, const char* what) {
  NC_CHECK(fd_ >= 0 && in_, "ERR_ARGUMENT", "checkpoint reader is closed");
  uint8_t* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const uint8_t* src = nullptr;
    int err = 0;
    const size_t avail = in_->next(&src, &err);
    if (avail == 0) {
      if (err != 0) ioError(path_, std::string("read of ") + what, err);
      corrupt(std::string("truncated: the file ends at byte ") + std::to_string(offset_) + " inside " + what);
    }
    const size_t k = std::min(avail, n);
    crc = copyCrc(p, src, k, crc);
    in_->consume(k);
    p += k;
    n -= k;
    offset_ += k;
  }
  return crc;
}

// Headers and trailers: a few bytes, so their (unused) checksum costs nothing.
void Reader::readExact(void* dst, size_t n, const char* what) { (void)readCrc(dst, n, 0, what); }

uint64_t Reader::sectionHeader(uint32_t tag, uint32_t index, uint32_t column, int64_t expectedLength,
                               const char* what) {
  if (sectionsRead_ >= sections_)
    corrupt("the header announces " + std::to_string(sections_) + " sections but " + what + " follows them");
  const std::string where = "section " + std::to_string(sectionsRead_) + " (" + what + ")";
  if (fileSize_ - offset_ < kSectionHeaderBytes + 4)
    corrupt("truncated: the file ends at byte " + std::to_string(fileSize_) + " before " + where);
  uint8_t h[kSectionHeaderBytes];
  readExact(h, sizeof h, what);
  if (crc32c(0, h, 20) != getU32(h + 20)) corrupt(where + ": header checksum mismatch");
  const uint32_t t = getU32(h), i = getU32(h + 4), c = getU32(h + 8);
  const uint64_t length = getU64(h + 12);
  if (t != tag || i != index || c != column) {
    corrupt(where + ": expected " + tagName(tag) + " #" + std::to_string(index) + "." + std::to_string(column) +
            ", found " + tagName(t) + " #" + std::to_string(i) + "." + std::to_string(c));
  }
  if (length > fileSize_ - offset_ - 4)
    corrupt("truncated: " + where + " announces " + std::to_string(length) + " bytes, the file has " +
            std::to_string(fileSize_ - offset_ - 4) + " left");
  if (expectedLength >= 0 && length != static_cast<uint64_t>(expectedLength))
    corrupt(where + ": " + std::to_string(length) + " bytes where the cache needs " + std::to_string(expectedLength));
  ++sectionsRead_;
  return length;
}

void Reader::sectionTrailer(uint32_t crc, const char* what) {
  uint8_t t[4];
  readExact(t, 4, what);
  if (getU32(t) != crc)
    corrupt("section " + std::to_string(sectionsRead_ - 1) + " (" + what + "): checksum mismatch");
}

void Reader::readStore(uint32_t index, CacheStore& store, const std::vector<int>& columnMap) {
  const int64_t size = store.size();
  NC_CHECK(static_cast<int>(columnMap.size()) == store.numColumns(), "ERR_ARGUMENT", "readStore: column map size");
  {
    std::vector<bool> seen(columnMap.size(), false);
    for (int c : columnMap) {
      NC_CHECK(c >= 0 && c < store.numColumns() && !seen[static_cast<size_t>(c)], "ERR_ARGUMENT",
               "readStore: column map must be a permutation");
      seen[static_cast<size_t>(c)] = true;
    }
  }
  std::vector<int32_t> ages(static_cast<size_t>(size));
  std::vector<uint8_t> filled(static_cast<size_t>(size));
  auto readPayload = [&](uint8_t* dst, size_t n, const char* what) {
    sectionTrailer(readCrc(dst, n, 0, what), what);  // copied and checksummed as the read-ahead delivers it
  };
  sectionHeader(kAges, index, 0, size * 4, "AGES");
  readPayload(reinterpret_cast<uint8_t*>(ages.data()), static_cast<size_t>(size) * 4, "AGES");
  sectionHeader(kFill, index, 0, size, "FILL");
  readPayload(filled.data(), static_cast<size_t>(size), "FILL");
  for (int64_t r = 0; r < size; ++r)
    if (filled[static_cast<size_t>(r)] > 1) corrupt("FILL section: flag " + std::to_string(filled[r]) + " at row " + std::to_string(r));
  Populator populate;  // stops (joins) on every way out of here
  for (size_t f = 0; f < columnMap.size(); ++f) {
    const int c = columnMap[f];
    if (void* host = store.rawHostColumn(c)) populate.post(host, static_cast<size_t>(size) * store.rawRowBytes(c));
  }
  std::vector<uint8_t> staging;
  for (size_t f = 0; f < columnMap.size(); ++f) {
    const int c = columnMap[f];
    const size_t rb = store.rawRowBytes(c);
    const uint64_t bytes = static_cast<uint64_t>(size) * rb;
    sectionHeader(kData, index, static_cast<uint32_t>(f), static_cast<int64_t>(bytes), "DATA");
    uint8_t* host = static_cast<uint8_t*>(store.rawHostColumn(c));
    if (host != nullptr) {
      readPayload(host, static_cast<size_t>(bytes), "DATA");
      continue;
    }
    const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(chunk_ / rb));
    uint32_t crc = 0;
    for (int64_t r0 = 0; r0 < size; r0 += rows) {
      const int64_t n = std::min(rows, size - r0);
      staging.resize(static_cast<size_t>(n) * rb);
      crc = readCrc(staging.data(), staging.size(), crc, "DATA");
      store.copyRawIn(c, r0, n, staging.data());
    }
    sectionTrailer(crc, "DATA");
  }
  populate.stop();
  store.restoreState(ages.data(), filled.data());
}

std::string Reader::readBlob(uint32_t index) {
  const uint64_t n = sectionHeader(kBlob, index, 0, -1, "BLOB");
  std::string out(static_cast<size_t>(n), '\0');
  const uint32_t crc = n > 0 ? readCrc(&out[0], out.size(), 0, "BLOB") : 0;
  sectionTrailer(crc, "BLOB");
  return out;
}

void Reader::finish() {
  if (sectionsRead_ != sections_)
    corrupt("the header announces " + std::to_string(sections_) + " sections, the META describes " +
            std::to_string(sectionsRead_));
  if (offset_ != fileSize_)
    corrupt(std::to_string(fileSize_ - offset_) + " unexpected bytes after the last section");
  close();
}

}  // namespace ckpt
}  // namespace nc
