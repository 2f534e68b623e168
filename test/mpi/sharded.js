'use strict';
// One rank of a sharded-loss test (run by test/70-distributed.test.js under
// mpirun): `node test/mpi/sharded.js <scenario> '<config json>'`. Every rank
// derives every rank's shard and batch from seeds; rank 0 also builds the
// single-process reference (the concatenated shards and batches, in one
// process, from the shards' gathered state) and compares query by query.
// Lines starting with "RESULT " are what the test reads.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('../..');
const { rng } = require('../helpers/rng');

const scenario = process.argv[2];
const cfg = { backend: 'js', sources: 1, numNegatives: 1, steps: 3, retrieval: 'gumbel', transform: 'number', ...JSON.parse(process.argv[3] || '{}') };
const comm = nc.initDistributed();
const { rank, size } = comm;
const report = (obj) => console.log(`RESULT ${JSON.stringify({ rank, size, ...obj })}`);

const D = 8;
const sourceNames = cfg.sources === 1 ? ['cache'] : ['a', 'b'];
const specs = { emb: { shape: [D], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' }, feat: { shape: [D], dtype: 'float32' } };
const shardSize = (r, s) => 23 + 9 * r + 5 * s;
const batchOf = (r) => 4 + r;
const W = tf.tensor2d(Float32Array.from({ length: D * D }, (_, i) => Math.sin(i + 1) / 2), [D, D]);
const docNet = (data) => tf.add(tf.matMul(data.feat, W), tf.mul(tf.cast(data.id, 'float32'), 0.01));

function lossOptions(extra = {}) {
  const o = { embeddingKey: 'emb', dataKeys: ['feat', 'id'], reducer: 'none', seed: 1234567, numNegatives: cfg.numNegatives };
  if (cfg.topK) o.topK = cfg.topK;
  if (cfg.scoreEmptyRows) o.scoreEmptyRows = true;
  if (cfg.transform === 'function') o.scoreTransform = (s) => tf.mul(tf.tanh(s), 3);
  else o.scoreTransform = 2;
  if (cfg.retrieval === 'max') o.retrievalFn = new nc.MaxScoreRetrievalFn();
  return { ...o, ...extra };
}

/** Rows of a source's shard on rank r: random contents, about 70% filled. */
function shardContent(r, s) {
  const g = rng(7919 * (r + 1) + 104729 * (s + 1));
  const n = shardSize(r, s);
  const rows = [];
  for (let i = 0; i < n; i++) if (g.next() < 0.7) rows.push(i);
  const m = rows.length;
  return {
    rows,
    emb: Float32Array.from({ length: m * D }, () => g.normal()),
    feat: Float32Array.from({ length: m * D }, () => g.normal()),
    id: Int32Array.from({ length: m }, () => g.int(1 << 30)),
  };
}

/** Rank r's batch at step t. */
function batchAt(r, t) {
  const g = rng(31 * (t + 1) + 1009 * (r + 1));
  const B = batchOf(r);
  return {
    q: Float32Array.from({ length: B * D }, () => g.normal() / 2),
    p: Float32Array.from({ length: B * D }, () => g.normal() / 2),
    feat: Float32Array.from({ length: B * D }, () => g.normal()),
    id: Int32Array.from({ length: B }, () => g.int(1 << 30)),
  };
}

function fillShard(manager, cache, s) {
  const c = shardContent(rank, s);
  if (c.rows.length > 0) {
    manager.updateCache(cache, {
      updatedItemData: { emb: tf.tensor2d(c.emb, [c.rows.length, D]), feat: tf.tensor2d(c.feat, [c.rows.length, D]), id: tf.tensor2d(c.id, [c.rows.length, 1], 'int32') },
      updatedItemIndices: Int32Array.from(c.rows),
    });
  }
}

function makeShards() {
  const managers = {}, caches = {};
  sourceNames.forEach((name, s) => {
    managers[name] = new nc.CacheManager(specs, shardSize(rank, s), { backend: cfg.backend });
    caches[name] = managers[name].initCache();
    fillShard(managers[name], caches[name], s);
  });
  return { managers, caches };
}

/** Every shard's state, gathered (collective); on rank 0 the concatenated caches (JS backend). */
function referenceCaches(caches) {
  const out = {};
  for (const name of sourceNames) {
    const c = caches[name];
    const emb = comm.allgather(c.read('emb')).data;
    const feat = comm.allgather(c.read('feat')).data;
    const id = comm.allgather(c.read('id')).data;
    const filled = comm.allgather(c.readFilled()).data;
    if (rank !== 0) continue;
    const total = filled.length;
    const m = new nc.CacheManager(specs, total, { backend: cfg.backend });
    const ref = m.initCache();
    const rows = [];
    for (let j = 0; j < total; j++) if (filled[j]) rows.push(j);
    const pick = (a, w) => { const o = new a.constructor(rows.length * w); rows.forEach((j, i) => o.set(a.subarray(j * w, (j + 1) * w), i * w)); return o; };
    if (rows.length > 0) {
      m.updateCache(ref, {
        updatedItemData: { emb: tf.tensor2d(pick(emb, D), [rows.length, D]), feat: tf.tensor2d(pick(feat, D), [rows.length, D]), id: tf.tensor2d(pick(id, 1), [rows.length, 1], 'int32') },
        updatedItemIndices: Int32Array.from(rows),
      });
    }
    out[name] = { manager: m, cache: ref };
  }
  return out;
}

const close = (a, b, tol) => Math.abs(a - b) <= tol * (1 + Math.abs(b));

const scenarios = {
  /** The sharded loss equals the single-process loss over the concatenation, step by step (compute + refresh). */
  exact() {
    const { managers, caches } = makeShards();
    const loss = new nc.DistributedCacheClassificationLoss({ ...lossOptions(), communicator: comm });
    const one = sourceNames.length === 1;
    let compared = 0, refreshedRows = 0, maxDiff = 0;
    for (let t = 0; t < cfg.steps; t++) {
      const ref = referenceCaches(caches);
      const mine = batchAt(rank, t);
      const B = batchOf(rank);
      const ret = loss.compute(docNet, tf.tensor2d(mine.q, [B, D]), tf.tensor2d(mine.p, [B, D]), one ? caches.cache : caches);
      for (const name of sourceNames) {
        managers[name].updateCache(caches[name], {
          updatedItemData: ret.updatedItemData[name], updatedItemIndices: ret.updatedItemIndices[name], updatedItemMask: ret.updatedItemMask[name],
        });
      }
      const mineOut = new Float32Array(3 * B);
      mineOut.set(ret.interpretableLoss.dataSync(), 0);
      mineOut.set(ret.trainingLoss.dataSync(), B);
      mineOut.set(ret.staleness.dataSync(), 2 * B);
      const outs = comm.allgather(mineOut);
      const after = {};
      for (const name of sourceNames) after[name] = comm.allgather(caches[name].read('emb')).data;
      if (rank === 0) {
        const all = [...Array(size).keys()].map((r) => batchAt(r, t));
        const cat = (k) => { const a = all.map((x) => x[k]); const o = new Float32Array(a.reduce((n, x) => n + x.length, 0)); let p = 0; for (const x of a) { o.set(x, p); p += x.length; } return o; };
        const BT = all.reduce((n, _, r) => n + batchOf(r), 0);
        const refLoss = new nc.CacheClassificationLoss(lossOptions());
        refLoss.calls = t;
        const rc = {};
        for (const name of sourceNames) rc[name] = ref[name].cache;
        const rr = refLoss.compute(docNet, tf.tensor2d(cat('q'), [BT, D]), tf.tensor2d(cat('p'), [BT, D]), one ? rc.cache : rc);
        const want = [rr.interpretableLoss.dataSync(), rr.trainingLoss.dataSync(), rr.staleness.dataSync()];
        let q0 = 0;
        for (let r = 0; r < size; r++) {
          const Br = batchOf(r);
          const got = outs.data.subarray(outs.offsets[r], outs.offsets[r] + 3 * Br);
          for (let f = 0; f < 3; f++) {
            for (let b = 0; b < Br; b++) {
              const g = got[f * Br + b], w = want[f][q0 + b];
              maxDiff = Math.max(maxDiff, Math.abs(g - w));
              assert.ok(close(g, w, 2e-5), `step ${t} rank ${r} query ${b} ${['interpretableLoss', 'trainingLoss', 'staleness'][f]}: sharded ${g} vs one process ${w}`);
              compared++;
            }
          }
          q0 += Br;
        }
        // The refresh: one process's refreshed rows, against the shards' rows after their refresh.
        for (const name of sourceNames) {
          const m = ref[name].manager, c = ref[name].cache;
          const before = c.read('emb');
          m.updateCache(c, { updatedItemData: rr.updatedItemData[name], updatedItemIndices: rr.updatedItemIndices[name], updatedItemMask: rr.updatedItemMask[name] });
          const want2 = c.read('emb');
          for (let j = 0; j < want2.length; j++) {
            assert.ok(close(after[name][j], want2[j], 1e-6), `step ${t} source ${name}: row ${Math.floor(j / D)} sharded ${after[name][j]} vs one process ${want2[j]}`);
          }
          for (let j = 0; j < want2.length; j += D) if (want2[j] !== before[j]) refreshedRows++;
        }
      }
      // Each rank inserts its own positives into its own shard (the first source).
      const name = sourceNames[0];
      managers[name].updateCache(caches[name], {
        newItems: { emb: tf.tensor2d(mine.p, [B, D]), feat: tf.tensor2d(mine.feat, [B, D]), id: tf.tensor2d(mine.id, [B, 1], 'int32') },
      });
    }
    assert.strictEqual(loss.calls, cfg.steps);
    if (rank === 0) assert.ok(refreshedRows > 0, 'no row was refreshed');
    report({ ok: true, compared, refreshedRows, maxDiff, bytes: loss.lastBytesSent });
  },

  /** CacheLossHandler with the sharded loss inside tf.variableGrads, data-parallel (allReduceMean). */
  handler() {
    const m = new nc.CacheManager(specs, shardSize(rank, 0), { backend: cfg.backend });
    const loss = new nc.DistributedCacheClassificationLoss({ ...lossOptions({ reducer: 'mean' }), communicator: comm });
    const h = new nc.CacheLossHandler(m, loss, { embeddingKey: 'emb', dataKeys: ['feat', 'id'] });
    fillShard(m, h.cache, 0);
    const Wv = tf.variable(W.clone());
    comm.broadcastVariables([Wv]);
    const net = (data) => tf.add(tf.matMul(data.feat, Wv), tf.mul(tf.cast(data.id, 'float32'), 0.01));
    let refreshed = 0, gradNorm = 0;
    for (let t = 0; t < 6; t++) {
      const b = batchAt(rank, t);
      const B = batchOf(rank);
      const { value, grads } = tf.variableGrads(() => h.updateCacheAndComputeLoss(net, tf.tensor2d(b.q, [B, D]), tf.tensor2d(b.p, [B, D]),
        { feat: tf.tensor2d(b.feat, [B, D]), id: tf.tensor2d(b.id, [B, 1], 'int32') }), [Wv]);
      assert.ok(Number.isFinite(value.dataSync()[0]));
      const mean = comm.allReduceMean(grads);
      gradNorm += tf.sum(tf.square(mean[Wv.name])).dataSync()[0];
      Wv.assign(tf.sub(Wv, tf.mul(mean[Wv.name], 0.1)));
      refreshed += h.lastMetrics.refreshed;
    }
    const all = comm.allgather(Wv.dataSync()).data;
    for (let r = 1; r < size; r++) for (let i = 0; i < D * D; i++) assert.strictEqual(all[r * D * D + i], all[i], 'weights differ across ranks');
    const totalRefreshed = comm.allreduce(Int32Array.of(refreshed))[0];
    assert.ok(totalRefreshed > 0, 'nothing refreshed');
    assert.ok(gradNorm > 0, 'no gradient reached the document network');
    report({ ok: true, refreshed, totalRefreshed, gradNorm });
  },

  /** Mismatched configurations fail at the first step on every rank; errors on one rank fail every rank coherently. */
  mismatch() {
    const { caches } = makeShards();
    const b = batchAt(rank, 0);
    const B = batchOf(rank);
    const q = tf.tensor2d(b.q, [B, D]), p = tf.tensor2d(b.p, [B, D]);
    const expectCode = (fn, code, ...texts) => {
      try { fn(); } catch (e) {
        assert.strictEqual(e.code, code, e.stack);
        for (const t of texts) assert.ok(e.message.includes(t), `"${t}" missing from: ${e.message}`);
        return e.message;
      }
      throw new Error(`expected ${code}`);
    };
    const out = {};
    const seedLoss = new nc.DistributedCacheClassificationLoss({ ...lossOptions({ seed: rank === 2 ? 99 : 1234567 }), communicator: comm });
    out.seed = expectCode(() => seedLoss.compute(docNet, q, p, caches.cache), 'ERR_DISTRIBUTED_MISMATCH', 'field "seed"');
    const kLoss = new nc.DistributedCacheClassificationLoss({ ...lossOptions({ numNegatives: rank === 1 ? 2 : 1 }), communicator: comm });
    out.numNegatives = expectCode(() => kLoss.compute(docNet, q, p, caches.cache), 'ERR_DISTRIBUTED_MISMATCH', 'field "numNegatives"');
    // A cache of another dimension on rank 1: the dimension check.
    const loss = new nc.DistributedCacheClassificationLoss({ ...lossOptions(), communicator: comm });
    const other = new nc.CacheManager({ ...specs, emb: { shape: [D + 1], dtype: 'float32' }, feat: { shape: [D + 1], dtype: 'float32' } }, 10).initCache();
    const qq = rank === 1 ? tf.zeros([B, D + 1]) : q, pp = rank === 1 ? tf.zeros([B, D + 1]) : p;
    out.dim = expectCode(() => loss.compute(docNet, qq, pp, rank === 1 ? other : caches.cache), 'ERR_DISTRIBUTED_MISMATCH', 'dimension');
    // Bad input on rank 1 only: RangeError there, ERR_DISTRIBUTED_PEER_ERROR elsewhere; nothing changed.
    const bad = rank === 1 ? tf.fill([B, D], NaN) : q;
    if (rank === 1) assert.throws(() => loss.compute(docNet, bad, p, caches.cache), (e) => e instanceof RangeError && e.message.includes('queryEmbeddings'));
    else out.peer = expectCode(() => loss.compute(docNet, bad, p, caches.cache), 'ERR_DISTRIBUTED_PEER_ERROR', 'rank 1 failed in argument checks');
    // docNetwork throwing on rank 2: every other rank fails at the refresh exchange.
    const boom = (data) => { if (rank === 2) throw new Error('boom in docNetwork'); return docNet(data); };
    if (rank === 2) assert.throws(() => loss.compute(boom, q, p, caches.cache), /boom in docNetwork/);
    else out.docNetwork = expectCode(() => loss.compute(boom, q, p, caches.cache), 'ERR_DISTRIBUTED_PEER_ERROR', 'rank 2 failed in the loss');
    assert.strictEqual(loss.calls, 0);
    // Still usable: a good call works everywhere.
    const ret = loss.compute(docNet, q, p, caches.cache);
    assert.strictEqual(ret.interpretableLoss.shape[0], B);
    assert.strictEqual(loss.calls, 1);
    report({ ok: true, ...out });
  },

  /** A rank that exits before the step: the others fail with ERR_DISTRIBUTED_PEER_EXIT. */
  die() {
    const { caches } = makeShards();
    const loss = new nc.DistributedCacheClassificationLoss({ ...lossOptions(), communicator: comm });
    const b = batchAt(rank, 0);
    const B = batchOf(rank);
    if (rank === size - 1) process.exit(3);
    try {
      loss.compute(docNet, tf.tensor2d(b.q, [B, D]), tf.tensor2d(b.p, [B, D]), caches.cache);
    } catch (e) {
      report({ ok: e.code === 'ERR_DISTRIBUTED_PEER_EXIT', message: e.message });
      process.exitCode = 1;
      return;
    }
    report({ ok: false, message: 'no error' });
  },
};

if (!scenarios[scenario]) throw new Error(`unknown scenario ${scenario}`);
scenarios[scenario]();
