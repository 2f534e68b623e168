'use strict';
// The WordNet demo end to end on a small slice (a few thousand synsets, tens
// of steps): every mode runs, --json ends with one well-formed line per mode,
// and the report is written. Recall values are not asserted (too few steps).
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const TRAIN = path.join(__dirname, '..', 'examples', 'wordnet', 'train.js');

describe('WordNet demo (smoke)', function () {
  this.timeout(120000);

  it('runs every mode (full-cache term on) on a small slice and prints one JSON line per mode', () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'negcache-demo-'));
    const stdout = execFileSync(process.execPath, [TRAIN,
      '--synsets', '3000', '--warmup', '20', '--steps', '15', '--batch', '16', '--cache-size', '256', '--k', '4',
      '--eval-queries', '60', '--buckets', '4096', '--dim', '16', '--out', out, '--json', '--timing-rounds', '2',
      '--modes', 'cache,in-batch,in-batch-time,in-batch-4x,reference', '--full-cache-weight', '1'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
    const lines = stdout.trim().split('\n').filter((l) => l.startsWith('{'));
    const rows = lines.map((l) => JSON.parse(l));
    assert.deepStrictEqual(rows.map((r) => r.mode).sort(), ['cache', 'in-batch', 'in-batch-4x', 'in-batch-time', 'reference']);
    for (const r of rows) {
      for (const key of ['steps', 'batch', 'cacheSize', 'r1', 'r10', 'r100', 'trainSeconds', 'clozeR1', 'clozeR10', 'clozeR100']) {
        assert.strictEqual(typeof r[key], 'number', `${r.mode}.${key}`);
      }
      assert.strictEqual(r.batch, r.mode === 'in-batch-4x' ? 64 : 16);
      assert.strictEqual(r.cacheSize, 256);
      assert.ok(r.r1 >= 0 && r.r1 <= r.r10 && r.r10 <= r.r100 && r.r100 <= 1, JSON.stringify(r));
      assert.ok(r.clozeR1 >= 0 && r.clozeR1 <= r.clozeR10 && r.clozeR10 <= r.clozeR100 && r.clozeR100 <= 1, JSON.stringify(r));
      assert.ok(r.trainSeconds > 0);
    }
    // Equal wall time: in-batch-time and in-batch-4x get the cache mode's seconds (cost model), to within one step.
    const byCost = Object.fromEntries(rows.map((r) => [r.mode, r]));
    for (const m of ['in-batch-time', 'in-batch-4x']) {
      assert.ok(Math.abs(byCost[m].trainSeconds - byCost.cache.trainSeconds) <= byCost[m].costPerStep / 1000 + 0.01, JSON.stringify(byCost[m]));
    }
    assert.strictEqual(typeof byCost.cache.accidentalHitsPerStep, 'number');
    const byMode = Object.fromEntries(rows.map((r) => [r.mode, r]));
    assert.strictEqual(byMode['in-batch'].steps, 35);
    assert.strictEqual(byMode.cache.steps, 35);
    assert.strictEqual(byMode.reference.steps, 35);
    const html = fs.readFileSync(path.join(out, 'report.html'), 'utf8');
    assert.ok(html.includes('<svg') && html.includes('Held-out recall'));
    const saved = JSON.parse(fs.readFileSync(path.join(out, 'results.json'), 'utf8'));
    assert.strictEqual(saved.results.length, 5);
    fs.rmSync(out, { recursive: true, force: true });
  });

  it('prints --help and rejects unknown options', () => {
    const help = execFileSync(process.execPath, [TRAIN, '--help'], { encoding: 'utf8' });
    for (const opt of ['--steps', '--batch', '--cache-size', '--backend', '--out', '--json']) assert.ok(help.includes(opt), opt);
    assert.throws(() => execFileSync(process.execPath, [TRAIN, '--bogus'], { stdio: 'pipe' }), (e) => e.status === 2 && /unknown option --bogus/.test(e.stderr));
  });
});

// The demo's prototypes of new training terms (examples/wordnet/full_cache.js,
// shared_negatives.js) and its sparse Adam, checked against tfjs autodiff and
// tf.train.adam on small random inputs.
describe('WordNet demo pieces', function () {
  this.timeout(60000);
  const tf = require('@tensorflow/tfjs');
  const nc = require('..');
  const { fullCacheTerm } = require('../examples/wordnet/full_cache');
  const { SharedNegatives } = require('../examples/wordnet/shared_negatives');
  const { SparseAdam } = require('../examples/wordnet/towers');
  const { mulberry32 } = require('./helpers/rng');
  const W = 3;
  const docKey = (a, off) => { let h = 0x811c9dc5; for (let j = 0; j < W; j++) h = Math.imul(h ^ a[off + j], 0x01000193) >>> 0; return h; };
  before(async () => { await tf.setBackend('cpu'); });

  /** A cache of n rows (the first `filled` filled); row r holds document r (ids r+1, r+1, r+1). */
  function makeCache(n, filled, dim, rand) {
    const m = new nc.CacheManager({ embedding: { shape: [dim], dtype: 'float32' }, ids: { shape: [W], dtype: 'int32' } }, n);
    const cache = m.initCache();
    const emb = new Float32Array(filled * dim).map(() => rand() - 0.5);
    const ids = new Int32Array(filled * W).map((_, i) => 1 + Math.floor(i / W));
    m.updateCache(cache, { newItems: { embedding: emb, ids } });
    const lemmaKey = new Uint32Array(n + 10);
    for (let r = 0; r < lemmaKey.length; r++) lemmaKey[r] = docKey(Int32Array.of(r + 1, r + 1, r + 1), 0);
    return { m, cache, lemmaKey };
  }

  it('full-cache term: value and query gradient match tfjs autodiff of the masked log-sum-exp (empty rows, accidental hits)', () => {
    const rand = mulberry32(7);
    const B = 5, N = 40, D = 8, filled = 33, scale = 3;
    const { cache, lemmaKey } = makeCache(N, filled, D, rand);
    // Query 0's answers include cached row 3; query 1's rows 7 and 9; query 2's an unfilled row's document.
    const positives = [Int32Array.of(3), Int32Array.of(7, 9), Int32Array.of(36), Int32Array.of(1), Int32Array.of(50)];
    const q = tf.variable(tf.tensor2d(Float32Array.from({ length: B * D }, () => rand() - 0.5), [B, D]));
    const p = tf.tensor2d(Float32Array.from({ length: B * D }, () => rand() - 0.5), [B, D]);
    let hits;
    const got = tf.variableGrads(() => { const r = fullCacheTerm(tf, { q, p, cache, scale, dim: D, docWidth: W, positives, lemmaKey, docKey }); hits = r.accidentalHits; return r.loss; }, [q]);
    assert.strictEqual(hits, 4);
    const emb = cache.read('embedding');
    const ids = cache.read('ids');
    const isFilled = cache.readFilled();
    const mask = new Float32Array(B * N);
    for (let i = 0; i < B; i++) {
      for (let j = 0; j < N; j++) if (!isFilled[j] || positives[i].includes(ids[j * W] - 1)) mask[i * N + j] = -1e9;
    }
    const want = tf.variableGrads(() => {
      const pos = tf.mul(tf.sum(tf.mul(q, p), 1, true), scale);
      const neg = tf.add(tf.mul(tf.matMul(q, tf.tensor2d(emb, [N, D]), false, true), scale), tf.tensor2d(mask, [B, N]));
      return tf.mean(tf.sub(tf.logSumExp(tf.concat([pos, neg], 1), 1), tf.reshape(pos, [B])));
    }, [q]);
    assert.ok(Math.abs(got.value.dataSync()[0] - want.value.dataSync()[0]) < 1e-4, `${got.value.dataSync()[0]} vs ${want.value.dataSync()[0]}`);
    const g1 = got.grads[q.name].dataSync(), g2 = want.grads[q.name].dataSync();
    for (let i = 0; i < g1.length; i++) assert.ok(Math.abs(g1[i] - g2[i]) < 1e-4, `grad[${i}] ${g1[i]} vs ${g2[i]}`);
    // ... and against central finite differences of the value.
    const h = 1e-2;
    const qv = q.dataSync().slice();
    const valueAt = (v) => tf.tidy(() => fullCacheTerm(tf, { q: tf.tensor2d(v, [B, D]), p, cache, scale, dim: D, docWidth: W, positives, lemmaKey, docKey }).value);
    for (const idx of [0, 9, 17, 38]) {
      const a = qv.slice(); a[idx] += h;
      const b = qv.slice(); b[idx] -= h;
      const fd = (valueAt(a) - valueAt(b)) / (2 * h);
      assert.ok(Math.abs(fd - g1[idx]) < 2e-3 * Math.max(1, Math.abs(fd)), `fd ${fd} vs ${g1[idx]}`);
    }
    cache.dispose();
  });

  it('shared negatives: in-batch softmax on an empty cache; then every query against all distinct draws re-embedded fresh, accidental hits excluded', () => {
    const rand = mulberry32(11);
    const B = 4, N = 16, D = 6, scale = 5;
    const lemmaKey = new Uint32Array(128);
    for (let r = 0; r < 128; r++) lemmaKey[r] = docKey(Int32Array.of(r + 1, r + 1, r + 1), 0);
    const specs = { embedding: { shape: [D], dtype: 'float32' }, ids: { shape: [W], dtype: 'int32' } };
    const sh = new SharedNegatives({ nc, specs, cacheSize: N, backend: 'auto', k: 2, scale, invTemp: 1, seed: 3, dim: D, docWidth: W, lemmaKey, docKey, keepDocs: true });
    const table = tf.variable(tf.tensor2d(Float32Array.from({ length: 128 * D }, () => rand() - 0.5), [128, D]));
    const docNetwork = (ids) => tf.tidy(() => tf.gather(table, tf.sub(tf.reshape(tf.slice(ids, [0, 0], [-1, 1]), [-1]), tf.scalar(1, 'int32'))));
    const docsOf = (rows) => Int32Array.from(rows.flatMap((r) => [r + 1, r + 1, r + 1]));
    const embed = (rows) => docNetwork(tf.tensor2d(docsOf(rows), [rows.length, W], 'int32'));
    const q = tf.tensor2d(Float32Array.from({ length: B * D }, () => rand() - 0.5), [B, D]);
    // Step 1: empty cache -> exactly the in-batch cross-entropy, nothing drawn.
    let rows = [0, 1, 2, 3];
    const p1 = embed(rows);
    const l1 = sh.loss(tf, { q, p: p1, docIds: docsOf(rows), positives: rows.map((r) => Int32Array.of(r)), docNetwork });
    assert.ok(Math.abs(l1.dataSync()[0] - nc.inBatchCrossEntropy(q, p1, scale).dataSync()[0]) < 1e-5);
    assert.strictEqual(sh.lastMetrics.drawn, 0);
    for (let s = 1; s < 4; s++) {   // fill the cache with documents 4..15 (no draws)
      rows = [4 * s, 4 * s + 1, 4 * s + 2, 4 * s + 3];
      sh.loss(tf, { q, p: embed(rows), docIds: docsOf(rows), positives: rows.map((x) => Int32Array.of(x)), docNetwork, draw: false });
    }
    // Many batches: query 0 has cached documents 5 and 6 as extra answers. Check each step's value by hand.
    let sawMaskedColumn = false;
    for (let t = 0; t < 12; t++) {
      rows = [20 + 4 * t, 21 + 4 * t, 22 + 4 * t, 23 + 4 * t];
      const positives = [Int32Array.of(rows[0], 5, 6), Int32Array.of(rows[1]), Int32Array.of(rows[2]), Int32Array.of(rows[3])];
      const p2 = embed(rows);
      const loss = sh.loss(tf, { q, p: p2, docIds: docsOf(rows), positives, docNetwork }).dataSync()[0];
      const drawnDocs = sh.lastMetrics.drawnRows.map((j) => sh.lastMetrics.drawnDocs[j]);
      assert.strictEqual(new Set(drawnDocs).size, drawnDocs.length, 'distinct draws');
      assert.ok(drawnDocs.length >= 1 && drawnDocs.length <= 2 * B);
      const cand = tf.concat([p2, embed(drawnDocs)], 0);
      const logits = tf.mul(tf.matMul(q, cand, false, true), scale).arraySync();
      let want = 0;
      for (let i = 0; i < B; i++) {
        const cols = logits[i].filter((_, c) => c < B || !positives[i].includes(drawnDocs[c - B]));
        if (i === 0 && cols.length < logits[i].length) sawMaskedColumn = true;
        const mx = Math.max(...cols);
        want += mx + Math.log(cols.reduce((a, v) => a + Math.exp(v - mx), 0)) - logits[i][i];
      }
      assert.ok(Math.abs(loss - want / B) < 1e-4, `step ${t}: ${loss} vs ${want / B}`);
    }
    assert.ok(sawMaskedColumn, 'an accidental hit drawn by another query was masked for query 0');
    sh.dispose();
  });

  it('sparse Adam on touched rows equals tf.train.adam on a table whose gradient is zero elsewhere, for rows touched every step', () => {
    const rand = mulberry32(5);
    const rows = 6, dim = 3;
    const init = Float32Array.from({ length: rows * dim }, () => rand() - 0.5);
    const table = init.slice();
    const sparse = new SparseAdam(table, dim, { lr: 0.01 });
    const v = tf.variable(tf.tensor2d(init, [rows, dim]));
    const adam = tf.train.adam(0.01);
    const touched = Int32Array.of(1, 4);   // row 0 is padding (skipped); rows 2, 3, 5 never touched
    for (let t = 0; t < 5; t++) {
      const g = new Float32Array(rows * dim);
      for (const r of touched) for (let j = 0; j < dim; j++) g[r * dim + j] = rand() - 0.5;
      sparse.apply(touched, touched.length, g);
      adam.applyGradients({ [v.name]: tf.tensor2d(g, [rows, dim]) });
    }
    const want = v.dataSync();
    for (let i = 0; i < rows * dim; i++) assert.ok(Math.abs(table[i] - want[i]) < 1e-5, `${i}: ${table[i]} vs ${want[i]}`);
  });
});
