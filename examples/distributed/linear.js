#!/usr/bin/env node
'use strict';
// Data-parallel training with the MPI communicator, in its smallest form
// (docs/distributed.md): every rank runs this same script on its own batches;
// rank 0's initial weights are broadcast, and each step's gradients are
// averaged across ranks before the optimizer applies them.
//
//   mpirun -np 2 node examples/distributed/linear.js [--steps 50] [--check]
//
// --check: afterwards every rank also trains one process on the ranks' batches
// concatenated (the same global batch) and prints the largest difference of
// the weights: data-parallel SGD with the mean of equal-sized per-rank MSE
// gradients is the single-process step, to float rounding.
const tf = require('@tensorflow/tfjs');
const { initDistributed } = require('../..');

const args = process.argv.slice(2);
const steps = args.includes('--steps') ? Number(args[args.indexOf('--steps') + 1]) : 50;
const check = args.includes('--check');
const DIM = 4, BATCH = 16, LR = 0.1;

tf.setBackend('cpu');
const comm = initDistributed();
const trueW = tf.tensor2d([[1], [-2], [0.5], [3]]);
const batchOf = (rank, step) => tf.tidy(() => {
  // Seeds start at 1: tfjs draws a random seed for seed 0.
  const x = tf.randomNormal([BATCH, DIM], 0, 1, 'float32', 1 + 1000 * step + rank);
  return { x, y: x.matMul(trueW).add(0.1) };
});

/** Trains on batches(step) -> [{x, y}] with gradients reduced by `reduce`. */
function train(w, b, batches, reduce) {
  const opt = tf.train.sgd(LR);
  for (let step = 0; step < steps; step++) {
    const parts = batches(step);
    const x = parts.length === 1 ? parts[0].x : tf.concat(parts.map((p) => p.x));
    const y = parts.length === 1 ? parts[0].y : tf.concat(parts.map((p) => p.y));
    const { value, grads } = tf.variableGrads(() => tf.losses.meanSquaredError(y, x.matMul(w).add(b)), [w, b]);
    const g = reduce(grads);
    opt.applyGradients(g);
    tf.dispose([value, grads, g, x, y, parts.map((p) => [p.x, p.y])]);
  }
  opt.dispose();
}

// The same code on every rank; the rank-dependent start is overwritten by rank 0's.
const w = tf.variable(tf.randomNormal([DIM, 1], 0, 1, 'float32', 100 + comm.rank), true, 'linear/w');
const b = tf.variable(tf.zeros([1]), true, 'linear/b');
comm.checkSame('linear config', { DIM, BATCH, LR, steps });
comm.broadcastVariables([w, b], 0);
const w0 = w.dataSync().slice(), b0 = b.dataSync().slice();
train(w, b, (step) => [batchOf(comm.rank, step)], (grads) => comm.allReduceMean(grads));

const gathered = comm.allgather(Float32Array.from([...w.dataSync(), ...b.dataSync()]));
const width = DIM + 1;
let sameOnAllRanks = true;
for (let i = 0; i < gathered.data.length; i++) sameOnAllRanks = sameOnAllRanks && gathered.data[i] === gathered.data[i % width];
const result = { rank: comm.rank, size: comm.size, w: Array.from(w.dataSync()), b: b.dataSync()[0], sameOnAllRanks };

if (check) {
  const wr = tf.variable(tf.tensor(w0, [DIM, 1]), true, 'reference/w');
  const br = tf.variable(tf.tensor(b0, [1]), true, 'reference/b');
  const ranks = [...Array(comm.size).keys()];
  train(wr, br, (step) => ranks.map((r) => batchOf(r, step)), (grads) => ({ ...grads }));
  const diff = Math.max(...[...w.dataSync(), ...b.dataSync()].map((v, i) => Math.abs(v - [...wr.dataSync(), ...br.dataSync()][i])));
  result.maxDiffFromOneProcess = diff;
}
console.log(`RESULT ${JSON.stringify(result)}`);
