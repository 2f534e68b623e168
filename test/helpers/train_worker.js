'use strict';
// A small deterministic training run (two towers, a CacheLossHandler inside
// optimizer.minimize, dedupe on), for test/81-workers.test.js: train(opts)
// returns everything it ends with (weights, cache contents, ages, losses).
// Loaded as a worker_threads script it runs train(workerData) and posts the
// result; with workerData.forever it trains until terminated.
const { isMainThread, parentPort, workerData } = require('worker_threads');
const tf = require('@tensorflow/tfjs');
const nc = require('../..');
const { mulberry32 } = require('./rng');

function train({ seed, backend, steps, cacheSize = 64, forever = false }) {
  const dim = 6, batch = 8, width = 5;
  const rng = mulberry32(seed);
  const init = (n) => Float32Array.from({ length: n }, () => (rng() - 0.5) * 0.6);
  const wq = tf.variable(tf.tensor2d(init(width * dim), [width, dim]));
  const wd = tf.variable(tf.tensor2d(init(width * dim), [width, dim]));
  const docNet = (d) => tf.matMul(d.x, wd);
  const manager = new nc.CacheManager({ e: { shape: [dim], dtype: 'float32' }, x: { shape: [width], dtype: 'float32' } },
    cacheSize, { backend });
  const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['x'], scoreTransform: 4, numNegatives: 2, seed });
  const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'e', dataKeys: ['x'], warmupSteps: 1, dedupe: true });
  const opt = tf.train.sgd(0.05);
  const losses = [];
  for (let s = 0; forever || s < steps; s++) {
    const qx = tf.tensor2d(init(batch * width), [batch, width]);
    const dx = Float32Array.from({ length: batch * width }, () => Math.round((rng() - 0.5) * 6) / 6);
    const dT = tf.tensor2d(dx, [batch, width]);
    const cost = opt.minimize(() => handler.updateCacheAndComputeLoss(docNet, tf.matMul(qx, wq), docNet({ x: dT }), { x: dx }),
      true, [wq, wd]);
    losses.push(cost.dataSync()[0]);
    tf.dispose([cost, qx, dT]);
    if (forever && losses.length > 100) losses.length = 0;
  }
  const out = {
    losses,
    wq: Array.from(wq.dataSync()),
    wd: Array.from(wd.dataSync()),
    e: Array.from(handler.cache.read('e')),
    x: Array.from(handler.cache.read('x')),
    ages: Array.from(handler.cache.readAge()),
    filled: Array.from(handler.cache.readFilled()),
    step: handler.step,
    backend: handler.cache.backend,
    tensors: 0,
  };
  handler.dispose();
  opt.dispose();
  tf.dispose([wq, wd]);
  out.tensors = tf.memory().numTensors;
  return out;
}

module.exports = { train };

if (!isMainThread && workerData && workerData.train) {
  parentPort.postMessage(train(workerData.train));
}
