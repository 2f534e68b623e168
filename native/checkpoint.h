// Checkpoint files of cache stores (docs/checkpoint.md has the format): one
// file, a versioned header, then sections each closed by a CRC32C, written
// atomically (temporary file in the same folder, fsync, rename, fsync of the
// folder) and streamed in chunks straight from the stores' memory.
//
// The writer and the reader see stores only through the CacheStore interface
// (raw rows, ages, filled flags), so CPU and CUDA stores share them; the
// TypeScript side (src/checkpoint.ts) writes and reads the same format for
// the pure-JS backend and owns the META section's content (JSON).
//
// Errors are nc::Error with the codes ERR_CHECKPOINT_IO (the file system
// failed: message names the file, the call and the errno text),
// ERR_CHECKPOINT_CORRUPT, ERR_CHECKPOINT_VERSION (and ERR_ARGUMENT).
#pragma once
#include <atomic>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "cache_store.h"

namespace nc {
namespace ckpt {

constexpr char kMagic[8] = {'N', 'E', 'G', 'C', 'A', 'C', 'H', 'E'};
constexpr uint32_t kVersion = 1;
constexpr size_t kFileHeaderBytes = 24;     // magic, u32 version, u32 sections, u32 flags (0), u32 crc
constexpr size_t kSectionHeaderBytes = 24;  // tag, u32 index, u32 column, u64 length, u32 crc; payload; u32 crc
constexpr size_t kDefaultChunkBytes = size_t{8} << 20;
/// The I/O pipeline: kIoSlots buffers of min(chunk, kMaxIoBytes) bytes
/// (rounded up to kIoAlign), one thread doing the read(2)/write(2) calls while
/// the caller copies and checksums the neighbouring buffer.
constexpr size_t kIoAlign = 4096;
constexpr size_t kMaxIoBytes = size_t{4} << 20;
constexpr int kIoSlots = 4;

/// How the file is accessed. Auto: a save writes with O_DIRECT where the file
/// system takes it (no page-cache copy of the file) and a load reads with
/// O_DIRECT when most of the file is not in the page cache; both fall back to
/// buffered I/O on EINVAL. Buffered: never O_DIRECT (tests; file systems
/// that accept the flag but misbehave).
enum class IoMode { Auto, Buffered };

/// Section tags (4 ASCII bytes, read as a little-endian u32).
enum Tag : uint32_t {
  kMeta = 0x4154454d,  // "META"
  kAges = 0x53454741,  // "AGES"
  kFill = 0x4c4c4946,  // "FILL"
  kData = 0x41544144,  // "DATA"
  kBlob = 0x424f4c42,  // "BLOB"
};

/// What a save writes: META, then per store AGES, FILL and DATA per column
/// (store column order), then the blobs.
struct SaveRequest {
  std::string path;
  std::string meta;                        // the META payload (UTF-8 JSON)
  std::vector<const CacheStore*> stores;
  std::vector<std::string> blobs;
  size_t chunkBytes = kDefaultChunkBytes;
  /// Test hook: when set, write() fails with ERR_CHECKPOINT_IO (ENOSPC) after
  /// this many payload bytes (simulates a full disk). -1 = off.
  int64_t failAfterBytes = -1;
  IoMode io = IoMode::Auto;
};

/// What one save or load did (tests, the bench): whether O_DIRECT was used
/// for the bulk of the file and whether the I/O ran on its own thread.
struct IoStats {
  bool direct = false;
  bool threaded = false;
};

/// Writes the checkpoint atomically; on any failure the temporary file is
/// removed and `path` is untouched. Throws nc::Error.
void save(const SaveRequest& req, IoStats* stats = nullptr);

/// Reads a checkpoint front to back, verifying every checksum as it goes.
/// The caller reads the META, decides the stores (fresh ones: a failed read
/// leaves them half-written, to be discarded), then calls readStore for each
/// store in file order, readBlob for each blob, and finish().
class Reader {
 public:
  /// Opens `path`, checks the header and reads the META section. Throws.
  explicit Reader(const std::string& path, size_t chunkBytes = kDefaultChunkBytes, IoMode io = IoMode::Auto);
  ~Reader();
  Reader(const Reader&) = delete;
  Reader& operator=(const Reader&) = delete;

  const std::string& meta() const { return meta_; }
  uint32_t sections() const { return sections_; }
  IoStats ioStats() const;

  /// Reads store `index`'s AGES, FILL and DATA sections into `store`: file
  /// column f of the store's checkpoint goes to store column columnMap[f]
  /// (every store column exactly once). Every length must match the store.
  void readStore(uint32_t index, CacheStore& store, const std::vector<int>& columnMap);
  /// Reads blob `index` (expected length checked against the file).
  std::string readBlob(uint32_t index);
  /// Checks that every section was read and nothing follows. Closes the file.
  void finish();

 private:
  [[noreturn]] void corrupt(const std::string& what) const;
  void readExact(void* dst, size_t n, const char* what);
  /// readExact that also returns the CRC32C of the bytes (continuing `crc`).
  uint32_t readCrc(void* dst, size_t n, uint32_t crc, const char* what);
  /// Reads the next section header; checks tag, index, column and (when
  /// expectedLength >= 0) the payload length. Returns the payload length.
  uint64_t sectionHeader(uint32_t tag, uint32_t index, uint32_t column, int64_t expectedLength, const char* what);
  void sectionTrailer(uint32_t crc, const char* what);
  void close();

  struct Stream;  // the read-ahead pipeline (checkpoint.cc)
  std::string path_;
  int fd_ = -1;
  std::unique_ptr<Stream> in_;
  IoStats stats_;
  uint64_t fileSize_ = 0, offset_ = 0;
  uint32_t sections_ = 0, sectionsRead_ = 0;
  size_t chunk_;
  std::string meta_;
};

/// "META", "DATA", ... for messages.
std::string tagName(uint32_t tag);

}  // namespace ckpt
}  // namespace nc
