'use strict';
// The baseline (non-AVX2) kernels: reruns test/20-native-kernels.test.js in a
// child process with NEGATIVE_CACHE_FORCE_BASELINE=1 and checks that the
// baseline path was really used; then compares both paths in this process.
const assert = require('assert');
const path = require('path');
const { spawnSync } = require('child_process');
const { loadAddon, createStore, kernelsFor } = require('./helpers/internals');

const addon = loadAddon();
const describeNative = addon ? describe : describe.skip;

describeNative('baseline ISA path (forced)', function () {
  this.timeout(600000);

  it('NEGATIVE_CACHE_FORCE_BASELINE=1 selects the baseline kernels, and they pass the kernel tests', () => {
    const probe = spawnSync(process.execPath, ['-e',
      "process.stdout.write(JSON.stringify(require('./test/helpers/internals').loadAddon().cpuFeatures()))"],
    { cwd: path.join(__dirname, '..'), env: { ...process.env, NEGATIVE_CACHE_FORCE_BASELINE: '1' }, encoding: 'utf8' });
    assert.strictEqual(probe.status, 0, probe.stderr);
    assert.strictEqual(JSON.parse(probe.stdout).usingAvx2, false);

    const mocha = require.resolve('mocha/bin/mocha.js');
    const child = spawnSync(process.execPath, [mocha, '--no-config', '--timeout', '300000', '--reporter', 'dot',
      path.join(__dirname, '20-native-kernels.test.js')],
    { cwd: path.join(__dirname, '..'), env: { ...process.env, NEGATIVE_CACHE_FORCE_BASELINE: '1' }, encoding: 'utf8' });
    assert.strictEqual(child.status, 0, `baseline kernel tests failed:\n${child.stdout}\n${child.stderr}`);
    assert.match(child.stdout, /passing/);
    assert.doesNotMatch(child.stdout, /failing/);
  });

  it('setForceBaseline switches paths at run time and both draw the same negatives', () => {
    const dim = 32, size = 5000, batch = 13;
    const cols = [{ key: 'e', dtype: 'float32', storage: 'float32', width: dim }];
    const store = createStore('native', cols, size);
    let x = 12345;
    const rnd = () => { x = (Math.imul(x, 1103515245) + 12345) >>> 0; return x / 2 ** 32 - 0.5; };
    store.initialize({ e: new Float32Array(size * dim).map(rnd) }, null);
    const req = { queries: new Float32Array(batch * dim).map(rnd), batch, dim, sources: [{ store, key: 'e' }], scale: 10, scoreEmptyRows: false };
    const params = { mode: 'gumbel', invTemp: 1, numDraws: 3, seed: 77, call: 4 };
    const k = kernelsFor('native');
    const f0 = addon.cpuFeatures();
    const wasForced = f0.tier === 'baseline' && f0.isaCap !== 'baseline' && f0.usableTiers.length > 1;
    try {
      addon.setForceBaseline(true);
      assert.strictEqual(addon.cpuFeatures().usingAvx2, false);
      const base = k.scoreAndSample(req, params);
      addon.setForceBaseline(false);
      const f = addon.cpuFeatures();
      assert.strictEqual(f.tier !== 'baseline', f.avx2 && f.fma && f.f16c && process.env.NEGATIVE_CACHE_FORCE_BASELINE !== '1');
      const fast = k.scoreAndSample(req, params);
      assert.deepStrictEqual(Array.from(fast.indices), Array.from(base.indices));
      for (let b = 0; b < batch; b++) assert.ok(Math.abs(fast.lse[b] - base.lse[b]) < 1e-4 * (1 + Math.abs(base.lse[b])));
    } finally {
      addon.setForceBaseline(wasForced);
    }
  });
});
