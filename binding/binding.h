// Thin Node-API glue over the one native interface (native/backend.h): one
// cache-store ObjectWrap (store_wrap.h) and one set of kernel entry points
// (kernels_binding.cc), each bound to a backend. The addon is context-aware
// (it loads in every worker_thread): it keeps no per-environment state.
#pragma once
#include <napi.h>

#include "backend.h"
#include "common.h"

namespace ncb {

/// A backend as JS sees it: the native backend and the names its messages use.
struct BackendInfo {
  const nc::Backend* backend;
  const char* className;  // JS class name of its stores
  const char* ctorName;   // the constructor in messages: "CacheStore", "cuda.CacheStore"
  const char* handle;     // what a store handle of it is called: "a native cache store handle"
};

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

/// Sets `target`.CacheStore and the kernel entry points of backend `b`
/// (kernels_binding.cc); `b` must outlive the addon.
void DefineBackend(Napi::Env env, Napi::Object target, const BackendInfo& b);
/// The CPU-only functions: sampleCandidates, cpuFeatures, setForceBaseline.
void InitCpu(Napi::Env env, Napi::Object exports);
/// addon.checkpoint (checkpoint_binding.cc).
void InitCheckpoint(Napi::Env env, Napi::Object exports);
/// addon.cuda (cuda_binding.cc).
void InitCuda(Napi::Env env, Napi::Object exports);

}  // namespace ncb
