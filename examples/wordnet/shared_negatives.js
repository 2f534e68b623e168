'use strict';
// Shared hard negatives from the cache (a prototype; docs/demo.md): each step,
// every query draws k rows from the cache (Gumbel-max on its scores against the
// stale cached embeddings, the package's native kernels), the distinct drawn
// rows are re-embedded FRESH through the document tower once, and every query
// is scored against all of them plus the batch's own positives (in-batch
// negatives). So a query sees B - 1 + |drawn| negatives, all fresh (no
// fresh-vs-stale mixing: the stale cache only chooses which documents to
// re-embed), for the price of re-embedding B·k documents, and every re-embedded
// negative gets a gradient from every query.
//
//   L = mean_i [ logsumexp_j( s q_i·p_j , s q_i·h_m ) - s q_i·p_i ]
//
// Accidental hits (a cached row holding one of query i's own lemmas): a draw of
// query i that is one is dropped, and such a row drawn by another query is masked
// out of query i's logits. The cache is updated as the reference does: drawn rows get their
// fresh embeddings, the batch's positives replace the oldest rows. With an empty
// cache nothing is drawn and the loss is the in-batch softmax: there is no
// switch point; the cache negatives take over as the cache fills.

const { kernelsFor } = require('../../dist/backends');
const { storeOf } = require('../../dist/cache');

const MASKED = -1e9;

class SharedNegatives {
  /** o: { nc, specs, cacheSize, backend, k, scale, invTemp, seed, dim, docWidth, lemmaKey, docKey, maxDrawn (0 = all), detach } */
  constructor(o) {
    this.o = o;
    this.manager = new o.nc.CacheManager(o.specs, o.cacheSize, { backend: o.backend });
    this.cache = this.manager.initCache();
    this.kernels = kernelsFor(this.manager.backend);
    this.call = 0;
    this.filledRows = 0;
    this.lastStaleness = NaN;
    this.lastMetrics = null;
  }

  /**
   * One step's loss (call inside optimizer.minimize). q, p: [B, dim] on the tape; docIds: Int32Array
   * [B, docWidth] of the positives; positives[i]: corpus rows that are right answers for query i;
   * docNetwork(idsTensor) -> [n, dim]. Updates the cache (reads values, disposes nothing on the tape).
   */
  loss(tf, { q, p, docIds, positives, docNetwork, draw = true }) {
    const { k, scale, dim, docWidth, invTemp, seed } = this.o;
    const cache = this.cache;
    const N = cache.size;
    const B = q.shape[0];
    const qv = q.dataSync();
    const answerKeys = positives.map((rows) => new Set(Array.from(rows, (r) => this.o.lemmaKey[r])));
    // k draws per query, fused score + Gumbel-max on the native kernel (no B x N matrix); a draw that is an
    // accidental hit (a row holding one of the query's own lemmas) is dropped.
    let drawn = [];
    const best = new Map();  // drawn row -> highest score of a query that drew it
    const rowKey = new Map();
    let hits = 0;
    let ids = null;
    if (draw && k > 0 && this.filledRows > 0) {
      const res = this.kernels.scoreAndSample(
        { queries: qv, batch: B, dim, sources: [{ store: storeOf(cache), key: 'embedding' }], scale, scoreEmptyRows: false },
        { mode: 'gumbel', invTemp, numDraws: k, seed, call: this.call++ });
      ids = cache.read('ids');
      const seen = new Set();
      for (let i = 0; i < B; i++) {
        for (let t = 0; t < k; t++) {
          const j = res.indices[i * k + t];
          if (j < 0) continue;
          let key = rowKey.get(j);
          if (key === undefined) { key = this.o.docKey(ids, j * docWidth); rowKey.set(j, key); }
          if (answerKeys[i].has(key)) { hits++; continue; }
          const sc = res.scores[i * k + t];
          if (!seen.has(j)) { seen.add(j); drawn.push(j); best.set(j, sc); } else if (sc > best.get(j)) best.set(j, sc);
        }
      }
      // At most maxDrawn re-embedded rows: the hardest (ties: the smaller row).
      const cap = this.o.maxDrawn || 0;
      if (cap > 0 && drawn.length > cap) drawn = drawn.sort((a, b) => best.get(b) - best.get(a) || a - b).slice(0, cap);
    }
    const M = drawn.length;
    let loss;
    let hEmb = null;
    if (M === 0) {
      loss = tf.tidy(() => {
        const logits = tf.mul(tf.matMul(q, p, false, true), scale);
        return tf.mean(tf.sub(tf.logSumExp(logits, 1), tf.mul(tf.sum(tf.mul(q, p), 1), scale)));
      });
    } else {
      const hIds = new Int32Array(M * docWidth);
      drawn.forEach((j, m) => hIds.set(ids.subarray(j * docWidth, (j + 1) * docWidth), m * docWidth));
      // Column mask: drawn row m is an accidental hit for query i.
      const mask = new Float32Array(B * (B + M));
      for (let i = 0; i < B; i++) {
        drawn.forEach((j, m) => { if (answerKeys[i].has(rowKey.get(j))) mask[i * (B + M) + B + m] = MASKED; });
      }
      const hIdsT = tf.tensor2d(hIds, [M, docWidth], 'int32');
      const hFresh = docNetwork(hIdsT);
      hIdsT.dispose();
      hEmb = hFresh.dataSync().slice();
      // detach: a constant copy, off the tape's path, so no backward through the negatives' documents.
      const h = this.o.detach ? tf.tensor2d(hEmb, [M, dim]) : hFresh;
      loss = tf.tidy(() => {
        const cand = tf.concat([p, h], 0);
        const logits = tf.add(tf.mul(tf.matMul(q, cand, false, true), scale), tf.tensor2d(mask, [B, B + M]));
        return tf.mean(tf.sub(tf.logSumExp(logits, 1), tf.mul(tf.sum(tf.mul(q, p), 1), scale)));
      });
    }
    // Staleness of the drawn rows, |cached - fresh|² / |fresh|², every 5th step (it reads the whole column).
    let staleness = this.lastStaleness;
    const measure = M > 0 && this.call % 5 === 0;
    const emb = measure ? cache.read('embedding') : null;
    if (measure) {
      let num = 0, den = 0;
      drawn.forEach((j, m) => {
        for (let d = 0; d < dim; d++) { const f = hEmb[m * dim + d]; const e = emb[j * dim + d] - f; num += e * e; den += f * f; }
      });
      staleness = this.lastStaleness = num / Math.max(den, 1e-12);
    }
    // Cache update: refresh the drawn rows, insert the positives.
    const update = { newItems: { embedding: p.dataSync().slice(), ids: docIds } };
    if (M > 0) { update.updatedItemData = { embedding: hEmb }; update.updatedItemIndices = Int32Array.from(drawn); }
    this.manager.updateCache(cache, update);
    this.filledRows = Math.min(N, this.filledRows + B);
    this.lastMetrics = { trainingLoss: loss.dataSync()[0], drawn: M, accidentalHits: hits, staleness, drawnRows: drawn, drawnDocs: null };
    if (this.o.keepDocs) this.lastMetrics.drawnDocs = Object.fromEntries(drawn.map((j) => [j, ids[j * docWidth] - 1]));
    return loss;
  }

  dispose() { this.cache.dispose(); }
}

module.exports = { SharedNegatives };
