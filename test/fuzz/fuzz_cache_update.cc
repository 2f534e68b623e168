// libFuzzer target: the cache store's update path (nc::CacheStore through the
// CPU backend) with fuzzer-chosen sizes, columns, storage types, indices,
// masks, ages and values, checked step by step against a naive model of
// docs/design.md §3.1 (ages, filled flags, inserted rows, and every value of
// every column; float16/bfloat16 through the scalar conversions of half.h).
// A rejected update (nc::Error) must change nothing. Built by scripts/fuzz.sh.
#include <fuzzer/FuzzedDataProvider.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <numeric>
#include <vector>

#include "backend.h"
#include "cache_store.h"
#include "half.h"

namespace {

[[noreturn]] void fail(const char* what, long a = 0, long b = 0) {
  std::fprintf(stderr, "fuzz_cache_update: %s (%ld, %ld)\n", what, a, b);
  std::abort();
}

/// What a row holds once stored in `t` (float columns), as float32 bits.
float stored(nc::DType t, float v) {
  switch (t) {
    case nc::DType::Float16: return nc::halfToFloat(nc::floatToHalf(v));
    case nc::DType::BFloat16: return nc::bfloat16ToFloat(nc::floatToBFloat16(v));
    default: return v;
  }
}

bool sameBits(float a, float b) {
  // NaN payloads may differ between conversion paths: any NaN matches any NaN.
  if (a != a && b != b) return true;
  uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;
}

struct Model {
  int64_t size;
  std::vector<nc::ColumnSpec> cols;
  std::vector<std::vector<uint32_t>> values;  // per column, size*width, raw 32-bit (float bits or int32)
  std::vector<int32_t> ages;
  std::vector<uint8_t> filled;

  /// Returns false (and changes nothing) where the store must reject u.
  bool apply(const nc::CacheUpdate& u, std::vector<int32_t>& chosenOut) {
    auto on = [](const uint8_t* m, int64_t i) { return m == nullptr || m[i] != 0; };
    for (int64_t i = 0; i < u.numUpdated; ++i)
      if (on(u.updatedMask, i) && (u.updatedIndices[i] < 0 || u.updatedIndices[i] >= size)) return false;
    int64_t m = 0;
    for (int64_t i = 0; i < u.numNew; ++i) m += on(u.newMask, i) ? 1 : 0;
    if (m > size) return false;
    // Refresh: the later entry wins.
    std::vector<int32_t> refreshed;
    for (int64_t i = 0; i < u.numUpdated; ++i) {
      if (!on(u.updatedMask, i)) continue;
      const int32_t r = u.updatedIndices[i];
      for (size_t c = 0; c < cols.size(); ++c) {
        if (u.updatedValues[c] == nullptr) continue;
        const int64_t w = cols[c].width;
        std::memcpy(&values[c][r * w], static_cast<const uint32_t*>(u.updatedValues[c]) + i * w, 4 * w);
      }
      refreshed.push_back(r);
    }
    if (u.useLru)
      for (int32_t r : refreshed) ages[r] = -1;
    for (int32_t r : refreshed) filled[r] = 1;
    // Insert into the m oldest rows (age desc, index asc).
    std::vector<int32_t> order(static_cast<size_t>(size));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int32_t a, int32_t b) { return ages[a] > ages[b]; });
    chosenOut.clear();
    int64_t j = 0;
    for (int64_t i = 0; i < u.numNew; ++i) {
      if (!on(u.newMask, i)) continue;
      const int32_t r = order[static_cast<size_t>(j++)];
      chosenOut.push_back(r);
      for (size_t c = 0; c < cols.size(); ++c) {
        const int64_t w = cols[c].width;
        std::memcpy(&values[c][r * w], static_cast<const uint32_t*>(u.newValues[c]) + i * w, 4 * w);
      }
    }
    for (int32_t r : chosenOut) {
      ages[r] = -1;
      filled[r] = 1;
    }
    for (auto& a : ages) a = static_cast<int32_t>(static_cast<uint32_t>(a) + 1u);
    return true;
  }
};

void compare(const nc::CacheStore& s, const Model& m) {
  std::vector<int32_t> ages(static_cast<size_t>(m.size));
  s.readAge(ages.data());
  for (int64_t r = 0; r < m.size; ++r)
    if (ages[r] != m.ages[r]) fail("age differs from the model", r, ages[r]);
  if (std::memcmp(s.filled(), m.filled.data(), static_cast<size_t>(m.size)) != 0) fail("filled flags differ");
  for (int c = 0; c < s.numColumns(); ++c) {
    const int64_t n = m.size * m.cols[c].width;
    std::vector<uint32_t> got(static_cast<size_t>(n));
    s.readColumn(c, got.data());
    for (int64_t i = 0; i < n; ++i) {
      if (m.cols[c].storage == nc::DType::Int32) {
        if (got[i] != m.values[c][i]) fail("int32 value differs", c, i);
      } else {
        float want, have;
        std::memcpy(&want, &m.values[c][i], 4);
        std::memcpy(&have, &got[i], 4);
        if (!sameBits(stored(m.cols[c].storage, want), have)) fail("float value differs", c, i);
      }
    }
  }
}

/// n*width 32-bit words: mostly small numbers, sometimes raw bits (NaN, inf, denormals).
std::vector<uint32_t> words(FuzzedDataProvider& fdp, int64_t n, bool isInt) {
  std::vector<uint32_t> v(static_cast<size_t>(n));
  const bool raw = fdp.ConsumeBool();
  for (auto& x : v) {
    if (raw) {
      x = fdp.ConsumeIntegral<uint32_t>();
    } else if (isInt) {
      x = static_cast<uint32_t>(fdp.ConsumeIntegralInRange<int32_t>(-100, 100));
    } else {
      const float f = static_cast<float>(fdp.ConsumeIntegralInRange<int32_t>(-1000, 1000)) / 8.0f;
      std::memcpy(&x, &f, 4);
    }
  }
  return v;
}

/// An index: usually in range, sometimes anywhere in int32.
int32_t index(FuzzedDataProvider& fdp, int64_t size) {
  switch (fdp.ConsumeIntegralInRange<int>(0, 7)) {
    case 0: return fdp.ConsumeIntegral<int32_t>();
    case 1: return static_cast<int32_t>(size);
    case 2: return -1;
    default: return fdp.ConsumeIntegralInRange<int32_t>(0, static_cast<int32_t>(size - 1));
  }
}

std::vector<uint8_t> mask(FuzzedDataProvider& fdp, int64_t n) {
  std::vector<uint8_t> v(static_cast<size_t>(n));
  for (auto& x : v) x = fdp.ConsumeIntegralInRange<uint8_t>(0, 3) == 0 ? 0 : fdp.ConsumeIntegral<uint8_t>() | 1;
  return v;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t len) {
  FuzzedDataProvider fdp(data, len);
  const int64_t size = fdp.ConsumeIntegralInRange<int64_t>(1, 96);
  const int nCols = fdp.ConsumeIntegralInRange<int>(0, 3);
  std::vector<nc::ColumnSpec> cols;
  for (int c = 0; c < nCols; ++c)
    cols.push_back({"c" + std::to_string(c), static_cast<nc::DType>(fdp.ConsumeIntegralInRange<int>(0, 3)),
                    fdp.ConsumeIntegralInRange<int64_t>(1, 9)});

  // Bad specs must be refused (nc::Error), never crash.
  if (fdp.ConsumeIntegralInRange<int>(0, 15) == 0) {
    std::vector<nc::ColumnSpec> bad = cols;
    const int64_t badSize = fdp.ConsumeIntegral<int64_t>();
    bad.push_back({"bad", static_cast<nc::DType>(fdp.ConsumeIntegral<int32_t>()), fdp.ConsumeIntegral<int64_t>()});
    try {
      nc::cpuBackend().createStore(bad, badSize);
    } catch (const nc::Error&) {
    }
  }

  std::unique_ptr<nc::CacheStore> store = nc::cpuBackend().createStore(cols, size);
  Model m{size, cols, {}, std::vector<int32_t>(static_cast<size_t>(size), 0),
          std::vector<uint8_t>(static_cast<size_t>(size), 0)};
  for (const auto& c : cols) m.values.emplace_back(static_cast<size_t>(size * c.width), 0u);

  std::vector<int32_t> chosen, insertedRows;
  int steps = 0;
  while (fdp.remaining_bytes() > 0 && steps++ < 64) {
    const int op = fdp.ConsumeIntegralInRange<int>(0, 9);
    if (op == 0) {
      // initialize: some columns given, ages given (anything in int32) or zeros.
      std::vector<std::vector<uint32_t>> vals(cols.size());
      std::vector<const void*> ptrs;
      bool any = false;
      for (size_t c = 0; c < cols.size(); ++c) {
        if (fdp.ConsumeBool()) {
          vals[c] = words(fdp, size * cols[c].width, cols[c].storage == nc::DType::Int32);
          ptrs.push_back(vals[c].data());
          any = true;
        } else {
          ptrs.push_back(nullptr);
        }
      }
      std::vector<int32_t> ages;
      if (fdp.ConsumeBool()) {
        const int kind = fdp.ConsumeIntegralInRange<int>(0, 2);
        for (int64_t r = 0; r < size; ++r)
          ages.push_back(kind == 0   ? fdp.ConsumeIntegral<int32_t>()
                         : kind == 1 ? fdp.ConsumeIntegralInRange<int32_t>(0x7ffffff0, 0x7fffffff)
                                     : fdp.ConsumeIntegralInRange<int32_t>(-3, 3));
      }
      store->initialize(ptrs, ages.empty() ? nullptr : ages.data());
      for (size_t c = 0; c < cols.size(); ++c) {
        if (ptrs[c] != nullptr) m.values[c] = vals[c];
        else std::fill(m.values[c].begin(), m.values[c].end(), 0u);
      }
      for (int64_t r = 0; r < size; ++r) m.ages[r] = ages.empty() ? 0 : ages[r];
      std::fill(m.filled.begin(), m.filled.end(), any ? 1 : 0);
    } else if (op == 1) {
      // gatherRows with arbitrary rows: out-of-range rows are refused.
      if (cols.empty()) continue;
      const int c = fdp.ConsumeIntegralInRange<int>(0, nCols - 1);
      const int64_t n = fdp.ConsumeIntegralInRange<int64_t>(0, 2 * size);
      std::vector<int32_t> rows;
      bool ok = true;
      for (int64_t i = 0; i < n; ++i) {
        rows.push_back(index(fdp, size));
        ok = ok && rows.back() >= 0 && rows.back() < size;
      }
      std::vector<uint32_t> out(static_cast<size_t>(n * cols[c].width) + 1, 0xdeadbeefu);
      try {
        store->gatherRows(c, rows.data(), n, out.data());
        if (!ok) fail("gatherRows accepted a row out of range");
      } catch (const nc::Error&) {
        if (ok) fail("gatherRows refused rows in range");
      }
      if (out.back() != 0xdeadbeefu) fail("gatherRows wrote past its output");
    } else {
      // update: refresh and/or insert, counts up to past the cache size.
      nc::CacheUpdate u;
      u.useLru = fdp.ConsumeIntegralInRange<int>(0, 3) != 0;
      u.numUpdated = fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<int64_t>(0, size + 4) : 0;
      u.numNew = fdp.ConsumeBool() ? fdp.ConsumeIntegralInRange<int64_t>(0, size + 4) : 0;
      std::vector<std::vector<uint32_t>> upd(cols.size()), nw(cols.size());
      std::vector<int32_t> idx;
      std::vector<uint8_t> umask, nmask;
      if (u.numUpdated > 0) {
        for (size_t c = 0; c < cols.size(); ++c) {
          if (fdp.ConsumeBool()) {
            upd[c] = words(fdp, u.numUpdated * cols[c].width, cols[c].storage == nc::DType::Int32);
            u.updatedValues.push_back(upd[c].data());
          } else {
            u.updatedValues.push_back(nullptr);
          }
        }
        for (int64_t i = 0; i < u.numUpdated; ++i) idx.push_back(index(fdp, size));
        u.updatedIndices = idx.data();
        if (fdp.ConsumeBool()) {
          umask = mask(fdp, u.numUpdated);
          u.updatedMask = umask.data();
        }
      }
      if (u.numNew > 0) {
        for (size_t c = 0; c < cols.size(); ++c) {
          nw[c] = words(fdp, u.numNew * cols[c].width, cols[c].storage == nc::DType::Int32);
          u.newValues.push_back(nw[c].data());
        }
        if (fdp.ConsumeBool()) {
          nmask = mask(fdp, u.numNew);
          u.newMask = nmask.data();
        }
        insertedRows.assign(static_cast<size_t>(u.numNew) + 1, -7);
        u.insertedRows = insertedRows.data();
      }
      const bool ok = m.apply(u, chosen);
      try {
        store->update(u);
        if (!ok) fail("update accepted what the model refuses");
      } catch (const nc::Error&) {
        if (ok) fail("update refused what the model accepts");
      }
      if (ok && u.insertedRows != nullptr) {
        for (size_t j = 0; j < chosen.size(); ++j)
          if (insertedRows[j] != chosen[j]) fail("inserted row differs", static_cast<long>(j), insertedRows[j]);
        if (insertedRows[static_cast<size_t>(u.numNew)] != -7) fail("insertedRows written past numNew");
      }
    }
    compare(*store, m);
  }
  return 0;
}
