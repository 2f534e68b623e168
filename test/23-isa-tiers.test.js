'use strict';
// Every usable ISA tier above the baseline (test/21 covers that one): reruns
// test/20-native-kernels.test.js in a child process with NEGATIVE_CACHE_ISA
// set to the tier, and, in this process through addon.setIsaCap, measures how
// many queries get exactly the JS backend's draws at score scale 20 (the
// target is >= 99.9 %; the rate is printed).
const assert = require('assert');
const path = require('path');
const { spawnSync } = require('child_process');
const { loadAddon, createStore, kernelsFor, jsKernels } = require('./helpers/internals');
const { rng } = require('./helpers/rng');

const addon = loadAddon();
const describeNative = addon ? describe : describe.skip;
const tiers = addon ? addon.cpuFeatures().usableTiers.filter((t) => t !== 'baseline') : [];

function storePair(r, size, dim, storage) {
  const cols = [{ key: 'emb', dtype: 'float32', storage, width: dim }];
  const values = new Float32Array(size * dim).map(() => r.normal());
  const pair = { native: createStore('native', cols, size), js: createStore('js', cols, size) };
  for (const s of Object.values(pair)) s.initialize({ emb: values }, null);
  return pair;
}

describeNative('ISA tiers above the baseline', function () {
  this.timeout(600000);

  for (const tier of tiers) {
    it(`NEGATIVE_CACHE_ISA=${tier}: runs that tier and passes the kernel tests (test/20)`, () => {
      const env = { ...process.env, NEGATIVE_CACHE_FORCE_BASELINE: '', NEGATIVE_CACHE_ISA: tier };
      const root = path.join(__dirname, '..');
      const probe = spawnSync(process.execPath, ['-e',
        "process.stdout.write(JSON.stringify(require('./test/helpers/internals').loadAddon().cpuFeatures()))"],
      { cwd: root, env, encoding: 'utf8' });
      assert.strictEqual(probe.status, 0, probe.stderr);
      assert.strictEqual(JSON.parse(probe.stdout).tier, tier);
      const mocha = require.resolve('mocha/bin/mocha.js');
      const child = spawnSync(process.execPath, [mocha, '--no-config', '--timeout', '300000', '--reporter', 'dot',
        path.join(__dirname, '20-native-kernels.test.js')], { cwd: root, env, encoding: 'utf8' });
      assert.strictEqual(child.status, 0, `${tier} kernel tests failed:\n${child.stdout}\n${child.stderr}`);
      assert.match(child.stdout, /passing/);
      assert.doesNotMatch(child.stdout, /failing/);
    });
  }

  const crossIt = jsKernels ? it : it.skip;
  crossIt('every tier draws exactly the JS backend\'s negatives for >= 99.9 % of queries at scale 20', function () {
    const r = rng(23);
    const dim = 64, size = 12000, batch = 200;
    const cases = [];
    for (const storage of ['float32', 'float16', 'bfloat16']) {
      const stores = storePair(r, size, dim, storage);
      const queries = new Float32Array(batch * dim).map(() => r.normal() / Math.sqrt(dim));
      for (const numDraws of [1, 8]) {
        const req = (kind) => ({ queries, batch, dim, sources: [{ store: stores[kind], key: 'emb' }], scale: 20, scoreEmptyRows: false });
        const params = { mode: 'gumbel', invTemp: 1, numDraws, seed: 99 + numDraws, call: cases.length };
        cases.push({ what: `${storage} k=${numDraws}`, req, params, want: jsKernels.scoreAndSample(req('js'), params) });
      }
    }
    const native = kernelsFor('native');
    const before = addon.cpuFeatures().isaCap;
    const rates = {};
    try {
      for (const tier of addon.cpuFeatures().usableTiers) {
        addon.setIsaCap(tier);
        assert.strictEqual(addon.cpuFeatures().tier, tier);
        let same = 0, total = 0;
        for (const c of cases) {
          const got = native.scoreAndSample(c.req('native'), c.params);
          const k = c.params.numDraws;
          for (let b = 0; b < batch; b++) {
            let eq = true;
            for (let i = b * k; i < (b + 1) * k; i++) eq = eq && got.indices[i] === c.want.indices[i];
            same += eq;
            total++;
            assert.ok(Math.abs(got.lse[b] - c.want.lse[b]) <= 1e-5 * Math.max(1, Math.abs(c.want.lse[b])), `${tier} ${c.what}: lse ${b}: ${got.lse[b]} vs ${c.want.lse[b]}`);
          }
        }
        rates[tier] = same / total;
        assert.ok(same / total >= 0.999, `${tier}: ${same} of ${total} queries draw the JS negatives`);
      }
    } finally {
      addon.setIsaCap(before);
    }
    console.log(`      queries with the JS draws (scale 20, ${cases.length * batch} per tier): ${Object.entries(rates).map(([t, x]) => `${t} ${(100 * x).toFixed(2)} %`).join(', ')}`);
  });

  const amxIt = tiers.includes('amx') ? it : it.skip;
  amxIt('amx: bfloat16 and float16 rows on the tiles score within 2^-16 of scale · Σ|q r| of float64; rows holding inf or NaN exactly as on avx512', () => {
    const r = rng(2301);
    const before = addon.cpuFeatures().isaCap;
    const native = kernelsFor('native');
    try {
      for (const storage of ['bfloat16', 'float16']) {
        for (const dim of [32, 45, 128]) {
          const size = 150, batch = 21, scale = 20;
          const cols = [{ key: 'emb', dtype: 'float32', storage, width: dim }];
          const values = new Float32Array(size * dim).map(() => r.normal());
          const store = createStore('native', cols, size);
          store.initialize({ emb: values }, null);
          // What the store holds, as float64 (read back through the JS view of the rows).
          const held = store.readColumn('emb');
          const queries = new Float32Array(batch * dim).map(() => r.normal() / Math.sqrt(dim));
          const req = { queries, batch, dim, sources: [{ store, key: 'emb' }], scale, scoreEmptyRows: true };
          addon.setIsaCap('amx');
          const got = native.scoreMatrix(req);
          let worst = 0;
          for (let b = 0; b < batch; b++) {
            for (let j = 0; j < size; j++) {
              let s = 0, mag = 0;
              for (let d = 0; d < dim; d++) { const t = queries[b * dim + d] * held[j * dim + d]; s += t; mag += Math.abs(t); }
              const err = Math.abs(got[b * size + j] - scale * s);
              worst = Math.max(worst, err / (scale * mag));
              assert.ok(err <= 2 ** -16 * scale * mag + 1e-6 * (1 + Math.abs(scale * s)), `${storage} D=${dim} [${b}, ${j}]: ${got[b * size + j]} vs ${scale * s}`);
            }
          }
          assert.ok(worst > 0, 'the split products should differ from float64 in the last bits somewhere');
          // Non-finite values: the tile holding them is scored in float32, as on avx512.
          const bad = values.slice();
          bad[3] = Infinity; bad[2 * dim + 1] = -Infinity; bad[70 * dim + 5] = NaN;
          store.initialize({ emb: bad }, null);
          addon.setIsaCap('amx');
          const a = native.scoreMatrix(req);
          addon.setIsaCap('avx512');
          const w = native.scoreMatrix(req);
          let nonFinite = 0;
          for (let i = 0; i < a.length; i++) {
            if (Number.isFinite(w[i])) continue;
            nonFinite++;
            assert.ok(Object.is(a[i], w[i]) || (Number.isNaN(a[i]) && Number.isNaN(w[i])), `${storage} D=${dim}: non-finite score ${i}: ${a[i]} vs ${w[i]}`);
          }
          assert.ok(nonFinite >= 3 * batch, `expected the inf/NaN rows to give non-finite scores (${nonFinite})`);
          store.dispose();
        }
      }
    } finally {
      addon.setIsaCap(before);
    }
  });
});
