#!/usr/bin/env node
// The package's install step: use a prebuilt binary that loads on this machine;
// otherwise build from source with cmake-js (node-gyp-build's own fallback
// would run node-gyp, which this package does not use).
//
//   NEGATIVE_CACHE_BUILD_FROM_SOURCE=1   always build from source
//   NEGATIVE_CACHE_REQUIRE_NATIVE=1      fail the install if no addon can be had
//                                        (otherwise the pure-JS backend is used)
'use strict';
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const truthy = (v) => v !== undefined && v !== '' && v !== '0' && v !== 'false';

function tryLoad() {
  try {
    require('node-gyp-build')(root);
    return null;
  } catch (e) {
    return e;
  }
}

function buildFromSource() {
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch (e) {
    return 'cmake-js is not installed';
  }
  const args = [cmakeJs, 'rebuild', '--out', path.join(root, 'build')];
  if (process.env.NEGATIVE_CACHE_CMAKE_ARGS) {
    for (const a of process.env.NEGATIVE_CACHE_CMAKE_ARGS.split(/\s+/).filter(Boolean)) args.push(`--CD${a.replace(/^-D/, '')}`);
  }
  const r = spawnSync(process.execPath, args, { cwd: root, stdio: 'inherit' });
  if (r.error) return r.error.message;
  if (r.status !== 0) return `cmake-js exited with status ${r.status}`;
  return null;
}

function main() {
  const forceSource = truthy(process.env.NEGATIVE_CACHE_BUILD_FROM_SOURCE);
  if (!forceSource) {
    const err = tryLoad();
    if (!err) {
      console.log('negative-cache: using the prebuilt native addon');
      return 0;
    }
  }
  console.log('negative-cache: building the native addon from source (cmake-js)');
  const buildErr = buildFromSource();
  const loadErr = buildErr ? null : tryLoad();
  if (!buildErr && !loadErr) return 0;
  const why = buildErr || (loadErr && loadErr.message.split('\n')[0]);
  const msg = `negative-cache: no native addon (no prebuilt binary for ${process.platform}-${process.arch} ` +
    `with Node-API 8 loaded, and the source build failed: ${why}). ` +
    'Fixes: install a C++17 compiler and CMake >= 3.18, then `npm rebuild negative-cache`; ' +
    "or use the pure-JS backend (backend: 'js', NEGATIVE_CACHE_BACKEND=js).";
  if (truthy(process.env.NEGATIVE_CACHE_REQUIRE_NATIVE)) {
    console.error(msg);
    return 1;
  }
  console.warn(msg);
  return 0;
}

process.exitCode = main();
