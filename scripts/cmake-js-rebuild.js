#!/usr/bin/env node
// Stand-in for node-gyp when prebuildify builds: `prebuildify --node-gyp scripts/cmake-js-rebuild.js`
// calls it like node-gyp ("rebuild" plus flags); it runs `cmake-js rebuild` instead.
'use strict';
const path = require('path');
const { spawnSync } = require('child_process');
const root = path.resolve(__dirname, '..');
const r = spawnSync(process.execPath, [require.resolve('cmake-js/bin/cmake-js'), 'rebuild', '--out', path.join(root, 'build')],
  { cwd: root, stdio: 'inherit' });
process.exit(r.status === null ? 1 : r.status);
