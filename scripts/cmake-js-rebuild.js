#!/usr/bin/env node
// The one place that runs `cmake-js rebuild` for this package.
//
// As a module: cmakeJsRebuild({ outDir }) builds the addon into <outDir>/Release
// (used by scripts/install.js for source builds).
// As a program: a stand-in for node-gyp when prebuildify builds
// (`prebuildify --node-gyp scripts/cmake-js-rebuild.js`, see scripts/prebuild.js).
// prebuildify calls it like node-gyp ("rebuild --target=... --arch=... --release")
// from its working folder and then takes <cwd>/build/Release/*.node, so it
// builds into <cwd>/build. Node-API builds need no Node headers download
// (package.json "binary.napi_versions" makes cmake-js use node-api-headers,
// which are the same for every architecture), so --target/--devdir are ignored.
// --arch=arm64 on an x64 Linux host cross-compiles for linux-arm64 through the
// CMake toolchain file cmake/aarch64-linux-gnu.cmake (Debian's
// g++-aarch64-linux-gnu); any other foreign --arch is refused.
//
//   NEGATIVE_CACHE_CMAKE_ARGS="-DNEGCACHE_CUDA=OFF ..."   extra CMake definitions
'use strict';
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');

/** NEGATIVE_CACHE_CMAKE_ARGS ("-DA=1 -DB=2" or "A=1 B=2") as cmake-js --CD flags. */
function cmakeDefinitionFlags(env = process.env) {
  const raw = env.NEGATIVE_CACHE_CMAKE_ARGS || '';
  return raw.split(/\s+/).filter(Boolean).map((a) => `--CD${a.replace(/^-D/, '')}`);
}

/** Cross toolchain files by target arch (the host must be linux-x64). */
const CROSS_TOOLCHAINS = { arm64: path.join(root, 'cmake', 'aarch64-linux-gnu.cmake') };

/** The CMake toolchain file for building for `arch` here: null for a native build; throws when unsupported. */
function toolchainFor(arch) {
  if (!arch || arch === process.arch) return null;
  if (process.platform === 'linux' && process.arch === 'x64' && CROSS_TOOLCHAINS[arch]) return CROSS_TOOLCHAINS[arch];
  throw new Error(`cross-compiling for ${arch} on ${process.platform}-${process.arch} is not supported ` +
    `(supported: ${Object.keys(CROSS_TOOLCHAINS).join(', ')} on linux-x64)`);
}

/**
 * Runs `cmake-js rebuild` on this package's CMakeLists.txt into outDir, for
 * `arch` (default: this machine's; 'arm64' cross-compiles on linux-x64).
 * Returns null on success, otherwise a one-line reason.
 */
function cmakeJsRebuild({ outDir = path.join(root, 'build'), stdio = 'inherit', env = process.env, arch = null } = {}) {
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch (e) {
    return 'cmake-js is not installed (it is a dependency of negative-cache; reinstall the package)';
  }
  let toolchain;
  try {
    toolchain = toolchainFor(arch);
  } catch (e) {
    return e.message;
  }
  const args = [cmakeJs, 'rebuild', '--directory', root, '--out', outDir, ...cmakeDefinitionFlags(env)];
  // cmake-js's own --arch only matters on Windows/macOS; on Linux the toolchain file does it.
  if (toolchain) args.push(`--CDCMAKE_TOOLCHAIN_FILE=${toolchain}`);
  const r = spawnSync(process.execPath, args, { cwd: root, stdio, env });
  if (r.error) return `could not run cmake-js: ${r.error.message}`;
  if (r.status !== 0) return `cmake-js rebuild exited with status ${r.status} (see the CMake output above)`;
  return null;
}

module.exports = { cmakeJsRebuild, cmakeDefinitionFlags, toolchainFor };

if (require.main === module) {
  const archArg = process.argv.find((a) => a.startsWith('--arch='));
  const arch = archArg ? archArg.slice('--arch='.length) : null;
  const err = cmakeJsRebuild({ outDir: path.resolve(process.cwd(), 'build'), arch });
  if (err) {
    console.error(`cmake-js-rebuild: ${err}`);
    process.exit(1);
  }
}
