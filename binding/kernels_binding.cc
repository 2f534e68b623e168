// Node-API glue of the scoring kernels (native/kernels.h). Every argument that
// protects memory is re-checked here (typed array types and lengths, column
// widths, counts); the calls run synchronously because the loss runs inside
// tfjs tapes. Outputs are JS-allocated typed arrays written in place.
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "binding.h"
#include "cache_store.h"
#include "kernels.h"

namespace ncb {

namespace {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

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

/// A product of non-negative counts, or a RangeError when it exceeds 2^53.
int64_t Product(Napi::Env env, int64_t a, int64_t b, const std::string& what) {
  if (a != 0 && b > kMaxSafe / a) ThrowRange(env, what, "at most 2^53 elements", std::to_string(a) + " x " + std::to_string(b));
  return a * b;
}

/// The request object: queries, batch, dim, segments [{store, column}], scale,
/// scoreEmptyRows, threads. Checks everything native code will rely on.
nc::ScoreRequest GetRequest(Napi::Env env, const Napi::Value& v) {
  const Napi::Object o = GetObject(env, v, "request");
  nc::ScoreRequest r;
  r.batch = GetInteger(env, o.Get("batch"), "request.batch", 0, kMaxInt32);
  r.dim = GetInteger(env, o.Get("dim"), "request.dim", 1, kMaxInt32);
  const int64_t qn = Product(env, r.batch, r.dim, "request.queries");
  r.queries = GetTyped<const float>(env, o.Get("queries"), napi_float32_array, qn, "request.queries");
  for (int64_t i = 0; i < qn; ++i) {
    if (!std::isfinite(r.queries[i]))
      ThrowRange(env, "request.queries", "finite", "a non-finite value at index " + std::to_string(i));
  }
  r.scale = static_cast<float>(GetFinite(env, o.Get("scale"), "request.scale"));
  if (!std::isfinite(r.scale)) ThrowRange(env, "request.scale", "finite as a float32", Describe(o.Get("scale")));
  r.scoreEmptyRows = GetBool(env, o.Get("scoreEmptyRows"), "request.scoreEmptyRows");
  const Napi::Value tv = o.Get("threads");
  r.threads = tv.IsUndefined() ? 0 : static_cast<int>(GetInteger(env, tv, "request.threads", 0, 1024));
  const Napi::Value sv = o.Get("segments");
  if (!sv.IsArray()) ThrowType(env, "request.segments", "an array", sv);
  const Napi::Array segs = sv.As<Napi::Array>();
  int64_t total = 0;
  for (uint32_t i = 0; i < segs.Length(); ++i) {
    const std::string what = "request.segments[" + std::to_string(i) + "]";
    const Napi::Object so = GetObject(env, segs.Get(i), what);
    nc::CacheStore* store = UnwrapCacheStore(env, so.Get("store"), (what + ".store").c_str());
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
    seg.filled = store->filled();
    total += seg.rows;
    if (total > kMaxInt32)
      ThrowRange(env, "request.segments", "at most 2^31 - 1 rows in all", std::to_string(total));
    r.segments.push_back(seg);
  }
  return r;
}

nc::SampleParams GetParams(Napi::Env env, const Napi::Value& v) {
  const Napi::Object o = GetObject(env, v, "params");
  nc::SampleParams p;
  p.mode = static_cast<nc::SampleMode>(GetInteger(env, o.Get("mode"), "params.mode", 0, 2));
  p.invTemp = GetFinite(env, o.Get("invTemp"), "params.invTemp");
  p.numDraws = GetInteger(env, o.Get("numDraws"), "params.numDraws", 1, kMaxInt32);
  p.seed = static_cast<uint64_t>(GetInteger(env, o.Get("seed"), "params.seed", 0, kMaxSafe));
  p.call = static_cast<uint64_t>(GetInteger(env, o.Get("call"), "params.call", 0, kMaxSafe));
  return p;
}

struct OutArrays {
  nc::SampleOutput out{};
  int32_t* candidates32 = nullptr;
  std::vector<int64_t> candidates;
};

void GetOut(Napi::Env env, const Napi::Value& v, int64_t batch, int64_t k, OutArrays& a) {
  const Napi::Object o = GetObject(env, v, "out");
  const int64_t bk = Product(env, batch, k, "out.indices");
  a.out.indices = GetTyped<int32_t>(env, o.Get("indices"), napi_int32_array, bk, "out.indices");
  a.out.scores = GetTyped<float>(env, o.Get("scores"), napi_float32_array, bk, "out.scores");
  a.out.lse = GetTyped<float>(env, o.Get("lse"), napi_float32_array, batch, "out.lse");
  a.candidates32 = GetTyped<int32_t>(env, o.Get("candidates"), napi_int32_array, batch, "out.candidates");
  a.candidates.assign(static_cast<size_t>(batch), 0);
  a.out.candidates = a.candidates.data();
}

void CopyCandidates(OutArrays& a, int64_t batch) {
  for (int64_t b = 0; b < batch; ++b) a.candidates32[b] = static_cast<int32_t>(a.candidates[b]);
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
  const nc::SampleParams params = GetParams(env, info[1]);
  OutArrays a;
  GetOut(env, info[2], req.batch, params.numDraws, a);
  Guard(env, [&] { nc::scoreAndSample(req, params, a.out); });
  CopyCandidates(a, req.batch);
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
  Guard(env, [&] { nc::scoreGroupMax(req, groups, scores, rows); });
}

// sampleCandidates(scores, batch, cols, params, threads, out)
void SampleCandidates(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const int64_t batch = GetInteger(env, info[1], "batch", 0, kMaxInt32);
  const int64_t cols = GetInteger(env, info[2], "cols", 0, kMaxInt32);
  const int64_t len = Product(env, batch, cols, "scores");
  const float* scores = GetTyped<const float>(env, info[0], napi_float32_array, len, "scores");
  for (int64_t i = 0; i < len; ++i) {
    const float s = scores[i];
    if (std::isnan(s) || s == std::numeric_limits<float>::infinity())
      ThrowRange(env, "scores", "finite or -Infinity (not a candidate)",
                 std::string(std::isnan(s) ? "NaN" : "Infinity") + " at index " + std::to_string(i));
  }
  const nc::SampleParams params = GetParams(env, info[3]);
  const int threads = info[4].IsUndefined() ? 0 : static_cast<int>(GetInteger(env, info[4], "threads", 0, 1024));
  OutArrays a;
  GetOut(env, info[5], batch, params.numDraws, a);
  Guard(env, [&] { nc::sampleCandidates(scores, batch, cols, params, threads, a.out); });
  CopyCandidates(a, batch);
}

// scoreMatrix(request, out)
void ScoreMatrix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = GetRequest(env, info[0]);
  const int64_t len = Product(env, req.batch, TotalRows(req), "out");
  float* out = GetTyped<float>(env, info[1], napi_float32_array, len, "out");
  Guard(env, [&] { nc::scoreMatrix(req, out); });
}

Napi::Value CpuFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::cpu::Features f = nc::cpu::detectedFeatures();
  Napi::Object o = Napi::Object::New(env);
  o.Set("avx2", Napi::Boolean::New(env, f.avx2));
  o.Set("fma", Napi::Boolean::New(env, f.fma));
  o.Set("f16c", Napi::Boolean::New(env, f.f16c));
  o.Set("usingAvx2", Napi::Boolean::New(env, nc::cpu::usingAvx2()));
  return o;
}

void SetForceBaseline(const Napi::CallbackInfo& info) {
  nc::cpu::setForceBaseline(GetBool(info.Env(), info[0], "force"));
}

}  // namespace

void InitKernels(Napi::Env env, Napi::Object exports) {
  exports.Set("scoreAndSample", Napi::Function::New<ScoreAndSample>(env, "scoreAndSample"));
  exports.Set("scoreGroupMax", Napi::Function::New<ScoreGroupMax>(env, "scoreGroupMax"));
  exports.Set("sampleCandidates", Napi::Function::New<SampleCandidates>(env, "sampleCandidates"));
  exports.Set("scoreMatrix", Napi::Function::New<ScoreMatrix>(env, "scoreMatrix"));
  exports.Set("cpuFeatures", Napi::Function::New<CpuFeatures>(env, "cpuFeatures"));
  exports.Set("setForceBaseline", Napi::Function::New<SetForceBaseline>(env, "setForceBaseline"));
}

}  // namespace ncb
