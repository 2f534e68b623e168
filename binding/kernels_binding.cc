// Node-API glue of the scoring kernels (native/kernels.h). Every argument that
// protects memory is re-checked here (typed array types and lengths, column
// widths, counts; see args.h); the calls run synchronously because the loss
// runs inside tfjs tapes. Outputs are JS-allocated typed arrays written in place.
#include <cmath>
#include <limits>
#include <string>

#include "args.h"
#include "binding.h"
#include "cache_store.h"
#include "kernels.h"

namespace ncb {

namespace {

/// The request; segments must be CPU stores (addon.CacheStore handles).
nc::ScoreRequest GetCpuRequest(Napi::Env env, const Napi::Value& v) {
  return GetRequest<nc::CacheStore>(
      env, v, /*withThreads=*/true,
      [env](const Napi::Value& store, const std::string& what) { return UnwrapCacheStore(env, store, what.c_str()); },
      [](const nc::CacheStore& s) { return s.filled(); });
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
  exports.Set("scoreAndSample", Napi::Function::New<ScoreAndSampleEntry<GetCpuRequest, nc::scoreAndSample>>(
                                    env, "scoreAndSample"));
  exports.Set("scoreGroupMax",
              Napi::Function::New<ScoreGroupMaxEntry<GetCpuRequest, nc::scoreGroupMax>>(env, "scoreGroupMax"));
  exports.Set("sampleCandidates", Napi::Function::New<SampleCandidates>(env, "sampleCandidates"));
  exports.Set("scoreMatrix", Napi::Function::New<ScoreMatrixEntry<GetCpuRequest, nc::scoreMatrix>>(env, "scoreMatrix"));
  exports.Set("cpuFeatures", Napi::Function::New<CpuFeatures>(env, "cpuFeatures"));
  exports.Set("setForceBaseline", Napi::Function::New<SetForceBaseline>(env, "setForceBaseline"));
}

}  // namespace ncb
