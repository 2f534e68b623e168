#!/usr/bin/env bash
# The C++ tests of native/ and the whole mocha suite against a build under
# AddressSanitizer + UndefinedBehaviorSanitizer (gcc's; CXX=clang++-14 picks
# clang's runtime instead). Everything goes to build-asan/; the normal build (build/)
# is not touched. A step of .ci/run; see docs/reliability.md.
#
#   build-asan/cpp-tests   test/cpp binaries, run with LeakSanitizer on
#   build-asan/addon       the addon (and the MPI addon when MPI is there)
#   build-asan/stage       build/Release -> the sanitized addon, what
#                          NEGATIVE_CACHE_PREBUILD points node-gyp-build at
#
# The addon is loaded into an uninstrumented node, so the ASan runtime must
# come first: LD_PRELOAD=$(c++ -print-file-name=libasan.so). Leak checking is
# off for node (V8 and tfjs keep allocations until exit), on for the C++ tests.
# The install tests (50-install) are skipped: they pack and build their own,
# unsanitized addon, so they exercise nothing sanitized here.
#
#   NEGATIVE_CACHE_SANITIZE_JOBS=N   build jobs (default 2)
#   NEGATIVE_CACHE_SANITIZE_MOCHA="test/10-*.test.js"   a subset of the suite
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build-asan
jobs=${NEGATIVE_CACHE_SANITIZE_JOBS:-2}
cxx=${CXX:-g++}
t0=$SECONDS

asan_rt=$("$cxx" -print-file-name=libasan.so)
case "$cxx" in
  *clang*) asan_rt=$("$cxx" -print-file-name=libclang_rt.asan-x86_64.so) ;;
esac
if [ ! -e "$asan_rt" ]; then
  echo "test-sanitize: no ASan runtime found for $cxx (got '$asan_rt'); install libasan (gcc) or libclang-rt-14-dev" >&2
  exit 1
fi
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
common_asan=halt_on_error=1:abort_on_error=0:detect_stack_use_after_return=0:strict_string_checks=1

[ -f dist/index.js ] || npm run build:ts >/dev/null

# 1. C++ tests -----------------------------------------------------------------
cmake -S "$root" -B "$out/cpp-tests" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DNEGCACHE_SANITIZE=ON -DNEGCACHE_TESTS=ON -DNEGCACHE_ADDON=OFF -DNEGCACHE_CUDA=OFF >/dev/null
cmake --build "$out/cpp-tests" -j "$jobs" -- --no-print-directory >/dev/null
echo "test-sanitize: C++ tests built ($((SECONDS - t0)) s)"
for t in cache_store_test kernels_test; do
  t1=$SECONDS
  ASAN_OPTIONS=$common_asan:detect_leaks=1 "$out/cpp-tests/$t" >"$out/$t.log" 2>&1 || {
    tail -n 60 "$out/$t.log" >&2
    echo "test-sanitize: $t FAILED under ASan/UBSan" >&2
    exit 1
  }
  echo "test-sanitize: $t ok under ASan+UBSan+LSan ($((SECONDS - t1)) s): $(tail -n 1 "$out/$t.log")"
done

# 2. The addon -----------------------------------------------------------------
t1=$SECONDS
CXX="$cxx" node node_modules/cmake-js/bin/cmake-js build --out "$out/addon" \
  --CDNEGCACHE_SANITIZE=ON --CDNEGCACHE_CUDA=OFF --CDCMAKE_BUILD_TYPE=RelWithDebInfo >"$out/addon-build.log" 2>&1 || {
  tail -n 40 "$out/addon-build.log" >&2
  echo "test-sanitize: the sanitized addon did not build" >&2
  exit 1
}
addon=$out/addon/Release/negative_cache.node
mkdir -p "$out/stage/build"
rm -rf "$out/stage/build/Release"
ln -s "$out/addon/Release" "$out/stage/build/Release"
echo "test-sanitize: addon built ($((SECONDS - t1)) s): $addon"

export LD_PRELOAD=$asan_rt
export ASAN_OPTIONS=$common_asan:detect_leaks=0
export NEGATIVE_CACHE_PREBUILD=$out/stage
export NEGATIVE_CACHE_REQUIRE_NATIVE=1
export NEGATIVE_CACHE_SKIP_INSTALL_TESTS=1
export NEGATIVE_CACHE_BINDING_FUZZ_ITERS=${NEGATIVE_CACHE_BINDING_FUZZ_ITERS:-20000}  # test/83, against the ASan addon
if [ -e "$out/addon/Release/mpi/negative_cache_mpi.node" ]; then
  export NEGATIVE_CACHE_MPI_ADDON=$out/addon/Release/mpi/negative_cache_mpi.node
fi
# The suite must see the sanitized addon, not build/Release.
loaded=$(node -e "const p=require('node-gyp-build').path('.'); require(p); console.log(require('fs').realpathSync(p))")
if [ "$loaded" != "$(realpath "$addon")" ]; then
  echo "test-sanitize: node-gyp-build resolves $loaded, not the sanitized $addon" >&2
  exit 1
fi
nm -D "$addon" | grep __asan_report >/dev/null || { echo "test-sanitize: $addon is not instrumented" >&2; exit 1; }

# 3. mocha -----------------------------------------------------------------------
t1=$SECONDS
set -f  # mocha expands the globs
# shellcheck disable=SC2086
node node_modules/mocha/bin/mocha.js ${NEGATIVE_CACHE_SANITIZE_MOCHA:-test/**/*.test.js}
set +f
echo "test-sanitize: mocha clean under ASan+UBSan ($((SECONDS - t1)) s); total $((SECONDS - t0)) s"
