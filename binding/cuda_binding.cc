// Node-API glue of the CUDA backend (native/cuda): `addon.cuda`.
//
//   built                  true when the addon was compiled with CUDA
//   available()            a device is usable (never throws)
//   deviceCount(), error() the reason when unavailable ('' otherwise)
//   device()               a description of the current device
//   querySplits(), setQuerySplits(n)   bf16 tensor-core precision (0-3)
//   CacheStore             like addon.CacheStore, rows in device memory
//   scoreAndSample / scoreGroupMax / scoreMatrix   like the CPU functions,
//                          segments must be CUDA stores
//
// As in the CPU glue, every typed array's type and length and every index is
// checked here before native code sees a pointer. Without NEGCACHE_WITH_CUDA
// only built/available/deviceCount/error exist and report "not built".
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "binding.h"
#ifdef NEGCACHE_WITH_CUDA
#include "cuda/cuda_backend.h"
#endif

namespace ncb {

#ifdef NEGCACHE_WITH_CUDA

namespace {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

// Marks objects created by addon.cuda.CacheStore (distinct from the CPU tag).
const napi_type_tag kCudaStoreTag = {0x6e6363756461ULL, 0x2d73746f72652d31ULL};

std::string Describe(const Napi::Value& v) {
  if (v.IsUndefined()) return "undefined";
  if (v.IsNull()) return "null";
  if (v.IsTypedArray()) {
    const Napi::TypedArray t = v.As<Napi::TypedArray>();
    static const char* const names[] = {"Int8Array",    "Uint8Array",    "Uint8ClampedArray", "Int16Array",
                                        "Uint16Array",  "Int32Array",    "Uint32Array",       "Float32Array",
                                        "Float64Array", "BigInt64Array", "BigUint64Array"};
    const int k = static_cast<int>(t.TypedArrayType());
    return std::string("a ") + (k >= 0 && k < 11 ? names[k] : "typed array") + " of length " +
           std::to_string(t.ElementLength());
  }
  if (v.IsNumber()) {
    const double d = v.As<Napi::Number>().DoubleValue();
    if (std::isnan(d)) return "NaN";
    if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
    if (std::floor(d) == d && std::fabs(d) < 1e18) return std::to_string(static_cast<int64_t>(d));
    return std::to_string(d);
  }
  if (v.IsArray()) return "an array";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  if (v.IsObject()) return "an object";
  return "a value";
}

[[noreturn]] void ThrowType(Napi::Env env, const std::string& what, const std::string& expected,
                            const Napi::Value& v) {
  throw Napi::TypeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + Describe(v));
}
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected,
                             const std::string& got) {
  throw Napi::RangeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + got);
}

int64_t GetInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) ThrowType(env, what, "an integer", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi))
    ThrowRange(env, what, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]", Describe(v));
  return static_cast<int64_t>(d);
}

double GetFinite(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsNumber()) ThrowType(env, what, "a finite number", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d)) ThrowRange(env, what, "a finite number", Describe(v));
  return d;
}

bool GetBool(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsBoolean()) ThrowType(env, what, "a boolean", v);
  return v.As<Napi::Boolean>().Value();
}

Napi::Object GetObject(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray()) ThrowType(env, what, "an object", v);
  return v.As<Napi::Object>();
}

const char* TypedName(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "a Float32Array";
    case napi_int32_array: return "an Int32Array";
    case napi_uint8_array: return "a Uint8Array";
    default: return "a typed array";
  }
}

/// Data of a typed array of exactly `type` and `length` elements.
template <typename T>
T* GetTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
            const std::string& what) {
  const std::string expected = std::string(TypedName(type)) + " of length " + std::to_string(length);
  if (!v.IsTypedArray()) ThrowType(env, what, expected, v);
  const Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != type) ThrowType(env, what, expected, v);
  if (static_cast<int64_t>(t.ElementLength()) != length) ThrowRange(env, what, expected, Describe(v));
  if (length == 0) return nullptr;
  return reinterpret_cast<T*>(static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset());
}

template <typename T>
T* GetOptionalTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                    const std::string& what) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return GetTyped<T>(env, v, type, length, what);
}

int64_t Product(Napi::Env env, int64_t a, int64_t b, const std::string& what) {
  if (a != 0 && b > kMaxSafe / a)
    ThrowRange(env, what, "at most 2^53 elements", std::to_string(a) + " x " + std::to_string(b));
  return a * b;
}

napi_typedarray_type HostType(nc::DType storage) {
  return storage == nc::DType::Int32 ? napi_int32_array : napi_float32_array;
}

class CudaStoreWrap : public Napi::ObjectWrap<CudaStoreWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CudaCacheStore",
                       {InstanceMethod<&CudaStoreWrap::Initialize>("initialize"),
                        InstanceMethod<&CudaStoreWrap::Update>("update"),
                        InstanceMethod<&CudaStoreWrap::ReadColumn>("readColumn"),
                        InstanceMethod<&CudaStoreWrap::ReadAge>("readAge"),
                        InstanceMethod<&CudaStoreWrap::ReadFilled>("readFilled"),
                        InstanceMethod<&CudaStoreWrap::GatherRows>("gatherRows"),
                        InstanceMethod<&CudaStoreWrap::Stats>("stats"),
                        InstanceMethod<&CudaStoreWrap::Dispose>("dispose")});
  }

  explicit CudaStoreWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<CudaStoreWrap>(info) {
    Napi::Env env = info.Env();
    if (info.Length() < 2 || !info[0].IsArray())
      ThrowType(env, "cuda.CacheStore(columns)", "an array of columns", info[0]);
    const int64_t size = GetInteger(env, info[1], "cuda.CacheStore(size)", 1, kMaxInt32);
    const Napi::Array cols = info[0].As<Napi::Array>();
    std::vector<nc::ColumnSpec> specs;
    for (uint32_t i = 0; i < cols.Length(); ++i) {
      const std::string what = "cuda.CacheStore(columns[" + std::to_string(i) + "])";
      const Napi::Object c = GetObject(env, cols.Get(i), what);
      const Napi::Value name = c.Get("name");
      if (!name.IsString()) ThrowType(env, what + ".name", "a string", name);
      const int64_t storage = GetInteger(env, c.Get("storage"), what + ".storage", 0, 3);
      const int64_t width = GetInteger(env, c.Get("width"), what + ".width", 1, kMaxInt32);
      specs.push_back({name.As<Napi::String>().Utf8Value(), static_cast<nc::DType>(storage), width});
    }
    Guard(env, [&] { store_ = std::make_unique<nc::cuda::CudaCacheStore>(std::move(specs), size); });
    accounted_ = static_cast<int64_t>(store_->bookkeepingBytesPerRow()) * size;  // host memory only
    Napi::MemoryManagement::AdjustExternalMemory(env, accounted_);
    info.This().As<Napi::Object>().TypeTag(&kCudaStoreTag);
  }

  ~CudaStoreWrap() override { Release(Env()); }

  nc::cuda::CudaCacheStore* store(Napi::Env env, const std::string& what) {
    if (!store_)
      throw MakeNativeError(env, nc::Error("ERR_DISPOSED", "negative-cache: " + what +
                                                               " was disposed (NegativeCache.dispose() frees it)"));
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
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
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

  void Update(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
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
      u.updatedIndices =
          GetTyped<const int32_t>(env, o.Get("updatedIndices"), napi_int32_array, u.numUpdated, "update(u.updatedIndices)");
      u.updatedMask =
          GetOptionalTyped<const uint8_t>(env, o.Get("updatedMask"), napi_uint8_array, u.numUpdated, "update(u.updatedMask)");
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

  void ReadColumn(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
    const int c = Column(env, info[0], "readColumn(column)");
    const nc::ColumnSpec& col = s->column(c);
    void* out = GetTyped<void>(env, info[1], HostType(col.storage), Product(env, s->size(), col.width, "readColumn(out)"),
                               "readColumn(out)");
    Guard(env, [&] { s->readColumn(c, out); });
  }

  void ReadAge(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
    int32_t* out = GetTyped<int32_t>(env, info[0], napi_int32_array, s->size(), "readAge(out)");
    s->readAge(out);
  }

  void ReadFilled(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
    uint8_t* out = GetTyped<uint8_t>(env, info[0], napi_uint8_array, s->size(), "readFilled(out)");
    std::memcpy(out, s->filled(), static_cast<size_t>(s->size()));
  }

  void GatherRows(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
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

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::cuda::CudaCacheStore* s = store(env, "the cache");
    Napi::Object o = Napi::Object::New(env);
    o.Set("dataBytes", Napi::Number::New(env, static_cast<double>(s->dataBytes())));
    o.Set("bookkeepingBytesPerRow", Napi::Number::New(env, static_cast<double>(s->bookkeepingBytesPerRow())));
    return o;
  }

  void Dispose(const Napi::CallbackInfo& info) { Release(info.Env()); }

  std::unique_ptr<nc::cuda::CudaCacheStore> store_;
  int64_t accounted_ = 0;
};

nc::cuda::CudaCacheStore* UnwrapCudaStore(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsObject() || !v.As<Napi::Object>().CheckTypeTag(&kCudaStoreTag))
    ThrowType(env, what, "a CUDA cache store handle", v);
  CudaStoreWrap* w = CudaStoreWrap::Unwrap(v.As<Napi::Object>());
  if (w == nullptr) ThrowType(env, what, "a CUDA cache store handle", v);
  return w->store(env, what);
}

/// The request object (as for the CPU kernels); segments must be CUDA stores.
nc::ScoreRequest GetRequest(Napi::Env env, const Napi::Value& v) {
  const Napi::Object o = GetObject(env, v, "request");
  nc::ScoreRequest r;
  r.batch = GetInteger(env, o.Get("batch"), "request.batch", 0, kMaxInt32);
  r.dim = GetInteger(env, o.Get("dim"), "request.dim", 1, kMaxInt32);
  const int64_t qn = Product(env, r.batch, r.dim, "request.queries");
  r.queries = GetTyped<const float>(env, o.Get("queries"), napi_float32_array, qn, "request.queries");
  for (int64_t i = 0; i < qn; ++i)
    if (!std::isfinite(r.queries[i]))
      ThrowRange(env, "request.queries", "finite", "a non-finite value at index " + std::to_string(i));
  r.scale = static_cast<float>(GetFinite(env, o.Get("scale"), "request.scale"));
  if (!std::isfinite(r.scale)) ThrowRange(env, "request.scale", "finite as a float32", Describe(o.Get("scale")));
  r.scoreEmptyRows = GetBool(env, o.Get("scoreEmptyRows"), "request.scoreEmptyRows");
  const Napi::Value sv = o.Get("segments");
  if (!sv.IsArray()) ThrowType(env, "request.segments", "an array", sv);
  const Napi::Array segs = sv.As<Napi::Array>();
  int64_t total = 0;
  for (uint32_t i = 0; i < segs.Length(); ++i) {
    const std::string what = "request.segments[" + std::to_string(i) + "]";
    const Napi::Object so = GetObject(env, segs.Get(i), what);
    nc::cuda::CudaCacheStore* store = UnwrapCudaStore(env, so.Get("store"), what + ".store");
    const int64_t c = GetInteger(env, so.Get("column"), what + ".column", 0, store->numColumns() - 1);
    const nc::ColumnSpec& spec = store->column(static_cast<int>(c));
    if (!nc::isFloat(spec.storage))
      ThrowRange(env, what + ".column", "a float column", "the int32 column '" + spec.name + "'");
    if (spec.width != r.dim)
      ThrowRange(env, what, "a column of width dim = " + std::to_string(r.dim),
                 "column '" + spec.name + "' of width " + std::to_string(spec.width));
    nc::Segment seg;
    seg.data = store->columnData(static_cast<int>(c));
    seg.storage = spec.storage;
    seg.rows = store->size();
    seg.filled = store->filledDevice();
    total += seg.rows;
    if (total > kMaxInt32) ThrowRange(env, "request.segments", "at most 2^31 - 1 rows in all", std::to_string(total));
    r.segments.push_back(seg);
  }
  return r;
}

int64_t TotalRows(const nc::ScoreRequest& r) {
  int64_t n = 0;
  for (const nc::Segment& s : r.segments) n += s.rows;
  return n;
}

// scoreAndSample(request, params, out)
void ScoreAndSample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = GetRequest(env, info[0]);
  const Napi::Object po = GetObject(env, info[1], "params");
  nc::SampleParams params;
  params.mode = static_cast<nc::SampleMode>(GetInteger(env, po.Get("mode"), "params.mode", 0, 2));
  params.invTemp = GetFinite(env, po.Get("invTemp"), "params.invTemp");
  params.numDraws = GetInteger(env, po.Get("numDraws"), "params.numDraws", 1, kMaxInt32);
  params.seed = static_cast<uint64_t>(GetInteger(env, po.Get("seed"), "params.seed", 0, kMaxSafe));
  params.call = static_cast<uint64_t>(GetInteger(env, po.Get("call"), "params.call", 0, kMaxSafe));
  const Napi::Object oo = GetObject(env, info[2], "out");
  const int64_t bk = Product(env, req.batch, params.numDraws, "out.indices");
  nc::SampleOutput out{};
  out.indices = GetTyped<int32_t>(env, oo.Get("indices"), napi_int32_array, bk, "out.indices");
  out.scores = GetTyped<float>(env, oo.Get("scores"), napi_float32_array, bk, "out.scores");
  out.lse = GetTyped<float>(env, oo.Get("lse"), napi_float32_array, req.batch, "out.lse");
  int32_t* cand32 = GetTyped<int32_t>(env, oo.Get("candidates"), napi_int32_array, req.batch, "out.candidates");
  std::vector<int64_t> cand(static_cast<size_t>(req.batch), 0);
  out.candidates = cand.data();
  Guard(env, [&] { nc::cuda::scoreAndSample(req, params, out); });
  for (int64_t b = 0; b < req.batch; ++b) cand32[b] = static_cast<int32_t>(cand[static_cast<size_t>(b)]);
}

// scoreGroupMax(request, groups, outScores, outRows)
void ScoreGroupMax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = GetRequest(env, info[0]);
  const int64_t n = TotalRows(req);
  if (n < 1) ThrowRange(env, "request.segments", "at least one cache row for topK grouping", "0 rows");
  const int64_t groups = GetInteger(env, info[1], "groups", 1, n);
  const int64_t len = Product(env, req.batch, groups, "outScores");
  float* scores = GetTyped<float>(env, info[2], napi_float32_array, len, "outScores");
  int32_t* rows = GetTyped<int32_t>(env, info[3], napi_int32_array, len, "outRows");
  Guard(env, [&] { nc::cuda::scoreGroupMax(req, groups, scores, rows); });
}

// scoreMatrix(request, out)
void ScoreMatrix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = GetRequest(env, info[0]);
  const int64_t len = Product(env, req.batch, TotalRows(req), "out");
  float* out = GetTyped<float>(env, info[1], napi_float32_array, len, "out");
  Guard(env, [&] { nc::cuda::scoreMatrix(req, out); });
}

}  // namespace

void InitCuda(Napi::Env env, Napi::Object exports) {
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("built", Napi::Boolean::New(env, true));
  cuda.Set("available", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             return Napi::Boolean::New(info.Env(), nc::cuda::available());
           }));
  cuda.Set("deviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             return Napi::Number::New(info.Env(), nc::cuda::deviceCount());
           }));
  cuda.Set("error", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             std::string why;
             nc::cuda::available(&why);
             return Napi::String::New(info.Env(), why);
           }));
  cuda.Set("device", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             Napi::Env e = info.Env();
             return Napi::String::New(e, Guard(e, [] { return nc::cuda::deviceDescription(); }));
           }));
  cuda.Set("querySplits", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             return Napi::Number::New(info.Env(), nc::cuda::querySplits());
           }));
  cuda.Set("setQuerySplits", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             Napi::Env e = info.Env();
             const int64_t n = GetInteger(e, info[0], "splits", 0, 3);
             nc::cuda::setQuerySplits(static_cast<int>(n));
           }));
  cuda.Set("CacheStore", CudaStoreWrap::Define(env));
  cuda.Set("scoreAndSample", Napi::Function::New<ScoreAndSample>(env, "scoreAndSample"));
  cuda.Set("scoreGroupMax", Napi::Function::New<ScoreGroupMax>(env, "scoreGroupMax"));
  cuda.Set("scoreMatrix", Napi::Function::New<ScoreMatrix>(env, "scoreMatrix"));
  exports.Set("cuda", cuda);
}

#else  // !NEGCACHE_WITH_CUDA

void InitCuda(Napi::Env env, Napi::Object exports) {
  Napi::Object cuda = Napi::Object::New(env);
  cuda.Set("built", Napi::Boolean::New(env, false));
  cuda.Set("available", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             return Napi::Boolean::New(info.Env(), false);
           }));
  cuda.Set("deviceCount", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             return Napi::Number::New(info.Env(), 0);
           }));
  cuda.Set("error", Napi::Function::New(env, [](const Napi::CallbackInfo& info) {
             return Napi::String::New(info.Env(), "the addon was built without CUDA");
           }));
  exports.Set("cuda", cuda);
}

#endif

}  // namespace ncb
