#!/usr/bin/env bash
# `npm run test:arm64`: tests the linux-arm64 build on this x86-64 Linux machine
# under emulation (qemu-aarch64-static), with an arm64 Node taken from Debian's
# own nodejs package:
#
#  1. an aarch64 sysroot in .cache/arm64/sysroot (made once, then reused):
#     nodejs:arm64 and its Depends closure fetched with `apt-get download`
#     (arch-specific packages as NAME:arm64, arch-all ones such as node-acorn,
#     node-cjs-module-lexer, node-undici under their bare name; without those Node
#     aborts with "Cannot load externalized builtin") and unpacked with `dpkg -x`;
#  2. the C++ tests of native/ cross-compiled and run under qemu
#     (scripts/test-cpp.js --arch arm64);
#  3. the arm64 prebuild (scripts/prebuild.js --arch arm64) loaded by the arm64
#     Node, and a mocha subset run by it, in a package folder that holds only
#     that prebuild (the checkout's build/Release is x64 and would be tried first).
#
# Needs (installed with apt-get when missing and running as root, as in CI):
# g++-aarch64-linux-gnu, qemu-user-static, cmake, make, and network access to the
# Debian archive for step 1 (the first run only).
#
#   NEGATIVE_CACHE_ARM64_SYSROOT=DIR   use/make the sysroot in DIR
#   NEGATIVE_CACHE_ARM64_MOCHA="..."   other mocha arguments (test files, --grep)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)
cache="$root/.cache/arm64"
sysroot="${NEGATIVE_CACHE_ARM64_SYSROOT:-$cache/sysroot}"
export NEGATIVE_CACHE_ARM64_SYSROOT="$sysroot"
t0=$(date +%s)
step() { echo "test-arm64: [$(( $(date +%s) - t0 )) s] $*"; }

# --- tools --------------------------------------------------------------------
need=()
command -v aarch64-linux-gnu-g++ >/dev/null 2>&1 || need+=(g++-aarch64-linux-gnu)
command -v qemu-aarch64-static >/dev/null 2>&1 || need+=(qemu-user-static)
command -v cmake >/dev/null 2>&1 || need+=(cmake)
command -v make >/dev/null 2>&1 || need+=(make)
if [ ${#need[@]} -gt 0 ]; then
  step "installing ${need[*]}"
  apt-get update -qq && apt-get install -y --no-install-recommends "${need[@]}"
fi

# --- 1. the arm64 sysroot -------------------------------------------------------
make_sysroot() {
  step "making the arm64 sysroot in $sysroot"
  if ! dpkg --print-foreign-architectures | grep -qx arm64; then dpkg --add-architecture arm64; fi
  if ! apt-cache show --no-all-versions nodejs:arm64 >/dev/null 2>&1; then apt-get update -qq; fi
  # Debian's nodejs, not a third-party repository's (those may carry other builds).
  local ver
  ver=$(apt-cache madison nodejs:arm64 | awk -F'|' '$2 ~ /dfsg/ && $3 ~ /debian/ && $3 ~ /arm64/ {gsub(/ /, "", $2); print $2; exit}')
  [ -n "$ver" ] || { echo "test-arm64: Debian's nodejs:arm64 is not in the apt sources" >&2; exit 1; }
  # The Depends / Pre-Depends closure, breadth first, one apt-cache call per
  # level and question (each call reads the whole package cache: seconds); the
  # first alternative of each dependency. apt prints an arch-specific dependency
  # as NAME:arm64 and a virtual one (<NAME:arm64>, <nodejs:any>) with its real
  # providers on the lines below (an arm64 one preferred); the dependencies of an
  # arch-all package come bare, and a bare name that is not arch-all becomes NAME:arm64.
  local level=("nodejs:arm64") seen=" nodejs:arm64 " pkgs=() next provs line dep alt p arch
  flush() {  # the providers of a virtual dependency -> next
    [ ${#provs[@]} -gt 0 ] || return 0
    local q pick=${provs[0]}
    for q in "${provs[@]}"; do [[ $q == *:arm64 ]] && { pick=$q; break; }; done
    next+=("$pick"); provs=()
  }
  while [ ${#level[@]} -gt 0 ]; do
    next=() provs=() alt=0
    while IFS= read -r line; do
      if [[ $line =~ ^\ (\ |\|)(Pre)?Depends:\ (.*)$ ]]; then
        flush
        dep=${BASH_REMATCH[3]}
        if [ $alt = 1 ]; then [ "${BASH_REMATCH[1]}" = '|' ] || alt=0; continue; fi  # a later alternative
        [ "${BASH_REMATCH[1]}" = '|' ] && alt=1
        [[ $dep == \<* ]] && provs=(" ") || next+=("$dep")
      elif [[ $line =~ ^\ \ \ \ ([^ ]+)$ ]]; then
        [ ${#provs[@]} -gt 0 ] && { [ "${provs[0]}" = " " ] && provs=("${BASH_REMATCH[1]}") || provs+=("${BASH_REMATCH[1]}"); }
      else
        flush; alt=0
      fi
    done < <(apt-cache depends --no-recommends --no-suggests --no-conflicts --no-breaks --no-replaces --no-enhances "${level[@]}")
    flush
    # Bare names: arch-all stays, anything else is wanted for arm64.
    local bare=()
    for p in "${next[@]}"; do [[ $p == *:* ]] || bare+=("$p"); done
    declare -A archOf=()
    if [ ${#bare[@]} -gt 0 ]; then
      while read -r p arch; do archOf[$p]=$arch; done < <(apt-cache show --no-all-versions "${bare[@]}" |
        awk '/^Package: /{p=$2} /^Architecture: /{print p, $2}')
    fi
    level=()
    for p in "${next[@]}"; do
      [[ $p == *:* ]] || [ "${archOf[$p]:-}" = all ] || p="$p:arm64"
      case "$seen" in *" $p "*) continue ;; esac
      seen+="$p "
      level+=("$p")
      pkgs+=("$p")
    done
    unset archOf
  done
  pkgs=("nodejs:arm64=$ver" "${pkgs[@]}")
  rm -rf "$cache/debs" "$sysroot.tmp"
  mkdir -p "$cache/debs" "$sysroot.tmp"
  step "apt-get download ${pkgs[*]}"
  (cd "$cache/debs" && apt-get download -q -o APT::Sandbox::User=root "${pkgs[@]}" >/dev/null)
  for deb in "$cache/debs"/*.deb; do dpkg -x "$deb" "$sysroot.tmp"; done
  rm -rf "$sysroot" && mv "$sysroot.tmp" "$sysroot"
  printf '%s\n' "${pkgs[@]}" > "$sysroot/.negative-cache-packages"
  rm -rf "$cache/debs"
}
[ -x "$sysroot/usr/bin/node" ] && [ -f "$sysroot/.negative-cache-packages" ] || make_sysroot
node_arm64=(qemu-aarch64-static -L "$sysroot" "$sysroot/usr/bin/node")
step "arm64 node: $("${node_arm64[@]}" -p 'process.version + " " + process.arch')"

# --- 2. the C++ tests under qemu --------------------------------------------------
step "C++ tests (cross-compiled, run under qemu)"
node scripts/test-cpp.js --arch arm64

# --- 3. the prebuild and a mocha subset under the arm64 node ----------------------
step "arm64 prebuild"
pkg="$cache/pkg"
rm -rf "$pkg" && mkdir -p "$pkg"
node scripts/prebuild.js --arch arm64 --out "$pkg"
[ -f dist/index.js ] || npm run build:ts
cp package.json "$pkg/"
cp -r dist test "$pkg/"
ln -s "$root/node_modules" "$pkg/node_modules"
step "loading the addon with the arm64 node"
(cd "$pkg" && "${node_arm64[@]}" -e "
  const { loadAddon } = require('./test/helpers/internals');
  const a = loadAddon();
  if (!a) throw new Error(require('./dist/native/addon').addonLoadError());
  const file = require('node-gyp-build').resolve('.');
  if (!/prebuilds\/linux-arm64\//.test(file)) throw new Error('loaded ' + file);
  const f = a.cpuFeatures();
  console.log('test-arm64: loaded', file, JSON.stringify(f));
  if (!f.neon || f.tier !== 'neon') throw new Error('the arm64 addon does not use its NEON tier');
  if (!require('.').availableBackends().includes('native')) throw new Error('native backend unavailable');
")
step "mocha subset under the arm64 node"
# Cache semantics, the loss's worked examples, native = JS draws for a seed, on
# both backends. Left out to keep the step short: the worker/GC test, the
# thread-count and chi-square tests (the C++ tests above cover those), and the
# test files that start child Node processes (qemu-user would not emulate them).
mocha_args=${NEGATIVE_CACHE_ARM64_MOCHA:-"test/10-cache-manager.test.js test/20-native-kernels.test.js test/30-loss-examples.test.js test/32-sampling.test.js --invert --grep 'worker_threads|without dispose|1 and 2 threads|chi-square|Plackett'"}
(cd "$pkg" && eval "\"\${node_arm64[@]}\" node_modules/mocha/bin/mocha.js --timeout 120000 $mocha_args")
step "all arm64 tests passed"
