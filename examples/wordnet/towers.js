'use strict';
// Two small towers: hashed ids -> embedding lookup (tf.gather on a trainable
// matrix) -> masked mean pooling -> dense -> L2 normalize. The two towers share
// the embedding matrix by default (a word in a gloss and the same word in a
// lemma start from the same vector) and have their own dense layer.

let instances = 0;  // tfjs variable names must be unique per process

class Towers {
  constructor(tf, { buckets, embeddingDim = 64, outputDim = 64, seed = 1, shareEmbeddings = true }) {
    this.tf = tf;
    const tag = `towers${instances++}`;
    this.buckets = buckets;
    this.embeddingDim = embeddingDim;
    this.outputDim = outputDim;
    const init = (shape, scale, s) => tf.randomNormal(shape, 0, scale, 'float32', s);
    const rows = buckets + 1;  // row 0 = padding (masked out)
    this.queryTable = tf.variable(init([rows, embeddingDim], 0.1, seed), true, `${tag}/query_table`);
    this.docTable = shareEmbeddings
      ? this.queryTable
      : tf.variable(init([rows, embeddingDim], 0.1, seed + 1), true, `${tag}/doc_table`);
    const glorot = Math.sqrt(2 / (embeddingDim + outputDim));
    this.queryKernel = tf.variable(init([embeddingDim, outputDim], glorot, seed + 2), true, `${tag}/query_kernel`);
    this.queryBias = tf.variable(tf.zeros([outputDim]), true, `${tag}/query_bias`);
    this.docKernel = tf.variable(init([embeddingDim, outputDim], glorot, seed + 3), true, `${tag}/doc_kernel`);
    this.docBias = tf.variable(tf.zeros([outputDim]), true, `${tag}/doc_bias`);
  }

  get variables() {
    const v = [this.queryTable, this.queryKernel, this.queryBias, this.docKernel, this.docBias];
    if (this.docTable !== this.queryTable) v.push(this.docTable);
    return v;
  }

  /**
   * Masked mean of table rows: row b of the result is the mean of
   * table[ids[b, l]] over the non-zero ids of row b (zeros for a row without
   * any). Built on tf.sparse.sparseSegmentSum with a gradient made of
   * tf.scatterND (which sums repeated ids): on the wasm backend tf.gather is
   * ~20x slower than sparseSegmentSum, and tfjs's gather gradient goes through
   * UnsortedSegmentSum, which wasm lacks and cpu runs in O(rows x batch).
   */
  pool(table, ids) {
    const tf = this.tf;
    const [rows, length] = ids.shape;
    const values = ids.dataSync();
    let entries = 0;
    const weights = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let count = 0;
      for (let l = r * length, end = l + length; l < end; l++) if (values[l] !== 0) count++;
      weights[r] = count === 0 ? 0 : 1 / count;
      entries += Math.max(count, 1);
    }
    const flat = new Int32Array(entries);       // id 0 stands in for an empty row; its weight 0 zeroes it
    const segments = new Int32Array(entries);
    let e = 0;
    for (let r = 0; r < rows; r++) {
      const start = e;
      for (let l = r * length, end = l + length; l < end; l++) {
        if (values[l] !== 0) { flat[e] = values[l]; segments[e] = r; e++; }
      }
      if (e === start) { segments[e] = r; e++; }
    }
    const flatIds = tf.tensor1d(flat, 'int32');
    const segmentIds = tf.tensor1d(segments, 'int32');
    const sumRows = tf.customGrad((t, save) => {
      save([flatIds, segmentIds]);  // kept alive for the backward pass (tidy disposes the originals)
      return {
        value: tf.sparse.sparseSegmentSum(t, flatIds, segmentIds),
        gradFunc: (dy, [ids1, segs]) => tf.scatterND(tf.reshape(ids1, [-1, 1]),
          tf.gatherND(dy, tf.reshape(segs, [-1, 1])), t.shape),
      };
    });
    return tf.mul(sumRows(table), tf.tensor2d(weights, [rows, 1]));
  }

  encode(ids, table, kernel, bias) {
    const tf = this.tf;
    return tf.tidy(() => {
      const out = tf.add(tf.matMul(this.pool(table, ids), kernel), bias);
      // L2 normalize as tf.nn.l2_normalize does: x * rsqrt(max(|x|², 1e-12)) (finite gradient at x = 0).
      return tf.mul(out, tf.rsqrt(tf.maximum(tf.sum(tf.square(out), 1, true), 1e-12)));
    });
  }

  /** ids: int32 [B, Lq] -> float32 [B, outputDim], unit rows. */
  query(ids) { return this.encode(ids, this.queryTable, this.queryKernel, this.queryBias); }

  /** ids: int32 [B, Ld] -> float32 [B, outputDim], unit rows. */
  doc(ids) { return this.encode(ids, this.docTable, this.docKernel, this.docBias); }

  /** Copies of every variable's values (for warm starts). */
  snapshot() {
    return this.variables.map((v) => ({ shape: v.shape.slice(), values: v.dataSync().slice() }));
  }

  restore(snap) {
    const tf = this.tf;
    tf.tidy(() => this.variables.forEach((v, i) => v.assign(tf.tensor(snap[i].values, snap[i].shape))));
  }

  dispose() {
    for (const v of this.variables) v.dispose();
  }
}

module.exports = { Towers };
