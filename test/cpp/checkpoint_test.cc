// The native checkpoint writer and reader (native/checkpoint.h) and CRC32C
// (native/crc32c.h) without Node: known CRC values, hardware against tables,
// a CPU store written and read back into a fresh store (rows, ages, flags,
// blobs), and a refusal for every flipped byte and every truncation.
#include <unistd.h>

#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "backend.h"
#include "checkpoint.h"
#include "crc32c.h"
#include "test_util.h"

using nc::ColumnSpec;
using nc::DType;

static void testCrc() {
  const char* check = "123456789";
  EXPECT(nc::crc32c(0, check, 9) == 0xE3069283u, "crc32c check value");
  EXPECT(nc::crc32cSoftware(0, check, 9) == 0xE3069283u, "crc32c tables check value");
  std::vector<uint8_t> zeros(32, 0);
  EXPECT(nc::crc32c(0, zeros.data(), 32) == 0x8A9136AAu, "32 zeros");
  std::mt19937 rng(1);
  std::vector<uint8_t> buf(100000);
  for (auto& b : buf) b = static_cast<uint8_t>(rng());
  for (int t = 0; t < 300; ++t) {
    const size_t off = rng() % 64, len = rng() % (buf.size() - 64);
    const uint32_t a = nc::crc32c(0, buf.data() + off, len), b = nc::crc32cSoftware(0, buf.data() + off, len);
    EXPECT(a == b, "hardware %08x vs tables %08x at %zu+%zu", a, b, off, len);
    const size_t cut = len == 0 ? 0 : rng() % len;
    EXPECT(nc::crc32c(nc::crc32c(0, buf.data() + off, cut), buf.data() + off + cut, len - cut) == a, "continuation");
  }
}

static std::vector<ColumnSpec> columns() {
  return {{"e", DType::Float16, 3}, {"b", DType::BFloat16, 2}, {"f", DType::Float32, 2}, {"id", DType::Int32, 1}};
}

static std::string readAll(const std::string& p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
static void writeAll(const std::string& p, const std::string& s) {
  std::ofstream out(p, std::ios::binary | std::ios::trunc);
  out.write(s.data(), static_cast<std::streamsize>(s.size()));
}

static bool sameStore(const nc::CacheStore& a, const nc::CacheStore& b) {
  for (int c = 0; c < a.numColumns(); ++c)
    if (std::memcmp(a.rawHostColumn(c), b.rawHostColumn(c), static_cast<size_t>(a.size()) * a.rawRowBytes(c)) != 0) return false;
  for (int32_t r = 0; r < a.size(); ++r)
    if (a.ageOf(r) != b.ageOf(r) || a.filled()[r] != b.filled()[r]) return false;
  return true;
}

static void testRoundTrip() {
  const std::string dir = "/tmp/nc-ckpt-cpp-" + std::to_string(::getpid());
  std::system(("mkdir -p " + dir).c_str());
  const std::string path = dir + "/a.ckpt";
  const int64_t size = 7;
  auto store = nc::cpuBackend().createStore(columns(), size);
  std::mt19937 rng(3);
  for (int step = 0; step < 3; ++step) {
    nc::CacheUpdate u;
    u.numNew = 2;
    std::vector<float> e(2 * 3), b(2 * 2), f(2 * 2);
    std::vector<int32_t> id(2);
    for (auto& x : e) x = static_cast<float>(rng() % 100) / 7.f;
    for (auto& x : b) x = static_cast<float>(rng() % 100) / 3.f;
    for (auto& x : f) x = static_cast<float>(rng() % 100) / 9.f;
    for (auto& x : id) x = static_cast<int32_t>(rng() % 1000);
    u.newValues = {e.data(), b.data(), f.data(), id.data()};
    store->update(u);
  }
  nc::ckpt::SaveRequest req;
  req.path = path;
  req.meta = "{\"hello\":1}";
  req.stores = {store.get()};
  req.blobs = {"blob-zero", ""};
  req.chunkBytes = 4096;
  nc::ckpt::save(req);

  {
    nc::ckpt::Reader r(path);
    EXPECT(r.meta() == req.meta, "meta round trip");
    auto fresh = nc::cpuBackend().createStore(columns(), size);
    r.readStore(0, *fresh, {0, 1, 2, 3});
    EXPECT(r.readBlob(0) == "blob-zero" && r.readBlob(1).empty(), "blobs");
    r.finish();
    EXPECT(sameStore(*store, *fresh), "rows, ages and flags round trip");
  }

  const std::string good = readAll(path);
  const std::string bad = dir + "/bad.ckpt";
  auto tryLoad = [&](std::string* code) {
    try {
      nc::ckpt::Reader r(bad);
      auto fresh = nc::cpuBackend().createStore(columns(), size);
      r.readStore(0, *fresh, {0, 1, 2, 3});
      r.readBlob(0);
      r.readBlob(1);
      r.finish();
      return true;
    } catch (const nc::Error& e) {
      *code = e.code();
      return false;
    }
  };
  int refused = 0;
  for (size_t i = 0; i < good.size(); ++i) {
    std::string b = good;
    b[i] = static_cast<char>(b[i] ^ (1 + rng() % 255));
    writeAll(bad, b);
    std::string code;
    const bool ok = tryLoad(&code);
    EXPECT(!ok && (code == "ERR_CHECKPOINT_CORRUPT" || code == "ERR_CHECKPOINT_VERSION"), "flipped byte %zu accepted (%s)", i,
           code.c_str());
    refused += ok ? 0 : 1;
  }
  for (size_t n = 0; n < good.size(); n += 3) {
    writeAll(bad, good.substr(0, n));
    std::string code;
    EXPECT(!tryLoad(&code) && code == "ERR_CHECKPOINT_CORRUPT", "truncation to %zu accepted (%s)", n, code.c_str());
  }
  std::printf("checkpoint: %d of %zu flipped bytes refused\n", refused, good.size());

  // A failing write leaves the old file.
  req.failAfterBytes = 100;
  bool threw = false;
  try {
    nc::ckpt::save(req);
  } catch (const nc::Error& e) {
    threw = e.code() == "ERR_CHECKPOINT_IO";
  }
  EXPECT(threw, "simulated full disk: ERR_CHECKPOINT_IO");
  EXPECT(readAll(path) == good, "the previous checkpoint is intact");
  std::system(("rm -rf " + dir).c_str());
}

// A store large enough for the I/O pipeline (thread, O_DIRECT where the file
// system takes it) written and read in every combination of modes and chunk
// sizes, with truncations and flipped bytes at the places the pipeline cuts
// the file into buffers.
static void testPipeline() {
  const std::string dir = "/tmp/nc-ckpt-cpp-pipe-" + std::to_string(::getpid());
  std::system(("mkdir -p " + dir).c_str());
  const std::string path = dir + "/p.ckpt";
  const std::vector<ColumnSpec> cols = {{"e", DType::Float16, 37}, {"id", DType::Int32, 3}};
  const int64_t size = 5000;  // 5000 * (74 + 12) + ages + flags: about 450 KB
  auto store = nc::cpuBackend().createStore(cols, size);
  std::mt19937 rng(11);
  {
    nc::CacheUpdate u;
    u.numNew = static_cast<int32_t>(size);
    std::vector<float> e(static_cast<size_t>(size) * 37);
    std::vector<int32_t> id(static_cast<size_t>(size) * 3);
    for (auto& x : e) x = static_cast<float>(rng() % 1000) / 17.f;
    for (auto& x : id) x = static_cast<int32_t>(rng());
    u.newValues = {e.data(), id.data()};
    store->update(u);
    nc::CacheUpdate v;
    v.numNew = 100;
    std::vector<float> e2(100 * 37, 1.5f);
    std::vector<int32_t> id2(100 * 3, 7);
    v.newValues = {e2.data(), id2.data()};
    store->update(v);  // ages differ from row to row
  }
  std::string reference;
  for (size_t chunk : {size_t{4096}, size_t{12288}, size_t{65536}, size_t{8} << 20}) {
    for (nc::ckpt::IoMode io : {nc::ckpt::IoMode::Auto, nc::ckpt::IoMode::Buffered}) {
      nc::ckpt::SaveRequest req;
      req.path = path;
      req.meta = std::string(1000 + chunk % 977, 'm');  // sections start at odd offsets
      req.stores = {store.get()};
      req.blobs = {std::string(3333, 'b')};
      req.chunkBytes = chunk;
      req.io = io;
      nc::ckpt::IoStats ws;
      nc::ckpt::save(req, &ws);
      if (chunk == 4096) EXPECT(ws.threaded, "a 450 KB file in 4 KiB buffers is written by the I/O thread");
      if (io == nc::ckpt::IoMode::Buffered) EXPECT(!ws.direct, "buffered mode never uses O_DIRECT");
      for (nc::ckpt::IoMode rio : {nc::ckpt::IoMode::Auto, nc::ckpt::IoMode::Buffered}) {
        nc::ckpt::Reader r(path, chunk, rio);
        EXPECT(r.meta() == req.meta, "meta (chunk %zu)", chunk);
        if (chunk == 4096) EXPECT(r.ioStats().threaded, "read-ahead thread");
        if (chunk == 4096 && io == nc::ckpt::IoMode::Auto && rio == nc::ckpt::IoMode::Auto)
          std::printf("checkpoint pipeline in %s: O_DIRECT writes %s, reads %s\n", dir.c_str(), ws.direct ? "yes" : "no",
                      r.ioStats().direct ? "yes" : "no");
        if (rio == nc::ckpt::IoMode::Buffered) EXPECT(!r.ioStats().direct, "buffered reads");
        auto fresh = nc::cpuBackend().createStore(cols, size);
        r.readStore(0, *fresh, {0, 1});
        EXPECT(r.readBlob(0) == req.blobs[0], "blob (chunk %zu)", chunk);
        r.finish();
        EXPECT(sameStore(*store, *fresh), "pipeline round trip (chunk %zu, io %d/%d)", chunk, static_cast<int>(io),
               static_cast<int>(rio));
      }
      // The bytes do not depend on how they were written.
      const std::string bytes = readAll(path);
      if (io == nc::ckpt::IoMode::Auto) reference = bytes;
      else EXPECT(bytes == reference, "O_DIRECT and buffered saves wrote different bytes (chunk %zu)", chunk);
      EXPECT(bytes.size() > 400000, "file size %zu", bytes.size());
    }
  }
  // Damage around buffer boundaries (4096 multiples) and inside the big section.
  const std::string good = readAll(path);
  const std::string bad = dir + "/bad.ckpt";
  auto tryLoad = [&](size_t chunk, nc::ckpt::IoMode io, std::string* code) {
    try {
      nc::ckpt::Reader r(bad, chunk, io);
      auto fresh = nc::cpuBackend().createStore(cols, size);
      r.readStore(0, *fresh, {0, 1});
      r.readBlob(0);
      r.finish();
      return true;
    } catch (const nc::Error& e) {
      *code = e.code();
      return false;
    }
  };
  std::vector<size_t> spots;
  for (size_t b = 4096; b < good.size(); b += 4096 * 7) {
    spots.push_back(b - 1);
    spots.push_back(b);
  }
  spots.push_back(good.size() - 1);
  for (size_t i : spots) {
    std::string b = good;
    b[i] = static_cast<char>(b[i] ^ 0x20);
    writeAll(bad, b);
    for (nc::ckpt::IoMode io : {nc::ckpt::IoMode::Auto, nc::ckpt::IoMode::Buffered}) {
      std::string code;
      EXPECT(!tryLoad(4096, io, &code) && code == "ERR_CHECKPOINT_CORRUPT", "flipped byte %zu accepted (%s)", i, code.c_str());
    }
  }
  for (size_t n : {good.size() - 1, good.size() - 4096, size_t{4096 * 3}, size_t{4096 * 3 + 5}, good.size() / 2}) {
    writeAll(bad, good.substr(0, n));
    for (nc::ckpt::IoMode io : {nc::ckpt::IoMode::Auto, nc::ckpt::IoMode::Buffered}) {
      std::string code;
      EXPECT(!tryLoad(4096, io, &code) && code == "ERR_CHECKPOINT_CORRUPT", "truncation to %zu accepted (%s)", n, code.c_str());
    }
  }
  writeAll(bad, good + "x");
  {
    std::string code;
    EXPECT(!tryLoad(4096, nc::ckpt::IoMode::Auto, &code) && code == "ERR_CHECKPOINT_CORRUPT", "a trailing byte accepted");
  }
  // A reader dropped half-way stops its thread (no hang, no crash).
  for (int i = 0; i < 20; ++i) {
    nc::ckpt::Reader r(path, 4096);
    (void)r.meta();
  }
  // Simulated full disk at several places, through the thread.
  for (int64_t failAfter : {int64_t{0}, int64_t{5000}, int64_t{4096 * 10}, int64_t{400000}}) {
    nc::ckpt::SaveRequest req;
    req.path = path;
    req.meta = "{}";
    req.stores = {store.get()};
    req.chunkBytes = 4096;
    req.failAfterBytes = failAfter;
    std::string msg;
    try {
      nc::ckpt::save(req);
    } catch (const nc::Error& e) {
      msg = e.code() + " " + e.what();
    }
    EXPECT(msg.find("ERR_CHECKPOINT_IO") == 0 && msg.find("write: No space left on device") != std::string::npos,
           "full disk after %lld bytes: '%s'", static_cast<long long>(failAfter), msg.c_str());
    EXPECT(readAll(path) == good, "the previous checkpoint is intact (full disk after %lld)", static_cast<long long>(failAfter));
  }
  std::system(("rm -rf " + dir).c_str());
}

int main() {
  testCrc();
  testRoundTrip();
  testPipeline();
  std::printf("%s (crc32c %s)\n", failures == 0 ? "checkpoint_test: all passed" : "checkpoint_test: FAILED",
              nc::crc32cHardware() ? "hardware" : "tables");
  return failures == 0 ? 0 : 1;
}
