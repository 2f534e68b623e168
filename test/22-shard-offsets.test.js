'use strict';
// SampleParams rowOffset / columnOffset (the sharded loss, docs/distributed.md):
// a shard of the index space, scored with its offsets, draws the noise one
// pass over the whole space draws (same global rows, same perturbed scores),
// on the JS and native kernels; merging the shards' k best gives the whole
// pass's draws. Bad offsets are rejected.
const assert = require('assert');
const { createStore, kernelsFor } = require('./helpers/internals');
const { rng } = require('./helpers/rng');

function store(kind, values, size, dim) {
  const s = createStore(kind, [{ key: 'emb', dtype: 'float32', storage: 'float32', width: dim }], size);
  s.initialize({ emb: values }, null);
  return s;
}

for (const kind of ['js', 'native']) {
  describe(`kernels with rowOffset/columnOffset (${kind})`, () => {
    const kern = kernelsFor(kind);
    const dim = 6, N = 97, B = 9, k = 3;
    const r = rng(5);
    const values = Float32Array.from({ length: N * dim }, () => r.normal());
    const queries = Float32Array.from({ length: B * dim }, () => r.normal());
    const req = (s, q, b) => ({ queries: q, batch: b, dim, sources: [{ store: s, key: 'emb' }], scale: 1.5, scoreEmptyRows: true });
    for (const mode of ['gumbel', 'max']) {
      it(`${mode}: shards [0, 41) and [41, 97) with offsets merge to the whole pass's draws`, () => {
        const params = { mode, invTemp: 0.7, numDraws: k, seed: 77, call: 4 };
        const whole = kern.scoreAndSample(req(store(kind, values, N, dim), queries, B), params);
        const cuts = [[0, 41], [41, N]];
        const parts = cuts.map(([a, b]) => kern.scoreAndSample(
          req(store(kind, values.slice(a * dim, b * dim), b - a, dim), queries, B), { ...params, columnOffset: a }));
        // The whole pass's draws are the best k of the shards' draws, by S order of the whole list.
        for (let b = 0; b < B; b++) {
          const union = new Set();
          parts.forEach((p, i) => {
            for (let d = 0; d < k; d++) {
              const j = p.indices[b * k + d];
              assert.ok(j >= cuts[i][0] && j < cuts[i][1], `global index ${j} outside shard ${i}`);
              union.add(j);
            }
          });
          for (let d = 0; d < k; d++) assert.ok(union.has(whole.indices[b * k + d]), `query ${b}: draw ${whole.indices[b * k + d]} missing from the shards' lists`);
          const lse = Math.log(parts.reduce((s, p) => s + Math.exp(p.lse[b]), 0));
          assert.ok(Math.abs(lse - whole.lse[b]) < 1e-5 * (1 + Math.abs(whole.lse[b])), `lse ${lse} vs ${whole.lse[b]}`);
        }
      });
    }
    it('rowOffset: queries [3, 9) alone with rowOffset 3 draw what they draw in the whole batch', () => {
      const s = store(kind, values, N, dim);
      const params = { mode: 'gumbel', invTemp: 1, numDraws: k, seed: 9, call: 0 };
      const whole = kern.scoreAndSample(req(s, queries, B), params);
      const tail = kern.scoreAndSample(req(s, queries.slice(3 * dim), B - 3), { ...params, rowOffset: 3 });
      assert.deepStrictEqual(Array.from(tail.indices), Array.from(whole.indices.slice(3 * k)));
      const m = kern.scoreMatrix(req(s, queries, B));
      const wc = kern.sampleCandidates(m, B, N, params);
      const tc = kern.sampleCandidates(m.slice(3 * N), B - 3, N, { ...params, rowOffset: 3 });
      assert.deepStrictEqual(Array.from(tc.indices), Array.from(wc.indices.slice(3 * k)));
      const off = kern.sampleCandidates(m.slice(0, B * 40).map((_, i) => m[Math.floor(i / 40) * N + 57 + (i % 40)]), B, 40, { ...params, columnOffset: 57 });
      for (let i = 0; i < off.indices.length; i++) assert.ok(off.indices[i] >= 57 && off.indices[i] < 97);
    });
    it('exclusions name the shard\'s own rows: a shard with columnOffset draws what the whole pass draws with the same rows excluded', () => {
      const params = { mode: 'gumbel', invTemp: 1, numDraws: k, seed: 31, call: 2 };
      const a = 41;
      // Query b excludes global rows a + (b % 5) and a + 10 + b (both in the shard [41, 97)).
      const excl = (base) => {
        const rows = [], offs = [0];
        for (let b = 0; b < B; b++) { rows.push(a + (b % 5) - base, a + 10 + b - base); offs.push(rows.length); }
        return { exclusions: Int32Array.from(rows), exclusionOffsets: Int32Array.from(offs) };
      };
      const shardVals = values.slice(a * dim);
      const part = kern.scoreAndSample({ ...req(store(kind, shardVals, N - a, dim), queries, B), ...excl(a) }, { ...params, columnOffset: a });
      // The whole pass restricted to the shard: rows [0, a) left empty (not candidates).
      const s = createStore(kind, [{ key: 'emb', dtype: 'float32', storage: 'float32', width: dim }], N);
      s.update({ useLru: false, numUpdated: N - a, updatedValues: { emb: shardVals },
        updatedIndices: Int32Array.from({ length: N - a }, (_, i) => a + i), updatedMask: null, numNew: 0, newValues: {}, newMask: null });
      const whole = kern.scoreAndSample({ ...req(s, queries, B), scoreEmptyRows: false, ...excl(0) }, params);
      assert.deepStrictEqual(Array.from(part.indices), Array.from(whole.indices));
      for (let b = 0; b < B; b++) assert.ok(Math.abs(part.lse[b] - whole.lse[b]) < 1e-5 * (1 + Math.abs(whole.lse[b])));
      for (let i = 0; i < part.indices.length; i++) {
        const b = Math.floor(i / k);
        assert.ok(part.indices[i] !== a + (b % 5) && part.indices[i] !== a + 10 + b, `query ${b} drew an excluded row`);
      }
    });
    if (kind === 'native') {
      it('rejects offsets out of range', () => {
        const s = store(kind, values, N, dim);
        const params = { mode: 'gumbel', invTemp: 1, numDraws: 1, seed: 9, call: 0 };
        assert.throws(() => kern.scoreAndSample(req(s, queries, B), { ...params, columnOffset: 2 ** 31 - 10 }), /columnOffset/);
        assert.throws(() => kern.scoreAndSample(req(s, queries, B), { ...params, rowOffset: -1 }), /rowOffset/);
      });
    }
  });
}
