'use strict';
// Installing the packed package the way users do (`npm pack`, then `npm install`
// of the tarball into a fresh folder, offline from the npm cache):
//  1. with the prebuilt binary and NO compiler and NO CMake on PATH: the install
//     step takes the prebuild, and the native backend scores;
//  2. with the prebuild removed and a compiler present: it builds from source.
// Slow (two C++ builds, two npm installs); set NEGATIVE_CACHE_SKIP_INSTALL_TESTS=1 to skip.
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawnSync } = require('child_process');

const root = path.resolve(__dirname, '..');
const pkg = require(path.join(root, 'package.json'));
const platformDir = `${process.platform}-${process.arch}`;
const skip = !!process.env.NEGATIVE_CACHE_SKIP_INSTALL_TESTS || platformDir !== 'linux-x64';

function npmCliPath() {
  const fromEnv = process.env.npm_execpath;
  if (fromEnv && /npm-cli\.js$/.test(fromEnv)) return fromEnv;
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const candidate = path.join(dir, 'npm');
    if (fs.existsSync(candidate)) {
      const real = fs.realpathSync(candidate);
      if (/\.js$/.test(real)) return real;
      const cli = path.join(path.dirname(real), '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js');
      if (fs.existsSync(cli)) return cli;
    }
  }
  throw new Error('cannot find npm-cli.js (run the tests through npm, or put npm on PATH)');
}

/** An environment without the npm_* variables of an enclosing `npm test`, with the given PATH. */
function cleanEnv(PATH, extra = {}) {
  const env = {};
  for (const k of ['HOME', 'USER', 'LANG', 'TMPDIR', 'TERM']) if (process.env[k] !== undefined) env[k] = process.env[k];
  for (const k of ['npm_config_cache', 'npm_config_registry', 'npm_config_userconfig', 'npm_config_offline']) {
    if (process.env[k] !== undefined) env[k] = process.env[k];
  }
  return Object.assign(env, { PATH }, extra);
}

/** Runs a command; on failure throws with the command and the tail of its output. */
function run(cmd, args, { cwd, env, timeoutMs = 300000 } = {}) {
  const r = spawnSync(cmd, args, { cwd, env, encoding: 'utf8', timeout: timeoutMs, maxBuffer: 64 << 20 });
  const output = `${r.stdout || ''}${r.stderr || ''}`;
  if (r.error || r.status !== 0) {
    const why = r.error ? r.error.message : `exit status ${r.status}${r.signal ? ` (signal ${r.signal})` : ''}`;
    throw new Error(`${path.basename(cmd)} ${args.join(' ')} (in ${cwd}) failed: ${why}\n--- output (tail) ---\n${output.slice(-6000)}`);
  }
  return output;
}

/** Pins every package that root's lockfile holds in one version, so an offline install finds it in the npm cache. */
function lockfilePins(exclude) {
  const lock = JSON.parse(fs.readFileSync(path.join(root, 'package-lock.json'), 'utf8'));
  const versions = new Map();
  for (const [key, entry] of Object.entries(lock.packages || {})) {
    if (!key || !entry.version || entry.link) continue;
    const name = key.slice(key.lastIndexOf('node_modules/') + 'node_modules/'.length);
    if (!versions.has(name)) versions.set(name, new Set());
    versions.get(name).add(entry.version);
  }
  const pins = {};
  for (const [name, set] of versions) if (set.size === 1 && !exclude.includes(name)) pins[name] = [...set][0];
  return pins;
}

// Runs in the app folder: selects backends, scores through the public API on
// the native backend and checks it against the pure-JS backend.
const CHECK_SCRIPT = `'use strict';
const path = require('path');
const tf = require('@tensorflow/tfjs');
const nc = require('negative-cache');
const pkgDir = path.dirname(require.resolve('negative-cache/package.json'));
const out = { backends: nc.availableBackends(), addonFile: path.relative(pkgDir, require('node-gyp-build').resolve(pkgDir)) };
const specs = { emb: { shape: [4], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } };
const values = (x) => Array.from(typeof x.dataSync === 'function' ? x.dataSync() : x);
function score(backend) {
  const manager = new nc.CacheManager(specs, 16, backend ? { backend } : undefined);
  const cache = manager.initCache();
  manager.updateCache(cache, { newItems: {
    emb: Float32Array.from({ length: 40 }, (_, i) => Math.sin(0.7 * i)),
    id: Int32Array.from({ length: 10 }, (_, i) => 100 + i) } });
  const loss = new nc.CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['emb', 'id'], seed: 7, reducer: 'none' });
  const q = tf.tensor2d(Array.from({ length: 12 }, (_, i) => Math.cos(0.3 * i)), [3, 4]);
  const p = tf.tensor2d(Array.from({ length: 12 }, (_, i) => Math.sin(0.5 * i + 1)), [3, 4]);
  const r = loss.compute((data) => data.emb, q, p, cache);
  const result = { backend: manager.backend, interpretableLoss: values(r.interpretableLoss),
    trainingLoss: values(r.trainingLoss), indices: values(r.updatedItemIndices.cache) };
  cache.dispose();
  return result;
}
out.auto = score(undefined);
out.native = score('native');
out.js = score('js');
console.log('CHECK-RESULT ' + JSON.stringify(out));
`;

(skip ? describe.skip : describe)('install from the packed tarball (npm pack + npm install, offline)', function () {
  this.timeout(15 * 60 * 1000);
  const npmCli = skip ? '' : npmCliPath();
  const tfjsVersion = skip ? '' : require('@tensorflow/tfjs/package.json').version;
  let tmp;
  let noCompilerBin;    // PATH for "no compiler": node and sh only
  let tarballPrebuilt;
  let tarballSource;
  let prebuiltFile;
  let crossArm64 = false;   // aarch64-linux-gnu-g++ here: the tarball also holds prebuilds/linux-arm64
  let arm64File;

  const npm = (args, opts) => run(process.execPath, [npmCli, ...args], opts);

  before(function () {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'negative-cache-install-test-'));
    noCompilerBin = path.join(tmp, 'bin');
    fs.mkdirSync(noCompilerBin);
    fs.symlinkSync(process.execPath, path.join(noCompilerBin, 'node'));
    fs.symlinkSync('/bin/sh', path.join(noCompilerBin, 'sh'));

    // The package as `npm pack` makes it from this checkout (dist/ must be built),
    // unpacked, without any prebuilds/ the checkout may hold.
    const env = cleanEnv(process.env.PATH);
    fs.mkdirSync(path.join(tmp, 'pack'));
    npm(['pack', '--ignore-scripts', '--pack-destination', path.join(tmp, 'pack')], { cwd: root, env });
    const packed = path.join(tmp, 'pack', `${pkg.name}-${pkg.version}.tgz`);
    run('tar', ['xzf', packed, '-C', tmp], { cwd: tmp, env });
    const pkgDir = path.join(tmp, 'package');
    fs.rmSync(path.join(pkgDir, 'prebuilds'), { recursive: true, force: true });
    assert.ok(fs.existsSync(path.join(pkgDir, 'dist', 'index.js')), 'the tarball has no dist/index.js (run npm run build:ts)');

    // Without a prebuild: for the source-build test.
    fs.mkdirSync(path.join(tmp, 'source'));
    npm(['pack', '--ignore-scripts', '--pack-destination', path.join(tmp, 'source')], { cwd: pkgDir, env });
    tarballSource = path.join(tmp, 'source', `${pkg.name}-${pkg.version}.tgz`);

    // With the prebuilds made by `npm run prebuild` (scripts/prebuild.js: prebuildify + cmake-js):
    // linux-x64, and linux-arm64 (cross-compiled) when aarch64-linux-gnu-g++ is here.
    crossArm64 = spawnSync('aarch64-linux-gnu-g++', ['--version'], { encoding: 'utf8' }).status === 0;
    run(process.execPath, [path.join(root, 'scripts', 'prebuild.js'), '--out', pkgDir, '--keep-build', path.join(tmp, 'prebuild-build'),
      '--arch', crossArm64 ? 'x64,arm64' : 'x64'],
    { cwd: root, env, timeoutMs: 900000 });
    const built = fs.readdirSync(path.join(pkgDir, 'prebuilds', platformDir));
    assert.deepStrictEqual(built.filter((f) => f.endsWith('.node')), [`${pkg.name}.node`]);
    prebuiltFile = path.join(pkgDir, 'prebuilds', platformDir, `${pkg.name}.node`);
    if (crossArm64) {
      assert.deepStrictEqual(fs.readdirSync(path.join(pkgDir, 'prebuilds', 'linux-arm64')), [`${pkg.name}.node`]);
      arm64File = path.join(pkgDir, 'prebuilds', 'linux-arm64', `${pkg.name}.node`);
    }
    fs.mkdirSync(path.join(tmp, 'prebuilt'));
    npm(['pack', '--ignore-scripts', '--pack-destination', path.join(tmp, 'prebuilt')], { cwd: pkgDir, env });
    tarballPrebuilt = path.join(tmp, 'prebuilt', `${pkg.name}-${pkg.version}.tgz`);
  });

  after(function () {
    if (tmp && !process.env.NEGATIVE_CACHE_KEEP_TEST_DIRS) fs.rmSync(tmp, { recursive: true, force: true });
  });

  /** A fresh app folder that depends on the tarball (and tfjs for the check); returns the install output. */
  function installInto(name, tarball, env, { expectFailure = false } = {}) {
    const app = path.join(tmp, name);
    fs.mkdirSync(app);
    const deps = { [pkg.name]: `file:${tarball}`, '@tensorflow/tfjs': tfjsVersion };
    fs.writeFileSync(path.join(app, 'package.json'), JSON.stringify({
      name: `${name}-app`, version: '1.0.0', private: true, dependencies: deps,
      overrides: lockfilePins(Object.keys(deps)),
      allowScripts: { [pkg.name]: true },
    }, null, 2));
    fs.writeFileSync(path.join(app, 'check.js'), CHECK_SCRIPT);
    // npm 11 warns about (and later npm versions skip) dependency install scripts not
    // listed in allowScripts; a file: tarball is not matched by name, so allow them all here.
    const args = [npmCli, 'install', '--prefer-offline', '--no-audit', '--no-fund', '--foreground-scripts',
      '--dangerously-allow-all-scripts'];
    if (!expectFailure) return { app, output: run(process.execPath, args, { cwd: app, env, timeoutMs: 600000 }) };
    const r = spawnSync(process.execPath, args, { cwd: app, env, encoding: 'utf8', timeout: 600000, maxBuffer: 64 << 20 });
    const output = `${r.stdout}${r.stderr}`;
    assert.notStrictEqual(r.status, 0, `npm install should have failed:\n${output.slice(-4000)}`);
    return { app, output };
  }

  function checkScoring(app, env) {
    const out = run(process.execPath, ['check.js'], { cwd: app, env, timeoutMs: 120000 });
    const line = out.split('\n').find((l) => l.startsWith('CHECK-RESULT '));
    assert.ok(line, `check.js printed no result:\n${out.slice(-4000)}`);
    const res = JSON.parse(line.slice('CHECK-RESULT '.length));
    assert.ok(res.backends.includes('native'), `availableBackends() = ${JSON.stringify(res.backends)}`);
    assert.strictEqual(res.auto.backend, 'native', 'auto should select the native backend');
    assert.strictEqual(res.native.backend, 'native');
    assert.strictEqual(res.js.backend, 'js');
    // Same seed -> same draws on both backends; the losses agree to float rounding.
    assert.deepStrictEqual(res.native.indices, res.js.indices);
    assert.strictEqual(res.native.interpretableLoss.length, 3);
    for (const key of ['interpretableLoss', 'trainingLoss']) {
      res.native[key].forEach((v, i) => {
        assert.ok(Number.isFinite(v), `${key}[${i}] = ${v}`);
        assert.ok(Math.abs(v - res.js[key][i]) <= 1e-4 * (1 + Math.abs(v)), `${key}[${i}]: native ${v} vs js ${res.js[key][i]}`);
      });
    }
    return res;
  }

  /** NEEDED only glibc/libstdc++ (+ libm, libgcc_s), no RPATH, symbol versions no newer than glibc 2.31 / GLIBCXX_3.4.28; returns the newest. */
  function checkSystemNeeds(file, loader) {
    const dynamic = run('readelf', ['-d', '-W', file], { cwd: tmp });
    const needed = [...dynamic.matchAll(/\(NEEDED\)\s+Shared library: \[([^\]]+)\]/g)].map((m) => m[1]);
    const system = new RegExp(`^(libc\\.so\\.6|libm\\.so\\.6|libstdc\\+\\+\\.so\\.6|libgcc_s\\.so\\.1|libpthread\\.so\\.0|libdl\\.so\\.2|${loader})$`);
    assert.ok(needed.includes('libc.so.6'), `NEEDED: ${needed}`);
    assert.deepStrictEqual(needed.filter((lib) => !system.test(lib)), [], `NEEDED: ${needed}`);
    assert.ok(!/\((RPATH|RUNPATH)\)/.test(dynamic), 'the prebuild carries an RPATH/RUNPATH');
    // It loads on Ubuntu 20.04 / Debian 11 class systems (glibc 2.31, libstdc++ of GCC 10):
    // no symbol version newer than theirs (see docs/install.md, the glibc/libstdc++ floor).
    const versions = run('readelf', ['-V', '-W', file], { cwd: tmp });
    const newest = (family) => [...versions.matchAll(new RegExp(`Name: ${family}_([0-9.]+)`, 'g'))]
      .map((m) => m[1].split('.').map(Number))
      .reduce((a, b) => { for (let i = 0; i < 3; i++) if ((a[i] || 0) !== (b[i] || 0)) return (a[i] || 0) > (b[i] || 0) ? a : b; return a; }, [0]);
    const atMost = (v, max) => { for (let i = 0; i < 3; i++) if ((v[i] || 0) !== (max[i] || 0)) return (v[i] || 0) < (max[i] || 0); return true; };
    assert.ok(atMost(newest('GLIBC'), [2, 31]), `needs GLIBC_${newest('GLIBC').join('.')} (> 2.31)`);
    assert.ok(atMost(newest('GLIBCXX'), [3, 4, 28]), `needs GLIBCXX_${newest('GLIBCXX').join('.')} (> 3.4.28)`);
    return { glibc: newest('GLIBC').join('.'), glibcxx: newest('GLIBCXX').join('.') };
  }

  it('builds a prebuild that needs only glibc and libstdc++ and runs on baseline x86-64', function () {
    const has = (tool) => spawnSync(tool, ['--version'], { encoding: 'utf8' }).status === 0;
    if (!has('readelf') || !has('objdump')) this.skip();   // binutils come with the compiler
    checkSystemNeeds(prebuiltFile, 'ld-linux-x86-64\\.so\\.2');

    // Everything but the *_avx2 / *_avx512 / *_amx kernels is baseline x86-64 (SSE2): no VEX/EVEX
    // instruction (AVX mnemonics all start with "v"), no ymm/zmm register.
    const objects = [];
    const walk = (dir) => {
      for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
        const p = path.join(dir, e.name);
        if (e.isDirectory() && !/CompilerId/.test(e.name)) walk(p);
        else if (e.isFile() && e.name.endsWith('.o')) objects.push(p);
      }
    };
    walk(path.join(tmp, 'prebuild-build', 'build', 'CMakeFiles'));
    assert.ok(objects.length > 0, 'no object files kept by prebuild --keep-build');
    const avxLines = (obj) => run('objdump', ['-d', '--no-show-raw-insn', obj], { cwd: tmp })
      .split('\n').filter((l) => /^\s*[0-9a-f]+:\s+v[a-z0-9]+\s/.test(l) || /%[yz]mm\d/.test(l));
    let dispatched = 0;
    for (const obj of objects) {
      const lines = avxLines(obj);
      if (/_(avx2|avx512|amx)\.cc\.o$/.test(obj)) dispatched += lines.length;
      else assert.deepStrictEqual(lines.slice(0, 3), [], `${path.basename(obj)} holds AVX code outside the dispatched kernels`);
    }
    assert.ok(dispatched > 0, 'found no AVX2 code in the *_avx2 objects (the check itself is broken?)');
  });

  it('ships a linux-arm64 prebuild (AArch64, stripped, the same glibc/libstdc++ floors as linux-x64) in a small tarball', function () {
    const has = (tool) => spawnSync(tool, ['--version'], { encoding: 'utf8' }).status === 0;
    if (!crossArm64 || !has('readelf')) this.skip();   // needs g++-aarch64-linux-gnu (npm run test:arm64 runs it)
    assert.match(run('readelf', ['-h', arm64File], { cwd: tmp }), /Machine:\s+AArch64/);
    assert.ok(!/\.symtab/.test(run('readelf', ['-S', '-W', arm64File], { cwd: tmp })), 'the arm64 prebuild is not stripped');
    const arm = checkSystemNeeds(arm64File, 'ld-linux-aarch64\\.so\\.1');
    const x64 = checkSystemNeeds(prebuiltFile, 'ld-linux-x86-64\\.so\\.2');
    assert.deepStrictEqual(arm, x64, 'the arm64 and x64 prebuilds need different glibc / libstdc++ versions');
    // Both binaries together keep the package small (about 0.25 MB each, stripped).
    const size = fs.statSync(tarballPrebuilt).size;
    assert.ok(size < 1.5e6, `the tarball with both prebuilds is ${size} bytes`);
  });

  it('installs with no compiler or CMake on PATH and uses the prebuilt binary', function () {
    const env = cleanEnv(noCompilerBin, { NEGATIVE_CACHE_REQUIRE_NATIVE: '1' });
    const probe = spawnSync('/bin/sh', ['-c', 'command -v cmake c++ g++ gcc cc clang make ninja'], { env, encoding: 'utf8' });
    assert.strictEqual(probe.stdout.trim(), '', `the no-compiler PATH still finds: ${probe.stdout}`);

    const { app, output } = installInto('with-prebuild', tarballPrebuilt, env);
    assert.match(output, new RegExp(`negative-cache: using the native addon prebuilds/${platformDir}/`), output.slice(-4000));
    const installed = path.join(app, 'node_modules', pkg.name);
    assert.ok(!fs.existsSync(path.join(installed, 'build')), 'a build/ folder appeared: the install compiled something');
    const res = checkScoring(app, env);
    assert.strictEqual(res.addonFile, path.join('prebuilds', platformDir, `${pkg.name}.node`));
  });

  it('builds from source with cmake-js when there is no prebuild', function () {
    // CUDA off keeps the build short; the CUDA part is tested where nvcc and a device exist.
    const env = cleanEnv(process.env.PATH, { NEGATIVE_CACHE_REQUIRE_NATIVE: '1', NEGATIVE_CACHE_CMAKE_ARGS: '-DNEGCACHE_CUDA=OFF' });
    const { app, output } = installInto('from-source', tarballSource, env);
    assert.match(output, /no prebuilt binary for linux-x64/, output.slice(-4000));
    assert.match(output, /negative-cache: built build\/Release\/\S+\.node/, output.slice(-4000));
    const res = checkScoring(app, env);
    assert.match(res.addonFile, /^build\/Release\/.+\.node$/);
  });

  it('without a prebuild or a compiler: fails the install when native is required, else falls back to JS', function () {
    const required = installInto('no-compiler-required', tarballSource,
      cleanEnv(noCompilerBin, { NEGATIVE_CACHE_REQUIRE_NATIVE: '1' }), { expectFailure: true });
    const messages = required.output.match(/negative-cache: no native addon for linux-x64[^\n]*/g) || [];
    assert.strictEqual(messages.length, 1, `expected one failure message:\n${required.output.slice(-4000)}`);
    assert.match(messages[0], /no prebuilt binary for linux-x64/);
    assert.match(messages[0], /cannot build from source: cmake and a C\+\+ compiler \(c\+\+, g\+\+, clang\+\+\) are not on PATH/);
    assert.match(messages[0], /Fixes: install a C\+\+17 compiler and CMake/);
    assert.match(messages[0], /NEGATIVE_CACHE_BACKEND=js/);

    const env = cleanEnv(noCompilerBin);
    const fallback = installInto('no-compiler-fallback', tarballSource, env);
    assert.match(fallback.output, /the pure-JS backend will be used/);
    const script = "const nc = require('negative-cache');" +
      "const m = new nc.CacheManager({ e: { shape: [2], dtype: 'float32' } }, 4);" +
      "console.log('CHECK-RESULT ' + JSON.stringify({ backends: nc.availableBackends(), backend: m.backend }));";
    const out = run(process.execPath, ['-e', script], { cwd: fallback.app, env, timeoutMs: 120000 });
    const res = JSON.parse(out.split('\n').find((l) => l.startsWith('CHECK-RESULT ')).slice('CHECK-RESULT '.length));
    assert.deepStrictEqual(res, { backends: ['js'], backend: 'js' });
    // One warning at run time, saying what was tried and how to fix it.
    assert.match(out, /NEGATIVE_CACHE_JS_FALLBACK.*the native addon could not be loaded.*NEGATIVE_CACHE_BUILD_FROM_SOURCE=1 npm rebuild negative-cache/);
  });
});
