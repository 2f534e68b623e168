// The kernel entry points, one set for every backend: each JS function is
// bound to a BackendInfo (its data pointer) and dispatches through
// nc::Backend. Every argument that protects memory is re-checked here (typed
// array types and lengths, column widths, counts; see args.h); the calls run
// synchronously because the loss runs inside tfjs tapes. Outputs are
// JS-allocated typed arrays written in place.
#include <cmath>
#include <limits>
#include <string>

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
  o.Set("avx2", Napi::Boolean::New(env, f.avx2));
  o.Set("fma", Napi::Boolean::New(env, f.fma));
  o.Set("f16c", Napi::Boolean::New(env, f.f16c));
  o.Set("neon", Napi::Boolean::New(env, f.neon));
  o.Set("usingAvx2", Napi::Boolean::New(env, nc::cpu::usingAvx2()));
  o.Set("tier", Napi::String::New(env, nc::cpu::tierName()));
  return o;
}

void SetForceBaseline(const Napi::CallbackInfo& info) {
  nc::cpu::setForceBaseline(GetBool(info.Env(), info[0], "force"));
}

}  // namespace

void DefineBackend(Napi::Env env, Napi::Object target, const BackendInfo& b) {
  void* data = const_cast<BackendInfo*>(&b);
  target.Set("CacheStore", StoreWrap::Define(env, b));
  target.Set("scoreAndSample", Napi::Function::New<ScoreAndSample>(env, "scoreAndSample", data));
  target.Set("scoreGroupMax", Napi::Function::New<ScoreGroupMax>(env, "scoreGroupMax", data));
  target.Set("scoreMatrix", Napi::Function::New<ScoreMatrix>(env, "scoreMatrix", data));
}

void InitCpu(Napi::Env env, Napi::Object exports) {
  exports.Set("sampleCandidates", Napi::Function::New<SampleCandidates>(env, "sampleCandidates"));
  exports.Set("cpuFeatures", Napi::Function::New<CpuFeatures>(env, "cpuFeatures"));
  exports.Set("setForceBaseline", Napi::Function::New<SetForceBaseline>(env, "setForceBaseline"));
}

}  // namespace ncb
