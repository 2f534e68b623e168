'use strict';
// Held-out retrieval: embed all lemmas (the corpus), score every held-out
// gloss against all of them with the package's score kernel (native C++ when
// built, else the JS twin), and count a hit@K when some lemma of the synset
// ranks in the top K. The rank of the best positive is the number of
// non-positive lemmas scoring strictly higher, so no top-k sort is needed
// (and counting stops once it reaches the largest K).

const { CacheManager } = require('../..');
const { kernelsFor } = require('../../dist/backends');
const { storeOf } = require('../../dist/cache');

/** Runs fn over [0, n) in chunks, calling progress(done, n). */
function chunks(n, size, fn, progress) {
  for (let start = 0; start < n; start += size) {
    fn(start, Math.min(n, start + size));
    if (progress) progress(Math.min(n, start + size), n);
  }
}

/** Embeds rows of an int32 id matrix [n, width] with embed(idsTensor) -> [rows, dim]; returns Float32Array [n, dim]. */
function embedAll(tf, embed, ids, width, n, dim, progress, chunk = 8192) {
  const out = new Float32Array(n * dim);
  chunks(n, chunk, (a, b) => {
    const e = tf.tidy(() => embed(tf.tensor2d(ids.subarray(a * width, b * width), [b - a, width], 'int32')));
    out.set(e.dataSync(), a * dim);
    e.dispose();
  }, progress);
  return out;
}

/**
 * Recall@K for K in ks. queries: Float32Array [q, dim]; positives[i]: the
 * corpus rows that count as a hit for query i; corpus: Float32Array [n, dim].
 */
function recallAt(queries, positives, corpus, dim, ks, progress, backend = 'auto') {
  const n = corpus.length / dim;
  const numQueries = positives.length;
  const manager = new CacheManager({ embedding: { shape: [dim], dtype: 'float32' } }, n, { backend });
  const cache = manager.initCache({ data: { embedding: corpus } });
  const kernels = kernelsFor(manager.backend);
  const source = { store: storeOf(cache), key: 'embedding' };
  const hits = ks.map(() => 0);
  const maxK = Math.max(...ks);
  const chunk = 128;
  try {
    chunks(numQueries, chunk, (a, b) => {
      const scores = kernels.scoreMatrix({
        queries: queries.subarray(a * dim, b * dim), batch: b - a, dim, sources: [source], scale: 1, scoreEmptyRows: true,
      });
      for (let i = a; i < b; i++) {
        const row = scores.subarray((i - a) * n, (i - a + 1) * n);
        const pos = positives[i];
        let best = -Infinity;
        for (const p of pos) if (row[p] > best) best = row[p];
        // Counting stops at the largest K: beyond it the exact rank does not matter.
        let rank = 0;
        for (let j = 0; j < n && rank < maxK; j++) if (row[j] > best) rank++;
        ks.forEach((k, t) => { if (rank < k) hits[t]++; });
      }
    }, progress);
  } finally {
    cache.dispose();
  }
  return hits.map((h) => h / Math.max(numQueries, 1));
}

module.exports = { embedAll, recallAt };
