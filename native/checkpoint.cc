// The checkpoint writer and reader of native stores; the format is in
// docs/checkpoint.md (and mirrored by src/checkpoint.ts for the JS backend).
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <limits>

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

/// Sequential writer of the temporary file: small pieces are buffered, large
/// ones go straight from the caller's memory.
class FileWriter {
 public:
  FileWriter(int fd, const std::string& path, int64_t failAfter) : fd_(fd), path_(path), failAfter_(failAfter) {
    buffer_.reserve(kBuffer);
  }
  void put(const void* data, size_t n) {
    if (n < kBuffer / 4) {
      if (buffer_.size() + n > kBuffer) flush();
      const uint8_t* p = static_cast<const uint8_t*>(data);
      buffer_.insert(buffer_.end(), p, p + n);
      return;
    }
    flush();
    raw(data, n);
  }
  void flush() {
    if (!buffer_.empty()) raw(buffer_.data(), buffer_.size());
    buffer_.clear();
  }
  /// Starts the write-back of what was written since the last call once it
  /// is a chunk or more (Linux): the disk works while the next chunk is
  /// checksummed, and the final fsync has little left to flush.
  void kick(size_t chunk) {
#ifdef SYNC_FILE_RANGE_WRITE
    if (written_ - kicked_ >= chunk) {
      ::sync_file_range(fd_, static_cast<off_t>(kicked_), static_cast<off_t>(written_ - kicked_), SYNC_FILE_RANGE_WRITE);
      kicked_ = written_;
    }
#else
    (void)chunk;
#endif
  }

 private:
  static constexpr size_t kBuffer = size_t{1} << 20;
  void raw(const void* data, size_t n) {
    const uint8_t* p = static_cast<const uint8_t*>(data);
    while (n > 0) {
      size_t step = std::min(n, size_t{1} << 30);
      if (failAfter_ >= 0) {
        if (written_ >= static_cast<uint64_t>(failAfter_)) ioError(path_, "write", ENOSPC);
        step = std::min<uint64_t>(step, static_cast<uint64_t>(failAfter_) - written_);
        if (step == 0) ioError(path_, "write", ENOSPC);
      }
      const ssize_t w = ::write(fd_, p, step);
      if (w < 0) {
        if (errno == EINTR) continue;
        ioError(path_, "write", errno);
      }
      p += w;
      n -= static_cast<size_t>(w);
      written_ += static_cast<uint64_t>(w);
    }
  }
  int fd_;
  const std::string& path_;
  int64_t failAfter_;
  uint64_t written_ = 0, kicked_ = 0;
  std::vector<uint8_t> buffer_;
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

void writeBytes(FileWriter& w, uint32_t tag, uint32_t index, const void* data, size_t n, size_t chunk) {
  sectionHeader(w, tag, index, 0, n);
  uint32_t crc = 0;
  const uint8_t* p = static_cast<const uint8_t*>(data);
  for (size_t off = 0; off < n; off += chunk) {
    const size_t len = std::min(chunk, n - off);
    crc = crc32c(crc, p + off, len);
    w.put(p + off, len);
    w.kick(chunk);
  }
  trailer(w, crc);
}

void writeStore(FileWriter& w, uint32_t index, const CacheStore& s, size_t chunk, std::vector<uint8_t>& staging) {
  const int64_t size = s.size();
  // AGES: computed per row into the staging buffer, chunk by chunk.
  {
    sectionHeader(w, kAges, index, 0, static_cast<uint64_t>(size) * 4);
    const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(chunk / 4));
    staging.resize(static_cast<size_t>(std::min(rows, size)) * 4);
    uint32_t crc = 0;
    for (int64_t r0 = 0; r0 < size; r0 += rows) {
      const int64_t n = std::min(rows, size - r0);
      int32_t* out = reinterpret_cast<int32_t*>(staging.data());
      for (int64_t i = 0; i < n; ++i) out[i] = s.ageOf(static_cast<int32_t>(r0 + i));
      crc = crc32c(crc, staging.data(), static_cast<size_t>(n) * 4);
      w.put(staging.data(), static_cast<size_t>(n) * 4);
    }
    trailer(w, crc);
  }
  writeBytes(w, kFill, index, s.filled(), static_cast<size_t>(size), chunk);
  for (int c = 0; c < s.numColumns(); ++c) {
    const size_t rb = s.rawRowBytes(c);
    const uint64_t bytes = static_cast<uint64_t>(size) * rb;
    sectionHeader(w, kData, index, static_cast<uint32_t>(c), bytes);
    const int64_t rows = std::max<int64_t>(1, static_cast<int64_t>(chunk / rb));
    const uint8_t* host = static_cast<const uint8_t*>(s.rawHostColumn(c));
    uint32_t crc = 0;
    for (int64_t r0 = 0; r0 < size; r0 += rows) {
      const int64_t n = std::min(rows, size - r0);
      const size_t len = static_cast<size_t>(n) * rb;
      const uint8_t* p;
      if (host != nullptr) {
        p = host + static_cast<size_t>(r0) * rb;
      } else {
        staging.resize(len);
        s.copyRawOut(c, r0, n, staging.data());
        p = staging.data();
      }
      crc = crc32c(crc, p, len);
      w.put(p, len);
      w.kick(chunk);
    }
    trailer(w, crc);
  }
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

void save(const SaveRequest& req) {
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
    FileWriter w(fd, req.path, req.failAfterBytes);
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
    writeBytes(w, kMeta, 0, req.meta.data(), req.meta.size(), req.chunkBytes);
    std::vector<uint8_t> staging;
    for (size_t i = 0; i < req.stores.size(); ++i)
      writeStore(w, static_cast<uint32_t>(i), *req.stores[i], req.chunkBytes, staging);
    for (size_t i = 0; i < req.blobs.size(); ++i)
      writeBytes(w, kBlob, static_cast<uint32_t>(i), req.blobs[i].data(), req.blobs[i].size(), req.chunkBytes);
    w.flush();
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

Reader::Reader(const std::string& path, size_t chunkBytes) : path_(path), chunk_(std::max<size_t>(chunkBytes, 4096)) {
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
    readExact(&meta_[0], meta_.size(), "the META section");
    sectionTrailer(crc32c(0, meta_.data(), meta_.size()), "the META section");
  } catch (...) {
    close();
    throw;
  }
}

Reader::~Reader() { close(); }

void Reader::close() {
  if (fd_ >= 0) ::close(fd_);
  fd_ = -1;
}

void Reader::prefetch() {
#ifdef POSIX_FADV_WILLNEED
  // The next chunk is read ahead by the kernel while this one is checksummed.
  if (offset_ < fileSize_) ::posix_fadvise(fd_, static_cast<off_t>(offset_), static_cast<off_t>(chunk_), POSIX_FADV_WILLNEED);
#endif
}

void Reader::corrupt(const std::string& what) const {
  throw Error("ERR_CHECKPOINT_CORRUPT", "negative-cache: cannot load checkpoint '" + path_ + "': " + what);
}

void Reader::readExact(void* dst, size_t n, const char* what) {
  NC_CHECK(fd_ >= 0, "ERR_ARGUMENT", "checkpoint reader is closed");
  uint8_t* p = static_cast<uint8_t*>(dst);
  while (n > 0) {
    const ssize_t r = ::read(fd_, p, std::min(n, size_t{1} << 30));
    if (r < 0) {
      if (errno == EINTR) continue;
      ioError(path_, std::string("read of ") + what, errno);
    }
    if (r == 0) corrupt(std::string("truncated: the file ends at byte ") + std::to_string(offset_) + " inside " + what);
    p += r;
    n -= static_cast<size_t>(r);
    offset_ += static_cast<uint64_t>(r);
  }
}

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
    uint32_t crc = 0;
    for (size_t off = 0; off < n; off += chunk_) {
      const size_t len = std::min(chunk_, n - off);
      readExact(dst + off, len, what);
      prefetch();
      crc = crc32c(crc, dst + off, len);
    }
    sectionTrailer(crc, what);
  };
  sectionHeader(kAges, index, 0, size * 4, "AGES");
  readPayload(reinterpret_cast<uint8_t*>(ages.data()), static_cast<size_t>(size) * 4, "AGES");
  sectionHeader(kFill, index, 0, size, "FILL");
  readPayload(filled.data(), static_cast<size_t>(size), "FILL");
  for (int64_t r = 0; r < size; ++r)
    if (filled[static_cast<size_t>(r)] > 1) corrupt("FILL section: flag " + std::to_string(filled[r]) + " at row " + std::to_string(r));
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
      readExact(staging.data(), staging.size(), "DATA");
      prefetch();
      crc = crc32c(crc, staging.data(), staging.size());
      store.copyRawIn(c, r0, n, staging.data());
    }
    sectionTrailer(crc, "DATA");
  }
  store.restoreState(ages.data(), filled.data());
}

std::string Reader::readBlob(uint32_t index) {
  const uint64_t n = sectionHeader(kBlob, index, 0, -1, "BLOB");
  std::string out(static_cast<size_t>(n), '\0');
  if (n > 0) readExact(&out[0], out.size(), "BLOB");
  sectionTrailer(crc32c(0, out.data(), out.size()), "BLOB");
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
