// The cache-store ObjectWrap shared by addon.CacheStore (nc::CacheStore) and
// addon.cuda.CacheStore (nc::cuda::CudaCacheStore): a JS handle owning one
// store. Every typed array's type and length and every unmasked index is
// checked here before native code sees a pointer (TypeScript validates too;
// this is the check that protects memory).
//
// Traits give what differs between the two:
//   Store                         the native store type
//   kClassName, kCtorName         JS class name; the name in constructor messages
//   kHandle                       "a ... cache store handle" (UnwrapStore messages)
//   kTag                          the napi type tag of the handles
//   kNumbers                      how messages print numbers (see Describe)
//   ColumnObject(env, v, what)    a columns[i] entry as an object
//   UpdateObject(env, v)          update()'s argument as an object
//   Elements(env, rows, width, what)   rows * width elements
//   AccountedBytes(store, size)   external memory reported to V8
#pragma once
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"

namespace ncb {

template <typename Traits>
class StoreWrap : public Napi::ObjectWrap<StoreWrap<Traits>> {
  using Base = Napi::ObjectWrap<StoreWrap<Traits>>;

 public:
  using Store = typename Traits::Store;

  static Napi::Function Define(Napi::Env env) {
    return Base::DefineClass(env, Traits::kClassName,
                             {Base::template InstanceMethod<&StoreWrap::Initialize>("initialize"),
                              Base::template InstanceMethod<&StoreWrap::Update>("update"),
                              Base::template InstanceMethod<&StoreWrap::ReadColumn>("readColumn"),
                              Base::template InstanceMethod<&StoreWrap::ReadAge>("readAge"),
                              Base::template InstanceMethod<&StoreWrap::ReadFilled>("readFilled"),
                              Base::template InstanceMethod<&StoreWrap::GatherRows>("gatherRows"),
                              Base::template InstanceMethod<&StoreWrap::Stats>("stats"),
                              Base::template InstanceMethod<&StoreWrap::Dispose>("dispose")});
  }

  /// The store behind a JS handle (type-tag checked); a TypeError naming `what`
  /// if v is not a handle of this kind, ERR_DISPOSED if it was disposed.
  static Store* UnwrapStore(Napi::Env env, const Napi::Value& v, const std::string& what) {
    if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&Traits::kTag))
      ThrowType(env, what, Traits::kHandle, v, Traits::kNumbers);
    StoreWrap* w = Base::Unwrap(v.As<Napi::Object>());
    if (w == nullptr) ThrowType(env, what, Traits::kHandle, v, Traits::kNumbers);
    return w->store(env, what);
  }

  explicit StoreWrap(const Napi::CallbackInfo& info) : Base(info) {
    Napi::Env env = info.Env();
    const std::string ctor = Traits::kCtorName;
    if (info.Length() < 2 || !info[0].IsArray())
      ThrowType(env, ctor + "(columns)", "an array of columns", info[0], Traits::kNumbers);
    const int64_t size = GetInteger(env, info[1], ctor + "(size)", 1, kMaxInt32, Traits::kNumbers);
    const Napi::Array cols = info[0].As<Napi::Array>();
    std::vector<nc::ColumnSpec> specs;
    for (uint32_t i = 0; i < cols.Length(); ++i) {
      const std::string what = ctor + "(columns[" + std::to_string(i) + "])";
      const Napi::Object c = Traits::ColumnObject(env, cols.Get(i), what);
      const Napi::Value name = c.Get("name");
      if (!name.IsString()) ThrowType(env, what + ".name", "a string", name, Traits::kNumbers);
      const int64_t storage = GetInteger(env, c.Get("storage"), what + ".storage", 0, 3, Traits::kNumbers);
      const int64_t width = GetInteger(env, c.Get("width"), what + ".width", 1, kMaxInt32, Traits::kNumbers);
      specs.push_back({name.As<Napi::String>().Utf8Value(), static_cast<nc::DType>(storage), width});
    }
    Guard(env, [&] { store_ = std::make_unique<Store>(std::move(specs), size); });
    accounted_ = Traits::AccountedBytes(*store_, size);
    Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
    info.This().template As<Napi::Object>().TypeTag(&Traits::kTag);
  }

  ~StoreWrap() override { Release(this->Env()); }

  Store* store(Napi::Env env, const std::string& what) {
    if (!store_) {
      throw MakeNativeError(env, nc::Error("ERR_DISPOSED", "negative-cache: " + what +
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
    return static_cast<int>(GetInteger(env, v, what, 0, store(env, "the cache")->numColumns() - 1, Traits::kNumbers));
  }

  void Initialize(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    if (!info[0].IsArray())
      ThrowType(env, "initialize(values)", "an array with one entry per column", info[0], Traits::kNumbers);
    const Napi::Array arr = info[0].As<Napi::Array>();
    if (arr.Length() != static_cast<uint32_t>(s->numColumns()))
      ThrowRange(env, "initialize(values)", "an array of length " + std::to_string(s->numColumns()),
                 std::to_string(arr.Length()));
    std::vector<const void*> values;
    for (int c = 0; c < s->numColumns(); ++c) {
      const nc::ColumnSpec& col = s->column(c);
      values.push_back(GetOptionalTyped<const void>(env, arr.Get(static_cast<uint32_t>(c)), HostType(col.storage),
                                                    Traits::Elements(env, s->size(), col.width, "initialize(values)"),
                                                    "initialize(values['" + col.name + "'])", Traits::kNumbers));
    }
    const int32_t* ages = GetOptionalTyped<const int32_t>(env, info[1], napi_int32_array, s->size(), "initialize(ages)", Traits::kNumbers);
    Guard(env, [&] { s->initialize(values, ages); });
  }

  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    const Napi::Object o = Traits::UpdateObject(env, info[0]);
    nc::CacheUpdate u;
    u.useLru = o.Get("useLru").ToBoolean().Value();
    u.numUpdated = GetInteger(env, o.Get("numUpdated"), "update(u.numUpdated)", 0, kMaxInt32, Traits::kNumbers);
    u.numNew = GetInteger(env, o.Get("numNew"), "update(u.numNew)", 0, kMaxInt32, Traits::kNumbers);
    const int nCols = s->numColumns();
    auto columnArrays = [&](const char* field, int64_t rows, bool required, std::vector<const void*>& out) {
      const Napi::Value v = o.Get(field);
      const std::string what = std::string("update(u.") + field + ")";
      if (!v.IsArray()) ThrowType(env, what, "an array with one entry per column", v, Traits::kNumbers);
      const Napi::Array arr = v.As<Napi::Array>();
      if (arr.Length() != static_cast<uint32_t>(nCols))
        ThrowRange(env, what, "an array of length " + std::to_string(nCols), std::to_string(arr.Length()));
      for (int c = 0; c < nCols; ++c) {
        const nc::ColumnSpec& col = s->column(c);
        const Napi::Value e = arr.Get(static_cast<uint32_t>(c));
        const std::string ewhat = std::string("update(u.") + field + "['" + col.name + "'])";
        if (required && (e.IsNull() || e.IsUndefined()))
          ThrowType(env, ewhat, TypedName(HostType(col.storage)), e, Traits::kNumbers);
        out.push_back(GetOptionalTyped<const void>(env, e, HostType(col.storage),
                                                   Traits::Elements(env, rows, col.width, ewhat), ewhat, Traits::kNumbers));
      }
    };
    if (u.numUpdated > 0) {
      columnArrays("updatedValues", u.numUpdated, false, u.updatedValues);
      u.updatedIndices = GetTyped<const int32_t>(env, o.Get("updatedIndices"), napi_int32_array, u.numUpdated,
                                                 "update(u.updatedIndices)", Traits::kNumbers);
      u.updatedMask = GetOptionalTyped<const uint8_t>(env, o.Get("updatedMask"), napi_uint8_array, u.numUpdated,
                                                      "update(u.updatedMask)", Traits::kNumbers);
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
      u.newMask =
          GetOptionalTyped<const uint8_t>(env, o.Get("newMask"), napi_uint8_array, u.numNew, "update(u.newMask)", Traits::kNumbers);
      int64_t m = 0;
      for (int64_t i = 0; i < u.numNew; ++i) m += (u.newMask == nullptr || u.newMask[i] != 0) ? 1 : 0;
      if (m > s->size())
        ThrowRange(env, "update(u.newMask)", "at most " + std::to_string(s->size()) + " unmasked new items",
                   std::to_string(m));
      u.insertedRows = GetOptionalTyped<int32_t>(env, o.Get("insertedRows"), napi_int32_array, u.numNew,
                                                 "update(u.insertedRows)", Traits::kNumbers);
    }
    Guard(env, [&] { s->update(u); });
  }

  void ReadColumn(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    const int c = Column(env, info[0], "readColumn(column)");
    const nc::ColumnSpec& col = s->column(c);
    void* out = GetTyped<void>(env, info[1], HostType(col.storage),
                               Traits::Elements(env, s->size(), col.width, "readColumn(out)"), "readColumn(out)", Traits::kNumbers);
    Guard(env, [&] { s->readColumn(c, out); });
  }

  void ReadAge(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    int32_t* out = GetTyped<int32_t>(env, info[0], napi_int32_array, s->size(), "readAge(out)", Traits::kNumbers);
    s->readAge(out);
  }

  void ReadFilled(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    uint8_t* out = GetTyped<uint8_t>(env, info[0], napi_uint8_array, s->size(), "readFilled(out)", Traits::kNumbers);
    std::memcpy(out, s->filled(), static_cast<size_t>(s->size()));
  }

  void GatherRows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    const int c = Column(env, info[0], "gatherRows(column)");
    const nc::ColumnSpec& col = s->column(c);
    if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_int32_array)
      ThrowType(env, "gatherRows(rows)", "an Int32Array", info[1], Traits::kNumbers);
    const int64_t n = static_cast<int64_t>(info[1].As<Napi::TypedArray>().ElementLength());
    const int32_t* rows = GetTyped<const int32_t>(env, info[1], napi_int32_array, n, "gatherRows(rows)", Traits::kNumbers);
    void* out = GetTyped<void>(env, info[2], HostType(col.storage), Traits::Elements(env, n, col.width, "gatherRows(out)"),
                               "gatherRows(out)", Traits::kNumbers);
    for (int64_t i = 0; i < n; ++i)
      if (rows[i] < 0 || rows[i] >= s->size())
        ThrowRange(env, "gatherRows(rows[" + std::to_string(i) + "])",
                   "an integer in [0, " + std::to_string(s->size()) + ")", std::to_string(rows[i]));
    if (n > 0) Guard(env, [&] { s->gatherRows(c, rows, n, out); });
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Store* s = store(env, "the cache");
    Napi::Object o = Napi::Object::New(env);
    o.Set("dataBytes", Napi::Number::New(env, static_cast<double>(s->dataBytes())));
    o.Set("bookkeepingBytesPerRow", Napi::Number::New(env, static_cast<double>(s->bookkeepingBytesPerRow())));
    return o;
  }

  void Dispose(const Napi::CallbackInfo& info) { Release(info.Env()); }

  std::unique_ptr<Store> store_;
  int64_t accounted_ = 0;
};

}  // namespace ncb
