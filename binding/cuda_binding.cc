// CUDA availability for JS. Without NEGCACHE_WITH_CUDA the addon reports CUDA as not built.
#include "binding.h"

namespace ncb {

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

}  // namespace ncb
