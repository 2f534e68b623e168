/**
 * How negatives are chosen from the candidate scores: Gumbel-max sampling
 * (the default), the best score, or a function of the caller's; and
 * approximateTopKWithIndices, the topK grouping on a given matrix.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { SampleParams } from './backend';
import { isTensor } from './convert';
import { describe, knownKeys, rangeError, rejectUnknownKeys, typeError } from './errors';
import { groupMaxOfMatrix } from './js/groups';

/** A custom retrieval function: sees the B×C candidate scores, returns one candidate column per draw (B·k, row-major). */
export type CustomRetrievalFn = (scores: tf.Tensor2D) => tf.Tensor | ArrayLike<number>;
export type RetrievalFn = GumbelMaxRetrievalFn | MaxScoreRetrievalFn | CustomRetrievalFn;

export interface GumbelMaxRetrievalFnOptions {
  /** Inverse temperature of the sampling softmax (default 1). */
  invTemp?: number;
}
const GUMBEL_OPTION_KEYS = knownKeys<GumbelMaxRetrievalFnOptions>({ invTemp: true });

/** Gumbel-max sampling: draws j with probability softmax(invTemp · S)[j]. */
export class GumbelMaxRetrievalFn {
  readonly invTemp: number;
  constructor(options: GumbelMaxRetrievalFnOptions = {}) {
    if (options === null || typeof options !== 'object') throw typeError('options', 'an object', options);
    rejectUnknownKeys('options', options, GUMBEL_OPTION_KEYS);
    const invTemp = options.invTemp ?? 1;
    if (typeof invTemp !== 'number') throw typeError('options.invTemp', 'a positive finite number', invTemp);
    if (!(Number.isFinite(invTemp) && invTemp > 0)) throw rangeError('options.invTemp', 'a positive finite number', describe(invTemp));
    // The native kernels scale scores by a float32 invTemp (a larger one would overflow to inf).
    if (invTemp > 3.4028234663852886e38) {
      throw rangeError('options.invTemp', 'a positive finite number at most 3.4028234663852886e38 (float32)', describe(invTemp));
    }
    this.invTemp = invTemp;
  }
}

const NO_OPTION_KEYS = knownKeys<Record<never, never>>({});

/** Deterministic retrieval: the best-scoring candidate(s). */
export class MaxScoreRetrievalFn {
  /** Takes no options; an options object with any key is rejected. */
  constructor(options: Record<string, never> = {}) {
    if (options === null || typeof options !== 'object') throw typeError('options', 'omitted (MaxScoreRetrievalFn takes no options)', options);
    rejectUnknownKeys('options', options, NO_OPTION_KEYS);
  }
}

/** True for a value the loss accepts as `retrievalFn`. */
export function isRetrievalFn(r: unknown): r is RetrievalFn {
  return r instanceof GumbelMaxRetrievalFn || r instanceof MaxScoreRetrievalFn || typeof r === 'function';
}

/** The kernels' sampling parameters for a retrieval fn ('none' for a custom function: the kernels only score). */
export function sampleParamsOf(r: RetrievalFn, numDraws: number, seed: number, call: number): SampleParams {
  if (r instanceof MaxScoreRetrievalFn) return { mode: 'max', invTemp: 1, numDraws, seed, call };
  if (r instanceof GumbelMaxRetrievalFn) return { mode: 'gumbel', invTemp: r.invTemp, numDraws, seed, call };
  return { mode: 'none', invTemp: 1, numDraws, seed, call };
}

/**
 * Per row, each group's max and its column, in group order (the topK grouping
 * of docs/design.md §3 on a given matrix). `scores` stays differentiable through a gather.
 */
export function approximateTopKWithIndices(scores: tf.Tensor2D, k: number):
    { scores: tf.Tensor2D; indices: tf.Tensor2D } {
  if (!isTensor<tf.Tensor>(scores)) throw typeError('scores', 'a tf.Tensor2D', scores);
  if (scores.isDisposed) throw typeError('scores', 'a live tensor', 'a disposed tensor');
  if (scores.rank !== 2) throw rangeError('scores', 'a rank-2 tensor', `shape [${scores.shape.join(', ')}]`);
  const [batch, n] = scores.shape as [number, number];
  if (typeof k !== 'number') throw typeError('k', `an integer in [1, ${n}]`, k);
  if (!Number.isInteger(k) || k < 1 || k > n) throw rangeError('k', `an integer in [1, ${n}] (the number of columns)`, describe(k));
  const values = scores.dtype === 'float32' ? scores.dataSync() as Float32Array : Float32Array.from(scores.dataSync() as ArrayLike<number>);
  const { cols } = groupMaxOfMatrix(values, batch, n, k, false);
  const flat = new Int32Array(batch * k);
  for (let b = 0; b < batch; b++) for (let g = 0; g < k; g++) flat[b * k + g] = b * n + cols[b * k + g];
  return tf.tidy(() => ({
    scores: tf.reshape(tf.gather(tf.reshape(scores, [-1]), tf.tensor1d(flat, 'int32')), [batch, k]) as tf.Tensor2D,
    indices: tf.tensor2d(cols, [batch, k], 'int32'),
  }));
}
