// The one cache-store ObjectWrap: a JS handle owning an nc::CacheStore of a
// backend (addon.CacheStore for the CPU, addon.cuda.CacheStore for CUDA: the
// same class defined once per backend). Every typed array's type and length
// and every unmasked index is checked here before native code sees a
// pointer (TypeScript validates too; this is the check that protects memory).
#pragma once
#include <memory>
#include <string>

#include "binding.h"

namespace ncb {

class StoreWrap : public Napi::ObjectWrap<StoreWrap> {
 public:
  /// The JS class of backend b's stores.
  static Napi::Function Define(Napi::Env env, const BackendInfo& b);

  /// The store behind a JS handle of backend b (type-tag checked): a
  /// TypeError naming `what` if v is not such a handle, ERR_DISPOSED if it
  /// was disposed.
  static nc::CacheStore* UnwrapStore(Napi::Env env, const Napi::Value& v, const std::string& what,
                                     const BackendInfo& b);

  /// The wrap behind a store handle of any backend (type-tag checked): a
  /// TypeError naming `what` otherwise. The store may be disposed (check live()).
  static StoreWrap* UnwrapAny(Napi::Env env, const Napi::Value& v, const std::string& what);

  /// The live store; ERR_DISPOSED naming `what` after dispose().
  nc::CacheStore* live(Napi::Env env, const std::string& what) { return store(env, what); }
  /// An asynchronous save reads the store (checkpoint_binding.cc): while any
  /// runs, update/initialize throw ERR_BUSY and dispose() waits for the last.
  void BeginBusy() { ++busy_; }
  void EndBusy(Napi::Env env);
  bool busy() const { return busy_ > 0; }

  explicit StoreWrap(const Napi::CallbackInfo& info);
  ~StoreWrap() override;

 private:
  nc::CacheStore* store(Napi::Env env, const std::string& what);
  /// store() plus ERR_BUSY while an asynchronous save reads it.
  nc::CacheStore* writable(Napi::Env env, const char* call);
  void Release(Napi::Env env);
  int Column(Napi::Env env, const Napi::Value& v, const char* what);

  void Initialize(const Napi::CallbackInfo& info);
  void Update(const Napi::CallbackInfo& info);
  void ReadColumn(const Napi::CallbackInfo& info);
  void ReadAge(const Napi::CallbackInfo& info);
  void ReadFilled(const Napi::CallbackInfo& info);
  void GatherRows(const Napi::CallbackInfo& info);
  Napi::Value Stats(const Napi::CallbackInfo& info);
  void Dispose(const Napi::CallbackInfo& info);

  const BackendInfo* backend_;
  std::unique_ptr<nc::CacheStore> store_;
  int64_t accounted_ = 0;
  int busy_ = 0;
  bool disposeWhenIdle_ = false;
};

}  // namespace ncb
