/**
 * CacheClassificationLoss (docs/design.md §3): score every query against the
 * cached embeddings (no gradient, in the kernels), draw negatives by
 * Gumbel-max (or the best score, or a custom function), re-embed only the
 * drawn rows with the current document network and form a loss whose
 * gradient matches the cache-softmax cross-entropy in expectation.
 *
 * The parts live next door: sources.ts (the caches as one index space, the
 * gathering of drawn rows), draw.ts (scoring and sampling through the
 * kernels), retrieval.ts (the retrieval fns, approximateTopKWithIndices).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NegativeCache } from './cache';
import { firstNonFinite, isTensor } from './convert';
import { drawNegatives, transformScores, type Exclusions } from './draw';
import { describe, knownKeys, rangeError, rejectUnknownKeys, typeError } from './errors';
import { GumbelMaxRetrievalFn, isRetrievalFn, type RetrievalFn } from './retrieval';
import { gatherDrawn, refreshBySource, resolveSources, totalRows } from './sources';

/** A number scales the scores; a function must act elementwise on tensors of any shape. */
export type ScoreTransform = number | ((scores: tf.Tensor) => tf.Tensor);
export type Reducer = 'mean' | 'sum' | 'none' | ((t: tf.Tensor) => tf.Tensor);
/** The document network: the drawn rows' data (dataKeys) -> their embeddings. */
export type DocNetwork = (data: Record<string, tf.Tensor>) => tf.Tensor2D;

export interface CacheLossReturn {
  trainingLoss: tf.Tensor;
  interpretableLoss: tf.Tensor;
  staleness: tf.Tensor;
  /** Per source: { [embeddingKey]: re-embedded negatives, B·k rows }. */
  updatedItemData: Record<string, Record<string, tf.Tensor>>;
  /** Per source: drawn row minus the source's start (-1 where nothing was drawn). */
  updatedItemIndices: Record<string, tf.Tensor | Int32Array>;
  /** Per source: 1 where the draw lies in that source. */
  updatedItemMask: Record<string, tf.Tensor | Uint8Array>;
}

/** What the handlers need of a loss. */
export interface CacheLoss {
  compute(docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posDocEmbeddings: tf.Tensor2D,
          caches: NegativeCache | Record<string, NegativeCache>): CacheLossReturn;
}

export interface CacheClassificationLossOptions {
  embeddingKey: string;
  dataKeys: string[];
  scoreTransform?: ScoreTransform;
  topK?: number;
  reducer?: Reducer;
  retrievalFn?: RetrievalFn;
  seed?: number;
  numNegatives?: number;
  scoreEmptyRows?: boolean;
}
const LOSS_OPTION_KEYS = knownKeys<CacheClassificationLossOptions>({
  embeddingKey: true, dataKeys: true, scoreTransform: true, topK: true, reducer: true, retrievalFn: true,
  seed: true, numNegatives: true, scoreEmptyRows: true,
});

/** @internal How the caller named compute()'s arguments, for error messages. */
export interface LossArgNames {
  docNetwork: string;
  posDocEmbeddings: string;
}
const OWN_ARG_NAMES: LossArgNames = { docNetwork: 'docNetwork', posDocEmbeddings: 'posDocEmbeddings' };

/**
 * @internal What a handler adds to compute(): per-query exclusions (CSR over
 * the global rows of the concatenated sources), left out of that query's
 * candidates for the lse and the draws alike.
 */
export interface ComputeExtras {
  exclusions?: Exclusions;
}

/** The extras' exclusions, checked against batch and total rows (null: none). */
function checkExclusions(e: Exclusions | undefined, batch: number, total: number): Exclusions | null {
  if (e === undefined) return null;
  const { rows, offsets } = e;
  if (!(offsets instanceof Int32Array) || offsets.length !== batch + 1 || offsets[0] !== 0) {
    throw typeError('exclusions.offsets', `an Int32Array of ${batch + 1} offsets from 0`, offsets);
  }
  for (let b = 0; b < batch; b++) {
    if (offsets[b + 1] < offsets[b]) throw rangeError('exclusions.offsets', 'non-decreasing', `${offsets[b + 1]} after ${offsets[b]} at ${b + 1}`);
  }
  if (!(rows instanceof Int32Array) || rows.length !== offsets[batch]) {
    throw typeError('exclusions.rows', `an Int32Array of ${offsets[batch]} rows`, rows);
  }
  for (let i = 0; i < rows.length; i++) {
    if (rows[i] < 0 || rows[i] >= total) throw rangeError('exclusions.rows', `rows in [0, ${total})`, `${rows[i]} at ${i}`);
  }
  return rows.length === 0 ? null : e;
}

/** @internal A float32 [batch >= 1, dim >= 1] tensor, else a TypeError/RangeError naming `name`. */
export function checkMatrix(x: unknown, name: string): tf.Tensor2D {
  if (!isTensor<tf.Tensor>(x)) throw typeError(name, 'a float32 tf.Tensor2D [batch, dim]', x);
  if (x.isDisposed) throw typeError(name, 'a live tensor', 'a disposed tensor');
  if (x.rank !== 2) throw rangeError(name, 'a rank-2 tensor [batch, dim]', `shape [${x.shape.join(', ')}]`);
  if (x.dtype !== 'float32') throw typeError(name, 'a float32 tensor', x);
  if (x.shape[0]! < 1) throw rangeError(name, 'a non-empty batch (at least one row)', `shape [${x.shape.join(', ')}]`);
  if (x.shape[1]! < 1) throw rangeError(name, 'at least one column', `shape [${x.shape.join(', ')}]`);
  return x as tf.Tensor2D;
}

/**
 * @internal The argument checks compute() starts with (the sharded loss runs
 * them on each rank): docNetwork, the two [batch, dim] matrices of the same
 * shape, and the caches' sources.
 */
export function checkComputeArgs(names: LossArgNames, docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D,
                                 posDocEmbeddings: tf.Tensor2D, caches: NegativeCache | Record<string, NegativeCache>,
                                 embeddingKey: string, dataKeys: readonly string[]) {
  if (typeof docNetwork !== 'function') throw typeError(names.docNetwork, 'a function (data) => tf.Tensor2D', docNetwork);
  const q = checkMatrix(queryEmbeddings, 'queryEmbeddings');
  const p = checkMatrix(posDocEmbeddings, names.posDocEmbeddings);
  const [batch, dim] = q.shape;
  if (p.shape[0] !== batch || p.shape[1] !== dim) {
    throw rangeError(names.posDocEmbeddings, `shape [${batch}, ${dim}] like queryEmbeddings`, `shape [${p.shape.join(', ')}]`);
  }
  const sources = resolveSources(caches, embeddingKey, dataKeys, dim);
  return { q, p, batch, dim, sources };
}

/** @internal The query values of q ([batch, dim]) as float32, else a RangeError naming the first non-finite one. */
export function finiteQueries(q: tf.Tensor2D, dim: number): Float32Array {
  const queries = Float32Array.from(q.dataSync() as Float32Array);
  const bad = firstNonFinite(queries);
  if (bad >= 0) {
    throw rangeError('queryEmbeddings', 'finite values', `${describe(queries[bad])} at [${Math.floor(bad / dim)}, ${bad % dim}]`);
  }
  return queries;
}

/** logaddexp(a, b) in float64. */
function logAddExp(a: number, b: number): number {
  if (b === -Infinity) return a;
  if (a === -Infinity) return b;
  const m = Math.max(a, b);
  return m + Math.log1p(Math.exp(-Math.abs(a - b)));
}

/** A random seed in [0, 2^53) for a loss constructed without one. */
function drawSeed(): number {
  const { randomInt } = require('crypto') as typeof import('crypto');
  return randomInt(0, 2 ** 21) * 2 ** 32 + randomInt(0, 2 ** 32);
}

/** The cache loss; see the file header. */
export class CacheClassificationLoss implements CacheLoss {
  readonly embeddingKey: string;
  readonly dataKeys: readonly string[];
  readonly scoreTransform: ScoreTransform | undefined;
  readonly topK: number | undefined;
  readonly reducer: Reducer;
  readonly retrievalFn: RetrievalFn;
  /** The seed of the noise (drawn at construction when not given). */
  readonly seed: number;
  readonly numNegatives: number;
  readonly scoreEmptyRows: boolean;
  private callCount = 0;

  constructor(options: CacheClassificationLossOptions) {
    if (options === null || typeof options !== 'object') throw typeError('options', 'an object', options);
    rejectUnknownKeys('options', options, LOSS_OPTION_KEYS);
    const o = options;
    if (typeof o.embeddingKey !== 'string' || o.embeddingKey === '') {
      throw typeError('options.embeddingKey', 'a non-empty string', o.embeddingKey);
    }
    if (!Array.isArray(o.dataKeys) || o.dataKeys.some((k) => typeof k !== 'string')) {
      throw typeError('options.dataKeys', 'an array of strings', o.dataKeys);
    }
    if (o.scoreTransform !== undefined && typeof o.scoreTransform !== 'function') {
      if (typeof o.scoreTransform !== 'number') throw typeError('options.scoreTransform', 'a number (scale) or a function', o.scoreTransform);
      if (!Number.isFinite(o.scoreTransform)) throw rangeError('options.scoreTransform', 'a finite scale', describe(o.scoreTransform));
    }
    if (o.topK !== undefined) {
      if (typeof o.topK !== 'number') throw typeError('options.topK', 'a positive integer', o.topK);
      if (!Number.isInteger(o.topK) || o.topK < 1) throw rangeError('options.topK', 'a positive integer', describe(o.topK));
    }
    const reducer = o.reducer ?? 'mean';
    if (typeof reducer !== 'function' && reducer !== 'mean' && reducer !== 'sum' && reducer !== 'none') {
      throw typeError('options.reducer', "'mean', 'sum', 'none' or a function", reducer);
    }
    const retrievalFn = o.retrievalFn ?? new GumbelMaxRetrievalFn();
    if (!isRetrievalFn(retrievalFn)) {
      throw typeError('options.retrievalFn', 'a GumbelMaxRetrievalFn, a MaxScoreRetrievalFn or a function', retrievalFn);
    }
    let seed: number;
    if (o.seed === undefined) {
      seed = drawSeed();
    } else {
      if (typeof o.seed !== 'number') throw typeError('options.seed', 'a non-negative safe integer', o.seed);
      if (!Number.isSafeInteger(o.seed) || o.seed < 0) throw rangeError('options.seed', 'a non-negative safe integer', describe(o.seed));
      seed = o.seed;
    }
    const numNegatives = o.numNegatives ?? 1;
    if (typeof numNegatives !== 'number') throw typeError('options.numNegatives', 'a positive integer', numNegatives);
    if (!Number.isInteger(numNegatives) || numNegatives < 1 || numNegatives > 65536) {
      throw rangeError('options.numNegatives', 'an integer in [1, 65536]', describe(numNegatives));
    }
    if (o.scoreEmptyRows !== undefined && typeof o.scoreEmptyRows !== 'boolean') {
      throw typeError('options.scoreEmptyRows', 'a boolean', o.scoreEmptyRows);
    }
    this.embeddingKey = o.embeddingKey;
    this.dataKeys = [...o.dataKeys];
    this.scoreTransform = o.scoreTransform;
    this.topK = o.topK;
    this.reducer = reducer;
    this.retrievalFn = retrievalFn;
    this.seed = seed;
    this.numNegatives = numNegatives;
    this.scoreEmptyRows = o.scoreEmptyRows ?? false;
  }

  /** @internal Checkpoints (handler.restore): the noise continues from `seed` and call `calls`. */
  _restoreNoise(seed: number, calls: number): void {
    (this as { seed: number }).seed = seed;
    this.calls = calls;
  }

  /** Number of completed compute() calls: the `call` of the next call's noise. */
  get calls(): number { return this.callCount; }
  /** Sets the call counter (e.g. to resume a checkpointed run with the same noise sequence). */
  set calls(value: number) {
    if (typeof value !== 'number') throw typeError('calls', 'a non-negative safe integer', value);
    if (!Number.isSafeInteger(value) || value < 0) throw rangeError('calls', 'a non-negative safe integer', describe(value));
    this.callCount = value;
  }

  /**
   * The loss over `caches` (docs/design.md §3): scores, draws, re-embeds the
   * drawn rows with docNetwork; returns the losses and each source's refresh.
   */
  compute(docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posDocEmbeddings: tf.Tensor2D,
          caches: NegativeCache | Record<string, NegativeCache>): CacheLossReturn {
    return this._compute(OWN_ARG_NAMES, docNetwork, queryEmbeddings, posDocEmbeddings, caches);
  }

  /** @internal compute(), with errors naming the caller's arguments (a handler's itemNetwork, posItemEmbeddings). */
  _compute(names: LossArgNames, docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posDocEmbeddings: tf.Tensor2D,
           caches: NegativeCache | Record<string, NegativeCache>, extras: ComputeExtras = {}): CacheLossReturn {
    // ---- validate (nothing allocated, nothing changed on failure)
    const { q, p, batch, dim, sources } = checkComputeArgs(names, docNetwork, queryEmbeddings, posDocEmbeddings, caches,
      this.embeddingKey, this.dataKeys);
    const total = totalRows(sources);
    if (this.topK !== undefined && this.topK > total) {
      throw rangeError('options.topK', `an integer in [1, ${total}] (the number of cached rows)`, this.topK);
    }
    const exclusions = checkExclusions(extras.exclusions, batch, total);
    const queries = finiteQueries(q, dim);

    // ---- draw (kernels; no tensors yet except inside a scoreTransform function)
    const call = this.callCount;
    const draws = drawNegatives(this, sources, queries, batch, dim, call, exclusions);
    const k = this.numNegatives;

    // ---- tensors
    const slots = batch * k;
    let numValid = 0;
    for (let i = 0; i < slots; i++) if (draws.rows[i] >= 0) numValid++;

    // Per-source index / mask arrays (plain typed arrays: nothing to dispose).
    const { indices: updatedItemIndices, masks: updatedItemMask } = refreshBySource(sources, draws.rows);

    // Gather the drawn rows' data and stored embeddings (compact: valid draws only).
    const gathered = numValid > 0 ? gatherDrawn(sources, draws.rows, numValid, this.dataKeys, this.embeddingKey) : null;

    const { neg, ...losses } = this._lossFromDraws(names, docNetwork, q, p, draws.rows, draws.lse, gathered,
      sources[0].cache.specs);
    const updatedItemData: Record<string, Record<string, tf.Tensor>> = {};
    for (const s of sources) updatedItemData[s.name] = { [this.embeddingKey]: sources.length === 1 ? neg : tf.clone(neg) };
    if (sources.length > 1) neg.dispose();
    const result = { ...losses, updatedItemData };
    this.callCount = call + 1;
    return { ...result, updatedItemIndices, updatedItemMask };
  }

  /**
   * @internal The tensor part of compute(), from the draws (`rows`: B·k
   * global rows, -1 = none; `lse`: per query) and the drawn rows' data
   * (compact: valid draws in slot order) and stored embeddings (every slot):
   * the three losses and `neg`, the re-embedded negatives [B·k, ...embedding
   * shape] (zeros where nothing was drawn).
   */
  _lossFromDraws(names: LossArgNames, docNetwork: DocNetwork, q: tf.Tensor2D, p: tf.Tensor2D, rows: Int32Array,
                 lse: Float32Array, gathered: { data: Record<string, Float32Array | Int32Array>; embeddings: Float32Array } | null,
                 specs: NegativeCache['specs']):
      { trainingLoss: tf.Tensor; interpretableLoss: tf.Tensor; staleness: tf.Tensor; neg: tf.Tensor } {
    const [batch, dim] = q.shape;
    const k = this.numNegatives;
    const slots = batch * k;
    const embeddingShape = specs[this.embeddingKey].shape;
    const valid = new Uint8Array(slots);
    let numValid = 0;
    for (let i = 0; i < slots; i++) if (rows[i] >= 0) { valid[i] = 1; numValid++; }
    const draws = { lse };
    return tf.tidy(() => {
      const sPos = transformScores(this.scoreTransform, tf.sum(tf.mul(q, p), 1), 's_pos');
      const sPosValues = sPos.dataSync();
      const badPos = firstNonFinite(sPosValues);
      if (badPos >= 0) {
        throw rangeError(names.posDocEmbeddings, 'values giving finite positive scores',
          `score ${describe(sPosValues[badPos])} for row ${badPos}`);
      }
      // p_pos (gradient stopped) and -log p_pos, in float64.
      const pPos = new Float32Array(batch);
      const interp = new Float32Array(batch);
      for (let b = 0; b < batch; b++) {
        const a = sPosValues[b];
        const lae = logAddExp(a, draws.lse[b]);
        pPos[b] = Math.exp(a - lae);
        interp[b] = lae - a;
      }
      if (gathered === null) {
        return {
          trainingLoss: this.reduce(tf.mul(sPos, 0), 'trainingLoss'),
          interpretableLoss: this.reduce(tf.zeros([batch]), 'interpretableLoss'),
          staleness: this.reduce(tf.zeros([batch]), 'staleness'),
          neg: tf.zeros([slots, ...embeddingShape]),
        };
      }

      const data: Record<string, tf.Tensor> = {};
      for (const key of this.dataKeys) {
        const spec = specs[key];
        data[key] = tf.tensor(gathered.data[key], [numValid, ...spec.shape], spec.dtype === 'int32' ? 'int32' : 'float32');
      }
      const negRaw = docNetwork(data);
      if (!isTensor<tf.Tensor>(negRaw)) throw typeError(`${names.docNetwork}(data)`, `a tf.Tensor2D [${numValid}, ${dim}]`, negRaw);
      if (negRaw.rank !== 2 || negRaw.shape[0] !== numValid || negRaw.shape[1] !== dim) {
        throw rangeError(`${names.docNetwork}(data)`, `a tensor of shape [${numValid}, ${dim}] (one embedding per drawn row)`,
          `shape [${negRaw.shape.join(', ')}]`);
      }
      const negF = negRaw.dtype === 'float32' ? negRaw : tf.cast(negRaw, 'float32');
      let neg: tf.Tensor2D;
      if (numValid === slots) {
        neg = negF as tf.Tensor2D;
      } else {
        // Scatter back to B·k slots; missing draws read a zero row (gather keeps the gradient).
        const slotMap = new Int32Array(slots);
        let c = 0;
        for (let i = 0; i < slots; i++) slotMap[i] = valid[i] ? c++ : numValid;
        neg = tf.gather(tf.concat([negF, tf.zeros([1, dim])], 0), tf.tensor1d(slotMap, 'int32')) as tf.Tensor2D;
      }
      const qRep = k === 1 ? q : tf.reshape(tf.tile(q, [1, k]), [slots, dim]);
      const sNegAll = transformScores(this.scoreTransform, tf.sum(tf.mul(qRep, neg), 1), 's_neg');
      const weights = Float32Array.from(valid);
      const counts = new Float32Array(batch);
      for (let b = 0; b < batch; b++) {
        let n = 0;
        for (let d = 0; d < k; d++) n += valid[b * k + d];
        counts[b] = Math.max(n, 1);
      }
      const allValid = numValid === slots;
      const meanOverDraws = (x: tf.Tensor): tf.Tensor => {
        if (k === 1 && allValid) return x;
        if (allValid) return tf.mean(tf.reshape(x, [batch, k]), 1);
        return tf.div(tf.sum(tf.mul(tf.reshape(x, [batch, k]), tf.tensor2d(weights, [batch, k])), 1),
          tf.tensor1d(counts));
      };
      const sNeg = meanOverDraws(sNegAll);
      const training = tf.mul(tf.tensor1d(Float32Array.from(pPos, (v) => 1 - v)), tf.sub(sNeg, sPos));

      const stored = tf.tensor2d(gathered.embeddings, [slots, dim]);
      const den = tf.sum(tf.square(neg), 1);
      const num = tf.sum(tf.square(tf.sub(stored, neg)), 1);
      const positive = tf.greater(den, 0);
      const ratio = tf.where(positive, tf.div(num, tf.where(positive, den, tf.onesLike(den))), tf.zerosLike(den));
      const staleness = meanOverDraws(ratio);

      const negOut = embeddingShape.length === 1 ? neg : tf.reshape(neg, [slots, ...embeddingShape]);
      return {
        trainingLoss: this.reduce(training, 'trainingLoss'),
        interpretableLoss: this.reduce(tf.tensor1d(interp), 'interpretableLoss'),
        staleness: this.reduce(staleness, 'staleness'),
        neg: negOut,
      };
    });
  }

  private reduce(x: tf.Tensor, what: string): tf.Tensor {
    const r = this.reducer;
    if (r === 'mean') return tf.mean(x);
    if (r === 'sum') return tf.sum(x);
    if (r === 'none') return x;
    const y = r(x);
    if (!isTensor<tf.Tensor>(y)) throw typeError('reducer(t)', `a tensor (reducing ${what})`, y);
    return y;
  }
}
