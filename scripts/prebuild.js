#!/usr/bin/env node
// `npm run prebuild`: builds the prebuilt binary that the package ships,
// prebuilds/<platform>-<arch>/negative-cache.napi.node, with prebuildify
// (Node-API, stripped) driving cmake-js through scripts/cmake-js-rebuild.js.
//
// The build runs in a temporary folder, so the checkout's build/ (what the tests
// and other builds use) is left alone. The prebuild is CPU-only unless --cuda is
// given: the CPU kernels dispatch to AVX2/FMA/F16C at run time and run on any
// x86-64 CPU; CUDA users build from source (NEGATIVE_CACHE_BUILD_FROM_SOURCE=1).
//
//   node scripts/prebuild.js [--out DIR] [--cuda] [--keep-build DIR]
//     --out DIR          write DIR/prebuilds/... (default: the package root)
//     --cuda             keep the CUDA part if nvcc is found (default: -DNEGCACHE_CUDA=OFF)
//     --keep-build DIR   build in DIR (DIR/build) and keep it, for inspecting the objects
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const shim = path.join(__dirname, 'cmake-js-rebuild.js');

function parseArgs(argv) {
  const opts = { out: root, cuda: false, keepBuild: null };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--out' && i + 1 < argv.length) opts.out = path.resolve(argv[++i]);
    else if (argv[i] === '--cuda') opts.cuda = true;
    else if (argv[i] === '--keep-build' && i + 1 < argv.length) opts.keepBuild = path.resolve(argv[++i]);
    else throw new Error(`prebuild: unknown argument ${JSON.stringify(argv[i])} (expected --out DIR, --cuda or --keep-build DIR)`);
  }
  return opts;
}

function runPrebuildify(opts, staging) {
  const prebuildify = require('prebuildify');
  // prebuildify hands process.env (plus its PREBUILD_* settings) to the build step.
  if (!opts.cuda) {
    process.env.NEGATIVE_CACHE_CMAKE_ARGS = `-DNEGCACHE_CUDA=OFF -DNEGCACHE_MPI=OFF ${process.env.NEGATIVE_CACHE_CMAKE_ARGS || ''}`.trim();
  }
  return new Promise((resolve, reject) => {
    prebuildify({
      napi: true,
      strip: true,
      cwd: staging,          // the build step runs here and leaves staging/build/Release/*.node
      out: opts.out,         // prebuilds/<platform>-<arch>/ goes here
      name: require(path.join(root, 'package.json')).name,
      nodeGyp: shim,
      targets: [],
    }, (err) => (err ? reject(err) : resolve()));
  });
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

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  try {
    fs.accessSync(shim, fs.constants.X_OK);
  } catch (e) {
    fs.chmodSync(shim, 0o755);   // prebuildify runs the build step as a program
  }
  let staging = opts.keepBuild;
  if (staging) fs.mkdirSync(staging, { recursive: true });
  else staging = fs.mkdtempSync(path.join(os.tmpdir(), 'negative-cache-prebuild-'));
  const dir = path.join(opts.out, 'prebuilds', `${process.platform}-${process.arch}`);
  // A stale binary left here under another name would be shipped (and maybe chosen) too.
  if (fs.existsSync(dir)) for (const f of fs.readdirSync(dir)) if (f.endsWith('.node')) fs.rmSync(path.join(dir, f));
  try {
    await runPrebuildify(opts, staging);
  } finally {
    if (!opts.keepBuild) fs.rmSync(staging, { recursive: true, force: true });
  }
  const files = fs.readdirSync(dir).filter((f) => f.endsWith('.node'));
  if (files.length !== 1) throw new Error(`prebuild: expected one .node file in ${dir}, found ${files.join(', ') || 'none'}`);
  const file = path.join(dir, files[0]);
  // The prebuild must load on its own (no build/ next to it).
  const check = spawnSync(process.execPath, ['-e',
    `const a = require(${JSON.stringify(file)}); console.log(JSON.stringify({ napiVersion: a.napiVersion, cpu: a.cpuFeatures ? a.cpuFeatures() : null, cuda: a.cuda ? a.cuda.built : null }))`],
  { encoding: 'utf8' });
  if (check.status !== 0) throw new Error(`prebuild: ${file} does not load:\n${check.stderr}`);
  console.log(`prebuild: ${file} (${fs.statSync(file).size} bytes) ${check.stdout.trim()}`);
  const needs = runtimeNeeds(file);
  if (needs) console.log(`prebuild: needs ${needs}`);
}

main().catch((e) => {
  console.error(e && e.message ? e.message : e);
  process.exit(1);
});
