#!/usr/bin/env node
// The package's install step: use the addon that node-gyp-build finds
// (build/Release, then prebuilds/<platform>-<arch>/) when it loads on this
// machine; otherwise build from source with cmake-js (node-gyp-build's own
// fallback would run node-gyp, which this package does not use).
//
// In a git checkout (a .git entry next to package.json) it always builds from
// source: a checkout has no prebuilds, and a build/ left from earlier may be stale.
//
//   NEGATIVE_CACHE_BUILD_FROM_SOURCE=1   always build from source
//                                        (also `npm install --build-from-source`)
//   NEGATIVE_CACHE_REQUIRE_NATIVE=1      fail the install if no addon can be had
//                                        (otherwise the pure-JS backend is used)
//   NEGATIVE_CACHE_CMAKE_ARGS="-D..."    extra CMake definitions for a source build
'use strict';
const fs = require('fs');
const path = require('path');
const { cmakeJsRebuild } = require('./cmake-js-rebuild');

const root = path.resolve(__dirname, '..');
const buildDir = path.join(root, 'build');
const prebuildDir = path.join(root, 'prebuilds', `${process.platform}-${process.arch}`);
const truthy = (v) => v !== undefined && v !== '' && v !== '0' && v !== 'false';
const firstLine = (e) => String(e && e.message ? e.message : e).split('\n')[0].trim();

/** Finds and loads the addon as the package will at run time: { file } or { error }. */
function tryLoad() {
  let file;
  try {
    file = require('node-gyp-build').resolve(root);
  } catch (e) {
    return { error: `no prebuilt binary for ${process.platform}-${process.arch} in ${prebuildDir}` };
  }
  try {
    require(file);
    return { file };
  } catch (e) {
    return { file, error: `${path.relative(root, file)} does not load: ${firstLine(e)}` };
  }
}

function onPath(name) {
  if (name.includes('/')) return fs.existsSync(name);
  return (process.env.PATH || '').split(path.delimiter).some((dir) => dir && fs.existsSync(path.join(dir, name)));
}

/** Why a source build cannot even start (missing tools), or null. */
function missingBuildTools() {
  const missing = [];
  if (!onPath('cmake')) missing.push('cmake');
  const cxx = process.env.CXX ? [process.env.CXX.split(/\s+/)[0]] : ['c++', 'g++', 'clang++'];
  if (!cxx.some(onPath)) missing.push(`a C++ compiler (${cxx.join(', ')})`);
  if (missing.length === 0) return null;
  return `cannot build from source: ${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not on PATH`;
}

function main() {
  const fromSourceWhy = truthy(process.env.NEGATIVE_CACHE_BUILD_FROM_SOURCE) ? 'NEGATIVE_CACHE_BUILD_FROM_SOURCE is set'
    : truthy(process.env.npm_config_build_from_source) ? '--build-from-source was given'
      : fs.existsSync(path.join(root, '.git')) ? 'this is a git checkout'
        : null;
  const tried = [];
  if (!fromSourceWhy) {
    const found = tryLoad();
    if (!found.error) {
      console.log(`negative-cache: using the native addon ${path.relative(root, found.file)}`);
      return 0;
    }
    tried.push(found.error);
    console.log(`negative-cache: ${found.error}; building from source with cmake-js`);
  } else {
    console.log(`negative-cache: building the native addon from source with cmake-js (${fromSourceWhy})`);
  }

  const toolsErr = missingBuildTools();
  const buildErr = toolsErr || cmakeJsRebuild({ outDir: buildDir });
  if (!buildErr) {
    const built = tryLoad();
    if (!built.error) {
      console.log(`negative-cache: built ${path.relative(root, built.file)}`);
      return 0;
    }
    tried.push(`the source build succeeded but ${built.error}`);
  } else {
    tried.push(toolsErr || `the source build failed: ${buildErr}`);
  }
  // Nothing half-built may shadow a prebuild at run time (build/Release wins).
  if (!toolsErr) fs.rmSync(buildDir, { recursive: true, force: true });
  if (fromSourceWhy) {
    const prebuilt = tryLoad();
    if (!prebuilt.error) {
      console.warn(`negative-cache: ${tried.join('; ')}; using the prebuilt addon ${path.relative(root, prebuilt.file)} instead`);
      return 0;
    }
  }

  const msg = `negative-cache: no native addon for ${process.platform}-${process.arch} (Node ${process.version}): ` +
    `${tried.join('; ')}. Fixes: install a C++17 compiler and CMake >= 3.18 (Debian/Ubuntu: apt-get install g++ cmake), ` +
    'then `npm rebuild negative-cache`; or use the pure-JS backend (backend: \'js\' or NEGATIVE_CACHE_BACKEND=js). ' +
    'See the README, section Installation.';
  if (truthy(process.env.NEGATIVE_CACHE_REQUIRE_NATIVE)) {
    console.error(msg);
    return 1;
  }
  console.warn(`${msg} Installed without it: the pure-JS backend will be used.`);
  return 0;
}

process.exitCode = main();
