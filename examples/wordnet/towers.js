'use strict';
// Two small towers: hashed ids -> embedding lookup -> masked mean pooling ->
// dense -> L2 normalize. The two towers share one embedding table (a word in a
// gloss and the same word in a lemma start from the same vector) and have their
// own dense layer.
//
// The embedding table (32,769 x 64 in the demo) is NOT a tf.Variable: it is a
// plain Float32Array trained by a sparse, lazy, row-wise Adam (SparseAdam
// below; "LazyAdam"): each step only the rows the batch touched are read,
// and only those rows' weights and moments are updated, in place. With dense
// Adam the update of the whole 2.1M-entry table (plus the dense scatter of its
// gradient) was ~2/3 of every step on tfjs-wasm (24 ms of a step against 8.5 ms
// for the forward and backward passes). Every mode uses the same optimizers,
// so the comparisons stay like for like. The dense layers are tf.Variables
// trained with tf.train.adam as before.

let instances = 0;  // tfjs variable names must be unique per process

/**
 * Lazy Adam for the rows of an embedding table: m, v and the weights of a row
 * change only on steps whose gradient touches the row; the bias correction
 * uses the global step count, as tf.train.adam does (same epsilon, 1e-7).
 */
class SparseAdam {
  constructor(table, dim, { lr = 0.003, beta1 = 0.9, beta2 = 0.999, epsilon = 1e-7 } = {}) {
    this.table = table;
    this.dim = dim;
    this.m = new Float32Array(table.length);
    this.v = new Float32Array(table.length);
    this.lr = lr; this.beta1 = beta1; this.beta2 = beta2; this.epsilon = epsilon;
    this.t = 0;
  }

  /**
   * rows: the distinct rows touched this step (count of them); grads: a table-shaped array holding
   * the summed gradient of each touched row (other rows are not read). Row 0 (padding) is skipped.
   */
  apply(rows, count, grads) {
    this.t++;
    const { table, m, v, dim, beta1, beta2, epsilon } = this;
    const step = this.lr * Math.sqrt(1 - Math.pow(beta2, this.t)) / (1 - Math.pow(beta1, this.t));
    // tf.train.adam: w -= lr * mhat / (sqrt(vhat) + eps); written as lr_t * m / (sqrt(v) + eps * sqrt(1 - b2^t)).
    const epsT = epsilon * Math.sqrt(1 - Math.pow(beta2, this.t));
    for (let r = 0; r < count; r++) {
      const row = rows[r];
      if (row === 0) continue;
      const o = row * dim;
      for (let j = 0; j < dim; j++) {
        const gj = grads[o + j];
        const mj = m[o + j] = beta1 * m[o + j] + (1 - beta1) * gj;
        const vj = v[o + j] = beta2 * v[o + j] + (1 - beta2) * gj * gj;
        table[o + j] -= step * mj / (Math.sqrt(vj) + epsT);
      }
    }
  }

  snapshot() { return { m: this.m.slice(), v: this.v.slice(), t: this.t }; }
  restore(s) { this.m.set(s.m); this.v.set(s.v); this.t = s.t; }
}

class Towers {
  constructor(tf, { buckets, embeddingDim = 64, outputDim = 64, seed = 1, lr = 0.003 }) {
    this.tf = tf;
    const tag = `towers${instances++}`;
    this.buckets = buckets;
    this.embeddingDim = embeddingDim;
    this.outputDim = outputDim;
    const init = (shape, scale, s) => tf.randomNormal(shape, 0, scale, 'float32', s);
    const rows = buckets + 1;  // row 0 = padding (masked out)
    const t0 = init([rows, embeddingDim], 0.1, seed);
    this.table = t0.dataSync().slice();
    t0.dispose();
    this.tableOptimizer = new SparseAdam(this.table, embeddingDim, { lr });
    const glorot = Math.sqrt(2 / (embeddingDim + outputDim));
    this.queryKernel = tf.variable(init([embeddingDim, outputDim], glorot, seed + 2), true, `${tag}/query_kernel`);
    this.queryBias = tf.variable(tf.zeros([outputDim]), true, `${tag}/query_bias`);
    this.docKernel = tf.variable(init([embeddingDim, outputDim], glorot, seed + 3), true, `${tag}/doc_kernel`);
    this.docBias = tf.variable(tf.zeros([outputDim]), true, `${tag}/doc_bias`);
    // A scalar the lookups hang their gradient on: its own gradient is always 0; the table's row
    // gradients are collected on the side (this.pending) and applied by applyTableGradients().
    this.anchor = tf.variable(tf.scalar(0), true, `${tag}/table_anchor`);
    this.pending = [];
    // Scratch for the lookups and the gradient sums (no per-step maps or allocations).
    this.localOf = new Int32Array(rows).fill(-1);
    this.gradSums = new Float32Array(rows * embeddingDim);
    this.touched = new Int32Array(rows);
    this.isTouched = new Uint8Array(rows);
  }

  /** The tf.Variables (dense layers and the anchor) for optimizer.minimize; the table is trained by tableOptimizer. */
  get variables() {
    return [this.queryKernel, this.queryBias, this.docKernel, this.docBias, this.anchor];
  }

  /**
   * Masked mean of table rows: row b of the result is the mean of
   * table[ids[b, l]] over the non-zero ids of row b (zeros for a row without
   * any). Only the distinct rows in `ids` are copied into a small tensor; the
   * lookup is tf.sparse.sparseSegmentSum over it, and its gradient (a
   * tf.scatterND into those rows) is kept in this.pending.
   */
  pool(ids) {
    const tf = this.tf;
    const dim = this.embeddingDim;
    const [rows, length] = ids.shape;
    const values = ids.dataSync();
    const localOf = this.localOf;   // all -1 between calls
    const distinct = [];
    let entries = 0;
    const weights = new Float32Array(rows);
    for (let r = 0; r < rows; r++) {
      let count = 0;
      for (let l = r * length, end = l + length; l < end; l++) if (values[l] !== 0) count++;
      weights[r] = count === 0 ? 0 : 1 / count;
      entries += Math.max(count, 1);
    }
    const flat = new Int32Array(entries);       // row 0 (padding) stands in for an empty row; its weight 0 zeroes it
    const segments = new Int32Array(entries);
    const local = (id) => {
      let k = localOf[id];
      if (k < 0) { k = localOf[id] = distinct.length; distinct.push(id); }
      return k;
    };
    let e = 0;
    for (let r = 0; r < rows; r++) {
      const start = e;
      for (let l = r * length, end = l + length; l < end; l++) {
        if (values[l] !== 0) { flat[e] = local(values[l]); segments[e] = r; e++; }
      }
      if (e === start) { flat[e] = local(0); segments[e] = r; e++; }
    }
    for (const id of distinct) localOf[id] = -1;
    const sub = new Float32Array(distinct.length * dim);
    for (let k = 0; k < distinct.length; k++) sub.set(this.table.subarray(distinct[k] * dim, (distinct[k] + 1) * dim), k * dim);
    const subT = tf.tensor2d(sub, [distinct.length, dim]);
    const flatIds = tf.tensor1d(flat, 'int32');
    const segmentIds = tf.tensor1d(segments, 'int32');
    const pending = this.pending;
    const lookup = tf.customGrad((anchor, save) => {
      save([flatIds, segmentIds]);
      return {
        value: tf.sparse.sparseSegmentSum(subT, flatIds, segmentIds),
        gradFunc: (dy, [ids1, segs]) => {
          const g = tf.scatterND(tf.reshape(ids1, [-1, 1]), tf.gatherND(dy, tf.reshape(segs, [-1, 1])), [distinct.length, dim]);
          pending.push({ rows: distinct, grad: tf.keep(g) });
          return tf.zerosLike(anchor);
        },
      };
    });
    return tf.mul(lookup(this.anchor), tf.tensor2d(weights, [rows, 1]));
  }

  /** Applies (and clears) the table gradients collected by the last backward pass. */
  applyTableGradients() {
    const dim = this.embeddingDim;
    const { gradSums, touched, isTouched } = this;
    let count = 0;
    for (const { rows, grad } of this.pending) {
      const g = grad.dataSync();
      for (let k = 0; k < rows.length; k++) {
        const row = rows[k], o = row * dim;
        if (!isTouched[row]) { isTouched[row] = 1; touched[count++] = row; gradSums.fill(0, o, o + dim); }
        for (let j = 0; j < dim; j++) gradSums[o + j] += g[k * dim + j];
      }
      grad.dispose();
    }
    this.pending.length = 0;
    this.tableOptimizer.apply(touched, count, gradSums);
    for (let r = 0; r < count; r++) isTouched[touched[r]] = 0;
  }

  /** Drops collected table gradients without applying them. */
  clearTableGradients() {
    for (const { grad } of this.pending) grad.dispose();
    this.pending.length = 0;
  }

  encode(ids, kernel, bias) {
    const tf = this.tf;
    return tf.tidy(() => {
      const out = tf.add(tf.matMul(this.pool(ids), kernel), bias);
      // L2 normalize as tf.nn.l2_normalize does: x * rsqrt(max(|x|², 1e-12)) (finite gradient at x = 0).
      return tf.mul(out, tf.rsqrt(tf.maximum(tf.sum(tf.square(out), 1, true), 1e-12)));
    });
  }

  /** ids: int32 [B, Lq] -> float32 [B, outputDim], unit rows. */
  query(ids) { return this.encode(ids, this.queryKernel, this.queryBias); }

  /** ids: int32 [B, Ld] -> float32 [B, outputDim], unit rows. */
  doc(ids) { return this.encode(ids, this.docKernel, this.docBias); }

  /** Copies of the weights and the table optimizer's state (for warm starts). */
  snapshot() {
    return {
      table: this.table.slice(),
      tableOptimizer: this.tableOptimizer.snapshot(),
      variables: this.variables.map((v) => ({ shape: v.shape.slice(), values: v.dataSync().slice() })),
    };
  }

  restore(snap) {
    const tf = this.tf;
    this.table.set(snap.table);
    this.tableOptimizer.restore(snap.tableOptimizer);
    tf.tidy(() => this.variables.forEach((v, i) => v.assign(tf.tensor(snap.variables[i].values, snap.variables[i].shape))));
  }

  dispose() {
    this.clearTableGradients();
    for (const v of this.variables) v.dispose();
  }
}

module.exports = { Towers, SparseAdam };
