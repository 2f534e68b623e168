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
// (package.json "binary.napi_versions" makes cmake-js use node-api-headers), so
// --target/--devdir are ignored; a foreign --arch is refused.
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

/**
 * Runs `cmake-js rebuild` on this package's CMakeLists.txt into outDir.
 * Returns null on success, otherwise a one-line reason.
 */
function cmakeJsRebuild({ outDir = path.join(root, 'build'), stdio = 'inherit', env = process.env } = {}) {
  let cmakeJs;
  try {
    cmakeJs = require.resolve('cmake-js/bin/cmake-js');
  } catch (e) {
    return 'cmake-js is not installed (it is a dependency of negative-cache; reinstall the package)';
  }
  const args = [cmakeJs, 'rebuild', '--directory', root, '--out', outDir, ...cmakeDefinitionFlags(env)];
  const r = spawnSync(process.execPath, args, { cwd: root, stdio, env });
  if (r.error) return `could not run cmake-js: ${r.error.message}`;
  if (r.status !== 0) return `cmake-js rebuild exited with status ${r.status} (see the CMake output above)`;
  return null;
}

module.exports = { cmakeJsRebuild, cmakeDefinitionFlags };

if (require.main === module) {
  const archArg = process.argv.find((a) => a.startsWith('--arch='));
  if (archArg && archArg.slice('--arch='.length) !== process.arch) {
    console.error(`cmake-js-rebuild: cross-compiling is not supported (asked for ${archArg}, this is ${process.arch})`);
    process.exit(1);
  }
  const err = cmakeJsRebuild({ outDir: path.resolve(process.cwd(), 'build') });
  if (err) {
    console.error(`cmake-js-rebuild: ${err}`);
    process.exit(1);
  }
}
