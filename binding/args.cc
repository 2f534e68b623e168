#include "args.h"

#include <cstdio>

namespace ncb {

namespace {

std::string DescribeNumber(double d, Numbers numbers) {
  if (numbers == Numbers::kRoundTrip) {
    if (std::isfinite(d) && std::floor(d) == d && std::fabs(d) < 9.007199254740992e15)
      return std::to_string(static_cast<int64_t>(d));
    if (std::isnan(d)) return "NaN";
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.17g", d);
    return buf;
  }
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  if (std::floor(d) == d && std::fabs(d) < 1e18) return std::to_string(static_cast<int64_t>(d));
  return std::to_string(d);
}

}  // namespace

std::string Describe(const Napi::Value& v, Numbers numbers) {
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
  if (v.IsNumber()) return DescribeNumber(v.As<Napi::Number>().DoubleValue(), numbers);
  if (v.IsArray()) return "an array";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  if (v.IsObject()) return "an object";
  return "a value";
}

void ThrowType(Napi::Env env, const std::string& what, const std::string& expected, const Napi::Value& v,
               Numbers numbers) {
  throw Napi::TypeError::New(env,
                             "negative-cache: " + what + " must be " + expected + "; got " + Describe(v, numbers));
}

void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected, const std::string& got) {
  throw Napi::RangeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + got);
}

int64_t GetInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi,
                   Numbers numbers) {
  if (!v.IsNumber()) ThrowType(env, what, "an integer", v, numbers);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
    ThrowRange(env, what, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
               Describe(v, numbers));
  }
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

void* GetTypedData(Napi::Env env, const Napi::Value& v, napi_typedarray_type type, int64_t length,
                   const std::string& what, Numbers numbers) {
  const std::string expected = std::string(TypedName(type)) + " of length " + std::to_string(length);
  if (!v.IsTypedArray()) ThrowType(env, what, expected, v, numbers);
  const Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != type) ThrowType(env, what, expected, v, numbers);
  if (static_cast<int64_t>(t.ElementLength()) != length) ThrowRange(env, what, expected, Describe(v, numbers));
  if (length == 0) return nullptr;
  return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
}

int64_t Product(Napi::Env env, int64_t a, int64_t b, const std::string& what) {
  if (a != 0 && b > kMaxSafe / a)
    ThrowRange(env, what, "at most 2^53 elements", std::to_string(a) + " x " + std::to_string(b));
  return a * b;
}

int64_t TotalRows(const nc::ScoreRequest& r) {
  int64_t n = 0;
  for (const nc::Segment& s : r.segments) n += s.rows;
  return n;
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
  for (int64_t b = 0; b < batch; ++b) a.candidates32[b] = static_cast<int32_t>(a.candidates[static_cast<size_t>(b)]);
}

}  // namespace ncb
