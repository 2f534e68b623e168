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

int main() {
  testCrc();
  testRoundTrip();
  std::printf("%s (crc32c %s)\n", failures == 0 ? "checkpoint_test: all passed" : "checkpoint_test: FAILED",
              nc::crc32cHardware() ? "hardware" : "tables");
  return failures == 0 ? 0 : 1;
}
