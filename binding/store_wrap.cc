#include "store_wrap.h"

#include <cstring>
#include <vector>

#include "args.h"

namespace ncb {

namespace {
// Marks objects created by a store constructor of this addon (any backend).
constexpr napi_type_tag kStoreTag = {0x6e656763616368ULL, 0x652d73746f726531ULL};
}  // namespace

Napi::Function StoreWrap::Define(Napi::Env env, const BackendInfo& b) {
  return DefineClass(env, b.className,
                     {InstanceMethod<&StoreWrap::Initialize>("initialize"),
                      InstanceMethod<&StoreWrap::Update>("update"),
                      InstanceMethod<&StoreWrap::ReadColumn>("readColumn"),
                      InstanceMethod<&StoreWrap::ReadAge>("readAge"),
                      InstanceMethod<&StoreWrap::ReadFilled>("readFilled"),
                      InstanceMethod<&StoreWrap::GatherRows>("gatherRows"),
                      InstanceMethod<&StoreWrap::Stats>("stats"),
                      InstanceMethod<&StoreWrap::Dispose>("dispose")},
                     const_cast<BackendInfo*>(&b));
}

nc::CacheStore* StoreWrap::UnwrapStore(Napi::Env env, const Napi::Value& v, const std::string& what,
                                       const BackendInfo& b) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kStoreTag)) ThrowType(env, what, b.handle, v);
  StoreWrap* w = Unwrap(v.As<Napi::Object>());
  if (w == nullptr || w->backend_->backend != b.backend) ThrowType(env, what, b.handle, v);
  return w->store(env, what);
}

StoreWrap* StoreWrap::UnwrapAny(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kStoreTag)) ThrowType(env, what, "a cache store handle", v);
  StoreWrap* w = Unwrap(v.As<Napi::Object>());
  if (w == nullptr) ThrowType(env, what, "a cache store handle", v);
  return w;
}

void StoreWrap::EndBusy(Napi::Env env) {
  if (busy_ > 0) --busy_;
  if (busy_ == 0 && disposeWhenIdle_) {
    disposeWhenIdle_ = false;
    Release(env);
  }
}

nc::CacheStore* StoreWrap::writable(Napi::Env env, const char* call) {
  nc::CacheStore* s = store(env, "the cache");
  if (busy_ > 0) {
    throw MakeNativeError(env, nc::Error("ERR_BUSY", std::string("negative-cache: ") + call +
                                                         ": the cache is being saved (saveAsync); wait for its promise"));
  }
  return s;
}

StoreWrap::StoreWrap(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<StoreWrap>(info), backend_(static_cast<const BackendInfo*>(info.Data())) {
  Napi::Env env = info.Env();
  const std::string ctor = backend_->ctorName;
  if (info.Length() < 2 || !info[0].IsArray()) ThrowType(env, ctor + "(columns)", "an array of columns", info[0]);
  const int64_t size = GetInteger(env, info[1], ctor + "(size)", 1, kMaxInt32);
  const Napi::Array cols = info[0].As<Napi::Array>();
  std::vector<nc::ColumnSpec> specs;
  for (uint32_t i = 0; i < cols.Length(); ++i) {
    const std::string what = ctor + "(columns[" + std::to_string(i) + "])";
    const Napi::Object c = GetObject(env, cols.Get(i), what, "an object {name, storage, width}");
    const Napi::Value name = c.Get("name");
    if (!name.IsString()) ThrowType(env, what + ".name", "a string", name);
    const int64_t storage = GetInteger(env, c.Get("storage"), what + ".storage", 0, 3);
    const int64_t width = GetInteger(env, c.Get("width"), what + ".width", 1, kMaxInt32);
    specs.push_back({name.As<Napi::String>().Utf8Value(), static_cast<nc::DType>(storage), width});
  }
  Guard(env, [&] { store_ = backend_->backend->createStore(std::move(specs), size); });
  accounted_ = static_cast<int64_t>(store_->hostBytes());
  Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
  info.This().As<Napi::Object>().TypeTag(&kStoreTag);
}

StoreWrap::~StoreWrap() { Release(Env()); }

nc::CacheStore* StoreWrap::store(Napi::Env env, const std::string& what) {
  if (!store_ || disposeWhenIdle_) {
    throw MakeNativeError(
        env, nc::Error("ERR_DISPOSED", "negative-cache: " + what + " was disposed (NegativeCache.dispose() frees it)"));
  }
  return store_.get();
}

void StoreWrap::Release(Napi::Env env) {
  if (store_) {
    store_.reset();
    Napi::MemoryManagement::AdjustExternalMemory(env, -accounted_);
    accounted_ = 0;
  }
}

int StoreWrap::Column(Napi::Env env, const Napi::Value& v, const char* what) {
  return static_cast<int>(GetInteger(env, v, what, 0, store(env, "the cache")->numColumns() - 1));
}

void StoreWrap::Initialize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = writable(env, "initialize");
  if (!info[0].IsArray()) ThrowType(env, "initialize(values)", "an array with one entry per column", info[0]);
  const Napi::Array arr = info[0].As<Napi::Array>();
  if (arr.Length() != static_cast<uint32_t>(s->numColumns()))
    ThrowRange(env, "initialize(values)", "an array of length " + std::to_string(s->numColumns()),
               std::to_string(arr.Length()));
  std::vector<const void*> values;
  for (int c = 0; c < s->numColumns(); ++c) {
    const nc::ColumnSpec& col = s->column(c);
    values.push_back(GetOptionalTyped<const void>(env, arr.Get(static_cast<uint32_t>(c)), HostType(col.storage),
                                                  Product(env, s->size(), col.width, "initialize(values)"),
                                                  "initialize(values['" + col.name + "'])"));
  }
  const int32_t* ages = GetOptionalTyped<const int32_t>(env, info[1], napi_int32_array, s->size(), "initialize(ages)");
  Guard(env, [&] { s->initialize(values, ages); });
}

void StoreWrap::Update(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = writable(env, "update");
  const Napi::Object o = GetObject(env, info[0], "update(u)");
  nc::CacheUpdate u;
  u.useLru = o.Get("useLru").ToBoolean().Value();
  u.numUpdated = GetInteger(env, o.Get("numUpdated"), "update(u.numUpdated)", 0, kMaxInt32);
  u.numNew = GetInteger(env, o.Get("numNew"), "update(u.numNew)", 0, kMaxInt32);
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
      if (required && (e.IsNull() || e.IsUndefined())) ThrowType(env, ewhat, TypedName(HostType(col.storage)), e);
      out.push_back(GetOptionalTyped<const void>(env, e, HostType(col.storage), Product(env, rows, col.width, ewhat),
                                                 ewhat));
    }
  };
  if (u.numUpdated > 0) {
    columnArrays("updatedValues", u.numUpdated, false, u.updatedValues);
    u.updatedIndices = GetTyped<const int32_t>(env, o.Get("updatedIndices"), napi_int32_array, u.numUpdated,
                                               "update(u.updatedIndices)");
    u.updatedMask = GetOptionalTyped<const uint8_t>(env, o.Get("updatedMask"), napi_uint8_array, u.numUpdated,
                                                    "update(u.updatedMask)");
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
    u.newMask = GetOptionalTyped<const uint8_t>(env, o.Get("newMask"), napi_uint8_array, u.numNew, "update(u.newMask)");
    int64_t m = 0;
    for (int64_t i = 0; i < u.numNew; ++i) m += (u.newMask == nullptr || u.newMask[i] != 0) ? 1 : 0;
    if (m > s->size())
      ThrowRange(env, "update(u.newMask)", "at most " + std::to_string(s->size()) + " unmasked new items",
                 std::to_string(m));
    u.insertedRows = GetOptionalTyped<int32_t>(env, o.Get("insertedRows"), napi_int32_array, u.numNew,
                                               "update(u.insertedRows)");
  }
  Guard(env, [&] { s->update(u); });
}

void StoreWrap::ReadColumn(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = store(env, "the cache");
  const int c = Column(env, info[0], "readColumn(column)");
  const nc::ColumnSpec& col = s->column(c);
  void* out = GetTyped<void>(env, info[1], HostType(col.storage), Product(env, s->size(), col.width, "readColumn(out)"),
                             "readColumn(out)");
  Guard(env, [&] { s->readColumn(c, out); });
}

void StoreWrap::ReadAge(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = store(env, "the cache");
  int32_t* out = GetTyped<int32_t>(env, info[0], napi_int32_array, s->size(), "readAge(out)");
  s->readAge(out);
}

void StoreWrap::ReadFilled(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = store(env, "the cache");
  uint8_t* out = GetTyped<uint8_t>(env, info[0], napi_uint8_array, s->size(), "readFilled(out)");
  std::memcpy(out, s->filled(), static_cast<size_t>(s->size()));
}

void StoreWrap::GatherRows(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = store(env, "the cache");
  const int c = Column(env, info[0], "gatherRows(column)");
  const nc::ColumnSpec& col = s->column(c);
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
    ThrowType(env, "gatherRows(rows)", "an Int32Array", info[1]);
  const int64_t n = static_cast<int64_t>(info[1].As<Napi::TypedArray>().ElementLength());
  const int32_t* rows = GetTyped<const int32_t>(env, info[1], napi_int32_array, n, "gatherRows(rows)");
  void* out = GetTyped<void>(env, info[2], HostType(col.storage), Product(env, n, col.width, "gatherRows(out)"),
                             "gatherRows(out)");
  for (int64_t i = 0; i < n; ++i)
    if (rows[i] < 0 || rows[i] >= s->size())
      ThrowRange(env, "gatherRows(rows[" + std::to_string(i) + "])",
                 "an integer in [0, " + std::to_string(s->size()) + ")", std::to_string(rows[i]));
  if (n > 0) Guard(env, [&] { s->gatherRows(c, rows, n, out); });
}

Napi::Value StoreWrap::Stats(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  nc::CacheStore* s = store(env, "the cache");
  Napi::Object o = Napi::Object::New(env);
  o.Set("dataBytes", Napi::Number::New(env, static_cast<double>(s->dataBytes())));
  o.Set("bookkeepingBytesPerRow", Napi::Number::New(env, static_cast<double>(s->bookkeepingBytesPerRow())));
  return o;
}

void StoreWrap::Dispose(const Napi::CallbackInfo& info) {
  if (busy_ > 0) {
    disposeWhenIdle_ = true;  // freed when the last asynchronous save ends
    return;
  }
  Release(info.Env());
}

}  // namespace ncb
