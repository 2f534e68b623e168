#!/usr/bin/env node
// `npm run prebuild`: builds the prebuilt binaries that the package ships,
// prebuilds/<platform>-<arch>/negative-cache.napi.node, with prebuildify
// (Node-API, stripped) driving cmake-js through scripts/cmake-js-rebuild.js.
//
// On linux-x64 it builds two: linux-x64 (native) and linux-arm64, cross-compiled
// with Debian's g++-aarch64-linux-gnu through cmake/aarch64-linux-gnu.cmake and
// stripped with aarch64-linux-gnu-strip. The arm64 binary is loaded here under
// qemu-aarch64-static when `npm run test:arm64` has left its arm64 sysroot in
// .cache/arm64/sysroot (or NEGATIVE_CACHE_ARM64_SYSROOT names one); otherwise
// only its ELF header and symbol versions are checked.
//
// Each build runs in a temporary folder, so the checkout's build/ (what the tests
// and other builds use) is left alone. The prebuilds are CPU-only unless --cuda is
// given (native arch only): the x64 kernels dispatch to AVX2/FMA/F16C at run time
// and run on any x86-64 CPU, the arm64 ones use NEON (every aarch64 CPU); CUDA
// users build from source (NEGATIVE_CACHE_BUILD_FROM_SOURCE=1).
//
//   node scripts/prebuild.js [--out DIR] [--arch LIST] [--cuda] [--keep-build DIR]
//     --out DIR          write DIR/prebuilds/... (default: the package root)
//     --arch LIST        comma-separated targets (default: this machine's arch, plus
//                        arm64 on linux-x64), e.g. --arch x64 or --arch arm64
//     --cuda             keep the CUDA part if nvcc is found (default: -DNEGCACHE_CUDA=OFF)
//     --keep-build DIR   build in DIR (DIR/build) and keep it, for inspecting the objects;
//                        a cross build goes to DIR-<arch>
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const shim = path.join(__dirname, 'cmake-js-rebuild.js');
const { toolchainFor } = require('./cmake-js-rebuild');

/** Per cross target: the compiler and strip it needs, the ELF machine readelf reports, the qemu runner. */
const CROSS = {
  arm64: { cxx: 'aarch64-linux-gnu-g++', strip: 'aarch64-linux-gnu-strip', machine: 'AArch64', qemu: 'qemu-aarch64-static',
    apt: 'g++-aarch64-linux-gnu', sysroot: process.env.NEGATIVE_CACHE_ARM64_SYSROOT || path.join(root, '.cache', 'arm64', 'sysroot') },
};

function onPath(name) {
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

function defaultArches() {
  const a = [process.arch];
  if (process.platform === 'linux' && process.arch === 'x64') a.push('arm64');
  return a;
}

function parseArgs(argv) {
  const opts = { out: root, cuda: false, keepBuild: null, arches: defaultArches() };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) opts.out = path.resolve(argv[++i]);
    else if (argv[i] === '--arch' && i + 1 < argv.length) opts.arches = [...new Set(argv[++i].split(',').filter(Boolean))];
    else if (argv[i] === '--cuda') opts.cuda = true;
    else if (argv[i] === '--keep-build' && i + 1 < argv.length) opts.keepBuild = path.resolve(argv[++i]);
    else throw new Error(`prebuild: unknown argument ${JSON.stringify(argv[i])} (expected --out DIR, --arch LIST, --cuda or --keep-build DIR)`);
  }
  return opts;
}

function runPrebuildify(opts, arch, staging, baseCmakeArgs) {
  const prebuildify = require('prebuildify');
  // prebuildify hands process.env (plus its PREBUILD_* settings) to the build step.
  // The MPI addon is never shipped; CUDA only on request, and never in a cross build.
  const cross = arch !== process.arch;
  process.env.NEGATIVE_CACHE_CMAKE_ARGS = `${opts.cuda && !cross ? '' : '-DNEGCACHE_CUDA=OFF '}-DNEGCACHE_MPI=OFF ${baseCmakeArgs}`.trim();
  return new Promise((resolve, reject) => {
    prebuildify({
      napi: true,
      strip: true,
      arch,                  // prebuilds/linux-<arch>; the shim gets --arch=<arch>
      stripBin: cross ? CROSS[arch].strip : 'strip',
      cwd: staging,          // the build step runs here and leaves staging/build/Release/*.node
      out: opts.out,         // prebuilds/<platform>-<arch>/ goes here
      name: require(path.join(root, 'package.json')).name,
      nodeGyp: shim,
      targets: [],
    }, (err) => (err ? reject(err) : resolve()));
  });
}

/** The ELF machine of a binary ("Advanced Micro Devices X86-64", "AArch64"), or null. */
function elfMachine(file) {
  const r = spawnSync('readelf', ['-h', file], { encoding: 'utf8' });
  const m = r.status === 0 && /Machine:\s+(.+)/.exec(r.stdout);
  return m ? m[1].trim() : null;
}

/** What the binary asks of the system, newest symbol version per library: "libc.so.6 >= GLIBC_2.29, ...". */
function runtimeNeeds(file) {
  const r = spawnSync('readelf', ['-V', '-W', file], { encoding: 'utf8' });
  if (r.status !== 0) return null;
  const parts = (v) => v.replace(/^[A-Z_]+?_(?=\d)/, '').split('.').map(Number);
  const newer = (a, b) => {
    const x = parts(a), y = parts(b);
    for (let i = 0; i < Math.max(x.length, y.length); i++) if ((x[i] || 0) !== (y[i] || 0)) return (x[i] || 0) > (y[i] || 0);
    return false;
  };
  const newest = new Map();   // "lib family" -> version
  let lib = null;
  for (const line of r.stdout.split('\n')) {
    const f = /File: (\S+)/.exec(line);
    if (f) lib = f[1];
    const n = /Name: ((GLIBC|GLIBCXX|GCC)_[0-9.]+)/.exec(line);
    if (n && lib) {
      const key = `${lib} ${n[2]}`;
      if (!newest.has(key) || newer(n[1], newest.get(key))) newest.set(key, n[1]);
    }
  }
  return [...newest].map(([key, v]) => `${key.split(' ')[0]} >= ${v}`).join(', ');
}

/** The command that loads a binary for arch here: [program, ...args] or a reason why it cannot. */
function loaderFor(arch) {
  if (arch === process.arch) return { cmd: [process.execPath] };
  const c = CROSS[arch];
  const node = path.join(c.sysroot, 'usr', 'bin', 'node');
  if (!onPath(c.qemu)) return { why: `${c.qemu} is not on PATH` };
  if (!fs.existsSync(node)) return { why: `no ${arch} sysroot with node in ${c.sysroot} (npm run test:${arch} makes one)` };
  return { cmd: [c.qemu, '-L', c.sysroot, node] };
}

async function buildOne(opts, arch, baseCmakeArgs) {
  const cross = arch !== process.arch;
  if (cross) {
    toolchainFor(arch);  // throws when this host cannot cross-compile for arch
    if (!onPath(CROSS[arch].cxx)) {
      throw new Error(`prebuild: ${CROSS[arch].cxx} is not on PATH (Debian/Ubuntu: apt-get install ${CROSS[arch].apt}); ` +
        `to build only this machine's prebuild: npm run prebuild -- --arch ${process.arch}`);
    }
  }
  let staging = opts.keepBuild && (cross ? `${opts.keepBuild}-${arch}` : opts.keepBuild);
  if (staging) fs.mkdirSync(staging, { recursive: true });
  else staging = fs.mkdtempSync(path.join(os.tmpdir(), `negative-cache-prebuild-${arch}-`));
  const dir = path.join(opts.out, 'prebuilds', `${process.platform}-${arch}`);
  // A stale binary left here under another name would be shipped (and maybe chosen) too.
  if (fs.existsSync(dir)) for (const f of fs.readdirSync(dir)) if (f.endsWith('.node')) fs.rmSync(path.join(dir, f));
  try {
    await runPrebuildify(opts, arch, staging, baseCmakeArgs);
  } finally {
    if (!opts.keepBuild) fs.rmSync(staging, { recursive: true, force: true });
  }
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
  if (files.length !== 1) throw new Error(`prebuild: expected one .node file in ${dir}, found ${files.join(', ') || 'none'}`);
  const file = path.join(dir, files[0]);
  const machine = elfMachine(file);
  if (cross && machine !== null && machine !== CROSS[arch].machine) {
    throw new Error(`prebuild: ${file} is built for ${machine}, not ${CROSS[arch].machine}`);
  }
  // The prebuild must load on its own (no build/ next to it).
  const loader = loaderFor(arch);
  let loaded = `not loaded here: ${loader.why}`;
  if (loader.cmd) {
    const check = spawnSync(loader.cmd[0], [...loader.cmd.slice(1), '-e',
      `const a = require(${JSON.stringify(file)}); console.log(JSON.stringify({ napiVersion: a.napiVersion, cpu: a.cpuFeatures ? a.cpuFeatures() : null, cuda: a.cuda ? a.cuda.built : null }))`],
    { encoding: 'utf8' });
    if (check.status !== 0) throw new Error(`prebuild: ${file} does not load:\n${check.stderr}`);
    loaded = check.stdout.trim();
  }
  console.log(`prebuild: ${file} (${machine || 'unknown machine'}, ${fs.statSync(file).size} bytes) ${loaded}`);
  const needs = runtimeNeeds(file);
  if (needs) console.log(`prebuild: needs ${needs}`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  try {
    fs.accessSync(shim, fs.constants.X_OK);
  } catch (e) {
    fs.chmodSync(shim, 0o755);   // prebuildify runs the build step as a program
  }
  const baseCmakeArgs = process.env.NEGATIVE_CACHE_CMAKE_ARGS || '';
  for (const arch of opts.arches) await buildOne(opts, arch, baseCmakeArgs);
}

main().catch((e) => {
  console.error(e && e.message ? e.message : e);
  process.exit(1);
});
