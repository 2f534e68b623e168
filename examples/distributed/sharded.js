#!/usr/bin/env node
'use strict';
// Data-parallel training with a sharded negative cache (docs/distributed.md
// "Sharded loss"): every rank holds one shard of the cache, inserts its own
// batch's positives into it, and the loss treats all shards as one cache.
//
//   mpirun -np 2 node examples/distributed/sharded.js [--steps 200] [--cache 4096]
//   node examples/distributed/sharded.js                 # one process, the same script
//
// Synthetic task: documents are random feature vectors, a query is a noisy
// copy of its document; a linear query tower and a linear document tower
// learn to match them. Prints rank 0's loss and in-cache recall now and then.
const tf = require('@tensorflow/tfjs');
const nc = require('../..');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? Number(args[i + 1]) : dflt; };
const steps = opt('steps', 200), cacheRows = opt('cache', 4096), B = 32, F = 16, D = 16;

const comm = nc.initDistributed();
const { rank, size } = comm;
tf.setBackend('cpu');

// Each rank's own data stream (a different seed per rank).
let s = 1 + rank;
const rand = () => { s = (s * 16807) % 2147483647; return s / 2147483647 - 0.5; };
function batch() {
  const doc = Float32Array.from({ length: B * F }, rand);
  const query = doc.map((v) => v + 0.1 * rand());
  return { doc: tf.tensor2d(doc, [B, F]), query: tf.tensor2d(query, [B, F]) };
}

const qW = tf.variable(tf.randomNormal([F, D], 0, 0.3, 'float32', 1));
const dW = tf.variable(tf.randomNormal([F, D], 0, 0.3, 'float32', 2));
comm.broadcastVariables([qW, dW], 0);                      // the same start everywhere
const docTower = (data) => tf.matMul(data.feat, dW);

// One shard per rank: this rank's CacheManager holds cacheRows / size rows.
const manager = new nc.CacheManager({ emb: { shape: [D], dtype: 'float32' }, feat: { shape: [F], dtype: 'float32' } },
  Math.ceil(cacheRows / size));
const loss = new nc.DistributedCacheClassificationLoss({
  embeddingKey: 'emb', dataKeys: ['feat'], seed: 42, numNegatives: 2, communicator: comm,
});
const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'emb', dataKeys: ['feat'], warmupSteps: 5 });
const optimizer = tf.train.adam(0.01);

for (let step = 0; step < steps; step++) {
  const { doc, query } = batch();
  const { value, grads } = tf.variableGrads(() => {
    const q = tf.matMul(query, qW);
    const p = tf.matMul(doc, dW);
    return handler.updateCacheAndComputeLoss(docTower, q, p, { feat: doc });
  }, [qW, dW]);
  const mean = comm.allReduceMean(grads);                 // data-parallel: average the gradients
  optimizer.applyGradients(mean);
  if (rank === 0 && (step % 50 === 0 || step === steps - 1)) {
    const m = handler.lastMetrics;
    console.log(`step ${step}: loss ${value.dataSync()[0].toFixed(4)}, interpretable ${m.interpretableLoss.toFixed(4)}, refreshed ${m.refreshed} rows on rank 0`);
  }
  tf.dispose([value, doc, query, ...Object.values(grads), ...Object.values(mean)]);
}
// Every rank ends with the same weights.
const w = comm.allgather(dW.dataSync()).data;
const same = w.every((v, i) => v === w[i % (F * D)]);
if (rank === 0) console.log(`done: ${size} rank(s), ${size} shard(s) of ${Math.ceil(cacheRows / size)} rows, weights identical on all ranks: ${same}`);
