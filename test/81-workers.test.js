'use strict';
// worker_threads: several workers, each with its own CacheManager and caches,
// train at the same time and end exactly where the same run ends alone in
// the main thread (the addon is context-aware and keeps no per-environment
// state; its kernels' thread pool is shared and serializes callers). A cache
// posted to another thread is refused with a clear DataCloneError; a native
// store handle that reaches another thread anyway (copied as a plain object)
// is refused there with a TypeError; terminating a worker in the middle of
// training leaves the process and its other caches working.
const assert = require('assert');
const path = require('path');
const { Worker, MessageChannel } = require('worker_threads');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { train } = require('./helpers/train_worker');

const root = path.resolve(__dirname, '..');
const script = path.join(__dirname, 'helpers', 'train_worker.js');
const BACKENDS = nc.availableBackends().filter((b) => b !== 'cuda');

function runWorker(opts) {
  return new Promise((resolve, reject) => {
    const w = new Worker(script, { workerData: { train: opts }, stdout: true });
    w.stdout.resume();  // tfjs's banner
    let result;
    w.once('message', (m) => { result = m; });
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 && result ? resolve(result) : reject(new Error(`worker exited with ${code}`))));
  });
}

/** Runs `code` (a function body with nc, addon, parentPort, workerData in scope) in a worker; resolves what it posts. */
function evalInWorker(code, workerData, transferList) {
  return new Promise((resolve, reject) => {
    const src = `
      const { parentPort, workerData } = require('worker_threads');
      const nc = require(${JSON.stringify(root)});
      const addon = require('node-gyp-build')(${JSON.stringify(root)});
      (async () => { ${code} })().then((v) => parentPort.postMessage({ ok: v }), (e) => parentPort.postMessage({ error: { name: e.name, message: e.message } }));`;
    const w = new Worker(src, { eval: true, workerData, transferList });
    let result;
    w.once('message', (m) => { result = m; });
    w.once('error', reject);
    w.once('exit', (code) => (code === 0 && result ? resolve(result) : reject(new Error(`worker exited with ${code}`))));
  });
}

describe('worker_threads', function () {
  for (const backend of BACKENDS) {
    it(`backend ${backend}: four workers training at once each end exactly as the same run alone`, async () => {
      const seeds = [11, 12, 13, 14];
      const steps = 30;
      const concurrent = await Promise.all(seeds.map((seed) => runWorker({ seed, backend, steps })));
      for (const [i, seed] of seeds.entries()) {
        const alone = train({ seed, backend, steps });
        const got = { ...concurrent[i] };
        assert.strictEqual(got.tensors, concurrent[0].tensors, 'the workers left different numbers of tensors');
        delete got.tensors;
        delete alone.tensors;
        assert.strictEqual(got.backend, backend);
        assert.strictEqual(got.step, steps);
        assert.ok(got.filled.every((f) => f === 1), 'the cache filled up');
        assert.ok(got.losses.every(Number.isFinite));
        assert.deepStrictEqual(got, alone, `seed ${seed}: the worker's run differs from the same run alone`);
      }
      // Different seeds really gave different runs (the comparison above is not vacuous).
      assert.notDeepStrictEqual(concurrent[0].wq, concurrent[1].wq);
    });
  }

  it('postMessage(cache) and structuredClone(cache) throw a DataCloneError saying a cache cannot change threads', () => {
    const manager = new nc.CacheManager({ e: { shape: [2], dtype: 'float32' } }, 4);
    const cache = manager.initCache();
    const { port1, port2 } = new MessageChannel();
    const check = (e) => e.name === 'DataCloneError' &&
      /a NegativeCache lives in the thread that created it and cannot be posted to another thread/.test(e.message);
    try {
      assert.throws(() => port1.postMessage(cache), check);
      assert.throws(() => port1.postMessage({ nested: [cache] }), check);
      assert.throws(() => structuredClone(cache), check);
    } finally {
      port1.close();
      port2.close();
    }
    // The cache is untouched and still works.
    manager.updateCache(cache, { newItems: { e: [[1, 2]] } });
    assert.deepStrictEqual(Array.from(cache.read('e')).slice(0, 2), [1, 2]);
    cache.dispose();
  });

  it('a native store handle copied to another thread is refused there with a TypeError, never a crash', async function () {
    if (!nc.availableBackends().includes('native')) this.skip();
    const addon = require('node-gyp-build')(root);
    const store = new addon.CacheStore([{ name: 'e', storage: 0, width: 2 }], 4);
    // The handle's native part is not cloned: the worker receives a plain object.
    const r = await evalInWorker(`
      const h = workerData.handle;
      const errors = [];
      const tryIt = (f) => { try { f(); errors.push(null); } catch (e) { errors.push(e.name + ': ' + e.message); } };
      const req = { queries: new Float32Array(2), batch: 1, dim: 2, scale: 1, scoreEmptyRows: true,
                    segments: [{ store: h, column: 0 }] };
      tryIt(() => addon.scoreMatrix(req, new Float32Array(4)));
      tryIt(() => addon.CacheStore.prototype.readAge.call(h, new Int32Array(4)));
      tryIt(() => addon.CacheStore.prototype.update.call(h, { numUpdated: 0, numNew: 0 }));
      const m = new nc.CacheManager({ e: { shape: [2], dtype: 'float32' } }, 4);
      tryIt(() => m.updateCache(h, {}));
      return errors;`, { handle: store });
    assert.ok(r.ok, `the worker failed: ${JSON.stringify(r.error)}`);
    assert.strictEqual(r.ok.length, 4);
    assert.match(r.ok[0], /^TypeError: negative-cache: request\.segments\[0\]\.store must be a native cache store handle; got an object/);
    for (const e of r.ok.slice(1)) assert.ok(e !== null && /Error/.test(e), `accepted: ${e}`);
    assert.match(r.ok[3], /TypeError: negative-cache: cache must be a NegativeCache/);
    // The original handle still works in its own thread.
    const ages = new Int32Array(4);
    store.readAge(ages);
    assert.deepStrictEqual(Array.from(ages), [0, 0, 0, 0]);
    store.dispose();
  });

  it('terminating workers in the middle of training leaves the process and its caches working', async () => {
    const backend = BACKENDS.includes('native') ? 'native' : 'js';
    const manager = new nc.CacheManager({ e: { shape: [3], dtype: 'float32' } }, 8, { backend });
    const cache = manager.initCache();
    for (let round = 0; round < 3; round++) {
      const workers = [0, 1].map((i) => new Worker(script, { workerData: { train: { seed: 100 + round * 2 + i, backend, steps: 0, forever: true } }, stdout: true }));
      for (const w of workers) w.stdout.resume();
      const exits = workers.map((w) => new Promise((resolve) => w.once('exit', resolve)));
      for (const w of workers) w.on('error', () => {});
      await new Promise((resolve) => setTimeout(resolve, 300 + 200 * round));
      await Promise.all(workers.map((w) => w.terminate()));
      await Promise.all(exits);
      manager.updateCache(cache, { newItems: { e: [[round, round, round]] } });
    }
    assert.strictEqual(cache.readFilled().reduce((a, v) => a + v, 0), 3);
    const q = tf.tensor2d([[1, 1, 1]]);
    const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['e'], seed: 1 });
    const v = tf.tidy(() => loss.compute((d) => d.e, q, q, cache).interpretableLoss.dataSync()[0]);
    assert.ok(Number.isFinite(v));
    q.dispose();
    cache.dispose();
  });
});
