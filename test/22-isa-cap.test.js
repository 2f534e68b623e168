'use strict';
// The tier cap: NEGATIVE_CACHE_ISA at load and addon.setIsaCap at run time
// choose the best usable tier at or below the named one; an unknown name is
// refused (RangeError) or, from the environment, ignored with one warning.
const assert = require('assert');
const path = require('path');
const { spawnSync } = require('child_process');
const { loadAddon } = require('./helpers/internals');

const addon = loadAddon();
const describeNative = addon ? describe : describe.skip;
const CAPS = ['baseline', 'avx2', 'avx512', 'amx'];

function featuresWithEnv(env) {
  const r = spawnSync(process.execPath, ['-e',
    "process.stdout.write(JSON.stringify(require('./dist/native/addon').loadAddon().cpuFeatures()))"],
  { cwd: path.join(__dirname, '..'), env: { ...process.env, NEGATIVE_CACHE_FORCE_BASELINE: '', ...env }, encoding: 'utf8' });
  assert.strictEqual(r.status, 0, r.stderr);
  return { features: JSON.parse(r.stdout), stderr: r.stderr };
}

/** The tier the dispatch table should pick under a cap, from the usable list (best first). */
function expectedTier(usable, cap) {
  const rank = (t) => CAPS.indexOf(t);
  return usable.find((t) => rank(t) <= rank(cap));
}

describeNative('ISA tier cap', function () {
  this.timeout(60000);

  it('reports the running tier among the usable ones, baseline always last', () => {
    const f = addon.cpuFeatures();
    assert.ok(Array.isArray(f.usableTiers) && f.usableTiers.length >= 1);
    assert.strictEqual(f.usableTiers[f.usableTiers.length - 1], 'baseline');
    assert.ok(f.usableTiers.includes(f.tier), `${f.tier} not in ${f.usableTiers}`);
    assert.strictEqual(f.usingAvx2, f.tier === 'avx2');
    for (const k of ['avx512f', 'avx512bw', 'avx512vl', 'avx512dq', 'avx512bf16', 'amxTile', 'amxBf16']) assert.strictEqual(typeof f[k], 'boolean');
    assert.strictEqual(f.usableTiers.includes('avx2'), f.avx2 && f.fma && f.f16c);
  });

  for (const cap of CAPS) {
    it(`NEGATIVE_CACHE_ISA=${cap} runs the best usable tier at or below it`, () => {
      const { features } = featuresWithEnv({ NEGATIVE_CACHE_ISA: cap });
      assert.strictEqual(features.isaCap, cap);
      assert.strictEqual(features.tier, expectedTier(features.usableTiers, cap));
    });
  }

  it('an unknown NEGATIVE_CACHE_ISA is ignored with a warning naming it and the known names', () => {
    const { features, stderr } = featuresWithEnv({ NEGATIVE_CACHE_ISA: 'sse9' });
    assert.strictEqual(features.invalidIsaEnv, 'sse9');
    assert.strictEqual(features.isaCap, null);
    assert.strictEqual(features.tier, features.usableTiers[0]);
    assert.match(stderr, /NEGATIVE_CACHE_ISA must be one of baseline, avx2, avx512, amx; got 'sse9'/);
  });

  it('setIsaCap switches at run time; bad names are refused and change nothing', () => {
    const before = addon.cpuFeatures();
    try {
      addon.setIsaCap('baseline');
      assert.strictEqual(addon.cpuFeatures().tier, 'baseline');
      assert.throws(() => addon.setIsaCap('sse9'), (e) => e instanceof RangeError && /isa must be one of baseline, avx2, avx512, amx; got 'sse9'/.test(e.message));
      assert.throws(() => addon.setIsaCap(3), TypeError);
      assert.strictEqual(addon.cpuFeatures().tier, 'baseline');
      addon.setIsaCap(null);
      assert.strictEqual(addon.cpuFeatures().tier, addon.cpuFeatures().usableTiers[0]);
    } finally {
      addon.setIsaCap(before.isaCap);
    }
  });

  it('measurePeak: a positive rate for each usable tier with a probe, -1 for a tier that cannot run', () => {
    for (const t of addon.cpuFeatures().usableTiers) {
      const g = addon.measurePeak(t, 1, 0.02);
      assert.ok(g > 0 && Number.isFinite(g), `${t}: ${g}`);
    }
    assert.strictEqual(addon.measurePeak('no-such-tier', 1, 0.02), -1);
    assert.throws(() => addon.measurePeak('baseline', 1, 0), RangeError);
    assert.throws(() => addon.measurePeak('baseline', -1, 0.1), RangeError);
  });
});
