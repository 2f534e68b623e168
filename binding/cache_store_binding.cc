// PLACEHOLDER (owner: cache store work, issue 2): replaced by the CacheStore ObjectWrap.
#include "binding.h"
namespace ncb {
void InitCacheStore(Napi::Env, Napi::Object) {}
nc::CacheStore* UnwrapCacheStore(Napi::Env env, Napi::Value, const char* what) {
  throw Napi::TypeError::New(env, std::string(what) + ": no native cache store in this build");
}
}  // namespace ncb
