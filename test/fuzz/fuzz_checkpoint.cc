// libFuzzer target: the checkpoint reader (native/checkpoint.h, nc::ckpt::Reader)
// on arbitrary files. Input byte 0 picks one of a few store layouts, the
// chunk size, the column order and whether the target first recomputes every
// checksum of the file (so that mutations get past the CRC32Cs and reach the
// structural checks: tags, indices, lengths, flags, section counts); the rest
// is the file. The reader must either throw nc::Error or load a store that
// then works (reads, an update); a file that is a seed unchanged must load
// back exactly the state that was saved.
//
// Seeds: with NEGCACHE_FUZZ_SEEDS=<dir> in the environment, the target first
// writes one valid checkpoint per layout there (scripts/fuzz.sh does this).
// Built only when native/checkpoint.h exists (otherwise an empty target).
#if __has_include("checkpoint.h")
#include <fuzzer/FuzzedDataProvider.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <memory>
#include <string>
#include <vector>

#include "backend.h"
#include "checkpoint.h"
#include "crc32c.h"

namespace {

[[noreturn]] void fail(const char* what, long a = 0) {
  std::fprintf(stderr, "fuzz_checkpoint: %s (%ld)\n", what, a);
  std::abort();
}

struct Layout {
  int64_t size;
  std::vector<nc::ColumnSpec> cols;
  int stores;
  int blobs;
};

const std::vector<Layout>& layouts() {
  static const std::vector<Layout> l = {
      {5, {{"e", nc::DType::Float32, 3}}, 1, 0},
      {17, {{"e", nc::DType::Float16, 4}, {"id", nc::DType::Int32, 1}}, 1, 1},
      {9, {{"a", nc::DType::BFloat16, 2}, {"b", nc::DType::Float32, 1}, {"c", nc::DType::Int32, 2}}, 2, 2},
      {1, {}, 1, 1},
  };
  return l;
}

std::unique_ptr<nc::CacheStore> makeStore(const Layout& l) { return nc::cpuBackend().createStore(l.cols, l.size); }

/// A deterministic state: a few updates with values derived from `salt`.
void fill(nc::CacheStore& s, int salt) {
  for (int step = 0; step < 3; ++step) {
    const int64_t n = std::min<int64_t>(s.size(), 2 + step);
    std::vector<std::vector<uint32_t>> vals(static_cast<size_t>(s.numColumns()));
    nc::CacheUpdate u;
    u.numNew = n;
    for (int c = 0; c < s.numColumns(); ++c) {
      const int64_t w = s.column(c).width;
      vals[static_cast<size_t>(c)].resize(static_cast<size_t>(n * w));
      for (int64_t i = 0; i < n * w; ++i) {
        if (s.column(c).storage == nc::DType::Int32) {
          vals[static_cast<size_t>(c)][static_cast<size_t>(i)] = static_cast<uint32_t>(salt * 100 + step * 10 + i);
        } else {
          const float f = static_cast<float>(salt) + 0.25f * static_cast<float>(step * 7 + i);
          std::memcpy(&vals[static_cast<size_t>(c)][static_cast<size_t>(i)], &f, 4);
        }
      }
      u.newValues.push_back(vals[static_cast<size_t>(c)].data());
    }
    s.update(u);
  }
}

std::string tmpPath() {
  const char* dir = std::getenv("TMPDIR");
  return std::string(dir && *dir ? dir : "/tmp") + "/negcache-fuzz-ckpt-" + std::to_string(::getpid());
}

void writeFile(const std::string& path, const uint8_t* data, size_t n) {
  FILE* f = std::fopen(path.c_str(), "wb");
  if (f == nullptr) fail("cannot write the temporary file");
  if (n > 0 && std::fwrite(data, 1, n, f) != n) fail("short write of the temporary file");
  std::fclose(f);
}

std::vector<uint8_t> readFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<uint8_t>((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

uint32_t getU32(const uint8_t* p) { uint32_t v; std::memcpy(&v, p, 4); return v; }
uint64_t getU64(const uint8_t* p) { uint64_t v; std::memcpy(&v, p, 8); return v; }
void putU32(uint8_t* p, uint32_t v) { std::memcpy(p, &v, 4); }

/// Recomputes the file header's and every section's checksums in place,
/// walking the sections as far as their lengths allow.
void fixChecksums(std::vector<uint8_t>& f) {
  const size_t H = nc::ckpt::kFileHeaderBytes, S = nc::ckpt::kSectionHeaderBytes;
  if (f.size() < H) return;
  putU32(&f[20], nc::crc32c(0, f.data(), 20));
  size_t off = H;
  while (f.size() - off >= S) {
    putU32(&f[off + 20], nc::crc32c(0, &f[off], 20));
    const uint64_t len = getU64(&f[off + 12]);
    off += S;
    if (len > f.size() - off || f.size() - off - len < 4) return;
    putU32(&f[off + len], nc::crc32c(0, &f[off], static_cast<size_t>(len)));
    off += static_cast<size_t>(len) + 4;
  }
}

std::string savedMeta(size_t layout) { return "{\"layout\":" + std::to_string(layout) + "}"; }
std::string savedBlob(int i) { return std::string("blob-") + std::to_string(i) + std::string(static_cast<size_t>(i) * 5, 'x'); }

/// The seed file of layout k: a checkpoint of filled stores.
std::vector<uint8_t> seedFile(size_t k) {
  const Layout& l = layouts()[k];
  std::vector<std::unique_ptr<nc::CacheStore>> stores;
  nc::ckpt::SaveRequest req;
  req.path = tmpPath() + "-seed";
  req.meta = savedMeta(k);
  req.chunkBytes = 4096;
  for (int i = 0; i < l.stores; ++i) {
    stores.push_back(makeStore(l));
    fill(*stores.back(), i + 1);
    req.stores.push_back(stores.back().get());
  }
  for (int i = 0; i < l.blobs; ++i) req.blobs.push_back(savedBlob(i));
  nc::ckpt::save(req);
  std::vector<uint8_t> bytes = readFile(req.path);
  std::remove(req.path.c_str());
  return bytes;
}

struct State {
  std::vector<int32_t> ages;
  std::vector<uint8_t> filled;
  std::vector<std::vector<uint32_t>> cols;
};

State stateOf(const nc::CacheStore& s) {
  State st;
  st.ages.resize(static_cast<size_t>(s.size()));
  s.readAge(st.ages.data());
  st.filled.assign(s.filled(), s.filled() + s.size());
  for (int c = 0; c < s.numColumns(); ++c) {
    st.cols.emplace_back(static_cast<size_t>(s.size() * s.column(c).width));
    s.readColumn(c, st.cols.back().data());
  }
  return st;
}

bool sameState(const State& a, const State& b) {
  return a.ages == b.ages && a.filled == b.filled && a.cols == b.cols;
}

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  const char* dir = std::getenv("NEGCACHE_FUZZ_SEEDS");
  if (dir == nullptr || *dir == '\0') return 0;
  for (size_t k = 0; k < layouts().size(); ++k) {
    std::vector<uint8_t> seed = seedFile(k);
    seed.insert(seed.begin(), static_cast<uint8_t>(k));  // control byte: layout k, chunk 4096, checksums kept
    writeFile(std::string(dir) + "/seed-layout-" + std::to_string(k), seed.data(), seed.size());
  }
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  if (len < 1) return 0;
  const uint8_t ctl = data[0];
  const size_t k = ctl % 4;
  const Layout& l = layouts()[k];
  const size_t chunk = (ctl & 0x10) ? 4096 + 4 * static_cast<size_t>(ctl >> 5) : nc::ckpt::kDefaultChunkBytes;
  const bool reverse = (ctl & 0x08) != 0;
  const bool fix = (ctl & 0x04) != 0;
  std::vector<uint8_t> file(data + 1, data + len);
  if (fix) fixChecksums(file);
  const std::string path = tmpPath();
  writeFile(path, file.data(), file.size());

  // The unchanged seed of this layout, for the exact comparison.
  static std::vector<std::vector<uint8_t>> seeds(layouts().size());
  if (seeds[k].empty()) seeds[k] = seedFile(k);
  const bool isSeed = file == seeds[k] && !reverse;

  std::vector<std::unique_ptr<nc::CacheStore>> stores;
  bool loaded = false;
  try {
    nc::ckpt::Reader r(path, chunk);
    std::vector<int> map(l.cols.size());
    for (size_t f = 0; f < map.size(); ++f) map[f] = static_cast<int>(reverse ? map.size() - 1 - f : f);
    for (int i = 0; i < l.stores; ++i) {
      stores.push_back(makeStore(l));
      r.readStore(static_cast<uint32_t>(i), *stores.back(), map);
    }
    std::vector<std::string> blobs;
    for (int i = 0; i < l.blobs; ++i) blobs.push_back(r.readBlob(static_cast<uint32_t>(i)));
    r.finish();
    loaded = true;
    if (isSeed) {
      if (r.meta() != savedMeta(k)) fail("the seed's META read back differently");
      for (int i = 0; i < l.blobs; ++i)
        if (blobs[static_cast<size_t>(i)] != savedBlob(i)) fail("the seed's blob read back differently", i);
    }
  } catch (const nc::Error& e) {
    const std::string code = e.code();
    if (code != "ERR_CHECKPOINT_CORRUPT" && code != "ERR_CHECKPOINT_VERSION" && code != "ERR_CHECKPOINT_IO")
      fail("the reader threw an unexpected error code");
    if (std::strstr(e.what(), path.c_str()) == nullptr) fail("the reader's message does not name the file");
  }
  std::remove(path.c_str());
  if (isSeed && !loaded) fail("an unchanged seed did not load");
  if (!loaded) return 0;

  for (size_t i = 0; i < stores.size(); ++i) {
    nc::CacheStore& s = *stores[i];
    for (int64_t r = 0; r < s.size(); ++r)
      if (s.filled()[r] > 1) fail("a loaded filled flag is not 0/1", static_cast<long>(r));
    if (isSeed) {
      std::unique_ptr<nc::CacheStore> want = makeStore(l);
      fill(*want, static_cast<int>(i) + 1);
      if (!sameState(stateOf(s), stateOf(*want))) fail("the seed loaded a different state", static_cast<long>(i));
    }
    // A loaded store keeps working: an insert of every row and a refresh.
    std::vector<std::vector<uint32_t>> vals(static_cast<size_t>(s.numColumns()));
    nc::CacheUpdate u;
    u.numNew = s.size();
    for (int c = 0; c < s.numColumns(); ++c) {
      vals[static_cast<size_t>(c)].assign(static_cast<size_t>(s.size() * s.column(c).width), 0x3f800000u);
      u.newValues.push_back(vals[static_cast<size_t>(c)].data());
    }
    s.update(u);
    (void)stateOf(s);
  }
  return 0;
}

#else  // no native/checkpoint.h on this branch yet

#include <cstddef>
#include <cstdint>
extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }

#endif
