#include "binding.h"

namespace ncb {

Napi::Error MakeNativeError(Napi::Env env, const nc::Error& e) {
  Napi::Error err = Napi::Error::New(env, e.what());
  err.Set("code", Napi::String::New(env, e.code()));
  err.Set("name", Napi::String::New(env, "NegativeCacheError"));
  return err;
}

namespace {
const BackendInfo kCpu{&nc::cpuBackend(), "CacheStore", "CacheStore", "a native cache store handle"};
}  // namespace

}  // namespace ncb

static Napi::Object Init(Napi::Env env, Napi::Object exports) {
  ncb::DefineBackend(env, exports, ncb::kCpu);
  ncb::InitCpu(env, exports);
  ncb::InitCuda(env, exports);
  ncb::InitCheckpoint(env, exports);
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

NODE_API_MODULE(negative_cache, Init)
