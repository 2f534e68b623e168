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
// As in the CPU glue (the same store wrap and request parsing: store_wrap.h,
// args.h), every typed array's type and length and every index is checked
// here before native code sees a pointer. Without NEGCACHE_WITH_CUDA
// only built/available/deviceCount/error exist and report "not built".
#include <string>

#include "binding.h"
#ifdef NEGCACHE_WITH_CUDA
#include "args.h"
#include "cuda/cuda_backend.h"
#include "store_wrap.h"
#endif

namespace ncb {

#ifdef NEGCACHE_WITH_CUDA

namespace {

struct CudaStoreTraits {
  using Store = nc::cuda::CudaCacheStore;
  static constexpr const char* kClassName = "CudaCacheStore";
  static constexpr const char* kCtorName = "cuda.CacheStore";
  static constexpr const char* kHandle = "a CUDA cache store handle";
  // Marks objects created by addon.cuda.CacheStore (distinct from the CPU tag).
  static constexpr napi_type_tag kTag = {0x6e6363756461ULL, 0x2d73746f72652d31ULL};
  static constexpr Numbers kNumbers = Numbers::kFixed;

  static Napi::Object ColumnObject(Napi::Env env, const Napi::Value& v, const std::string& what) {
    return GetObject(env, v, what);
  }
  static Napi::Object UpdateObject(Napi::Env env, const Napi::Value& v) { return GetObject(env, v, "update(u)"); }
  static int64_t Elements(Napi::Env env, int64_t rows, int64_t width, const std::string& what) {
    return Product(env, rows, width, what);
  }
  static int64_t AccountedBytes(const Store& s, int64_t size) {
    return static_cast<int64_t>(s.bookkeepingBytesPerRow()) * size;  // host memory only
  }
};

using CudaStoreWrap = StoreWrap<CudaStoreTraits>;

/// The request (as for the CPU kernels); segments must be CUDA stores.
nc::ScoreRequest GetCudaRequest(Napi::Env env, const Napi::Value& v) {
  return GetRequest<nc::cuda::CudaCacheStore>(
      env, v, /*withThreads=*/false,
      [env](const Napi::Value& store, const std::string& what) { return CudaStoreWrap::UnwrapStore(env, store, what); },
      [](const nc::cuda::CudaCacheStore& s) { return s.filledDevice(); });
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
  cuda.Set("scoreAndSample", Napi::Function::New<ScoreAndSampleEntry<GetCudaRequest, nc::cuda::scoreAndSample>>(
                                 env, "scoreAndSample"));
  cuda.Set("scoreGroupMax",
           Napi::Function::New<ScoreGroupMaxEntry<GetCudaRequest, nc::cuda::scoreGroupMax>>(env, "scoreGroupMax"));
  cuda.Set("scoreMatrix",
           Napi::Function::New<ScoreMatrixEntry<GetCudaRequest, nc::cuda::scoreMatrix>>(env, "scoreMatrix"));
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
