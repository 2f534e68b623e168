'use strict';
// The full-cache query-side term, a prototype (docs/demo.md): for every query,
// the softmax cross-entropy of its positive against ALL filled cache rows,
//
//   L_q = mean_i [ logsumexp( s q_i·p̄_i , s q_i·c_j for cached rows j ) - s q_i·p̄_i ]
//
// where the cached (stale) embeddings c_j and the positive p̄_i are constants
// (p̄_i = the positive's embedding with its gradient stopped), so the gradient
// flows only into the query tower:
//
//   dL/dq_i = (s/B) · ( Σ_j P_ij c_j − (1 − P_i,pos) p̄_i ),  P = the softmax above.
//
// The document tower is trained by the step's other term(s). Never-filled rows,
// and cached rows holding one of the query's own lemmas (accidental hits: a
// lemma shared by several synsets, inserted earlier), are left out.
//
// Both B x N products run on the package's native score kernel (q·Cᵀ directly
// on the cache store; P·C as P against a transposed copy of C): tfjs-wasm's
// matMul and logSumExp took ~45 ms for this per step, these ~5 ms. A fused
// native op (online softmax, no B x N matrix) would replace all of it.

const { CacheManager } = require('../..');
const { kernelsFor } = require('../../dist/backends');
const { storeOf } = require('../../dist/cache');

/**
 * o: { q: Tensor2D [B, dim] (on the tape), p: Tensor2D [B, dim], cache (a NegativeCache with
 * 'embedding' and 'ids'), scale, dim, docWidth, positives: Int32Array[] (corpus rows that are
 * right answers for query i), lemmaKey: Uint32Array (key of each corpus row's feature row),
 * docKey(ids, offset), backend }. Returns { loss: Scalar (differentiable in q), value, accidentalHits }.
 */
function fullCacheTerm(tf, o) {
  const { cache, dim, docWidth, scale } = o;
  const N = cache.size;
  const B = o.q.shape[0];
  const manager = { backend: cache.backend };
  const kernels = kernelsFor(manager.backend);
  const qv = o.q.dataSync();
  const pv = o.p.dataSync();
  // S = s q Cᵀ (-Infinity at never-filled rows), natively on the cache's own store.
  const S = kernels.scoreMatrix({ queries: qv, batch: B, dim, sources: [{ store: storeOf(cache), key: 'embedding' }], scale, scoreEmptyRows: false });
  // Never-filled rows are not candidates. (The native scoreMatrix scores them as 0 even with
  // scoreEmptyRows: false, where the JS kernel gives -Infinity, so they are masked here.)
  const ids = cache.read('ids');
  const filled = cache.readFilled();
  for (let j = 0; j < N; j++) if (!filled[j]) for (let i = 0; i < B; i++) S[i * N + j] = -Infinity;
  // Accidental hits: rows holding one of the query's lemmas.
  const rowsOfKey = new Map();
  for (let j = 0; j < N; j++) {
    if (!filled[j]) continue;
    const key = o.docKey(ids, j * docWidth);
    const list = rowsOfKey.get(key);
    if (list === undefined) rowsOfKey.set(key, [j]); else list.push(j);
  }
  let hits = 0;
  for (let i = 0; i < B; i++) {
    for (const lemma of o.positives[i]) {
      const rows = rowsOfKey.get(o.lemmaKey[lemma]);
      if (rows === undefined) continue;
      for (const j of rows) if (S[i * N + j] !== -Infinity) { S[i * N + j] = -Infinity; hits++; }
    }
  }
  // Softmax over [positive, cache rows] per query: S becomes exp(S - max) in place (unnormalized; z = its sum).
  let total = 0;
  const pPos = new Float64Array(B);
  const z = new Float64Array(B);
  for (let i = 0; i < B; i++) {
    let pos = 0;
    for (let d = 0; d < dim; d++) pos += qv[i * dim + d] * pv[i * dim + d];
    pos *= scale;
    const row = S.subarray(i * N, (i + 1) * N);
    let m = pos;
    for (let j = 0; j < N; j++) if (row[j] > m) m = row[j];
    const ePos = Math.exp(pos - m);
    let zi = ePos;
    for (let j = 0; j < N; j++) { const e = Math.exp(row[j] - m); row[j] = e; zi += e; }   // exp(-Infinity) = 0
    z[i] = zi;
    pPos[i] = ePos / zi;
    total += m + Math.log(zi) - pos;
  }
  // Σ_j P_ij c_j = (Σ_j e_ij c_j) / z_i: e [B, N] against Cᵀ ([dim rows of N]) on the score kernel.
  const c = cache.read('embedding');
  const ct = new Float32Array(dim * N);
  for (let d = 0; d < dim; d++) { const o = d * N; for (let j = 0; j < N; j++) ct[o + j] = c[j * dim + d]; }
  const tm = new CacheManager({ embedding: { shape: [N], dtype: 'float32' } }, dim, { backend: manager.backend });
  const tc = tm.initCache({ data: { embedding: ct } });
  let pc;
  try {
    pc = kernelsFor(tm.backend).scoreMatrix({ queries: S, batch: B, dim: N, sources: [{ store: storeOf(tc), key: 'embedding' }], scale: 1, scoreEmptyRows: true });
  } finally {
    tc.dispose();
  }
  const grad = new Float32Array(B * dim);
  for (let i = 0; i < B; i++) {
    for (let d = 0; d < dim; d++) grad[i * dim + d] = (scale / B) * (pc[i * dim + d] / z[i] - (1 - pPos[i]) * pv[i * dim + d]);
  }
  const value = total / B;
  const term = tf.customGrad((q) => ({
    value: tf.scalar(value),
    gradFunc: (dy) => tf.mul(dy, tf.tensor2d(grad, [B, dim])),
  }));
  return { loss: term(o.q), value, accidentalHits: hits };
}

module.exports = { fullCacheTerm };
