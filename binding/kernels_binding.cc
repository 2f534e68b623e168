// The kernel entry points, one set for every backend: each JS function is
// bound to a BackendInfo (its data pointer) and dispatches through
// nc::Backend. Every argument that protects memory is re-checked here (typed
// array types and lengths, column widths, counts; see args.h); the calls run
// synchronously because the loss runs inside tfjs tapes. Outputs are
// JS-allocated typed arrays written in place.
#include <cmath>
#include <limits>
#include <utility>
#include <vector>
#include <string>
#include <vector>

#include "args.h"
#include "binding.h"
#include "cpu/dispatch.h"
#include "store_wrap.h"

namespace ncb {

namespace {

const BackendInfo& Bound(const Napi::CallbackInfo& info) { return *static_cast<const BackendInfo*>(info.Data()); }

// scoreAndSample(request, params, out)
void ScoreAndSample(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BackendInfo& b = Bound(info);
  const nc::ScoreRequest req = GetRequest(env, info[0], b);
  const nc::SampleParams params = GetParams(env, info[1]);
  OutArrays a;
  GetOut(env, info[2], req.batch, params.numDraws, a);
  Guard(env, [&] { b.backend->scoreAndSample(req, params, a.out); });
  CopyCandidates(a, req.batch);
}

// scoreGroupMax(request, groups, outScores, outRows)
void ScoreGroupMax(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BackendInfo& b = Bound(info);
  const nc::ScoreRequest req = GetRequest(env, info[0], b);
  const int64_t n = TotalRows(req);
  if (n < 1) ThrowRange(env, "request.segments", "at least one cache row for topK grouping", "0 rows");
  const int64_t groups = GetInteger(env, info[1], "groups", 1, n);
  const int64_t len = Product(env, req.batch, groups, "outScores");
  float* scores = GetTyped<float>(env, info[2], napi_float32_array, len, "outScores");
  int32_t* rows = GetTyped<int32_t>(env, info[3], napi_int32_array, len, "outRows");
  Guard(env, [&] { b.backend->scoreGroupMax(req, groups, scores, rows); });
}

// scoreMatrix(request, out)
void ScoreMatrix(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BackendInfo& b = Bound(info);
  const nc::ScoreRequest req = GetRequest(env, info[0], b);
  const int64_t len = Product(env, req.batch, TotalRows(req), "out");
  float* out = GetTyped<float>(env, info[1], napi_float32_array, len, "out");
  Guard(env, [&] { b.backend->scoreMatrix(req, out); });
}

// cacheLse(request, extra, outLse, outWeighted, outCandidates): the
// full-cache log-sum-exp and its softmax-weighted mean embedding (cache_lse.h);
// extra is null or a finite Float32Array of batch x dim.
void CacheLse(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const BackendInfo& b = Bound(info);
  const nc::ScoreRequest req = GetRequest(env, info[0], b);
  const int64_t bd = Product(env, req.batch, req.dim, "outWeighted");
  const float* extra = GetOptionalTyped<const float>(env, info[1], napi_float32_array, bd, "extra");
  if (extra != nullptr) {
    for (int64_t i = 0; i < bd; ++i)
      if (!std::isfinite(extra[i])) ThrowRange(env, "extra", "finite", "a non-finite value at index " + std::to_string(i));
  }
  nc::CacheLseOutput out{};
  out.lse = GetTyped<float>(env, info[2], napi_float32_array, req.batch, "outLse");
  out.weighted = GetTyped<float>(env, info[3], napi_float32_array, bd, "outWeighted");
  int32_t* cand32 = GetTyped<int32_t>(env, info[4], napi_int32_array, req.batch, "outCandidates");
  std::vector<int64_t> cand(static_cast<size_t>(req.batch), 0);
  out.candidates = cand.data();
  Guard(env, [&] { b.backend->cacheLse(req, extra, out); });
  for (int64_t i = 0; i < req.batch; ++i) cand32[i] = static_cast<int32_t>(cand[static_cast<size_t>(i)]);
}

// sampleCandidates(scores, batch, cols, params, threads, out): a host matrix,
// the same on every backend, so only the CPU's is exported.
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
  Guard(env, [&] { nc::cpuBackend().sampleCandidates(scores, batch, cols, params, threads, a.out); });
  CopyCandidates(a, batch);
}

Napi::Value CpuFeatures(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  const nc::cpu::Features f = nc::cpu::detectedFeatures();
  Napi::Object o = Napi::Object::New(env);
  const std::pair<const char*, bool> flags[] = {
      {"avx2", f.avx2}, {"fma", f.fma}, {"f16c", f.f16c}, {"avx512f", f.avx512f}, {"avx512bw", f.avx512bw},
      {"avx512vl", f.avx512vl}, {"avx512dq", f.avx512dq}, {"avx512bf16", f.avx512bf16}, {"amxTile", f.amxTile},
      {"amxBf16", f.amxBf16}, {"neon", f.neon}};
  for (const auto& kv : flags) o.Set(kv.first, Napi::Boolean::New(env, kv.second));
  o.Set("usingAvx2", Napi::Boolean::New(env, nc::cpu::usingAvx2()));
  o.Set("tier", Napi::String::New(env, nc::cpu::tierName()));
  const std::vector<std::string> usable = nc::cpu::usableTiers();
  Napi::Array tiers = Napi::Array::New(env, usable.size());
  for (size_t i = 0; i < usable.size(); ++i) tiers.Set(static_cast<uint32_t>(i), Napi::String::New(env, usable[i]));
  o.Set("usableTiers", tiers);
  const std::string cap = nc::cpu::isaCap(), bad = nc::cpu::invalidIsaEnv();
  o.Set("isaCap", cap.empty() ? env.Null() : Napi::String::New(env, cap));
  o.Set("invalidIsaEnv", bad.empty() ? env.Null() : Napi::String::New(env, bad));
  return o;
}

void SetForceBaseline(const Napi::CallbackInfo& info) {
  nc::cpu::setForceBaseline(GetBool(info.Env(), info[0], "force"));
}

std::string CapNamesList() {
  std::string s;
  for (const std::string& n : nc::cpu::isaCapNames()) s += (s.empty() ? "" : ", ") + n;
  return s;
}

/// setIsaCap(name | null): caps the tier (null = no cap).
void SetIsaCap(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info[0].IsNull() || info[0].IsUndefined()) {
    nc::cpu::setIsaCap("");
    return;
  }
  if (!info[0].IsString()) ThrowType(env, "isa", "a string (" + CapNamesList() + ") or null", info[0]);
  const std::string name = info[0].As<Napi::String>().Utf8Value();
  if (name.empty() || !nc::cpu::setIsaCap(name)) ThrowRange(env, "isa", "one of " + CapNamesList(), "'" + name + "'");
}

/// measurePeak(tier, threads, seconds): GFLOP/s of the tier's multiply-add
/// probe, or -1 when that tier cannot run here.
Napi::Value MeasurePeak(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) ThrowType(env, "tier", "a string", info[0]);
  const std::string tier = info[0].As<Napi::String>().Utf8Value();
  const int threads = static_cast<int>(GetInteger(env, info[1], "threads", 0, 256));
  const double seconds = GetFinite(env, info[2], "seconds");
  if (!(seconds > 0 && seconds <= 10)) ThrowRange(env, "seconds", "in (0, 10]", std::to_string(seconds));
  double g = -1;
  Guard(env, [&] { g = nc::cpu::measurePeakGflops(tier, threads, seconds); });
  return Napi::Number::New(env, g);
}

}  // namespace

void DefineBackend(Napi::Env env, Napi::Object target, const BackendInfo& b) {
  void* data = const_cast<BackendInfo*>(&b);
  target.Set("CacheStore", StoreWrap::Define(env, b));
  target.Set("scoreAndSample", Napi::Function::New<ScoreAndSample>(env, "scoreAndSample", data));
  target.Set("scoreGroupMax", Napi::Function::New<ScoreGroupMax>(env, "scoreGroupMax", data));
  target.Set("scoreMatrix", Napi::Function::New<ScoreMatrix>(env, "scoreMatrix", data));
  target.Set("cacheLse", Napi::Function::New<CacheLse>(env, "cacheLse", data));
}

void InitCpu(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleCandidates", Napi::Function::New<SampleCandidates>(env, "sampleCandidates"));
  exports.Set("cpuFeatures", Napi::Function::New<CpuFeatures>(env, "cpuFeatures"));
  exports.Set("setForceBaseline", Napi::Function::New<SetForceBaseline>(env, "setForceBaseline"));
  exports.Set("setIsaCap", Napi::Function::New<SetIsaCap>(env, "setIsaCap"));
  exports.Set("measurePeak", Napi::Function::New<MeasurePeak>(env, "measurePeak"));
}

}  // namespace ncb
