'use strict';
// The package loads from CommonJS and ESM, and the addon is context-aware
// (it loads and answers inside a worker thread).
const assert = require('assert');
const path = require('path');
const { Worker } = require('worker_threads');

describe('package loading', () => {
  it('loads with require() and lists the native backend', () => {
    const nc = require('..');
    assert.strictEqual(typeof nc.availableBackends, 'function');
    const b = nc.availableBackends();
    assert.ok(b.includes('js'));
    assert.ok(b.includes('native'), `native backend missing: ${b}`);
  });

  it('loads with import()', async () => {
    const m = await import('negative-cache');
    assert.strictEqual(typeof m.availableBackends, 'function');
    assert.deepStrictEqual(m.availableBackends(), require('..').availableBackends());
  });

  it('loads the addon inside worker_threads', async () => {
    const code = `
      const { parentPort } = require('worker_threads');
      const nc = require(${JSON.stringify(path.resolve(__dirname, '..'))});
      parentPort.postMessage(nc.availableBackends());`;
    const results = await Promise.all([0, 1].map(() => new Promise((resolve, reject) => {
      const w = new Worker(code, { eval: true });
      w.once('message', resolve);
      w.once('error', reject);
    })));
    for (const r of results) assert.ok(r.includes('native'), `worker saw ${r}`);
  });
});
