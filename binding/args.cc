#include "args.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

#include "store_wrap.h"

namespace ncb {

namespace {

/// A number as JavaScript prints it: integers exactly, other values in the
/// fewest digits that read back the same ("1.5", "0.1"), "Infinity", "NaN".
std::string DescribeNumber(double d) {
  if (std::isnan(d)) return "NaN";
  if (std::isinf(d)) return d > 0 ? "Infinity" : "-Infinity";
  if (std::floor(d) == d && std::fabs(d) < 9.007199254740992e15) return std::to_string(static_cast<int64_t>(d));
  char buf[32];
  for (int digits = 15; digits <= 17; ++digits) {
    std::snprintf(buf, sizeof buf, "%.*g", digits, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  return buf;
}

}  // namespace

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
  if (v.IsNumber()) return DescribeNumber(v.As<Napi::Number>().DoubleValue());
  if (v.IsArray()) return "an array";
  if (v.IsString()) return "a string";
  if (v.IsBoolean()) return "a boolean";
  if (v.IsObject()) return "an object";
  return "a value";
}

void ThrowType(Napi::Env env, const std::string& what, const std::string& expected, const Napi::Value& v) {
  throw Napi::TypeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + Describe(v));
}

void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected, const std::string& got) {
  throw Napi::RangeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + got);
}

int64_t GetInteger(Napi::Env env, const Napi::Value& v, const std::string& what, int64_t lo, int64_t hi) {
  if (!v.IsNumber()) ThrowType(env, what, "an integer", v);
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!std::isfinite(d) || std::floor(d) != d || d < static_cast<double>(lo) || d > static_cast<double>(hi)) {
    ThrowRange(env, what, "an integer in [" + std::to_string(lo) + ", " + std::to_string(hi) + "]",
               Describe(v));
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

Napi::Object GetObject(Napi::Env env, const Napi::Value& v, const std::string& what, const std::string& expected) {
  if (!v.IsObject() || v.IsArray() || v.IsTypedArray()) ThrowType(env, what, expected, v);
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
                   const std::string& what) {
  const std::string expected = std::string(TypedName(type)) + " of length " + std::to_string(length);
  if (!v.IsTypedArray()) ThrowType(env, what, expected, v);
  const Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != type) ThrowType(env, what, expected, v);
  if (static_cast<int64_t>(t.ElementLength()) != length) ThrowRange(env, what, expected, Describe(v));
  if (length == 0) return nullptr;
  return static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
}

int64_t Product(Napi::Env env, int64_t a, int64_t b, const std::string& what) {
  if (a != 0 && b > kMaxSafe / a)
    ThrowRange(env, what, "at most 2^53 elements", std::to_string(a) + " x " + std::to_string(b));
  return a * b;
}

namespace {

/// Optional request.exclusions (Int32Array of global rows) with
/// request.exclusionOffsets (Int32Array, batch + 1 entries): both or neither.
void GetExclusions(Napi::Env env, const Napi::Object& o, nc::ScoreRequest& r, int64_t total) {
  const Napi::Value ov = o.Get("exclusionOffsets"), ev = o.Get("exclusions");
  const bool hasO = !(ov.IsUndefined() || ov.IsNull()), hasE = !(ev.IsUndefined() || ev.IsNull());
  if (!hasO && !hasE) return;
  if (!hasO) ThrowType(env, "request.exclusionOffsets", "an Int32Array of batch + 1 offsets (with request.exclusions)", ov);
  if (!hasE) ThrowType(env, "request.exclusions", "an Int32Array of rows (with request.exclusionOffsets)", ev);
  const int32_t* offs = GetTyped<const int32_t>(env, ov, napi_int32_array, r.batch + 1, "request.exclusionOffsets");
  if (offs[0] != 0) ThrowRange(env, "request.exclusionOffsets", "0 at index 0", std::to_string(offs[0]));
  for (int64_t b = 0; b < r.batch; ++b) {
    if (offs[b + 1] < offs[b])
      ThrowRange(env, "request.exclusionOffsets", "non-decreasing",
                 std::to_string(offs[b + 1]) + " after " + std::to_string(offs[b]) + " at index " + std::to_string(b + 1));
  }
  const int64_t count = offs[r.batch];
  const int32_t* rows = GetTyped<const int32_t>(env, ev, napi_int32_array, count, "request.exclusions");
  for (int64_t i = 0; i < count; ++i) {
    if (rows[i] < 0 || rows[i] >= total)
      ThrowRange(env, "request.exclusions", "rows in [0, " + std::to_string(total) + ")",
                 std::to_string(rows[i]) + " at index " + std::to_string(i));
  }
  if (count == 0) return;  // nothing excluded
  r.exclusions = rows;
  r.exclusionOffsets = offs;
}

}  // namespace

nc::ScoreRequest GetRequest(Napi::Env env, const Napi::Value& v, const BackendInfo& b) {
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
  r.scoreEmptyRows = o.Get("scoreEmptyRows").ToBoolean().Value();
  const Napi::Value tv = o.Get("threads");
  r.threads = tv.IsUndefined() ? 0 : static_cast<int>(GetInteger(env, tv, "request.threads", 0, 1024));
  const Napi::Value sv = o.Get("segments");
  if (!sv.IsArray()) ThrowType(env, "request.segments", "an array", sv);
  const Napi::Array segs = sv.As<Napi::Array>();
  int64_t total = 0;
  for (uint32_t i = 0; i < segs.Length(); ++i) {
    const std::string what = "request.segments[" + std::to_string(i) + "]";
    const Napi::Object so = GetObject(env, segs.Get(i), what);
    const nc::CacheStore* store = StoreWrap::UnwrapStore(env, so.Get("store"), what + ".store", b);
    const int64_t c = GetInteger(env, so.Get("column"), what + ".column", 0, store->numColumns() - 1);
    const nc::ColumnSpec& spec = store->column(static_cast<int>(c));
    if (!nc::isFloat(spec.storage))
      ThrowRange(env, what + ".column", "a float column", "the int32 column '" + spec.name + "'");
    if (spec.width != r.dim)
      ThrowRange(env, what, "a column of width dim = " + std::to_string(r.dim),
                 "column '" + spec.name + "' of width " + std::to_string(spec.width));
    total += store->size();
    if (total > kMaxInt32) ThrowRange(env, "request.segments", "at most 2^31 - 1 rows in all", std::to_string(total));
    r.segments.push_back(store->segment(static_cast<int>(c)));
  }
  GetExclusions(env, o, r, total);
  return r;
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
  const Napi::Value ro = o.Get("rowOffset"), co = o.Get("columnOffset");
  if (!ro.IsUndefined()) p.rowOffset = GetInteger(env, ro, "params.rowOffset", 0, 0xffffffffLL);
  if (!co.IsUndefined()) p.columnOffset = GetInteger(env, co, "params.columnOffset", 0, kMaxInt32);
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
