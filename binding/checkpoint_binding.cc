// addon.checkpoint: the native checkpoint writer and reader (native/checkpoint.h)
// for stores of any backend, plus CRC32C for the TypeScript side.
//
//   save(path, meta, stores, blobs, options?)        synchronous
//   saveAsync(path, meta, stores, blobs, options?)   a Promise; the I/O runs on a
//       libuv worker thread (Napi::AsyncWorker). Until it settles every store
//       is busy: update/initialize throw ERR_BUSY and dispose() is deferred
//       to its end (store_wrap.cc). The worker holds references to the
//       handles so they are not collected meanwhile.
//   new Reader(path) -> .meta(), .sections(), .readStore(index, store, columnMap),
//       .readStoreAsync(index, store, columnMap), .readBlob(index), .finish(),
//       .close(), .ioStats()
//       readStoreAsync: a Promise; the rows are read on a libuv worker thread.
//       Until it settles the store is busy and the reader refuses every other
//       call with ERR_BUSY (close() included); the worker holds references to
//       both handles.
//   crc32c(bytes, crc?), crc32cSoftware(bytes, crc?), crc32cHardware()
//
// options: { chunkBytes?, failAfterBytes? } (failAfterBytes: tests simulate a
// full disk). Errors are NegativeCacheError-shaped with the nc::Error codes.
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "args.h"
#include "checkpoint.h"
#include "crc32c.h"
#include "store_wrap.h"

namespace ncb {

namespace {

std::string GetString(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsString()) ThrowType(env, what, "a string", v);
  return v.As<Napi::String>().Utf8Value();
}

/// Bytes of a typed array / Buffer as a string copy.
std::string GetBytes(Napi::Env env, const Napi::Value& v, const std::string& what) {
  if (!v.IsTypedArray()) ThrowType(env, what, "a Uint8Array", v);
  const Napi::TypedArray t = v.As<Napi::TypedArray>();
  if (t.TypedArrayType() != napi_uint8_array) ThrowType(env, what, "a Uint8Array", v);
  const Napi::Uint8Array u = v.As<Napi::Uint8Array>();
  return std::string(reinterpret_cast<const char*>(u.Data()), u.ElementLength());
}

/// The common arguments of save and saveAsync.
struct SaveArgs {
  nc::ckpt::SaveRequest req;
  std::vector<StoreWrap*> wraps;
  std::vector<Napi::Value> handles;
};

SaveArgs GetSaveArgs(const Napi::CallbackInfo& info, const char* fn) {
  Napi::Env env = info.Env();
  SaveArgs a;
  const std::string f = std::string("checkpoint.") + fn;
  a.req.path = GetString(env, info[0], f + "(path)");
  if (a.req.path.empty()) ThrowType(env, f + "(path)", "a non-empty string", info[0]);
  if (a.req.path.find('\0') != std::string::npos) ThrowType(env, f + "(path)", "a path without NUL characters", info[0]);
  a.req.meta = GetString(env, info[1], f + "(meta)");
  if (!info[2].IsArray()) ThrowType(env, f + "(stores)", "an array of cache store handles", info[2]);
  const Napi::Array stores = info[2].As<Napi::Array>();
  for (uint32_t i = 0; i < stores.Length(); ++i) {
    const std::string what = f + "(stores[" + std::to_string(i) + "])";
    const Napi::Value h = stores.Get(i);
    StoreWrap* w = StoreWrap::UnwrapAny(env, h, what);
    a.req.stores.push_back(w->live(env, what));
    a.wraps.push_back(w);
    a.handles.push_back(h);
  }
  if (!info[3].IsArray()) ThrowType(env, f + "(blobs)", "an array of Uint8Arrays", info[3]);
  const Napi::Array blobs = info[3].As<Napi::Array>();
  for (uint32_t i = 0; i < blobs.Length(); ++i)
    a.req.blobs.push_back(GetBytes(env, blobs.Get(i), f + "(blobs[" + std::to_string(i) + "])"));
  if (!info[4].IsUndefined() && !info[4].IsNull()) {
    const Napi::Object o = GetObject(env, info[4], f + "(options)");
    if (!o.Get("chunkBytes").IsUndefined())
      a.req.chunkBytes = static_cast<size_t>(GetInteger(env, o.Get("chunkBytes"), f + "(options.chunkBytes)", 4096, int64_t{1} << 30));
    if (!o.Get("failAfterBytes").IsUndefined())
      a.req.failAfterBytes = GetInteger(env, o.Get("failAfterBytes"), f + "(options.failAfterBytes)", -1, kMaxSafe);
  }
  return a;
}

void Save(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  SaveArgs a = GetSaveArgs(info, "save");
  Guard(env, [&] { nc::ckpt::save(a.req); });
}

/// A Promise whose work runs on a libuv worker thread; `cleanup` runs on the
/// main thread before the promise settles, whatever the outcome.
class TaskWorker : public Napi::AsyncWorker {
 public:
  TaskWorker(Napi::Env env, const char* name, std::function<void()> work, std::function<void(Napi::Env)> cleanup)
      : Napi::AsyncWorker(env, name), work_(std::move(work)), cleanup_(std::move(cleanup)),
        deferred_(Napi::Promise::Deferred::New(env)) {}
  Napi::Promise Promise() const { return deferred_.Promise(); }
  void Keep(const Napi::Value& v) { refs_.push_back(Napi::Persistent(v.As<Napi::Object>())); }

 protected:
  void Execute() override {
    try {
      work_();
    } catch (const nc::Error& e) {
      code_ = e.code();
      SetError(e.what());
    } catch (const std::bad_alloc&) {
      code_ = "ERR_OUT_OF_MEMORY";
      SetError("negative-cache: out of memory");
    } catch (const std::exception& e) {
      code_ = "ERR_NATIVE";
      SetError(e.what());
    }
  }
  void OnOK() override {
    done();
    deferred_.Resolve(Env().Undefined());
  }
  void OnError(const Napi::Error& e) override {
    done();
    Napi::Error err = MakeNativeError(Env(), nc::Error(code_.empty() ? "ERR_NATIVE" : code_, e.Message()));
    deferred_.Reject(err.Value());
  }

 private:
  void done() {
    if (cleanup_) cleanup_(Env());
    cleanup_ = nullptr;
    for (auto& r : refs_) r.Reset();
    refs_.clear();
  }
  std::function<void()> work_;
  std::function<void(Napi::Env)> cleanup_;
  std::vector<Napi::ObjectReference> refs_;
  Napi::Promise::Deferred deferred_;
  std::string code_;
};

Napi::Value SaveAsync(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  // Owned by the cleanup, which always runs once the work is over (a
  // request captured by value would make the std::function's copy allocate
  // vectors: a libstdc++ symbol newer than the prebuild's floor, test/50).
  SaveArgs* a = new SaveArgs(GetSaveArgs(info, "saveAsync"));
  auto* worker = new TaskWorker(
      env, "negative-cache:saveAsync", [a] { nc::ckpt::save(a->req); },
      [a](Napi::Env e) {
        for (StoreWrap* w : a->wraps) w->EndBusy(e);
        delete a;
      });
  for (const Napi::Value& h : a->handles) worker->Keep(h);
  for (StoreWrap* w : a->wraps) w->BeginBusy();
  Napi::Promise p = worker->Promise();
  worker->Queue();
  return p;
}

Napi::Value Crc(const Napi::CallbackInfo& info, bool software) {
  Napi::Env env = info.Env();
  if (!info[0].IsTypedArray()) ThrowType(env, "crc32c(bytes)", "a typed array", info[0]);
  const Napi::TypedArray t = info[0].As<Napi::TypedArray>();
  const uint32_t seed = info[1].IsUndefined() ? 0u : static_cast<uint32_t>(GetInteger(env, info[1], "crc32c(crc)", 0, 0xffffffffLL));
  const uint8_t* p = static_cast<const uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  const uint32_t c = software ? nc::crc32cSoftware(seed, p, t.ByteLength()) : nc::crc32c(seed, p, t.ByteLength());
  return Napi::Number::New(env, static_cast<double>(c));
}

class ReaderWrap : public Napi::ObjectWrap<ReaderWrap> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "CheckpointReader",
                       {InstanceMethod<&ReaderWrap::Meta>("meta"), InstanceMethod<&ReaderWrap::Sections>("sections"),
                        InstanceMethod<&ReaderWrap::ReadStore>("readStore"),
                        InstanceMethod<&ReaderWrap::ReadStoreAsync>("readStoreAsync"),
                        InstanceMethod<&ReaderWrap::IoStatsOf>("ioStats"),
                        InstanceMethod<&ReaderWrap::ReadBlob>("readBlob"), InstanceMethod<&ReaderWrap::Finish>("finish"),
                        InstanceMethod<&ReaderWrap::Close>("close")});
  }
  explicit ReaderWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ReaderWrap>(info) {
    Napi::Env env = info.Env();
    const std::string path = GetString(env, info[0], "Reader(path)");
    if (path.empty() || path.find('\0') != std::string::npos) ThrowType(env, "Reader(path)", "a non-empty path", info[0]);
    Guard(env, [&] { reader_ = std::make_unique<nc::ckpt::Reader>(path); });
  }

 private:
  nc::ckpt::Reader& reader(Napi::Env env) {
    if (busy_)
      throw MakeNativeError(env, nc::Error("ERR_BUSY", "negative-cache: the checkpoint reader is reading (readStoreAsync); wait for its promise"));
    if (!reader_) throw MakeNativeError(env, nc::Error("ERR_ARGUMENT", "negative-cache: the checkpoint reader is closed"));
    return *reader_;
  }
  Napi::Value Meta(const Napi::CallbackInfo& info) {
    const std::string& m = reader(info.Env()).meta();
    return Napi::String::New(info.Env(), m.data(), m.size());
  }
  Napi::Value Sections(const Napi::CallbackInfo& info) {
    return Napi::Number::New(info.Env(), reader(info.Env()).sections());
  }
  /// The checked arguments of readStore / readStoreAsync.
  struct StoreArgs {
    uint32_t index;
    StoreWrap* wrap;
    nc::CacheStore* store;
    std::vector<int> map;
  };
  StoreArgs GetStoreArgs(const Napi::CallbackInfo& info, const std::string& fn) {
    Napi::Env env = info.Env();
    StoreArgs a;
    a.index = static_cast<uint32_t>(GetInteger(env, info[0], fn + "(index)", 0, 0xffffffffLL));
    a.wrap = StoreWrap::UnwrapAny(env, info[1], fn + "(store)");
    a.store = a.wrap->live(env, fn + "(store)");
    if (a.wrap->busy())
      throw MakeNativeError(env, nc::Error("ERR_BUSY", "negative-cache: " + fn + ": the store is being saved"));
    if (!info[2].IsArray()) ThrowType(env, fn + "(columnMap)", "an array of column numbers", info[2]);
    const Napi::Array m = info[2].As<Napi::Array>();
    const int cols = a.store->numColumns();
    if (m.Length() != static_cast<uint32_t>(cols))
      ThrowRange(env, fn + "(columnMap)", "an array of length " + std::to_string(cols), std::to_string(m.Length()));
    std::vector<bool> seen(static_cast<size_t>(cols), false);
    for (uint32_t i = 0; i < m.Length(); ++i) {
      const int c = static_cast<int>(GetInteger(env, m.Get(i), fn + "(columnMap[" + std::to_string(i) + "])", 0, cols - 1));
      if (seen[static_cast<size_t>(c)]) ThrowRange(env, fn + "(columnMap)", "a permutation", "a repeated column");
      seen[static_cast<size_t>(c)] = true;
      a.map.push_back(c);
    }
    return a;
  }
  void ReadStore(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::ckpt::Reader& r = reader(env);
    StoreArgs a = GetStoreArgs(info, "readStore");
    Guard(env, [&] { r.readStore(a.index, *a.store, a.map); });
  }
  Napi::Value ReadStoreAsync(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::ckpt::Reader* r = &reader(env);
    StoreArgs a = GetStoreArgs(info, "readStoreAsync");
    StoreWrap* w = a.wrap;
    nc::CacheStore* s = a.store;
    // The column map is owned by the cleanup (which always runs, on the main
    // thread, once the work is over): a vector captured by value would make
    // the std::function's copy allocate one, pulling in a libstdc++ symbol
    // newer than the prebuild's GLIBCXX_3.4.28 floor, and a shared_ptr
    // pulls in glibc 2.32's __libc_single_threaded (test/50).
    const std::vector<int>* map = new std::vector<int>(std::move(a.map));
    auto* worker = new TaskWorker(
        env, "negative-cache:readStoreAsync", [r, s, index = a.index, map] { r->readStore(index, *s, *map); },
        [this, w, map](Napi::Env e) {
          delete map;
          w->EndBusy(e);
          busy_ = false;
        });
    worker->Keep(info.This());
    worker->Keep(info[1]);
    w->BeginBusy();
    busy_ = true;
    Napi::Promise p = worker->Promise();
    worker->Queue();
    return p;
  }
  Napi::Value IoStatsOf(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    const nc::ckpt::IoStats st = reader(env).ioStats();
    Napi::Object o = Napi::Object::New(env);
    o.Set("direct", Napi::Boolean::New(env, st.direct));
    o.Set("threaded", Napi::Boolean::New(env, st.threaded));
    return o;
  }
  Napi::Value ReadBlob(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    nc::ckpt::Reader& r = reader(env);
    const uint32_t index = static_cast<uint32_t>(GetInteger(env, info[0], "readBlob(index)", 0, 0xffffffffLL));
    std::string b = Guard(env, [&] { return r.readBlob(index); });
    return Napi::Buffer<uint8_t>::Copy(env, reinterpret_cast<const uint8_t*>(b.data()), b.size());
  }
  void Finish(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Guard(env, [&] { reader(env).finish(); });
    reader_.reset();
  }
  void Close(const Napi::CallbackInfo& info) {
    if (busy_)
      throw MakeNativeError(info.Env(), nc::Error("ERR_BUSY", "negative-cache: the checkpoint reader is reading (readStoreAsync); wait for its promise"));
    reader_.reset();
  }

  std::unique_ptr<nc::ckpt::Reader> reader_;
  bool busy_ = false;  // a readStoreAsync runs (the worker holds this object)
};

}  // namespace

void InitCheckpoint(Napi::Env env, Napi::Object exports) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("save", Napi::Function::New(env, Save, "save"));
  o.Set("saveAsync", Napi::Function::New(env, SaveAsync, "saveAsync"));
  o.Set("crc32c", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Crc(i, false); }, "crc32c"));
  o.Set("crc32cSoftware", Napi::Function::New(env, [](const Napi::CallbackInfo& i) { return Crc(i, true); }, "crc32cSoftware"));
  o.Set("crc32cHardware", Napi::Function::New(env, [](const Napi::CallbackInfo& i) {
          return Napi::Boolean::New(i.Env(), nc::crc32cHardware());
        }, "crc32cHardware"));
  o.Set("Reader", ReaderWrap::Define(env));
  exports.Set("checkpoint", o);
}

}  // namespace ncb
