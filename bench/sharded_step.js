#!/usr/bin/env node
'use strict';
// The sharded loss step (DistributedCacheClassificationLoss.compute) against
// one process holding the whole cache (CacheClassificationLoss.compute on the
// global batch). One JSON line (from rank 0).
//
//   mpirun -np 2 node bench/sharded_step.js [--total 1048576] [--d 128] [--b 64] [--k 1] [--runs 20] [--weak]
//   node bench/sharded_step.js --single 2 [same options]      # one process, cache `total`, batch 2·b
//
// Strong scaling (default): `total` rows split over the ranks. --weak: every
// rank holds `total` rows. bytesSentPerRank is what the loss sent this step,
// by phase (the header, the queries, the candidates, the fetched rows, the
// refreshed rows): it grows with b·k·(d + features)·ranks, never with the
// cache size.
const tf = require('@tensorflow/tfjs-core');
require('@tensorflow/tfjs-backend-cpu');
const nc = require('..');

const args = process.argv.slice(2);
const opt = (name, dflt) => { const i = args.indexOf(`--${name}`); return i >= 0 ? Number(args[i + 1]) : dflt; };
const total = opt('total', 1 << 20), D = opt('d', 128), B = opt('b', 64), k = opt('k', 1), runs = opt('runs', 20);
const single = opt('single', 0), weak = args.includes('--weak');

const comm = single ? null : nc.initDistributed();
const R = single ? 1 : comm.size, rank = single ? 0 : comm.rank;
const rows = single ? (weak ? total * single : total) : (weak ? total : Math.floor(total / R) + (rank < total % R ? 1 : 0));
const batch = single ? B * single : B;

let seed = 12345 + rank;
const rand = () => { seed = (seed * 1103515245 + 12345) % 2147483648; return seed / 2147483648 - 0.5; };
const specs = { emb: { shape: [D], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } };
const manager = new nc.CacheManager(specs, rows, { backend: 'native' });
const emb = new Float32Array(rows * D);
for (let i = 0; i < emb.length; i++) emb[i] = rand();
const cache = manager.initCache({ data: { emb: tf.tensor2d(emb, [rows, D]), id: tf.tensor2d(Int32Array.from({ length: rows }, (_, i) => i), [rows, 1], 'int32') } });
const opts = { embeddingKey: 'emb', dataKeys: ['emb', 'id'], seed: 7, numNegatives: k };
const loss = single ? new nc.CacheClassificationLoss(opts) : new nc.DistributedCacheClassificationLoss({ ...opts, communicator: comm });
const docNet = (data) => data.emb;
const q = tf.tensor2d(Float32Array.from({ length: batch * D }, rand), [batch, D]);
const p = tf.tensor2d(Float32Array.from({ length: batch * D }, rand), [batch, D]);

const times = [];
for (let i = 0; i < runs + 2; i++) {
  if (comm) comm.barrier();
  const t0 = process.hrtime.bigint();
  const ret = loss.compute(docNet, q, p, cache);
  const ms = Number(process.hrtime.bigint() - t0) / 1e6;
  tf.dispose([ret.trainingLoss, ret.interpretableLoss, ret.staleness, ...Object.values(ret.updatedItemData).flatMap((o) => Object.values(o))]);
  if (i >= 2) times.push(ms);
}
times.sort((a, b) => a - b);
const median = times[Math.floor(times.length / 2)];
// The step is as slow as its slowest rank.
const worst = comm ? comm.allreduce(Float64Array.of(median), 'max')[0] : median;
if (rank === 0) {
  const out = {
    bench: 'sharded_step', mode: single ? 'single' : 'sharded', scaling: weak ? 'weak' : 'strong', ranks: R, totalRows: single ? rows : (weak ? total * R : total),
    rowsPerRank: rows, d: D, batchPerRank: B, globalBatch: single ? batch : B * R, k, runs, medianMs: +worst.toFixed(3),
    bytesSentPerRank: single ? null : loss.lastBytesSent,
  };
  console.log(JSON.stringify(out));
}
