// Thin Node-API glue. Each part registers its exports in its own file; the
// per-environment state lives in AddonData so the addon is context-aware
// (it loads in every worker_thread).
#pragma once
#include <napi.h>

#include "common.h"

namespace nc {
class CacheStore;
}

namespace ncb {

struct AddonData {
  Napi::FunctionReference cacheStoreCtor;  // set by InitCacheStore
};

inline AddonData* GetAddonData(Napi::Env env) { return env.GetInstanceData<AddonData>(); }

/// A NegativeCacheError-shaped JS error (name, message, .code) from nc::Error.
Napi::Error MakeNativeError(Napi::Env env, const nc::Error& e);
/// Runs fn, turning nc::Error / std::bad_alloc / std::exception into JS errors.
template <typename Fn>
auto Guard(Napi::Env env, Fn&& fn) -> decltype(fn()) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (const nc::Error& e) {
    throw MakeNativeError(env, e);
  } catch (const std::bad_alloc&) {
    throw MakeNativeError(env, nc::Error("ERR_OUT_OF_MEMORY", "negative-cache: out of memory"));
  } catch (const std::exception& e) {
    throw MakeNativeError(env, nc::Error("ERR_NATIVE", e.what()));
  }
}

void InitCacheStore(Napi::Env env, Napi::Object exports);  // cache_store_binding.cc
void InitKernels(Napi::Env env, Napi::Object exports);     // kernels_binding.cc
void InitCuda(Napi::Env env, Napi::Object exports);        // cuda_binding.cc

/// The nc::CacheStore behind a JS CacheStore handle (type-tag checked);
/// throws a JS TypeError naming `what` if v is not a live store.
nc::CacheStore* UnwrapCacheStore(Napi::Env env, Napi::Value v, const char* what);

}  // namespace ncb
