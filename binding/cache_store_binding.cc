// addon.CacheStore: the cache-store ObjectWrap (store_wrap.h) over an
// nc::CacheStore in host memory.
#include <string>

#include "binding.h"
#include "cache_store.h"
#include "store_wrap.h"

namespace ncb {

namespace {

struct CpuStoreTraits {
  using Store = nc::CacheStore;
  static constexpr const char* kClassName = "CacheStore";
  static constexpr const char* kCtorName = "CacheStore";
  static constexpr const char* kHandle = "a native cache store handle";
  // Marks objects created by this addon's CacheStore constructor.
  static constexpr napi_type_tag kTag = {0x6e656763616368ULL, 0x652d73746f726531ULL};
  static constexpr Numbers kNumbers = Numbers::kRoundTrip;

  static Napi::Object ColumnObject(Napi::Env env, const Napi::Value& v, const std::string& what) {
    if (!v.IsObject()) ThrowType(env, what, "an object {name, storage, width}", v, kNumbers);
    return v.As<Napi::Object>();
  }
  static Napi::Object UpdateObject(Napi::Env env, const Napi::Value& v) {
    if (!v.IsObject()) ThrowType(env, "update(u)", "an object", v, kNumbers);
    return v.As<Napi::Object>();
  }
  // A live store's size * width elements are allocated; other products are
  // compared against typed-array lengths.
  static int64_t Elements(Napi::Env, int64_t rows, int64_t width, const std::string&) { return rows * width; }
  static int64_t AccountedBytes(const Store& s, int64_t size) {
    return static_cast<int64_t>(s.dataBytes() + s.bookkeepingBytesPerRow() * size);
  }
};

using CacheStoreWrap = StoreWrap<CpuStoreTraits>;

}  // namespace

void InitCacheStore(Napi::Env env, Napi::Object exports) {
  Napi::Function ctor = CacheStoreWrap::Define(env);
  GetAddonData(env)->cacheStoreCtor = Napi::Persistent(ctor);
  exports.Set("CacheStore", ctor);
}

nc::CacheStore* UnwrapCacheStore(Napi::Env env, Napi::Value v, const char* what) {
  return CacheStoreWrap::UnwrapStore(env, v, what);
}

}  // namespace ncb
