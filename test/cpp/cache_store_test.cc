// C++ test of native/cache_store + native/half.h: the store against a naive
// O(N) model of DESIGN §3 over long random update sequences (regular and
// irregular initial ages), and the half conversions against F16C.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "cpu/cpu_store.h"
#include "half.h"
#include "test_util.h"

#if defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("f16c"))) static uint16_t f16cFloatToHalf(float f) {
  return static_cast<uint16_t>(_cvtss_sh(f, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) static float f16cHalfToFloat(uint16_t h) { return _cvtsh_ss(h); }
#endif

struct Naive {
  int64_t size, width;
  std::vector<float> data;
  std::vector<int32_t> age;
  void update(bool lru, const std::vector<float>& upd, const std::vector<int32_t>& idx,
              const std::vector<uint8_t>& umask, const std::vector<float>& nw, const std::vector<uint8_t>& nmask) {
    for (size_t i = 0; i < idx.size(); ++i) {
      if (!umask[i]) continue;
      std::memcpy(&data[idx[i] * width], &upd[i * width], width * 4);
      if (lru) age[idx[i]] = -1;
    }
    std::vector<int32_t> order(size);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return age[a] > age[b]; });
    size_t j = 0;
    for (size_t i = 0; i < nmask.size(); ++i) {
      if (!nmask[i]) continue;
      const int32_t r = order[j++];
      std::memcpy(&data[r * width], &nw[i * width], width * 4);
      age[r] = -1;
    }
    for (auto& a : age) a = static_cast<int32_t>(static_cast<uint32_t>(a) + 1u);
  }
};

static void randomSequence(uint32_t seed, int64_t size, bool lru, int initAges) {
  std::mt19937 rng(seed);
  const int64_t width = 3;
  nc::cpu::CpuCacheStore store({{"x", nc::DType::Float32, width}}, size);
  Naive naive{size, width, std::vector<float>(size * width, 0.f), std::vector<int32_t>(size, 0)};
  if (initAges) {
    std::vector<int32_t> ages(size);
    for (auto& a : ages) {
      if (initAges == 1) a = static_cast<int32_t>(rng() % 5);
      else a = static_cast<int32_t>(static_cast<uint32_t>(rng() % 7) - 3u + (rng() % 4 == 0 ? 2147483645u : 0u));  // wraps past INT32_MAX
    }
    store.initialize({nullptr}, ages.data());
    naive.age = ages;
  }
  float next = 1.f;
  for (int step = 0; step < 400; ++step) {
    const int64_t nu = rng() % 6, nn = rng() % (size + 1 < 8 ? size + 1 : 8);
    std::vector<float> upd(nu * width), nw(nn * width);
    std::vector<int32_t> idx(nu);
    std::vector<uint8_t> umask(nu), nmask(nn);
    int64_t m = 0;
    for (int64_t i = 0; i < nu; ++i) {
      umask[i] = rng() % 4 != 0;
      idx[i] = umask[i] ? static_cast<int32_t>(rng() % size) : -7;
      for (int64_t k = 0; k < width; ++k) upd[i * width + k] = next++;
    }
    for (int64_t i = 0; i < nn; ++i) {
      nmask[i] = rng() % 3 != 0;
      if (nmask[i] && m == size) nmask[i] = 0;
      m += nmask[i];
      for (int64_t k = 0; k < width; ++k) nw[i * width + k] = next++;
    }
    nc::CacheUpdate u;
    u.useLru = lru;
    u.numUpdated = nu;
    u.updatedValues = {upd.data()};
    u.updatedIndices = idx.data();
    u.updatedMask = umask.data();
    u.numNew = nn;
    u.newValues = {nw.data()};
    u.newMask = nmask.data();
    store.update(u);
    naive.update(lru, upd, idx, umask, nw, nmask);
    std::vector<float> got(size * width);
    std::vector<int32_t> gotAge(size);
    store.readColumn(0, got.data());
    store.readAge(gotAge.data());
    EXPECT(got == naive.data, "seed %u step %d: data differs", seed, step);
    EXPECT(gotAge == naive.age, "seed %u step %d: ages differ", seed, step);
    if (failures) return;
  }
}

static void testHalf() {
  // Every half round-trips exactly (NaNs stay NaN).
  for (uint32_t h = 0; h < 65536; ++h) {
    const float f = nc::halfToFloat(static_cast<uint16_t>(h));
    const uint16_t back = nc::floatToHalf(f);
    if ((h & 0x7c00u) == 0x7c00u && (h & 0x3ffu)) {
      EXPECT(std::isnan(f) && (back & 0x7c00u) == 0x7c00u && (back & 0x3ffu), "half NaN %x", h);
    } else {
      EXPECT(back == h, "half %x -> %g -> %x", h, f, back);
    }
    const float b = nc::bfloat16ToFloat(static_cast<uint16_t>(h));
    if (!std::isnan(b)) EXPECT(nc::floatToBFloat16(b) == h, "bf16 %x", h);
  }
  // Known roundings.
  EXPECT(nc::floatToHalf(65520.f) == 0x7c00u, "65520 -> inf");
  EXPECT(nc::floatToHalf(65519.f) == 0x7bffu, "65519 -> max");
  EXPECT(nc::floatToHalf(1.f + 1.f / 2048.f) == 0x3c00u, "tie to even down");
  EXPECT(nc::floatToHalf(1.f + 3.f / 2048.f) == 0x3c02u, "tie to even up");
  EXPECT(nc::floatToBFloat16(1.f + 1.f / 256.f) == 0x3f80u, "bf16 tie down");
  EXPECT(nc::floatToBFloat16(1.f + 3.f / 256.f) == 0x3f82u, "bf16 tie up");
#if defined(__x86_64__)
  if (__builtin_cpu_supports("f16c")) {
    std::mt19937 rng(7);
    for (uint64_t i = 0; i < (1ull << 32); i += 997 + (rng() & 63)) {
      const float f = nc::bitsFloat(static_cast<uint32_t>(i));
      EXPECT(nc::floatToHalf(f) == f16cFloatToHalf(f), "f16c mismatch at %08x: %x vs %x", static_cast<uint32_t>(i),
             nc::floatToHalf(f), f16cFloatToHalf(f));
    }
    for (uint32_t h = 0; h < 65536; ++h) {
      const float a = nc::halfToFloat(static_cast<uint16_t>(h)), b = f16cHalfToFloat(static_cast<uint16_t>(h));
      EXPECT(nc::floatBits(a) == nc::floatBits(b), "f16c h->f mismatch at %x", h);
    }
  }
#endif
}

int main() {
  testHalf();
  for (uint32_t seed = 1; seed <= 60 && !failures; ++seed) {
    const int64_t size = 1 + (seed * 7) % 13;
    randomSequence(seed, size, seed % 2 == 0, static_cast<int>(seed % 3));
  }
  // The worked example (size 4, inserts of two rows).
  {
    nc::cpu::CpuCacheStore s({{"a", nc::DType::Int32, 2}}, 4);
    std::vector<int32_t> v(4, 1);
    nc::CacheUpdate u;
    u.numNew = 2;
    u.newValues = {v.data()};
    s.update(u);
    std::vector<int32_t> age(4);
    s.readAge(age.data());
    EXPECT((age == std::vector<int32_t>{0, 0, 1, 1}), "worked example ages");
  }
  if (failures) {
    std::fprintf(stderr, "%d failures\n", failures);
    return 1;
  }
  std::printf("cache_store_test: ok\n");
  return 0;
}
