// addon.cuda: the CUDA backend through the same store wrap and kernel entry
// points as the CPU (DefineBackend), plus its device functions.
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
// Without NEGCACHE_WITH_CUDA only built/available/deviceCount/error exist and
// report "not built".
#include <string>

#include "binding.h"
#ifdef NEGCACHE_WITH_CUDA
#include "args.h"
#include "cuda/cuda_backend.h"
#endif

namespace ncb {

#ifdef NEGCACHE_WITH_CUDA

namespace {
const BackendInfo kCuda{&nc::cuda::cudaBackend(), "CudaCacheStore", "cuda.CacheStore", "a CUDA cache store handle"};
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
  DefineBackend(env, cuda, kCuda);
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
