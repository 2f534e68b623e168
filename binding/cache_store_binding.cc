// The CacheStore ObjectWrap: a JS handle owning one nc::CacheStore.
// Every typed array's type and length and every unmasked index is checked
// here before native code sees a pointer (TypeScript validates too; this is
// the check that protects memory).
#include <cmath>
#include <cstdio>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "binding.h"
#include "cache_store.h"

namespace ncb {

namespace {

// Marks objects created by this addon's CacheStore constructor.
const napi_type_tag kCacheStoreTag = {0x6e656763616368ULL, 0x652d73746f726531ULL};

std::string Describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    const Napi::TypedArray t = v.As<Napi::TypedArray>();
    static const char* const names[] = {"Int8Array",  "Uint8Array",   "Uint8ClampedArray", "Int16Array",
                                        "Uint16Array", "Int32Array",  "Uint32Array",       "Float32Array",
                                        "Float64Array", "BigInt64Array", "BigUint64Array"};
    const int k = static_cast<int>(t.TypedArrayType());
    return std::string("a ") + (k >= 0 && k < 11 ? names[k] : "typed array") + " of length " +
           std::to_string(t.ElementLength());
  }
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.007199254740992e15)
      return std::to_string(static_cast<int64_t>(d));
    if (std::isnan(d)) return "NaN";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    return buf;
  }
  if (v.IsArray()) return "an array";
  if (v.IsObject()) return "an object";
  return "a " + std::string(v.IsString() ? "string" : v.IsBoolean() ? "boolean" : "value");
}

[[noreturn]] void ThrowType(Napi::Env env, const std::string& what, const std::string& expected, const Napi::Value& v) {
  throw Napi::TypeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + Describe(v));
}
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected, const std::string& got) {
  throw Napi::RangeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + got);
}

int64_t GetInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) ThrowType(env, what, "an integer", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
    ThrowRange(env, what, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", Describe(v));
  }
  return static_cast<int64_t>(d);
}

const char* TypedName(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "a Float32Array";
    case napi_int32_array: return "an Int32Array";
    case napi_uint8_array: return "a Uint8Array";
    default: return "a typed array";
  }
}

/// Data pointer of a typed array of type `type` and exactly `length` elements.
void* GetTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length, const std::string& what) {
  const std::string expected = std::string(TypedName(type)) + " of length " + std::to_string(length);
  if (!v.IsTypedArray()) ThrowType(env, what, expected, v);
  const Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != type) ThrowType(env, what, expected, v);
  if (static_cast<int64_t>(t.ElementLength()) != length) ThrowRange(env, what, expected, Describe(v));
  if (length == 0) return nullptr;
  return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
}

/// Like GetTyped, but null/undefined give nullptr.
void* GetOptionalTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                       const std::string& what) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return GetTyped(env, v, type, length, what);
}

napi_typedarray_type HostType(nc::DType storage) {
  return storage == nc::DType::Int32 ? napi_int32_array : napi_float32_array;
}

class CacheStoreWrap : public Napi::ObjectWrap<CacheStoreWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CacheStore",
                       {InstanceMethod<&CacheStoreWrap::Initialize>("initialize"),
                        InstanceMethod<&CacheStoreWrap::Update>("update"),
                        InstanceMethod<&CacheStoreWrap::ReadColumn>("readColumn"),
                        InstanceMethod<&CacheStoreWrap::ReadAge>("readAge"),
                        InstanceMethod<&CacheStoreWrap::ReadFilled>("readFilled"),
                        InstanceMethod<&CacheStoreWrap::GatherRows>("gatherRows"),
                        InstanceMethod<&CacheStoreWrap::Stats>("stats"),
                        InstanceMethod<&CacheStoreWrap::Dispose>("dispose")});
  }

  explicit CacheStoreWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CacheStoreWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray()) ThrowType(env, "CacheStore(columns)", "an array of columns", info[0]);
    const int64_t size = GetInteger(env, info[1], "CacheStore(size)", 1, std::numeric_limits<int32_t>::max());
    const Napi::Array cols = info[0].As<Napi::Array>();
    std::vector<nc::ColumnSpec> specs;
    for (uint32_t i = 0; i < cols.Length(); ++i) {
      const std::string what = "CacheStore(columns[" + std::to_string(i) + "])";
      const Napi::Value cv = cols.Get(i);
      if (!cv.IsObject()) ThrowType(env, what, "an object {name, storage, width}", cv);
      const Napi::Object c = cv.As<Napi::Object>();
      const Napi::Value name = c.Get("name");
      if (!name.IsString()) ThrowType(env, what + ".name", "a string", name);
      const int64_t storage = GetInteger(env, c.Get("storage"), what + ".storage", 0, 3);
      const int64_t width = GetInteger(env, c.Get("width"), what + ".width", 1, std::numeric_limits<int32_t>::max());
      specs.push_back({name.As<Napi::String>().Utf8Value(), static_cast<nc::DType>(storage), width});
    }
    Guard(env, [&] { store_ = std::make_unique<nc::CacheStore>(std::move(specs), size); });
    accounted_ = static_cast<int64_t>(store_->dataBytes() + store_->bookkeepingBytesPerRow() * size);
    Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
    info.This().As<Napi::Object>().TypeTag(&kCacheStoreTag);
  }

  ~CacheStoreWrap() override { Release(Env()); }

  nc::CacheStore* store(Napi::Env env, const char* what) {
    if (!store_) {
      throw MakeNativeError(env, nc::Error("ERR_DISPOSED", std::string("negative-cache: ") + what +
                                                               " was disposed (NegativeCache.dispose() frees it)"));
    }
    return store_.get();
  }

 private:
  void Release(Napi::Env env) {
    if (store_) {
      store_.reset();
      Napi::MemoryManagement::AdjustExternalMemory(env, -accounted_);
      accounted_ = 0;
    }
  }

  int Column(Napi::Env env, const Napi::Value& v, const char* what) {
    return static_cast<int>(GetInteger(env, v, what, 0, store(env, "the cache")->numColumns() - 1));
  }

  void Initialize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    if (!info[0].IsArray()) ThrowType(env, "initialize(values)", "an array with one entry per column", info[0]);
    const Napi::Array arr = info[0].As<Napi::Array>();
    if (arr.Length() != static_cast<uint32_t>(s->numColumns()))
      ThrowRange(env, "initialize(values)", "an array of length " + std::to_string(s->numColumns()),
                 std::to_string(arr.Length()));
    std::vector<const void*> values;
    for (int c = 0; c < s->numColumns(); ++c) {
      const nc::ColumnSpec& col = s->column(c);
      values.push_back(GetOptionalTyped(env, arr.Get(static_cast<uint32_t>(c)), HostType(col.storage),
                                        s->size() * col.width, "initialize(values['" + col.name + "'])"));
    }
    const int32_t* ages =
        static_cast<const int32_t*>(GetOptionalTyped(env, info[1], napi_int32_array, s->size(), "initialize(ages)"));
    Guard(env, [&] { s->initialize(values, ages); });
  }

  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    if (!info[0].IsObject()) ThrowType(env, "update(u)", "an object", info[0]);
    const Napi::Object o = info[0].As<Napi::Object>();
    nc::CacheUpdate u;
    u.useLru = o.Get("useLru").ToBoolean().Value();
    const int64_t maxRows = std::numeric_limits<int32_t>::max();
    u.numUpdated = GetInteger(env, o.Get("numUpdated"), "update(u.numUpdated)", 0, maxRows);
    u.numNew = GetInteger(env, o.Get("numNew"), "update(u.numNew)", 0, maxRows);
    const int nCols = s->numColumns();
    auto columnArrays = [&](const char* field, int64_t rows, bool required, std::vector<const void*>& out) {
      const Napi::Value v = o.Get(field);
      const std::string what = std::string("update(u.") + field + ")";
      if (!v.IsArray()) ThrowType(env, what, "an array with one entry per column", v);
      const Napi::Array arr = v.As<Napi::Array>();
      if (arr.Length() != static_cast<uint32_t>(nCols))
        ThrowRange(env, what, "an array of length " + std::to_string(nCols), std::to_string(arr.Length()));
      for (int c = 0; c < nCols; ++c) {
        const nc::ColumnSpec& col = s->column(c);
        const Napi::Value e = arr.Get(static_cast<uint32_t>(c));
        const std::string ewhat = std::string("update(u.") + field + "['" + col.name + "'])";
        if (required && (e.IsNull() || e.IsUndefined()))
          ThrowType(env, ewhat, std::string(TypedName(HostType(col.storage))), e);
        const void* p = GetOptionalTyped(env, e, HostType(col.storage), rows * col.width, ewhat);
        out.push_back(p);
      }
    };
    if (u.numUpdated > 0) {
      columnArrays("updatedValues", u.numUpdated, false, u.updatedValues);
      u.updatedIndices = static_cast<const int32_t*>(
          GetTyped(env, o.Get("updatedIndices"), napi_int32_array, u.numUpdated, "update(u.updatedIndices)"));
      u.updatedMask = static_cast<const uint8_t*>(
          GetOptionalTyped(env, o.Get("updatedMask"), napi_uint8_array, u.numUpdated, "update(u.updatedMask)"));
      for (int64_t i = 0; i < u.numUpdated; ++i) {
        if (u.updatedMask != nullptr && u.updatedMask[i] == 0) continue;
        const int32_t r = u.updatedIndices[i];
        if (r < 0 || r >= s->size())
          ThrowRange(env, "update(u.updatedIndices[" + std::to_string(i) + "])",
                     "an integer in [0, " + std::to_string(s->size()) + ")", std::to_string(r));
      }
    }
    if (u.numNew > 0) {
      columnArrays("newValues", u.numNew, true, u.newValues);
      u.newMask = static_cast<const uint8_t*>(
          GetOptionalTyped(env, o.Get("newMask"), napi_uint8_array, u.numNew, "update(u.newMask)"));
      int64_t m = 0;
      for (int64_t i = 0; i < u.numNew; ++i) m += (u.newMask == nullptr || u.newMask[i] != 0) ? 1 : 0;
      if (m > s->size())
        ThrowRange(env, "update(u.newMask)", "at most " + std::to_string(s->size()) + " unmasked new items",
                   std::to_string(m));
      u.insertedRows = static_cast<int32_t*>(
          GetOptionalTyped(env, o.Get("insertedRows"), napi_int32_array, u.numNew, "update(u.insertedRows)"));
    }
    Guard(env, [&] { s->update(u); });
  }

  void ReadColumn(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    const int c = Column(env, info[0], "readColumn(column)");
    const nc::ColumnSpec& col = s->column(c);
    void* out = GetTyped(env, info[1], HostType(col.storage), s->size() * col.width, "readColumn(out)");
    Guard(env, [&] { s->readColumn(c, out); });
  }

  void ReadAge(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    auto* out = static_cast<int32_t*>(GetTyped(env, info[0], napi_int32_array, s->size(), "readAge(out)"));
    s->readAge(out);
  }

  void ReadFilled(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    auto* out = static_cast<uint8_t*>(GetTyped(env, info[0], napi_uint8_array, s->size(), "readFilled(out)"));
    std::memcpy(out, s->filled(), static_cast<size_t>(s->size()));
  }

  void GatherRows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    const int c = Column(env, info[0], "gatherRows(column)");
    const nc::ColumnSpec& col = s->column(c);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      ThrowType(env, "gatherRows(rows)", "an Int32Array", info[1]);
    const int64_t n = static_cast<int64_t>(info[1].As<Napi::TypedArray>().ElementLength());
    const auto* rows = static_cast<const int32_t*>(GetTyped(env, info[1], napi_int32_array, n, "gatherRows(rows)"));
    void* out = GetTyped(env, info[2], HostType(col.storage), n * col.width, "gatherRows(out)");
    for (int64_t i = 0; i < n; ++i)
      if (rows[i] < 0 || rows[i] >= s->size())
        ThrowRange(env, "gatherRows(rows[" + std::to_string(i) + "])",
                   "an integer in [0, " + std::to_string(s->size()) + ")", std::to_string(rows[i]));
    if (n > 0) Guard(env, [&] { s->gatherRows(c, rows, n, out); });
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::CacheStore* s = store(env, "the cache");
    Napi::Object o = Napi::Object::New(env);
    o.Set("dataBytes", Napi::Number::New(env, static_cast<double>(s->dataBytes())));
    o.Set("bookkeepingBytesPerRow", Napi::Number::New(env, static_cast<double>(s->bookkeepingBytesPerRow())));
    return o;
  }

  void Dispose(const Napi::CallbackInfo& info) { Release(info.Env()); }

  std::unique_ptr<nc::CacheStore> store_;
  int64_t accounted_ = 0;
};

}  // namespace

void InitCacheStore(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = CacheStoreWrap::Define(env);
  GetAddonData(env)->cacheStoreCtor = Napi::Persistent(ctor);
  exports.Set("CacheStore", ctor);
}

nc::CacheStore* UnwrapCacheStore(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kCacheStoreTag)) {
    ThrowType(env, what, "a native cache store handle", v);
  }
  CacheStoreWrap* w = CacheStoreWrap::Unwrap(v.As<Napi::Object>());
  if (w == nullptr) ThrowType(env, what, "a native cache store handle", v);
  return w->store(env, what);
}

}  // namespace ncb
