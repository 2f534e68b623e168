// Argument checks shared by the Node-API glue (cache_store_binding.cc,
// kernels_binding.cc, cuda_binding.cc). Each check throws a JS TypeError or
// RangeError "negative-cache: <what> must be <expected>; got <actual>" before
// native code sees the value, and the kernel request/params/out parsing that
// the CPU and CUDA kernels have in common.
#pragma once
#include <napi.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "binding.h"
#include "cache_store.h"
#include "kernels.h"

namespace ncb {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

/// How Describe prints a number. kFixed (the kernels and the CUDA store):
/// NaN, Infinity, integers below 1e18, else printf %f ("1.500000").
/// kRoundTrip (the CPU store): integers below 2^53, NaN, else %.17g ("1.5", "inf").
enum class Numbers { kFixed, kRoundTrip };

/// "undefined", "null", "a Float32Array of length 4", "1.5", "an array", ...
std::string Describe(const Napi::Value& v, Numbers numbers = Numbers::kFixed);

[[noreturn]] void ThrowType(Napi::Env env, const std::string& what, const std::string& expected, const Napi::Value& v,
                            Numbers numbers = Numbers::kFixed);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected,
                             const std::string& got);

/// An integer number in [lo, hi].
int64_t GetInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi,
                   Numbers numbers = Numbers::kFixed);
double GetFinite(Napi::Env env, const Napi::Value& v, const std::string& what);
bool GetBool(Napi::Env env, const Napi::Value& v, const std::string& what);
/// An object that is not an array or a typed array.
Napi::Object GetObject(Napi::Env env, const Napi::Value& v, const std::string& what);

/// "a Float32Array", "an Int32Array", "a Uint8Array" ("a typed array" otherwise).
const char* TypedName(napi_typedarray_type t);
/// The typed-array type that holds a column's host values.
inline napi_typedarray_type HostType(nc::DType storage) {
  return storage == nc::DType::Int32 ? napi_int32_array : napi_float32_array;
}

/// Data of a typed array of exactly `type` and `length` elements (nullptr when length is 0).
void* GetTypedData(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                   const std::string& what, Numbers numbers = Numbers::kFixed);
template <typename T>
T* GetTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length, const std::string& what,
            Numbers numbers = Numbers::kFixed) {
  return static_cast<T*>(GetTypedData(env, v, type, length, what, numbers));
}
/// Like GetTyped, but null/undefined give nullptr.
template <typename T>
T* GetOptionalTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                    const std::string& what, Numbers numbers = Numbers::kFixed) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return GetTyped<T>(env, v, type, length, what, numbers);
}

/// A product of non-negative counts, or a RangeError when it exceeds 2^53.
int64_t Product(Napi::Env env, int64_t a, int64_t b, const std::string& what);

// ---- kernel calls: request, params, out -----------------------------------

/// The request object: queries, batch, dim, scale, scoreEmptyRows, threads
/// (read only when withThreads), segments [{store, column}]. Checks everything
/// native code will rely on. unwrap(value, what) -> Store* resolves a segment's
/// store handle; filled(const Store&) gives the flags the kernels read.
template <typename Store, typename Unwrap, typename Filled>
nc::ScoreRequest GetRequest(Napi::Env env, const Napi::Value& v, bool withThreads, Unwrap unwrap, Filled filled) {
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
  if (withThreads) {
    const Napi::Value tv = o.Get("threads");
    r.threads = tv.IsUndefined() ? 0 : static_cast<int>(GetInteger(env, tv, "request.threads", 0, 1024));
  }
  const Napi::Value sv = o.Get("segments");
  if (!sv.IsArray()) ThrowType(env, "request.segments", "an array", sv);
  const Napi::Array segs = sv.As<Napi::Array>();
  int64_t total = 0;
  for (uint32_t i = 0; i < segs.Length(); ++i) {
    const std::string what = "request.segments[" + std::to_string(i) + "]";
    const Napi::Object so = GetObject(env, segs.Get(i), what);
    const Store* store = unwrap(so.Get("store"), what + ".store");
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
    seg.filled = filled(*store);
    total += seg.rows;
    if (total > kMaxInt32) ThrowRange(env, "request.segments", "at most 2^31 - 1 rows in all", std::to_string(total));
    r.segments.push_back(seg);
  }
  return r;
}

/// Rows of all the request's segments.
int64_t TotalRows(const nc::ScoreRequest& r);

/// The params object: mode, invTemp, numDraws, seed, call.
nc::SampleParams GetParams(Napi::Env env, const Napi::Value& v);

/// The out object {indices, scores, lse, candidates} of a sampling call; the
/// kernels write int64 candidates into `candidates`, copied back by CopyCandidates.
struct OutArrays {
  nc::SampleOutput out{};
  int32_t* candidates32 = nullptr;
  std::vector<int64_t> candidates;
};
void GetOut(Napi::Env env, const Napi::Value& v, int64_t batch, int64_t k, OutArrays& a);
void CopyCandidates(OutArrays& a, int64_t batch);

using RequestParser = nc::ScoreRequest (*)(Napi::Env, const Napi::Value&);

// The kernel entry points, the same for every backend but the request parser
// and the kernel they call.

/// scoreAndSample(request, params, out)
template <RequestParser Parse, void (*Kernel)(const nc::ScoreRequest&, const nc::SampleParams&, nc::SampleOutput&)>
void ScoreAndSampleEntry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = Parse(env, info[0]);
  const nc::SampleParams params = GetParams(env, info[1]);
  OutArrays a;
  GetOut(env, info[2], req.batch, params.numDraws, a);
  Guard(env, [&] { Kernel(req, params, a.out); });
  CopyCandidates(a, req.batch);
}

/// scoreGroupMax(request, groups, outScores, outRows)
template <RequestParser Parse, void (*Kernel)(const nc::ScoreRequest&, int64_t, float*, int32_t*)>
void ScoreGroupMaxEntry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = Parse(env, info[0]);
  const int64_t n = TotalRows(req);
  if (n < 1) ThrowRange(env, "request.segments", "at least one cache row for topK grouping", "0 rows");
  const int64_t groups = GetInteger(env, info[1], "groups", 1, n);
  const int64_t len = Product(env, req.batch, groups, "outScores");
  float* scores = GetTyped<float>(env, info[2], napi_float32_array, len, "outScores");
  int32_t* rows = GetTyped<int32_t>(env, info[3], napi_int32_array, len, "outRows");
  Guard(env, [&] { Kernel(req, groups, scores, rows); });
}

/// scoreMatrix(request, out)
template <RequestParser Parse, void (*Kernel)(const nc::ScoreRequest&, float*)>
void ScoreMatrixEntry(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::ScoreRequest req = Parse(env, info[0]);
  const int64_t len = Product(env, req.batch, TotalRows(req), "out");
  float* out = GetTyped<float>(env, info[1], napi_float32_array, len, "out");
  Guard(env, [&] { Kernel(req, out); });
}

}  // namespace ncb
