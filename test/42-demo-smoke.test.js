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
