'use strict';
// One rank of an MPI test (run by test/70-distributed.test.js under mpirun, or
// alone as a singleton): `node test/mpi/worker.js <scenario>`. Every rank
// derives every rank's inputs from a seed, so each checks the collectives'
// results itself; a failed check throws, which fails the whole mpirun.
// Lines starting with "RESULT " are what the test reads.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('../..');
const { rng } = require('../helpers/rng');

const scenario = process.argv[2];
const comm = nc.initDistributed();
const { rank, size } = comm;
const report = (obj) => console.log(`RESULT ${JSON.stringify({ rank, size, ...obj })}`);

/** Rank r's values for a case: deterministic, so every rank knows every rank's. */
function valuesOf(r, n, kind, seed) {
  const g = rng(1000 * seed + r + 1);
  const out = [];
  for (let i = 0; i < n; i++) out.push(kind === 'int' ? g.int(201) - 100 : kind === 'small' ? g.int(64) - 32 : g.normal());
  return out;
}
const ranks = [...Array(size).keys()];

function expectThrows(fn, code, ...texts) {
  let caught = null;
  try {
    fn();
  } catch (e) {
    caught = e;
  }
  assert.ok(caught, `expected ${code}`);
  assert.ok(caught instanceof nc.NegativeCacheError, `not a NegativeCacheError: ${caught && caught.stack}`);
  assert.strictEqual(caught.code, code, caught.message);
  for (const t of texts) assert.ok(caught.message.includes(t), `"${t}" missing from: ${caught.message}`);
  return caught;
}

const scenarios = {
  collectives() {
    if (process.env.OMPI_COMM_WORLD_SIZE) {
      assert.strictEqual(size, Number(process.env.OMPI_COMM_WORLD_SIZE));
      assert.strictEqual(rank, Number(process.env.OMPI_COMM_WORLD_RANK));
    }
    assert.strictEqual(comm.timeoutMs, 20000);  // from NEGATIVE_CACHE_MPI_TIMEOUT_MS
    assert.strictEqual(nc.initDistributed(), comm);

    // allreduce: integer-valued floats and int32 reduce exactly; float64 to rounding.
    const n = 37;
    for (const [Type, kind] of [[Float32Array, 'int'], [Int32Array, 'int'], [Float64Array, 'normal']]) {
      const mine = Type.from(valuesOf(rank, n, kind, 1));
      const before = mine.slice();
      const all = ranks.map((r) => valuesOf(r, n, kind, 1));
      for (const op of ['sum', 'max', 'min']) {
        const got = comm.allreduce(mine, op);
        assert.ok(got instanceof Type && got !== mine);
        assert.deepStrictEqual(mine, before, 'allreduce changed its input');
        for (let i = 0; i < n; i++) {
          const col = all.map((v) => Type.from([v[i]])[0]);
          const want = op === 'sum' ? col.reduce((a, b) => a + b, 0) : op === 'max' ? Math.max(...col) : Math.min(...col);
          if (kind === 'normal' && op === 'sum') assert.ok(Math.abs(got[i] - want) <= 1e-12 * (1 + Math.abs(want)), `${Type.name} sum ${i}`);
          else assert.strictEqual(got[i], want, `${Type.name} ${op} at ${i}`);
        }
      }
    }

    // allgather: lengths differ per rank (rank 1 sends nothing), with and without counts.
    const lenOf = (r) => (r === 1 ? 0 : 3 * r + 2);
    for (const Type of [Float32Array, Float64Array, Int32Array, Uint8Array]) {
      const mine = Type.from(valuesOf(rank, lenOf(rank), 'small', 2).map((v) => v + 32));
      const counts = ranks.map(lenOf);
      for (const given of [undefined, counts]) {
        const g = comm.allgather(mine, given);
        assert.ok(g.data instanceof Type);
        assert.deepStrictEqual(Array.from(g.counts), counts);
        assert.deepStrictEqual(Array.from(g.data), ranks.flatMap((r) => Array.from(Type.from(valuesOf(r, lenOf(r), 'small', 2).map((v) => v + 32)))));
        assert.deepStrictEqual(Array.from(g.offsets), counts.map((_, r) => counts.slice(0, r).reduce((a, b) => a + b, 0)));
      }
    }

    // alltoallv: rank r sends (r + 2p) % 3 values to p, each value encoding (r, p, i).
    const cnt = (r, p) => (r + 2 * p) % 3;
    const code = (r, p, i) => 100 * r + 10 * p + i;
    for (const Type of [Float32Array, Int32Array, Float64Array, Uint8Array]) {
      const send = Type.from(ranks.flatMap((p) => [...Array(cnt(rank, p)).keys()].map((i) => code(rank, p, i))));
      const got = comm.alltoallv(send, ranks.map((p) => cnt(rank, p)));
      assert.ok(got.data instanceof Type);
      assert.deepStrictEqual(Array.from(got.counts), ranks.map((r) => cnt(r, rank)));
      assert.deepStrictEqual(Array.from(got.data), ranks.flatMap((r) => [...Array(cnt(r, rank)).keys()].map((i) => code(r, rank, i))));
    }

    // broadcast from every root, in place.
    for (const root of ranks) {
      const buf = Float64Array.from(valuesOf(rank, 9, 'normal', 3 + root));
      assert.strictEqual(comm.broadcast(buf, root), buf);
      assert.deepStrictEqual(Array.from(buf), valuesOf(root, 9, 'normal', 3 + root));
    }
    comm.barrier();

    // allReduceMean: random gradients against the float64 mean; dyadic values exactly.
    const shapes = { 'dense/kernel': [3, 4], 'dense/bias': [4], 'emb': [2, 2, 2] };
    const gradsOf = (r, kind) => Object.fromEntries(Object.entries(shapes).map(([k, s], j) =>
      [k, valuesOf(r, s.reduce((a, b) => a * b, 1), kind, 10 + j)]));
    for (const kind of ['normal', 'int']) {
      const mine = Object.fromEntries(Object.entries(gradsOf(rank, kind)).map(([k, v]) => [k, tf.tensor(v, shapes[k])]));
      const mean = comm.allReduceMean(mine);
      assert.deepStrictEqual(Object.keys(mean).sort(), Object.keys(shapes).sort());
      const all = ranks.map((r) => gradsOf(r, kind));
      for (const k of Object.keys(shapes)) {
        assert.strictEqual(mean[k].dtype, 'float32');
        assert.deepStrictEqual(mean[k].shape, shapes[k]);
        const got = mean[k].dataSync();
        got.forEach((v, i) => {
          const want = all.reduce((a, g) => a + Math.fround(g[k][i]), 0) / size;
          if (kind === 'int') assert.strictEqual(v, Math.fround(want), `${k}[${i}]`);
          else assert.ok(Math.abs(v - want) <= 1e-6 * (1 + Math.abs(want)), `${k}[${i}]: ${v} vs ${want}`);
        });
      }
      Object.values(mine).forEach((t) => t.dispose());
      Object.values(mean).forEach((t) => t.dispose());
    }

    // broadcastVariables: float32, int32 and bool variables take root's values.
    const root = size - 1;
    const varsOf = (r) => [valuesOf(r, 6, 'normal', 20), valuesOf(r, 3, 'int', 21), valuesOf(r, 5, 'int', 22).map((v) => v > 0)];
    const [f, i32, b] = varsOf(rank);
    const vars = [tf.variable(tf.tensor(f, [2, 3])), tf.variable(tf.tensor(i32, [3], 'int32')), tf.variable(tf.tensor(b, [5], 'bool'))];
    comm.broadcastVariables(vars, root);
    const want = varsOf(root);
    assert.deepStrictEqual(Array.from(vars[0].dataSync()), Array.from(Float32Array.from(want[0])));
    assert.deepStrictEqual(Array.from(vars[1].dataSync()), want[1]);
    assert.deepStrictEqual(Array.from(vars[2].dataSync()), want[2].map(Number));
    assert.deepStrictEqual(vars[0].shape, [2, 3]);
    comm.broadcastVariables(vars);  // root 0 by default
    assert.deepStrictEqual(Array.from(vars[1].dataSync()), want[1]);

    comm.checkSame('config', { dim: 128, specs: { e: { shape: [128], dtype: 'float32' } }, seeds: Int32Array.from([1, 2]) });
    report({ ok: true, threadLevel: comm.info.threadLevel, library: comm.info.library });
  },

  mismatch() {
    const last = size - 1;
    // checkSame: a field that differs on the last rank.
    const e1 = expectThrows(() => comm.checkSame('cache config', { dim: 64, seed: rank === last ? 8 : 7 }),
      'ERR_DISTRIBUTED_MISMATCH', '"cache config"', 'field "seed"', `rank ${last}: 8`);
    assert.ok(!e1.message.includes('field "dim"'), e1.message);
    // allReduceMean with a different shape on the last rank: named by gradient.
    const g = { w: tf.zeros(rank === last ? [2, 3] : [3, 2]), b: tf.zeros([2]) };
    const e2 = expectThrows(() => comm.allReduceMean(g), 'ERR_DISTRIBUTED_MISMATCH', 'field "w"', `rank ${last}: [2,3]`);
    // allgather with disagreeing counts.
    expectThrows(() => comm.allgather(new Int32Array(1), ranks.map((r) => (r === rank ? 1 : rank === last ? 2 : 1))),
      'ERR_DISTRIBUTED_MISMATCH', 'field "counts"');
    // Different collectives, and a broadcast of different lengths.
    expectThrows(() => (rank === last ? comm.barrier() : comm.allreduce(new Float32Array(4))),
      'ERR_DISTRIBUTED_MISMATCH', 'allreduce sum of 4 float32', `rank ${last} called barrier`);
    expectThrows(() => comm.broadcast(new Float32Array(rank === last ? 5 : 4)),
      'ERR_DISTRIBUTED_MISMATCH', 'broadcast of 4 float32', 'broadcast of 5 float32');
    // The communicator is still in step and usable.
    const s = comm.allreduce(Int32Array.from([rank]));
    assert.strictEqual(s[0], (size * (size - 1)) / 2);
    report({ ok: true, checkSame: e1.message, allReduceMean: e2.message });
  },

  throw() {
    comm.barrier();
    if (rank === size - 1) throw new Error('boom on purpose');
    const e = expectThrows(() => comm.allReduceMean({ w: tf.ones([4]) }), 'ERR_DISTRIBUTED_PEER_EXIT',
      `rank ${size - 1} is exiting (exit code 1: Error: boom on purpose)`, 'allReduceMean');
    assert.deepStrictEqual(e.ranks, [size - 1]);
    // Later calls fail at once with the same reason.
    expectThrows(() => comm.barrier(), 'ERR_DISTRIBUTED_PEER_EXIT', 'failed earlier');
    report({ ok: true, message: e.message });
    process.exitCode = 3;
  },

  stuck() {
    comm.barrier();
    if (rank === size - 1) {
      // Alive but never joins again (a hung rank): the others must time out.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 30000);
      return;
    }
    const t0 = Date.now();
    const e = expectThrows(() => comm.allReduceMean({ w: tf.ones([4]) }), 'ERR_DISTRIBUTED_TIMEOUT',
      'allReduceMean', `rank ${size - 1} did not reach this collective`);
    assert.deepStrictEqual(e.ranks, [size - 1]);
    report({ ok: true, message: e.message, waitedMs: Date.now() - t0 });
    throw e;  // exiting after an abandoned collective aborts the MPI job
  },

  kill() {
    comm.barrier();
    if (rank === size - 1) process.kill(process.pid, 'SIGKILL');
    comm.allReduceMean({ w: tf.ones([4]) });
    report({ ok: false, message: 'the collective completed without the killed rank' });
  },

  validation() {
    const f = new Float32Array([1, 2, 3]);
    const bad = [
      [() => comm.allreduce([1, 2]), TypeError, 'allreduce values'],
      [() => comm.allreduce(new Uint8Array(2)), TypeError, 'allreduce values'],
      [() => comm.allreduce(f, 'mean'), RangeError, 'allreduce op'],
      [() => comm.broadcast(f, size), RangeError, 'broadcast root'],
      [() => comm.broadcast(f, 0.5), RangeError, 'broadcast root'],
      [() => comm.broadcast(new Uint16Array(2)), TypeError, 'broadcast values'],
      [() => comm.allgather('abc'), TypeError, 'allgather values'],
      [() => comm.allgather(f, [3, 1]), RangeError, 'allgather counts.length'],
      [() => comm.allgather(f, [2]), RangeError, `allgather counts[${rank}]`],
      [() => comm.allgather(f, [-1]), RangeError, 'allgather counts[0]'],
      [() => comm.alltoallv(f, [2]), RangeError, 'alltoallv sendCounts'],
      [() => comm.alltoallv(f, ['3']), TypeError, 'alltoallv sendCounts[0]'],
      [() => comm.alltoallv(f, null), TypeError, 'alltoallv sendCounts'],
      [() => comm.allReduceMean(tf.ones([2])), TypeError, 'allReduceMean grads'],
      [() => comm.allReduceMean({ a: [1, 2] }), TypeError, 'allReduceMean grads["a"]'],
      [() => comm.allReduceMean({ a: tf.ones([2], 'int32') }), TypeError, 'allReduceMean grads["a"]'],
      [() => { const t = tf.ones([2]); t.dispose(); comm.allReduceMean({ a: t }); }, TypeError, 'disposed'],
      [() => comm.broadcastVariables(tf.variable(tf.ones([2]))), TypeError, 'broadcastVariables vars'],
      [() => comm.broadcastVariables([tf.ones([2])]), TypeError, 'broadcastVariables vars[0]'],
      [() => comm.broadcastVariables([], -1), RangeError, 'broadcastVariables root'],
      [() => comm.checkSame('', {}), TypeError, 'checkSame name'],
      [() => comm.checkSame('x', [1]), TypeError, 'checkSame values'],
      [() => comm.checkSame('x', { f: () => 1 }), TypeError, 'checkSame values.f'],
      [() => comm.checkSame('x', { m: new Map() }), TypeError, 'checkSame values.m'],
      [() => nc.initDistributed({ timeoutMs: 0 }), RangeError, 'timeoutMs'],
      [() => nc.initDistributed({ timeoutMs: '5' }), TypeError, 'timeoutMs'],
      [() => nc.initDistributed(7), TypeError, 'initDistributed options'],
    ];
    for (const [fn, Type, name] of bad) {
      assert.throws(fn, (e) => e instanceof Type && e.message.includes(name) && e.message.includes('got'), `${fn}`);
    }
    assert.deepStrictEqual(Array.from(f), [1, 2, 3]);
    // The communicator is unharmed: a collective after the rejected calls works.
    assert.deepStrictEqual(Array.from(comm.allreduce(f)), [1, 2, 3].map((v) => v * size));
    assert.strictEqual(nc.initDistributed({ timeoutMs: 1234 }).timeoutMs, 1234);
    report({ ok: true, checked: bad.length });
  },
};

if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
scenarios[scenario]();
