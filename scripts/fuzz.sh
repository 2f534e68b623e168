#!/usr/bin/env bash
# Builds the libFuzzer targets of test/fuzz (clang-14, ASan + UBSan, into
# build-fuzz/) and runs each for a time budget, one after the other. A crash,
# a sanitizer report or a failed check stops the run with
# the reproducer under build-fuzz/artifacts/. One process per target (no
# -jobs: libFuzzer would fork a child logging to ./fuzz-N.log). See docs/reliability.md.
#
#   scripts/fuzz.sh [seconds per target, default 20] [target ...]
#   NEGATIVE_CACHE_FUZZ_CXX=clang++-14   the compiler
#   NEGATIVE_CACHE_FUZZ_JOBS=N           build jobs (default 2)
#
# Reproduce a finding: build-fuzz/<target> build-fuzz/artifacts/<target>/crash-...
# The corpora (build-fuzz/corpus/<target>) persist between runs; a target may
# also generate seeds into build-fuzz/seeds/<target> (fuzz_checkpoint does).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
out=$root/build-fuzz
secs=${1:-20}
shift || true
cxx=${NEGATIVE_CACHE_FUZZ_CXX:-}
if [ -z "$cxx" ]; then
  for c in clang++-14 clang++; do command -v "$c" >/dev/null 2>&1 && { cxx=$c; break; }; done
fi
if [ -z "$cxx" ]; then
  echo "fuzz: no clang++ on PATH (apt-get install clang-14 libfuzzer-14-dev libclang-rt-14-dev)" >&2
  exit 1
fi
t0=$SECONDS
cmake -S "$root" -B "$out" -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER="$cxx" \
  -DNEGCACHE_FUZZ=ON -DNEGCACHE_ADDON=OFF -DNEGCACHE_CUDA=OFF -DNEGCACHE_MPI=OFF >/dev/null
cmake --build "$out" -j "${NEGATIVE_CACHE_FUZZ_JOBS:-2}" -- --no-print-directory >/dev/null
echo "fuzz: built with $cxx ($((SECONDS - t0)) s)"

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  for f in "$root"/test/fuzz/fuzz_*.cc; do targets+=("$(basename "$f" .cc)"); done
fi
export ASAN_OPTIONS=halt_on_error=1:detect_leaks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
for t in "${targets[@]}"; do
  corpus=$out/corpus/$t
  mkdir -p "$corpus" "$out/artifacts/$t"
  # A target may write generated seeds (valid inputs) into NEGCACHE_FUZZ_SEEDS at start-up.
  seeds=$out/seeds/$t
  mkdir -p "$seeds"
  log=$out/$t.log
  if ! NEGCACHE_FUZZ_SEEDS=$seeds "$out/$t" -max_total_time="$secs" -print_final_stats=1 -max_len=4096 -timeout=20 \
      -rss_limit_mb=2048 -artifact_prefix="$out/artifacts/$t/" "$corpus" "$seeds" >"$log" 2>&1; then
    tail -n 60 "$log" >&2
    echo "fuzz: $t FAILED (log $log, reproducer in $out/artifacts/$t/)" >&2
    exit 1
  fi
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  ft=$(grep -o 'ft: [0-9]*' "$log" | tail -n 1 | grep -o '[0-9]*' || echo '?')
  echo "fuzz: $t ok: ${secs} s, $runs execs, cov $cov, ft $ft, corpus $(ls "$corpus" | wc -l) files"
done
