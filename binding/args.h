// Argument checks of the Node-API glue. Each check throws a JS TypeError or
// RangeError "negative-cache: <what> must be <expected>; got <actual>" before
// native code sees the value. The glue keeps the checks that protect memory
// (typed array types and lengths, counts, indices, handles) and those the
// tests call the addon directly for; TypeScript validates the rest first.
#pragma once
#include <napi.h>

#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "binding.h"

namespace ncb {

constexpr int64_t kMaxInt32 = std::numeric_limits<int32_t>::max();
constexpr int64_t kMaxSafe = 9007199254740991LL;  // 2^53 - 1

/// "undefined", "null", "a Float32Array of length 4", "1.5", "Infinity", "an array", ...
std::string Describe(const Napi::Value& v);

[[noreturn]] void ThrowType(Napi::Env env, const std::string& what, const std::string& expected, const Napi::Value& v);
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected,
                             const std::string& got);

/// An integer number in [lo, hi].
int64_t GetInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi);
double GetFinite(Napi::Env env, const Napi::Value& v, const std::string& what);
bool GetBool(Napi::Env env, const Napi::Value& v, const std::string& what);
/// An object that is not an array or a typed array.
Napi::Object GetObject(Napi::Env env, const Napi::Value& v, const std::string& what,
                       const std::string& expected = "an object");

/// "a Float32Array", "an Int32Array", "a Uint8Array" ("a typed array" otherwise).
const char* TypedName(napi_typedarray_type t);
/// The typed-array type that holds a column's host values.
inline napi_typedarray_type HostType(nc::DType storage) {
  return storage == nc::DType::Int32 ? napi_int32_array : napi_float32_array;
}

/// Data of a typed array of exactly `type` and `length` elements (nullptr when length is 0).
void* GetTypedData(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                   const std::string& what);
template <typename T>
T* GetTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length, const std::string& what) {
  return static_cast<T*>(GetTypedData(env, v, type, length, what));
}
/// Like GetTyped, but null/undefined give nullptr.
template <typename T>
T* GetOptionalTyped(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                    const std::string& what) {
  if (v.IsNull() || v.IsUndefined()) return nullptr;
  return GetTyped<T>(env, v, type, length, what);
}

/// A product of non-negative counts, or a RangeError when it exceeds 2^53.
int64_t Product(Napi::Env env, int64_t a, int64_t b, const std::string& what);

// ---- kernel calls: request, params, out -----------------------------------

/// The request object: queries, batch, dim, scale, scoreEmptyRows, threads,
/// segments [{store, column}]; every store must be a live store of backend b.
/// Checks everything native code relies on.
nc::ScoreRequest GetRequest(Napi::Env env, const Napi::Value& v, const BackendInfo& b);

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

}  // namespace ncb
