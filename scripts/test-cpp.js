#!/usr/bin/env node
// `npm test`, first half: builds the C++ tests of native/ (test/cpp) with CMake
// into build/cpp-tests (-j2, incremental after the first run) and runs them,
// then checks that the ISA tiers' objects (*_avx2, *_avx512, *_amx) have no weak or vague symbols (the
// prebuilt binary must stay loadable on any x86-64, see docs/kernels.md).
//
// The CUDA part is built when a GPU is visible (nvidia-smi -L) or
// NEGATIVE_CACHE_CPP_CUDA=1 (=0: never); without a device cuda_test skips.
// Without cmake or a C++ compiler it prints one line and exits 0.
//
//   NEGATIVE_CACHE_CPP_JOBS=N   parallel build jobs (default 2)
//
// `node scripts/test-cpp.js --arch arm64` (on linux-x64; npm run test:arm64 does
// this) cross-compiles them with cmake/aarch64-linux-gnu.cmake into
// build/cpp-tests-arm64 (CPU only) and runs them under qemu-aarch64-static with
// the arm64 sysroot NEGATIVE_CACHE_ARM64_SYSROOT (default .cache/arm64/sysroot).
'use strict';
const fs = require('fs');
const path = require('path');
const { spawnSync } = require('child_process');

const { toolchainFor } = require('./cmake-js-rebuild');

const root = path.resolve(__dirname, '..');
const archArg = process.argv.indexOf('--arch');
const arch = archArg >= 0 ? process.argv[archArg + 1] : process.arch;
const cross = arch !== process.arch;
const buildDir = path.join(root, 'build', cross ? `cpp-tests-${arch}` : 'cpp-tests');
const TESTS = ['cache_store_test', 'kernels_test', 'lse_grad_test', 'checkpoint_test', 'cuda_test'];

function onPath(name) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { cwd: root, encoding: 'utf8', maxBuffer: 64 << 20, ...opts });
}

function fail(message, output) {
  if (output) process.stderr.write(output.slice(-6000));
  console.error(`test-cpp: ${message}`);
  process.exit(1);
}

function wantCuda() {
  const v = process.env.NEGATIVE_CACHE_CPP_CUDA;
  if (v === '1') return true;
  if (v === '0') return false;
  if (!onPath('nvcc') || !onPath('nvidia-smi')) return false;
  const smi = run('nvidia-smi', ['-L']);
  return smi.status === 0 && /GPU \d/.test(smi.stdout);
}

/** [program, ...args] that runs a test binary of the target arch here. */
function runnerPrefix() {
  if (!cross) return [];
  const sysroot = process.env.NEGATIVE_CACHE_ARM64_SYSROOT || path.join(root, '.cache', 'arm64', 'sysroot');
  if (!onPath('qemu-aarch64-static')) fail('qemu-aarch64-static is not on PATH (apt-get install qemu-user-static)');
  if (!fs.existsSync(path.join(sysroot, 'lib', 'ld-linux-aarch64.so.1')) && !fs.existsSync(path.join(sysroot, 'usr', 'lib', 'ld-linux-aarch64.so.1'))) {
    fail(`no aarch64 sysroot in ${sysroot} (npm run test:arm64 makes one)`);
  }
  return ['qemu-aarch64-static', '-L', sysroot];
}

function main() {
  let toolchain = null;
  if (cross) {
    try {
      toolchain = toolchainFor(arch);
    } catch (e) {
      fail(e.message);
    }
    if (!onPath('aarch64-linux-gnu-g++')) fail('aarch64-linux-gnu-g++ is not on PATH (apt-get install g++-aarch64-linux-gnu)');
  }
  const prefix = runnerPrefix();
  const cxx = cross ? ['aarch64-linux-gnu-g++'] : process.env.CXX ? [process.env.CXX.split(/\s+/)[0]] : ['c++', 'g++', 'clang++'];
  const missing = [];
  if (!onPath('cmake')) missing.push('cmake');
  if (!cxx.some((c) => c.includes('/') ? fs.existsSync(c) : onPath(c))) missing.push('a C++ compiler');
  if (missing.length > 0) {
    console.log(`test-cpp: skipped, ${missing.join(' and ')} not on PATH (the C++ tests of native/ did not run)`);
    return;
  }
  const cuda = !cross && wantCuda();
  const configure = run('cmake', ['-S', root, '-B', buildDir, '-DCMAKE_BUILD_TYPE=Release', '-DNEGCACHE_TESTS=ON',
    '-DNEGCACHE_ADDON=OFF', `-DNEGCACHE_CUDA=${cuda ? 'ON' : 'OFF'}`,
    ...(toolchain ? [`-DCMAKE_TOOLCHAIN_FILE=${toolchain}`, '-DNEGCACHE_MPI=OFF'] : [])]);
  if (configure.status !== 0) fail('cmake configure failed', configure.stdout + configure.stderr);
  const jobs = process.env.NEGATIVE_CACHE_CPP_JOBS || '2';
  const t0 = Date.now();
  const build = run('cmake', ['--build', buildDir, '-j', jobs]);
  if (build.status !== 0) fail('the C++ tests did not build', build.stdout + build.stderr);
  console.log(`test-cpp: built in ${((Date.now() - t0) / 1000).toFixed(1)} s (${buildDir}, ${arch}, CUDA ${cuda ? 'on' : 'off'})`);

  let failed = 0;
  for (const name of TESTS) {
    const t1 = Date.now();
    const exe = path.join(buildDir, name);
    const r = prefix.length ? run(prefix[0], [...prefix.slice(1), exe], { cwd: buildDir }) : run(exe, [], { cwd: buildDir });
    const out = (r.stdout || '') + (r.stderr || '');
    const last = out.trim().split('\n').pop() || '';
    const secs = ((Date.now() - t1) / 1000).toFixed(1);
    if (r.status === 0) {
      console.log(`test-cpp: ${name} ok (${secs} s): ${last}`);
    } else {
      failed++;
      process.stderr.write(out.slice(-6000));
      console.error(`test-cpp: ${name} FAILED (exit ${r.status === null ? r.signal : r.status})`);
    }
  }

  // The *_avx2 / *_avx512 / *_amx objects must define no weak (W/V) or unique (u)
  // symbols: the linker could pick such an AVX-compiled copy for a baseline caller.
  const objects = [];
  const walk = (dir) => {
    for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
      const p = path.join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (/_(avx2|avx512|amx)\.cc\.o(bj)?$/.test(e.name)) objects.push(p);
    }
  };
  walk(path.join(buildDir, 'CMakeFiles'));
  if (!onPath('nm')) {
    console.log('test-cpp: symbol check skipped (no nm on PATH)');
  } else if (objects.length === 0 && arch === 'x64') {
    failed++;
    console.error('test-cpp: no *_avx2 / *_avx512 / *_amx object found for the symbol check');
  } else {
    for (const obj of objects) {
      const nm = run('nm', [obj]);
      const bad = nm.stdout.split('\n').filter((l) => / [WVu] /.test(l));
      if (nm.status !== 0 || bad.length > 0) {
        failed++;
        console.error(`test-cpp: ${path.basename(obj)} has weak/vague symbols:\n${bad.slice(0, 10).join('\n')}`);
      } else {
        console.log(`test-cpp: ${path.basename(obj)} has no weak or vague symbols`);
      }
    }
  }
  if (failed > 0) fail(`${failed} check(s) failed`);
}

main();
