/**
 * The draw: score every query against every candidate row and pick the
 * negatives, choosing the cheapest path the options allow:
 * - a numeric scoreTransform, no topK, a built-in retrieval fn: one streaming
 *   kernel pass (scoreAndSample), no batch x N matrix;
 * - topK with a numeric transform: the kernels' group maxima (scoreGroupMax),
 *   then sampling among those K candidates;
 * - a function scoreTransform: the dense matrix (scoreMatrix), transformed
 *   with tf ops, grouped here when topK is set;
 * and a custom retrieval fn picks its columns from the candidate matrix.
 * Per-query exclusions (the handlers' accidental hits) go to the kernels
 * with the request, or are -Infinity in the candidate matrix.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { KernelBackend, ScoreRequest } from './backend';
import { kernelsFor } from './backends';
import { firstNonFinite, isTensor } from './convert';
import { describe, rangeError, typeError } from './errors';
import { groupMaxOfMatrix } from './js/groups';
import type { ScoreTransform } from './loss';
import { sampleParamsOf, type CustomRetrievalFn, type RetrievalFn } from './retrieval';
import { totalRows, type Source } from './sources';

/** The loss options the draw depends on. */
export interface DrawOptions {
  readonly embeddingKey: string;
  readonly scoreTransform: ScoreTransform | undefined;
  readonly topK: number | undefined;
  readonly retrievalFn: RetrievalFn;
  readonly seed: number;
  readonly numNegatives: number;
  readonly scoreEmptyRows: boolean;
}

/**
 * Per-query exclusions (CSR, global rows of the concatenated index space):
 * query b's candidates leave out rows[offsets[b] .. offsets[b + 1]).
 */
export interface Exclusions {
  rows: Int32Array;
  offsets: Int32Array;   // batch + 1 entries
}

/** The draws of one compute() call, before any tensor work. */
export interface Draws {
  rows: Int32Array;        // batch x k global rows, -1 = no draw
  lse: Float32Array;       // batch: logsumexp of S over the candidates
}

/**
 * Applies the score transform to a tensor of scores (`what` names them in
 * errors): a number scales, a function must return a tensor of the same shape.
 */
export function transformScores(t: ScoreTransform | undefined, x: tf.Tensor, what: string): tf.Tensor {
  if (t === undefined) return x;
  if (typeof t === 'number') return t === 1 ? x : tf.mul(x, t);
  const y = t(x);
  if (!isTensor<tf.Tensor>(y)) throw typeError('scoreTransform(scores)', `a tensor of shape [${x.shape.join(', ')}] (applied to ${what})`, y);
  if (y.shape.length !== x.shape.length || y.shape.some((d, i) => d !== x.shape[i])) {
    throw rangeError('scoreTransform(scores)', `a tensor of the input's shape [${x.shape.join(', ')}] (applied to ${what})`,
      `shape [${y.shape.join(', ')}]`);
  }
  return y.dtype === 'float32' ? y : tf.cast(y, 'float32');
}

/** Candidate scores, the draws (global rows) and lse per query, for noise call `call`. */
export function drawNegatives(o: DrawOptions, sources: Source[], queries: Float32Array, batch: number, dim: number,
                              call: number, exclusions: Exclusions | null = null): Draws {
  const kern = kernelsFor(sources[0].store.kind);
  const total = totalRows(sources);
  const t = o.scoreTransform;
  const req: ScoreRequest = {
    queries, batch, dim,
    sources: sources.map((s) => ({ store: s.store, key: o.embeddingKey })),
    scale: typeof t === 'number' ? t : 1,
    scoreEmptyRows: o.scoreEmptyRows,
  };
  if (exclusions !== null) {
    req.exclusions = exclusions.rows;
    req.exclusionOffsets = exclusions.offsets;
  }
  const params = sampleParamsOf(o.retrievalFn, o.numNegatives, o.seed, call);
  const custom = typeof o.retrievalFn === 'function' ? o.retrievalFn as CustomRetrievalFn : null;
  const k = o.numNegatives;

  // Fast path: the kernel streams rows, applies the scale and samples.
  if (typeof t !== 'function' && o.topK === undefined && custom === null) {
    const r = kern.scoreAndSample(req, params);
    checkLse(r.lse, r.candidates);
    return { rows: r.indices, lse: r.lse };
  }

  // Candidate matrix: B x C scores (-inf = not a candidate) and, per column,
  // the global row (null = column j is row j).
  let matrix: Float32Array;
  let cols: number;
  let rowOf: Int32Array | null = null;
  if (typeof t !== 'function' && o.topK !== undefined) {
    const gm = kern.scoreGroupMax(req, o.topK);
    matrix = gm.scores;
    cols = o.topK;
    rowOf = gm.rows;
  } else {
    if (typeof t === 'function') {
      matrix = transformedMatrix(kern, req, t, total);
    } else {
      matrix = kern.scoreMatrix(req);
    }
    if (!o.scoreEmptyRows) maskEmptyRows(matrix, sources, batch, total);
    if (exclusions !== null) maskExclusions(matrix, exclusions, batch, total);
    cols = total;
    if (o.topK !== undefined) {
      const gm = groupMaxOfMatrix(matrix, batch, total, o.topK, true);
      matrix = gm.scores;
      cols = o.topK;
      rowOf = gm.cols;
    }
  }
  const badScore = firstNonFinite(matrix, true);
  if (badScore >= 0) throw scoreError(matrix[badScore], Math.floor(badScore / cols));

  const r = kern.sampleCandidates(matrix, batch, cols, params);
  checkLse(r.lse, r.candidates);
  let picked: Int32Array;
  if (custom === null) picked = r.indices;
  else if (r.candidates.every((c) => c === 0)) picked = new Int32Array(batch * k).fill(-1);
  else picked = runCustom(custom, matrix, batch, cols, k, r.candidates);
  const rows = new Int32Array(batch * k);
  for (let i = 0; i < rows.length; i++) {
    const c = picked[i];
    rows[i] = c < 0 ? -1 : rowOf === null ? c : rowOf[Math.floor(i / k) * cols + c];
  }
  return { rows, lse: r.lse };
}

function checkLse(lse: Float32Array, candidates: Int32Array): void {
  for (let b = 0; b < lse.length; b++) {
    const v = lse[b];
    if (candidates[b] > 0 && !Number.isFinite(v)) throw scoreError(v, b);
  }
}

function scoreError(v: number, row: number): RangeError {
  return rangeError('scores', 'finite (check queryEmbeddings, the cached embeddings and scoreTransform)',
    `${describe(v)} for query row ${row}`);
}

/** Never-filled rows are not candidates: -Infinity in their columns. */
function maskEmptyRows(matrix: Float32Array, sources: Source[], batch: number, total: number): void {
  for (const s of sources) {
    const filled = s.store.readFilled();
    for (let j = 0; j < s.size; j++) {
      if (filled[j]) continue;
      for (let b = 0; b < batch; b++) matrix[b * total + s.start + j] = -Infinity;
    }
  }
}

/** A query's excluded rows are not its candidates: -Infinity in its row of the matrix. */
function maskExclusions(matrix: Float32Array, ex: Exclusions, batch: number, total: number): void {
  for (let b = 0; b < batch; b++) {
    for (let i = ex.offsets[b]; i < ex.offsets[b + 1]; i++) matrix[b * total + ex.rows[i]] = -Infinity;
  }
}

/** The dense matrix of plain dot products (every row), then the function transform with tf ops. */
function transformedMatrix(kern: KernelBackend, req: ScoreRequest, t: (s: tf.Tensor) => tf.Tensor,
                           total: number): Float32Array {
  const raw = kern.scoreMatrix({ ...req, scale: 1, scoreEmptyRows: true, exclusions: undefined, exclusionOffsets: undefined });
  let out = raw;
  tf.tidy(() => {
    const y = transformScores(t, tf.tensor2d(raw, [req.batch, total]), 'the cache scores');
    out = Float32Array.from(y.dataSync() as Float32Array);
  });
  return out;
}

/**
 * The custom retrieval fn's columns, checked: k integer candidate columns per
 * query row; -1 (no draw) for a row without candidates, whatever it returned.
 */
function runCustom(fn: CustomRetrievalFn, matrix: Float32Array, batch: number, cols: number, k: number,
                   candidates: Int32Array): Int32Array {
  let values: number[] = [];
  let shapeText = '';
  tf.tidy(() => {
    const res = fn(tf.tensor2d(matrix, [batch, cols]));
    if (isTensor<tf.Tensor>(res)) {
      shapeText = `shape [${res.shape.join(', ')}]`;
      values = Array.from(res.dataSync() as ArrayLike<number>);
    } else if (res !== null && typeof res === 'object' && typeof (res as ArrayLike<number>).length === 'number') {
      shapeText = `length ${(res as ArrayLike<number>).length}`;
      values = Array.from(res as ArrayLike<number>);
    } else {
      throw typeError('retrievalFn(scores)', `a tensor or array of ${batch * k} column indices`, res);
    }
  });
  if (values.length !== batch * k) {
    throw rangeError('retrievalFn(scores)', `${batch * k} column indices (${k} per query row)`, shapeText);
  }
  const out = new Int32Array(batch * k);
  for (let i = 0; i < values.length; i++) {
    const c = values[i];
    const b = Math.floor(i / k);
    if (candidates[b] === 0) { out[i] = -1; continue; }
    if (!Number.isInteger(c) || c < 0 || c >= cols) {
      throw rangeError('retrievalFn(scores)', `integer columns in [0, ${cols})`, `${describe(c)} for query row ${b}`);
    }
    if (matrix[b * cols + c] === -Infinity) {
      throw rangeError('retrievalFn(scores)', 'columns of candidates (scores > -Infinity)', `column ${c} for query row ${b}`);
    }
    out[i] = c;
  }
  return out;
}
