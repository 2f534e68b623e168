// negative_cache_mpi.node: the optional MPI part of negative-cache (see
// docs/distributed.md), a separate small addon so the main addon never links
// libmpi. Built by cmake/mpi.cmake only when CMake finds MPI.
//
// Every collective starts with a header exchange: each rank sends a small
// fixed-size header to every peer and receives one from each (nonblocking
// point-to-point, polled against a deadline). That exchange is what names the
// ranks that did not arrive in time, and it makes all ranks agree that they
// called the same collective with compatible sizes before any data moves (MPI
// itself would hang or fail obscurely). The data then moves with a nonblocking
// MPI collective on native staging buffers, polled against the same deadline.
// A request abandoned at its deadline keeps its buffers for the rest of the
// process (leaked on purpose), so MPI never touches freed memory; the process
// can then only end MPI with MPI_Abort.
//
// All JS-facing checks of meaning live in src/distributed; this file checks
// what protects memory (types, lengths, counts) and MPI's int limits.
#include <dlfcn.h>
#include <mpi.h>
#include <napi.h>
#include <sched.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

constexpr int kTagHeader = 0x4e43;
constexpr int32_t kMagic = 0x4e434d31;
constexpr size_t kLabelBytes = 64;

enum Op : int32_t { kBarrier = 1, kAllreduce, kBcast, kAllgatherv, kAlltoallv, kExit };
enum DType : int32_t { kNoType = -1, kF32 = 0, kF64, kI32, kU8 };
enum Reduce : int32_t { kSum = 0, kMax, kMin };

/// What each rank tells every peer before a collective (sent as MPI_BYTE).
struct Header {
  int32_t magic;
  int32_t op;
  int64_t seq;          // collective number, the same on every rank in step
  int32_t dtype;
  int32_t arg;          // broadcast root, reduction, or exit code
  int64_t count;        // elements this rank contributes
  int64_t forYou;       // alltoallv: elements this rank sends to the receiver
  uint64_t signature;   // caller-defined layout hash; must agree
  char label[kLabelBytes];  // the JS method ('allReduceMean'), or the exit reason
};
static_assert(sizeof(Header) == 112, "docs/distributed.md gives the header size");

struct State {
  napi_env owner = nullptr;  // MPI is per process: only the env that initialized it may use it
  bool initialized = false;
  bool ownsMpi = false;      // we called MPI_Init_thread, so we call MPI_Finalize
  bool finalized = false;
  int rank = 0, size = 1, provided = 0;
  MPI_Comm comm = MPI_COMM_NULL;
  int64_t seq = 0;
  std::string failCode, failMessage;  // set once the communicator must not be used again
  bool abandoned = false;    // a request was left pending: only MPI_Abort can end MPI now
};
State g;

const char* DTypeName(int32_t d) {
  switch (d) {
    case kF32: return "float32";
    case kF64: return "float64";
    case kI32: return "int32";
    case kU8: return "uint8";
    default: return "none";
  }
}
size_t DTypeBytes(int32_t d) { return d == kF64 ? 8 : d == kU8 ? 1 : 4; }
MPI_Datatype MpiType(int32_t d) {
  switch (d) {
    case kF32: return MPI_FLOAT;
    case kF64: return MPI_DOUBLE;
    case kI32: return MPI_INT32_T;
    default: return MPI_UINT8_T;
  }
}
const char* ReduceName(int32_t r) { return r == kSum ? "sum" : r == kMax ? "max" : r == kMin ? "min" : "?"; }
const char* ThreadLevelName(int level) {
  switch (level) {
    case MPI_THREAD_SINGLE: return "MPI_THREAD_SINGLE";
    case MPI_THREAD_FUNNELED: return "MPI_THREAD_FUNNELED";
    case MPI_THREAD_SERIALIZED: return "MPI_THREAD_SERIALIZED";
    case MPI_THREAD_MULTIPLE: return "MPI_THREAD_MULTIPLE";
    default: return "unknown";
  }
}

std::string Label(const Header& h) { return std::string(h.label, strnlen(h.label, kLabelBytes)); }

/// "allReduceMean (allreduce sum of 12 float32)", "exit (code 1: Error: boom)".
std::string DescribeCall(const Header& h) {
  const std::string n = std::to_string(h.count) + " " + DTypeName(h.dtype);
  switch (h.op) {
    case kBarrier: return Label(h) + " (barrier)";
    case kAllreduce: return Label(h) + " (allreduce " + ReduceName(h.arg) + " of " + n + ")";
    case kBcast: return Label(h) + " (broadcast of " + n + " from root " + std::to_string(h.arg) + ")";
    case kAllgatherv: return Label(h) + " (allgather of " + DTypeName(h.dtype) + ")";
    case kAlltoallv: return Label(h) + " (alltoallv of " + DTypeName(h.dtype) + ")";
    case kExit: return "exit (exit code " + std::to_string(h.arg) + ")";
    default: return "an unknown operation " + std::to_string(h.op);
  }
}

std::string RankList(const std::vector<int>& ranks) {
  std::string s = ranks.size() == 1 ? "rank " : "ranks ";
  for (size_t i = 0; i < ranks.size(); i++) {
    if (i == 8 && ranks.size() > 9) return s + ", ... (" + std::to_string(ranks.size()) + " in all)";
    s += (i ? ", " : "") + std::to_string(ranks[i]);
  }
  return s;
}

std::string Where(const Header& h) {
  return "rank " + std::to_string(g.rank) + " of " + std::to_string(g.size) + ": " + DescribeCall(h) +
         ", collective #" + std::to_string(h.seq);
}

/// A NegativeCacheError-shaped JS error; `ranks` names the ranks concerned.
Napi::Error MakeError(Napi::Env env, const std::string& code, const std::string& message,
                      const std::vector<int>& ranks = {}) {
  Napi::Error e = Napi::Error::New(env, "negative-cache: " + message);
  e.Set("code", Napi::String::New(env, code));
  e.Set("name", Napi::String::New(env, "NegativeCacheError"));
  if (!ranks.empty()) {
    Napi::Array a = Napi::Array::New(env, ranks.size());
    for (size_t i = 0; i < ranks.size(); i++) a.Set(static_cast<uint32_t>(i), Napi::Number::New(env, ranks[i]));
    e.Set("ranks", a);
  }
  return e;
}

/// Records that the communicator is unusable from now on, and throws.
[[noreturn]] void Fail(Napi::Env env, const std::string& code, const std::string& message,
                       const std::vector<int>& ranks = {}, bool abandoned = false) {
  g.failCode = code;
  g.failMessage = message;
  g.abandoned = g.abandoned || abandoned;
  throw MakeError(env, code, message, ranks);
}

std::string MpiErrorText(int rc) {
  char text[MPI_MAX_ERROR_STRING];
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) return "MPI error " + std::to_string(rc);
  return std::string(text, len);
}

void CheckMpi(Napi::Env env, int rc, const char* call, bool abandoned) {
  if (rc != MPI_SUCCESS) {
    Fail(env, "ERR_MPI", "rank " + std::to_string(g.rank) + ": " + call + " failed: " + MpiErrorText(rc), {},
         abandoned);
  }
}

/// Polls until every request completes (true) or the deadline passes (false).
/// Completed entries become MPI_REQUEST_NULL, so the caller sees what is left.
/// Without a progress thread, MPI moves our part of a transfer only while we
/// poll, so a sleeping rank delays its peers; and ranks that take turns
/// sleeping stay out of phase (measured: ~2 ms instead of ~20 us per small
/// allreduce over TCP). So it spins (yielding the core, as Open MPI does when
/// oversubscribed) for the first 20 ms, and only then naps, at most 1 ms.
bool Poll(Napi::Env env, std::vector<MPI_Request>& reqs, Clock::time_point deadline) {
  std::vector<int> idx(reqs.size() + 1);
  std::vector<MPI_Status> st(reqs.size() + 1);
  const auto start = Clock::now();
  auto nap = std::chrono::microseconds(20);
  for (;;) {
    int n = 0;
    const int rc = MPI_Testsome(static_cast<int>(reqs.size()), reqs.data(), &n, idx.data(), st.data());
    if (rc == MPI_ERR_IN_STATUS) {
      for (int i = 0; i < n; i++) CheckMpi(env, st[i].MPI_ERROR, "a nonblocking MPI operation", true);
    }
    CheckMpi(env, rc, "MPI_Testsome", true);
    if (n == MPI_UNDEFINED) return true;
    const auto now = Clock::now();
    if (now >= deadline) return false;
    if (now - start < std::chrono::milliseconds(20)) {
      sched_yield();
    } else {
      std::this_thread::sleep_for(nap);
      nap = std::min(nap * 2, std::chrono::microseconds(1000));
    }
  }
}

void CheckUsable(Napi::Env env) {
  if (!g.initialized || g.owner != static_cast<napi_env>(env)) {
    throw MakeError(env, "ERR_NO_MPI", "MPI is not initialized in this thread (call initDistributed() first)");
  }
  if (g.finalized) throw MakeError(env, "ERR_NO_MPI", "MPI was already finalized in this process");
  if (!g.failCode.empty()) {
    throw MakeError(env, g.failCode, "the communicator failed earlier and cannot be used again: " + g.failMessage);
  }
}

Header MakeHeader(Op op, const std::string& label, int32_t dtype, int32_t arg, int64_t count, uint64_t signature) {
  Header h;
  std::memset(&h, 0, sizeof h);
  h.magic = kMagic;
  h.op = op;
  h.seq = ++g.seq;
  h.dtype = dtype;
  h.arg = arg;
  h.count = count;
  h.signature = signature;
  std::memcpy(h.label, label.data(), std::min(label.size(), kLabelBytes - 1));
  return h;
}

/// Buffers of one header exchange; leaked when abandoned (MPI may still write them).
struct HeaderExchange {
  std::vector<Header> recv, send;
  std::vector<MPI_Request> reqs;  // [peer recvs..., peer sends...] in peer order
};

/// Every rank's header for this collective (index = rank), or a timeout naming the missing ranks.
std::vector<Header> ExchangeHeaders(Napi::Env env, const Header& mine, const std::vector<int64_t>& forYou,
                                    Clock::time_point deadline, double timeoutMs) {
  auto* x = new HeaderExchange;
  x->recv.resize(g.size);
  x->send.assign(g.size, mine);
  std::vector<int> peers;
  for (int p = 0; p < g.size; p++) {
    if (p != g.rank) peers.push_back(p);
  }
  x->reqs.assign(2 * peers.size(), MPI_REQUEST_NULL);
  for (size_t i = 0; i < peers.size(); i++) {
    CheckMpi(env, MPI_Irecv(&x->recv[peers[i]], sizeof(Header), MPI_BYTE, peers[i], kTagHeader, g.comm, &x->reqs[i]),
             "MPI_Irecv", true);
  }
  for (size_t i = 0; i < peers.size(); i++) {
    Header& h = x->send[peers[i]];
    if (!forYou.empty()) h.forYou = forYou[peers[i]];
    CheckMpi(env, MPI_Isend(&h, sizeof(Header), MPI_BYTE, peers[i], kTagHeader, g.comm, &x->reqs[peers.size() + i]),
             "MPI_Isend", true);
  }
  if (!Poll(env, x->reqs, deadline)) {
    std::vector<int> missing, arrived;
    for (size_t i = 0; i < peers.size(); i++) (x->reqs[i] != MPI_REQUEST_NULL ? missing : arrived).push_back(peers[i]);
    std::string msg = Where(mine) + ": timed out after " + std::to_string(static_cast<int64_t>(timeoutMs)) +
                      " ms: " + (missing.empty() ? std::string("the header sends did not complete") :
                                 RankList(missing) + " did not reach this collective") +
                      " (a rank died, is stuck, or took another code path). The communicator is unusable; "
                      "end this process (the MPI job is aborted when it exits)";
    Fail(env, "ERR_DISTRIBUTED_TIMEOUT", msg, missing, true);  // x stays allocated
  }
  x->recv[g.rank] = mine;
  if (!forYou.empty()) x->recv[g.rank].forYou = forYou[g.rank];
  std::vector<Header> all = std::move(x->recv);
  delete x;
  return all;
}

/// Fails unless every rank called the same collective with compatible arguments.
/// All ranks see the same headers, so all reach the same verdict.
void CheckHeaders(Napi::Env env, const std::vector<Header>& all) {
  const Header& me = all[g.rank];
  std::vector<int> exited;
  for (int p = 0; p < g.size; p++) {
    if (all[p].magic != kMagic) Fail(env, "ERR_MPI", Where(me) + ": a malformed header came from rank " + std::to_string(p));
    if (all[p].op == kExit && p != g.rank) exited.push_back(p);
  }
  if (!exited.empty()) {
    std::string msg = Where(me) + ": cannot complete: ";
    for (size_t i = 0; i < exited.size(); i++) {
      const std::string why = Label(all[exited[i]]);
      msg += (i ? "; " : "") + std::string("rank ") + std::to_string(exited[i]) + " is exiting (exit code " +
             std::to_string(all[exited[i]].arg) + (why.empty() ? "" : ": " + why) + ")";
    }
    Fail(env, "ERR_DISTRIBUTED_PEER_EXIT", msg, exited);
  }
  const bool countsAgree = me.op == kAllreduce || me.op == kBcast;
  bool same = true, sameCall = true, sameButSignature = true;
  for (int p = 0; p < g.size; p++) {
    const Header& h = all[p];
    if (h.seq != me.seq) {
      Fail(env, "ERR_MPI", Where(me) + ": rank " + std::to_string(p) + " is at collective #" + std::to_string(h.seq) +
                               " (the ranks are out of step)");
    }
    const bool core = h.op == me.op && h.dtype == me.dtype && h.arg == me.arg && Label(h) == Label(me) &&
                      (!countsAgree || h.count == me.count);
    if (h.op != me.op || Label(h) != Label(me)) sameCall = false;
    if (!core) sameButSignature = false;
    if (!core || h.signature != me.signature) same = false;
  }
  if (same) return;
  // One line per distinct call: "ranks 0, 2: allReduceMean (...); rank 1: ...".
  std::vector<std::string> calls;
  std::vector<std::vector<int>> who;
  for (int p = 0; p < g.size; p++) {
    char sig[32];
    std::snprintf(sig, sizeof sig, "%016llx", static_cast<unsigned long long>(all[p].signature));
    const std::string c = DescribeCall(all[p]) + (sameButSignature ? std::string(" with layout signature ") + sig : "");
    auto it = std::find(calls.begin(), calls.end(), c);
    if (it == calls.end()) {
      calls.push_back(c);
      who.push_back({p});
    } else {
      who[it - calls.begin()].push_back(p);
    }
  }
  std::string msg = "rank " + std::to_string(g.rank) + " of " + std::to_string(g.size) + ": collective #" +
                    std::to_string(me.seq) + " differs across ranks: ";
  for (size_t i = 0; i < calls.size(); i++) {
    if (i == 8) {
      msg += "; ...";
      break;
    }
    msg += (i ? "; " : "") + RankList(who[i]) + " called " + calls[i];
  }
  // Not a failure of the communicator: every rank throws the same error and
  // stays in step. sameCall: every rank is in the same JS method, so all may
  // follow up with a collective that explains the difference.
  Napi::Error e = MakeError(env, "ERR_DISTRIBUTED_MISMATCH", msg);
  e.Set("sameCall", Napi::Boolean::New(env, sameCall));
  throw e;
}

/// The data phase of one collective; leaked when abandoned.
struct Staging {
  std::vector<uint8_t> send, recv;
  std::vector<int> sendCounts, sendDispls, recvCounts, recvDispls;
  MPI_Request req = MPI_REQUEST_NULL;
};

using StagingPtr = std::unique_ptr<Staging>;

/// Starts nothing: waits for s->req. On timeout s is released (MPI may still use it).
void WaitData(Napi::Env env, StagingPtr& s, const Header& mine, Clock::time_point deadline, double timeoutMs) {
  std::vector<MPI_Request> reqs{s->req};
  bool done = false;
  try {
    done = Poll(env, reqs, deadline);
  } catch (...) {
    s.release();
    throw;
  }
  if (!done) {
    s.release();
    Fail(env, "ERR_DISTRIBUTED_TIMEOUT",
         Where(mine) + ": timed out after " + std::to_string(static_cast<int64_t>(timeoutMs)) +
             " ms while moving the data (every rank had arrived, so one failed or stalled during the transfer). "
             "The communicator is unusable; end this process (the MPI job is aborted when it exits)",
         {}, true);
  }
}

// ---- argument reading (memory protection only) -------------------------------

[[noreturn]] void ThrowType(Napi::Env env, const std::string& what, const std::string& expected) {
  throw Napi::TypeError::New(env, "negative-cache: " + what + " must be " + expected);
}
[[noreturn]] void ThrowRange(Napi::Env env, const std::string& what, const std::string& expected,
                             const std::string& got) {
  throw Napi::RangeError::New(env, "negative-cache: " + what + " must be " + expected + "; got " + got);
}

struct Array {
  uint8_t* data = nullptr;
  int64_t length = 0;
  int32_t dtype = kNoType;
  size_t bytes() const { return static_cast<size_t>(length) * DTypeBytes(dtype); }
};

Array GetArray(Napi::Env env, const Napi::Value& v, const char* what) {
  if (!v.IsTypedArray()) ThrowType(env, what, "a Float32Array, Float64Array, Int32Array or Uint8Array");
  Napi::TypedArray t = v.As<Napi::TypedArray>();
  Array a;
  switch (t.TypedArrayType()) {
    case napi_float32_array: a.dtype = kF32; break;
    case napi_float64_array: a.dtype = kF64; break;
    case napi_int32_array: a.dtype = kI32; break;
    case napi_uint8_array: a.dtype = kU8; break;
    default: ThrowType(env, what, "a Float32Array, Float64Array, Int32Array or Uint8Array");
  }
  a.length = static_cast<int64_t>(t.ElementLength());
  if (a.length > INT_MAX) ThrowRange(env, std::string(what) + ".length", "at most 2^31-1 (MPI counts are int)", std::to_string(a.length));
  a.data = static_cast<uint8_t*>(t.ArrayBuffer().Data()) + t.ByteOffset();
  return a;
}

std::string GetLabel(Napi::Env env, const Napi::Value& v) {
  if (!v.IsString()) ThrowType(env, "label", "a string");
  return v.As<Napi::String>().Utf8Value();
}

double GetTimeout(Napi::Env env, const Napi::Value& v) {
  const double t = v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : -1;
  if (!(t > 0 && t <= 1e12)) ThrowRange(env, "timeoutMs", "a positive number of milliseconds", std::to_string(t));
  return t;
}

uint64_t GetSignature(Napi::Env env, const Napi::Value& v) {
  if (v.IsUndefined()) return 0;
  if (!v.IsBigInt()) ThrowType(env, "signature", "a BigInt");
  bool lossless = false;
  return v.As<Napi::BigInt>().Uint64Value(&lossless);
}

Clock::time_point DeadlineAfter(double ms) {
  return Clock::now() + std::chrono::microseconds(static_cast<int64_t>(ms * 1000.0));
}

Napi::Value NewTypedArray(Napi::Env env, int32_t dtype, const uint8_t* src, int64_t length) {
  const size_t bytes = static_cast<size_t>(length) * DTypeBytes(dtype);
  Napi::ArrayBuffer buf = Napi::ArrayBuffer::New(env, bytes);
  if (bytes) std::memcpy(buf.Data(), src, bytes);
  const size_t n = static_cast<size_t>(length);
  switch (dtype) {
    case kF32: return Napi::Float32Array::New(env, n, buf, 0);
    case kF64: return Napi::Float64Array::New(env, n, buf, 0);
    case kI32: return Napi::Int32Array::New(env, n, buf, 0);
    default: return Napi::Uint8Array::New(env, n, buf, 0);
  }
}

Napi::Int32Array NewCounts(Napi::Env env, const std::vector<int>& counts) {
  Napi::Int32Array a = Napi::Int32Array::New(env, counts.size());
  for (size_t i = 0; i < counts.size(); i++) a[i] = counts[i];
  return a;
}

/// Exclusive prefix sums as MPI displacements; false when the total exceeds INT_MAX.
bool Displacements(const std::vector<int>& counts, std::vector<int>& displs, int64_t& total) {
  displs.resize(counts.size());
  total = 0;
  for (size_t i = 0; i < counts.size(); i++) {
    displs[i] = static_cast<int>(total);
    total += counts[i];
    if (total > INT_MAX) return false;
  }
  return true;
}

// ---- exports -----------------------------------------------------------------

/// Makes libmpi's symbols global: Open MPI opens its components with dlopen and
/// they resolve against libmpi, which node loaded privately with this addon.
void PromoteLibmpi() {
  Dl_info info;
  if (dladdr(reinterpret_cast<void*>(&MPI_Init_thread), &info) && info.dli_fname) {
    dlopen(info.dli_fname, RTLD_NOW | RTLD_GLOBAL | RTLD_NOLOAD);
  }
}

Napi::Value Init(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (g.initialized && g.owner != static_cast<napi_env>(env)) {
    throw MakeError(env, "ERR_NO_MPI", "MPI was initialized by another thread of this process; use it from there");
  }
  if (g.finalized) throw MakeError(env, "ERR_NO_MPI", "MPI was finalized in this process and cannot start again");
  if (!g.initialized) {
    PromoteLibmpi();
    int already = 0, finalized = 0;
    MPI_Initialized(&already);
    MPI_Finalized(&finalized);
    if (finalized) throw MakeError(env, "ERR_NO_MPI", "MPI was finalized in this process and cannot start again");
    if (already) {
      MPI_Query_thread(&g.provided);
    } else {
      const int rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &g.provided);
      if (rc != MPI_SUCCESS) throw MakeError(env, "ERR_MPI", "MPI_Init_thread failed: " + MpiErrorText(rc));
      g.ownsMpi = true;
    }
    // Our own communicator, returning errors instead of aborting: other MPI users
    // of this process cannot mix their messages with ours.
    if (MPI_Comm_dup(MPI_COMM_WORLD, &g.comm) != MPI_SUCCESS ||
        MPI_Comm_set_errhandler(g.comm, MPI_ERRORS_RETURN) != MPI_SUCCESS) {
      throw MakeError(env, "ERR_MPI", "MPI_Comm_dup of MPI_COMM_WORLD failed");
    }
    MPI_Comm_rank(g.comm, &g.rank);
    MPI_Comm_size(g.comm, &g.size);
    g.owner = env;
    g.initialized = true;
  }
  Napi::Object o = Napi::Object::New(env);
  o.Set("rank", g.rank);
  o.Set("size", g.size);
  o.Set("threadLevel", ThreadLevelName(g.provided));
  o.Set("ownsMpi", g.ownsMpi);
  char lib[MPI_MAX_LIBRARY_VERSION_STRING];
  int len = 0;
  MPI_Get_library_version(lib, &len);
  std::string libText(lib, len);
  o.Set("library", libText.substr(0, libText.find_first_of(",\n")));
  char host[MPI_MAX_PROCESSOR_NAME];
  MPI_Get_processor_name(host, &len);
  o.Set("host", std::string(host, len));
  return o;
}

// barrier(label, timeoutMs)
Napi::Value Barrier(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env);
  const std::string label = GetLabel(env, info[0]);
  const double timeoutMs = GetTimeout(env, info[1]);
  const Header h = MakeHeader(kBarrier, label, kNoType, 0, 0, 0);
  CheckHeaders(env, ExchangeHeaders(env, h, {}, DeadlineAfter(timeoutMs), timeoutMs));
  return env.Undefined();
}

// allreduce(label, array, reduce, timeoutMs, signature?): in place.
Napi::Value Allreduce(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env);
  const std::string label = GetLabel(env, info[0]);
  const Array a = GetArray(env, info[1], "values");
  if (a.dtype == kU8) ThrowType(env, "values", "a Float32Array, Float64Array or Int32Array");
  const int32_t reduce = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : -1;
  if (reduce < kSum || reduce > kMin) ThrowRange(env, "reduce", "0 (sum), 1 (max) or 2 (min)", "another value");
  const double timeoutMs = GetTimeout(env, info[3]);
  const uint64_t sig = GetSignature(env, info[4]);
  const auto deadline = DeadlineAfter(timeoutMs);
  const Header h = MakeHeader(kAllreduce, label, a.dtype, reduce, a.length, sig);
  CheckHeaders(env, ExchangeHeaders(env, h, {}, deadline, timeoutMs));
  if (a.length == 0) return env.Undefined();  // the same on every rank
  auto s = std::make_unique<Staging>();
  s->recv.assign(a.data, a.data + a.bytes());
  const MPI_Op op = reduce == kSum ? MPI_SUM : reduce == kMax ? MPI_MAX : MPI_MIN;
  CheckMpi(env, MPI_Iallreduce(MPI_IN_PLACE, s->recv.data(), static_cast<int>(a.length), MpiType(a.dtype), op, g.comm, &s->req),
           "MPI_Iallreduce", true);
  WaitData(env, s, h, deadline, timeoutMs);
  std::memcpy(a.data, s->recv.data(), a.bytes());
  return env.Undefined();
}

// broadcast(label, array, root, timeoutMs, signature?): in place.
Napi::Value Broadcast(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env);
  const std::string label = GetLabel(env, info[0]);
  const Array a = GetArray(env, info[1], "values");
  const int32_t root = info[2].IsNumber() ? info[2].As<Napi::Number>().Int32Value() : -1;
  if (root < 0 || root >= g.size) ThrowRange(env, "root", "a rank in [0, " + std::to_string(g.size - 1) + "]", "another value");
  const double timeoutMs = GetTimeout(env, info[3]);
  const uint64_t sig = GetSignature(env, info[4]);
  const auto deadline = DeadlineAfter(timeoutMs);
  const Header h = MakeHeader(kBcast, label, a.dtype, root, a.length, sig);
  CheckHeaders(env, ExchangeHeaders(env, h, {}, deadline, timeoutMs));
  if (a.length == 0) return env.Undefined();
  auto s = std::make_unique<Staging>();
  if (g.rank == root) s->recv.assign(a.data, a.data + a.bytes());
  else s->recv.resize(a.bytes());
  CheckMpi(env, MPI_Ibcast(s->recv.data(), static_cast<int>(a.length), MpiType(a.dtype), root, g.comm, &s->req),
           "MPI_Ibcast", true);
  WaitData(env, s, h, deadline, timeoutMs);
  std::memcpy(a.data, s->recv.data(), a.bytes());
  return env.Undefined();
}

// allgather(label, array, timeoutMs, signature?) -> { data, counts }: the ranks' arrays in rank order.
Napi::Value Allgatherv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env);
  const std::string label = GetLabel(env, info[0]);
  const Array a = GetArray(env, info[1], "values");
  const double timeoutMs = GetTimeout(env, info[2]);
  const uint64_t sig = GetSignature(env, info[3]);
  const auto deadline = DeadlineAfter(timeoutMs);
  const Header h = MakeHeader(kAllgatherv, label, a.dtype, 0, a.length, sig);
  const std::vector<Header> all = ExchangeHeaders(env, h, {}, deadline, timeoutMs);
  CheckHeaders(env, all);
  auto s = std::make_unique<Staging>();
  s->recvCounts.resize(g.size);
  for (int p = 0; p < g.size; p++) {
    if (all[p].count < 0 || all[p].count > INT_MAX) Fail(env, "ERR_MPI", Where(h) + ": a bad count came from rank " + std::to_string(p));
    s->recvCounts[p] = static_cast<int>(all[p].count);
  }
  int64_t total = 0;
  if (!Displacements(s->recvCounts, s->recvDispls, total)) {
    // The same verdict on every rank: nothing was sent.
    ThrowRange(env, "the gathered length", "at most 2^31-1 (MPI counts are int)", "more");
  }
  const size_t eb = DTypeBytes(a.dtype);
  if (total > 0) {
    s->send.assign(a.data, a.data + a.bytes());
    s->send.resize(std::max<size_t>(s->send.size(), 1));
    s->recv.resize(static_cast<size_t>(total) * eb);
    CheckMpi(env, MPI_Iallgatherv(s->send.data(), static_cast<int>(a.length), MpiType(a.dtype), s->recv.data(),
                                  s->recvCounts.data(), s->recvDispls.data(), MpiType(a.dtype), g.comm, &s->req),
             "MPI_Iallgatherv", true);
    WaitData(env, s, h, deadline, timeoutMs);
  }
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", NewTypedArray(env, a.dtype, s->recv.data(), total));
  out.Set("counts", NewCounts(env, s->recvCounts));
  return out;
}

// alltoallv(label, array, sendCounts: Int32Array(size), timeoutMs, signature?) -> { data, counts }.
Napi::Value Alltoallv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  CheckUsable(env);
  const std::string label = GetLabel(env, info[0]);
  const Array a = GetArray(env, info[1], "values");
  const Array c = GetArray(env, info[2], "sendCounts");
  if (c.dtype != kI32 || c.length != g.size) {
    ThrowType(env, "sendCounts", "an Int32Array of length " + std::to_string(g.size));
  }
  const double timeoutMs = GetTimeout(env, info[3]);
  const uint64_t sig = GetSignature(env, info[4]);
  auto s = std::make_unique<Staging>();
  s->sendCounts.resize(g.size);
  std::vector<int64_t> forYou(g.size);
  for (int p = 0; p < g.size; p++) {
    int32_t v;
    std::memcpy(&v, c.data + 4 * p, 4);
    if (v < 0) {
      ThrowRange(env, "sendCounts[" + std::to_string(p) + "]", "a non-negative count", std::to_string(v));
    }
    s->sendCounts[p] = v;
    forYou[p] = v;
  }
  int64_t sendTotal = 0;
  if (!Displacements(s->sendCounts, s->sendDispls, sendTotal) || sendTotal != a.length) {
    ThrowRange(env, "the sum of sendCounts", "values.length (" + std::to_string(a.length) + ")", std::to_string(sendTotal));
  }
  const auto deadline = DeadlineAfter(timeoutMs);
  const Header h = MakeHeader(kAlltoallv, label, a.dtype, 0, a.length, sig);
  const std::vector<Header> all = ExchangeHeaders(env, h, forYou, deadline, timeoutMs);
  CheckHeaders(env, all);
  s->recvCounts.resize(g.size);
  for (int p = 0; p < g.size; p++) {
    if (all[p].forYou < 0 || all[p].forYou > INT_MAX) Fail(env, "ERR_MPI", Where(h) + ": a bad count came from rank " + std::to_string(p));
    s->recvCounts[p] = static_cast<int>(all[p].forYou);
  }
  int64_t recvTotal = 0;
  if (!Displacements(s->recvCounts, s->recvDispls, recvTotal)) {
    // Only this rank knows: the others will time out in the data phase.
    Fail(env, "ERR_MPI", Where(h) + ": more than 2^31-1 elements would arrive (MPI counts are int)");
  }
  const size_t eb = DTypeBytes(a.dtype);
  s->send.assign(a.data, a.data + a.bytes());
  s->send.resize(std::max<size_t>(s->send.size(), 1));
  s->recv.resize(std::max<size_t>(static_cast<size_t>(recvTotal) * eb, 1));
  CheckMpi(env, MPI_Ialltoallv(s->send.data(), s->sendCounts.data(), s->sendDispls.data(), MpiType(a.dtype),
                               s->recv.data(), s->recvCounts.data(), s->recvDispls.data(), MpiType(a.dtype), g.comm,
                               &s->req),
           "MPI_Ialltoallv", true);
  WaitData(env, s, h, deadline, timeoutMs);
  Napi::Object out = Napi::Object::New(env);
  out.Set("data", NewTypedArray(env, a.dtype, s->recv.data(), recvTotal));
  out.Set("counts", NewCounts(env, s->recvCounts));
  return out;
}

/// The exit handshake: tells every peer this rank is leaving and waits until
/// every peer says the same, answering each peer that is still in a collective
/// (it then fails with ERR_DISTRIBUTED_PEER_EXIT and, in turn, exits).
/// Returns the peers that did not leave before the deadline.
std::vector<int> ExitHandshake(int exitCode, const std::string& why, Clock::time_point deadline) {
  std::deque<Header> sent;  // stable addresses for pending sends
  std::vector<MPI_Request> sends;
  std::vector<Header> recv(g.size);
  std::vector<MPI_Request> recvs(g.size, MPI_REQUEST_NULL);
  std::vector<char> left(g.size, 0);
  left[g.rank] = 1;
  const Header first = MakeHeader(kExit, why, kNoType, exitCode, 0, 0);
  auto send = [&](int p, int64_t seq) {
    sent.push_back(first);
    sent.back().seq = seq;
    sends.push_back(MPI_REQUEST_NULL);
    MPI_Isend(&sent.back(), sizeof(Header), MPI_BYTE, p, kTagHeader, g.comm, &sends.back());
  };
  for (int p = 0; p < g.size; p++) {
    if (p == g.rank) continue;
    send(p, first.seq);
    MPI_Irecv(&recv[p], sizeof(Header), MPI_BYTE, p, kTagHeader, g.comm, &recvs[p]);
  }
  auto nap = std::chrono::microseconds(50);
  for (;;) {
    bool all = true;
    for (int p = 0; p < g.size; p++) {
      if (left[p]) continue;
      int done = 0;
      MPI_Test(&recvs[p], &done, MPI_STATUS_IGNORE);
      if (!done) {
        all = false;
        continue;
      }
      if (recv[p].magic == kMagic && recv[p].op == kExit) {
        left[p] = 1;
      } else {
        // p is in a collective and waits for our header: answer it, then listen again.
        send(p, recv[p].seq);
        MPI_Irecv(&recv[p], sizeof(Header), MPI_BYTE, p, kTagHeader, g.comm, &recvs[p]);
        all = false;
      }
    }
    if (all) break;
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(nap);
    nap = std::min(nap * 2, std::chrono::microseconds(2000));
  }
  std::vector<int> stayed;
  for (int p = 0; p < g.size; p++) {
    if (!left[p]) stayed.push_back(p);
  }
  if (stayed.empty()) {
    int done = 0;
    while (!done && Clock::now() < deadline) {
      MPI_Testall(static_cast<int>(sends.size()), sends.data(), &done, MPI_STATUSES_IGNORE);
      if (!done) std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    if (!done) stayed.push_back(-1);
  }
  return stayed;
}

[[noreturn]] void AbortJob(int exitCode, const std::string& why) {
  std::fprintf(stderr, "negative-cache: rank %d of %d: %s; aborting the MPI job\n", g.rank, g.size, why.c_str());
  std::fflush(stderr);
  MPI_Abort(MPI_COMM_WORLD, exitCode != 0 ? exitCode : 1);
  std::_Exit(exitCode != 0 ? exitCode : 1);
}

// finalize(exitCode, timeoutMs, reason, uncaughtText): the process is exiting.
Napi::Value Finalize(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!g.initialized || g.finalized || g.owner != static_cast<napi_env>(env)) return env.Undefined();
  const int exitCode = info[0].IsNumber() ? info[0].As<Napi::Number>().Int32Value() : 1;
  const double timeoutMs = GetTimeout(env, info[1]);
  const std::string why = info[2].IsString() ? info[2].As<Napi::String>().Utf8Value() : "";
  const std::string uncaught = info[3].IsString() ? info[3].As<Napi::String>().Utf8Value() : "";
  g.finalized = true;
  // Node prints an uncaught error after the 'exit' handlers, which MPI_Abort would skip.
  auto abortJob = [&](const std::string& reason) {
    if (!uncaught.empty()) std::fprintf(stderr, "%s\n", uncaught.c_str());
    AbortJob(exitCode, reason);
  };
  if (!g.ownsMpi) return env.Undefined();  // whoever initialized MPI finalizes it
  if (g.abandoned) abortJob("exiting with an MPI operation abandoned after " + g.failCode);
  if (g.size > 1) {
    const std::vector<int> stayed = ExitHandshake(exitCode, why, DeadlineAfter(timeoutMs));
    if (!stayed.empty()) {
      abortJob(stayed[0] < 0 ? "the exit messages were not delivered within " +
                                              std::to_string(static_cast<int64_t>(timeoutMs)) + " ms"
                                        : RankList(stayed) + " did not reach the end within " +
                                              std::to_string(static_cast<int64_t>(timeoutMs)) + " ms of this rank's exit");
    }
  }
  MPI_Comm_free(&g.comm);
  MPI_Finalize();
  return env.Undefined();
}

Napi::Object InitModule(Napi::Env env, Napi::Object exports) {
  exports.Set("init", Napi::Function::New(env, Init));
  exports.Set("barrier", Napi::Function::New(env, Barrier));
  exports.Set("allreduce", Napi::Function::New(env, Allreduce));
  exports.Set("broadcast", Napi::Function::New(env, Broadcast));
  exports.Set("allgatherv", Napi::Function::New(env, Allgatherv));
  exports.Set("alltoallv", Napi::Function::New(env, Alltoallv));
  exports.Set("finalize", Napi::Function::New(env, Finalize));
  exports.Set("napiVersion", Napi::Number::New(env, NAPI_VERSION));
  return exports;
}

}  // namespace

NODE_API_MODULE(negative_cache_mpi, InitModule)
