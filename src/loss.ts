/**
 * CacheClassificationLoss (DESIGN §3): score every query against the cached
 * embeddings (no gradient, in the kernels), draw negatives by Gumbel-max (or
 * the best score, or a custom function), re-embed only the drawn rows with the
 * current document network and form a loss whose gradient matches the
 * cache-softmax cross-entropy in expectation.
 */
import * as tf from '@tensorflow/tfjs-core';
import type {
  BackendName, KernelBackend, SampleParams, ScoreRequest, StoreBackend,
} from './backend';
import { kernelsFor } from './backends';
import { NegativeCache, storeOf } from './cache';
import { describe, knownKeys, rangeError, rejectUnknownKeys, typeError } from './errors';
import { jsKernels } from './js/kernels';

// ------------------------------------------------------------------ public types

export type ScoreTransform = number | ((scores: tf.Tensor) => tf.Tensor);
export type Reducer = 'mean' | 'sum' | 'none' | ((t: tf.Tensor) => tf.Tensor);
export type CustomRetrievalFn = (scores: tf.Tensor2D) => tf.Tensor | ArrayLike<number>;
export type RetrievalFn = GumbelMaxRetrievalFn | MaxScoreRetrievalFn | CustomRetrievalFn;
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

function isPositiveFinite(x: unknown): x is number {
  return typeof x === 'number' && Number.isFinite(x) && x > 0;
}

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
    if (!isPositiveFinite(invTemp)) throw rangeError('options.invTemp', 'a positive finite number', describe(invTemp));
    this.invTemp = invTemp;
  }
}

/** Deterministic retrieval: the best-scoring candidate(s). */
export class MaxScoreRetrievalFn {
  /** Takes no options; an options object with any key is rejected. */
  constructor(options: Record<string, never> = {}) {
    if (options === null || typeof options !== 'object') throw typeError('options', 'omitted (MaxScoreRetrievalFn takes no options)', options);
    rejectUnknownKeys('options', options, NO_KEYS);
  }
}
const NO_KEYS = knownKeys<Record<never, never>>({});

// ------------------------------------------------------------------ helpers

function isTensor(x: unknown): x is tf.Tensor {
  if (x instanceof tf.Tensor) return true;
  const t = x as { shape?: unknown; dtype?: unknown; dataSync?: unknown; isDisposed?: unknown } | null;
  return !!t && typeof t === 'object' && Array.isArray(t.shape) && typeof t.dtype === 'string' &&
    typeof t.dataSync === 'function';
}

function checkMatrix(x: unknown, name: string): tf.Tensor2D {
  if (!isTensor(x)) throw typeError(name, 'a float32 tf.Tensor2D [batch, dim]', x);
  if (x.isDisposed) throw typeError(name, 'a live tensor', 'a disposed tensor');
  if (x.rank !== 2) throw rangeError(name, 'a rank-2 tensor [batch, dim]', `shape [${x.shape.join(', ')}]`);
  if (x.dtype !== 'float32') throw typeError(name, 'a float32 tensor', x);
  if (x.shape[0]! < 1) throw rangeError(name, 'a non-empty batch (at least one row)', `shape [${x.shape.join(', ')}]`);
  if (x.shape[1]! < 1) throw rangeError(name, 'at least one column', `shape [${x.shape.join(', ')}]`);
  return x as tf.Tensor2D;
}

function firstNonFinite(values: ArrayLike<number>, skipMinusInf = false): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0 && !(skipMinusInf && v === -Infinity)) return i;
  }
  return -1;
}

function storeOfCache(cache: unknown, name: string): StoreBackend {
  return storeOf(cache as NegativeCache, name);
}

interface Source {
  name: string;
  cache: NegativeCache;
  store: StoreBackend;
  start: number;
  size: number;
}

/** logaddexp(a, b) in float64. */
function logAddExp(a: number, b: number): number {
  if (b === -Infinity) return a;
  if (a === -Infinity) return b;
  const m = Math.max(a, b);
  return m + Math.log1p(Math.exp(-Math.abs(a - b)));
}

/**
 * topK grouping on a batch x n matrix: per row, the max of each of `groups`
 * consecutive groups (group g = [floor(g·n/K), floor((g+1)·n/K))), first
 * column on ties. With `skipMinusInf`, -inf entries are not candidates (an
 * all -inf group gives column -1); NaN is kept so callers can reject it.
 */
function groupMaxOfMatrix(m: Float32Array, batch: number, n: number, groups: number,
                          skipMinusInf: boolean): { scores: Float32Array; cols: Int32Array } {
  const scores = new Float32Array(batch * groups).fill(-Infinity);
  const cols = new Int32Array(batch * groups).fill(-1);
  for (let b = 0; b < batch; b++) {
    const off = b * n;
    for (let g = 0; g < groups; g++) {
      const lo = Math.floor((g * n) / groups), hi = Math.floor(((g + 1) * n) / groups);
      let best = -Infinity, col = -1;
      for (let j = lo; j < hi; j++) {
        const s = m[off + j];
        if (skipMinusInf && s === -Infinity) continue;
        if (s !== s) { best = NaN; col = j; break; }
        if (col < 0 || s > best) { best = s; col = j; }
      }
      scores[b * groups + g] = best;
      cols[b * groups + g] = col;
    }
  }
  return { scores, cols };
}

/**
 * Per row, each group's max and its column, in group order (the topK grouping
 * of DESIGN §3 on a given matrix). `scores` stays differentiable through a gather.
 */
export function approximateTopKWithIndices(scores: tf.Tensor2D, k: number):
    { scores: tf.Tensor2D; indices: tf.Tensor2D } {
  if (!isTensor(scores)) throw typeError('scores', 'a tf.Tensor2D', scores);
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

function drawSeed(): number {
  // eslint-disable-next-line @typescript-eslint/no-var-requires
  const { randomInt } = require('crypto') as typeof import('crypto');
  return randomInt(0, 2 ** 21) * 2 ** 32 + randomInt(0, 2 ** 32);
}

// ------------------------------------------------------------------ the loss

/** The draws of one compute() call, before any tensor work. */
interface Draws {
  rows: Int32Array;        // batch x k global rows, -1 = no draw
  lse: Float32Array;       // batch
  candidates: number;      // candidates per row (the same for every row)
}

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
    if (!(retrievalFn instanceof GumbelMaxRetrievalFn) && !(retrievalFn instanceof MaxScoreRetrievalFn) &&
        typeof retrievalFn !== 'function') {
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

  /** Number of completed compute() calls: the `call` of the next call's noise. */
  get calls(): number { return this.callCount; }
  /** Sets the call counter (e.g. to resume a checkpointed run with the same noise sequence). */
  set calls(value: number) {
    if (typeof value !== 'number') throw typeError('calls', 'a non-negative safe integer', value);
    if (!Number.isSafeInteger(value) || value < 0) throw rangeError('calls', 'a non-negative safe integer', describe(value));
    this.callCount = value;
  }

  compute(docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posDocEmbeddings: tf.Tensor2D,
          caches: NegativeCache | Record<string, NegativeCache>): CacheLossReturn {
    // ---- validate (nothing allocated, nothing changed on failure)
    if (typeof docNetwork !== 'function') throw typeError('docNetwork', 'a function (data) => tf.Tensor2D', docNetwork);
    const q = checkMatrix(queryEmbeddings, 'queryEmbeddings');
    const p = checkMatrix(posDocEmbeddings, 'posDocEmbeddings');
    const [batch, dim] = q.shape;
    if (p.shape[0] !== batch || p.shape[1] !== dim) {
      throw rangeError('posDocEmbeddings', `shape [${batch}, ${dim}] like queryEmbeddings`, `shape [${p.shape.join(', ')}]`);
    }
    const sources = this.resolveSources(caches, dim);
    const total = sources.reduce((n, s) => n + s.size, 0);
    if (this.topK !== undefined && this.topK > total) {
      throw rangeError('options.topK', `an integer in [1, ${total}] (the number of cached rows)`, this.topK);
    }
    const queries = Float32Array.from(q.dataSync() as Float32Array);
    const bad = firstNonFinite(queries);
    if (bad >= 0) {
      throw rangeError('queryEmbeddings', 'finite values',
        `${describe(queries[bad])} at [${Math.floor(bad / dim)}, ${bad % dim}]`);
    }

    // ---- draw (kernels; no tensors yet except inside a scoreTransform function)
    const call = this.callCount;
    const draws = this.draw(sources, queries, batch, dim, call);
    const k = this.numNegatives;

    // ---- tensors
    const slots = batch * k;
    const embeddingShape = sources[0].cache.specs[this.embeddingKey].shape;
    const valid = new Uint8Array(slots);
    let numValid = 0;
    for (let i = 0; i < slots; i++) if (draws.rows[i] >= 0) { valid[i] = 1; numValid++; }

    // Per-source index / mask arrays (plain typed arrays: nothing to dispose).
    const updatedItemIndices: Record<string, Int32Array> = {};
    const updatedItemMask: Record<string, Uint8Array> = {};
    for (const s of sources) {
      const idx = new Int32Array(slots).fill(-1);
      const mask = new Uint8Array(slots);
      for (let i = 0; i < slots; i++) {
        const j = draws.rows[i];
        if (j < 0) continue;
        idx[i] = j - s.start;
        if (j >= s.start && j < s.start + s.size) mask[i] = 1;
      }
      updatedItemIndices[s.name] = idx;
      updatedItemMask[s.name] = mask;
    }

    // Gather the drawn rows' data and stored embeddings (compact: valid draws only).
    const gathered = numValid > 0 ? this.gather(sources, draws.rows, numValid) : null;

    const result = tf.tidy(() => {
      const sPos = this.transform(tf.sum(tf.mul(q, p), 1), 's_pos');
      const sPosValues = sPos.dataSync();
      const badPos = firstNonFinite(sPosValues);
      if (badPos >= 0) {
        throw rangeError('posDocEmbeddings', 'values giving finite positive scores',
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
      const out: { [name: string]: Record<string, tf.Tensor> } = {};
      if (gathered === null) {
        const zeros = tf.zeros([slots, ...embeddingShape]);
        for (const s of sources) out[s.name] = { [this.embeddingKey]: sources.length === 1 ? zeros : tf.clone(zeros) };
        return {
          trainingLoss: this.reduce(tf.mul(sPos, 0), 'trainingLoss'),
          interpretableLoss: this.reduce(tf.zeros([batch]), 'interpretableLoss'),
          staleness: this.reduce(tf.zeros([batch]), 'staleness'),
          updatedItemData: out,
        };
      }

      const data: Record<string, tf.Tensor> = {};
      for (const key of this.dataKeys) {
        const spec = sources[0].cache.specs[key];
        data[key] = tf.tensor(gathered.data[key], [numValid, ...spec.shape], spec.dtype === 'int32' ? 'int32' : 'float32');
      }
      const negRaw = docNetwork(data);
      if (!isTensor(negRaw)) throw typeError('docNetwork(data)', `a tf.Tensor2D [${numValid}, ${dim}]`, negRaw);
      if (negRaw.rank !== 2 || negRaw.shape[0] !== numValid || negRaw.shape[1] !== dim) {
        throw rangeError('docNetwork(data)', `a tensor of shape [${numValid}, ${dim}] (one embedding per drawn row)`,
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
      const sNegAll = this.transform(tf.sum(tf.mul(qRep, neg), 1), 's_neg');
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
      for (const s of sources) out[s.name] = { [this.embeddingKey]: sources.length === 1 ? negOut : tf.clone(negOut) };
      return {
        trainingLoss: this.reduce(training, 'trainingLoss'),
        interpretableLoss: this.reduce(tf.tensor1d(interp), 'interpretableLoss'),
        staleness: this.reduce(staleness, 'staleness'),
        updatedItemData: out,
      };
    });
    this.callCount = call + 1;
    return { ...result, updatedItemIndices, updatedItemMask };
  }

  // ---------------------------------------------------------------- internals

  private resolveSources(caches: NegativeCache | Record<string, NegativeCache>, dim: number): Source[] {
    const named: Array<[string, unknown, string]> = [];
    if (caches instanceof NegativeCache) {
      named.push(['cache', caches, 'caches']);
    } else {
      if (caches === null || typeof caches !== 'object' || Array.isArray(caches)) {
        throw typeError('caches', 'a NegativeCache or a non-empty record of NegativeCaches', caches);
      }
      const names = Object.keys(caches).sort();
      if (names.length === 0) throw typeError('caches', 'a NegativeCache or a non-empty record of NegativeCaches', 'an empty object');
      for (const n of names) named.push([n, (caches as Record<string, unknown>)[n], `caches[${JSON.stringify(n)}]`]);
    }
    const sources: Source[] = [];
    let start = 0;
    let first: NegativeCache | null = null;
    for (const [name, c, arg] of named) {
      const store = storeOfCache(c, arg);
      const cache = c as NegativeCache;
      const emb = cache.specs[this.embeddingKey];
      const keys = Object.keys(cache.specs).join(', ');
      if (!emb) throw rangeError('options.embeddingKey', `a key of ${arg}'s specs (${keys})`, JSON.stringify(this.embeddingKey));
      if (emb.dtype !== 'float32') {
        throw typeError('options.embeddingKey', `a float32 feature of ${arg}`, `${JSON.stringify(this.embeddingKey)} of dtype ${emb.dtype}`);
      }
      const width = emb.shape.reduce((a, b) => a * b, 1);
      if (width !== dim) {
        throw rangeError('queryEmbeddings', `dimension ${width} to match ${arg}'s ${JSON.stringify(this.embeddingKey)} (shape [${emb.shape.join(', ')}])`,
          `dimension ${dim}`);
      }
      for (const key of this.dataKeys) {
        const spec = cache.specs[key];
        if (!spec) throw rangeError('options.dataKeys', `keys of ${arg}'s specs (${keys})`, JSON.stringify(key));
        if (first) {
          const f = first.specs[key];
          if (f.dtype !== spec.dtype || f.shape.join(',') !== spec.shape.join(',')) {
            throw rangeError(arg, `feature ${JSON.stringify(key)} like the first source (${f.dtype} [${f.shape.join(', ')}])`,
              `${spec.dtype} [${spec.shape.join(', ')}]`);
          }
        }
      }
      if (first && first.specs[this.embeddingKey].shape.join(',') !== emb.shape.join(',')) {
        throw rangeError(arg, `embedding shape [${first.specs[this.embeddingKey].shape.join(', ')}] like the first source`,
          `[${emb.shape.join(', ')}]`);
      }
      first = first ?? cache;
      sources.push({ name, cache, store, start, size: store.size });
      start += store.size;
    }
    return sources;
  }

  private kernels(sources: Source[]): KernelBackend {
    const kind: BackendName = sources[0].store.kind;
    return sources.every((s) => s.store.kind === kind) ? kernelsFor(kind) : jsKernels;
  }

  private transform(x: tf.Tensor, what: string): tf.Tensor {
    const t = this.scoreTransform;
    if (t === undefined) return x;
    if (typeof t === 'number') return t === 1 ? x : tf.mul(x, t);
    const y = t(x);
    if (!isTensor(y)) throw typeError('scoreTransform(scores)', `a tensor of shape [${x.shape.join(', ')}] (applied to ${what})`, y);
    if (y.shape.length !== x.shape.length || y.shape.some((d, i) => d !== x.shape[i])) {
      throw rangeError('scoreTransform(scores)', `a tensor of the input's shape [${x.shape.join(', ')}] (applied to ${what})`,
        `shape [${y.shape.join(', ')}]`);
    }
    return y.dtype === 'float32' ? y : tf.cast(y, 'float32');
  }

  private reduce(x: tf.Tensor, what: string): tf.Tensor {
    const r = this.reducer;
    if (r === 'mean') return tf.mean(x);
    if (r === 'sum') return tf.sum(x);
    if (r === 'none') return x;
    const y = r(x);
    if (!isTensor(y)) throw typeError('reducer(t)', `a tensor (reducing ${what})`, y);
    return y;
  }

  private sampleParams(call: number): SampleParams {
    const r = this.retrievalFn;
    if (r instanceof MaxScoreRetrievalFn) {
      return { mode: 'max', invTemp: 1, numDraws: this.numNegatives, seed: this.seed, call };
    }
    const invTemp = r instanceof GumbelMaxRetrievalFn ? r.invTemp : 1;
    return { mode: typeof r === 'function' ? 'none' : 'gumbel', invTemp, numDraws: this.numNegatives, seed: this.seed, call };
  }

  /** Candidate scores, the draws (global rows) and lse per query. */
  private draw(sources: Source[], queries: Float32Array, batch: number, dim: number, call: number): Draws {
    const kern = this.kernels(sources);
    const total = sources.reduce((n, s) => n + s.size, 0);
    const t = this.scoreTransform;
    const req: ScoreRequest = {
      queries, batch, dim,
      sources: sources.map((s) => ({ store: s.store, key: this.embeddingKey })),
      scale: typeof t === 'number' ? t : 1,
      scoreEmptyRows: this.scoreEmptyRows,
    };
    const params = this.sampleParams(call);
    const custom = typeof this.retrievalFn === 'function' ? this.retrievalFn as CustomRetrievalFn : null;
    const k = this.numNegatives;

    // Fast path: the kernel streams rows, applies the scale and samples.
    if (typeof t !== 'function' && this.topK === undefined && custom === null) {
      const r = kern.scoreAndSample(req, params);
      this.checkLse(r.lse, r.candidates);
      return { rows: r.indices, lse: r.lse, candidates: batch > 0 ? r.candidates[0] : 0 };
    }

    // Candidate matrix: B x C scores (-inf = not a candidate) and, per column,
    // the global row (null = column j is row j).
    let matrix: Float32Array;
    let cols: number;
    let rowOf: Int32Array | null = null;
    if (typeof t !== 'function' && this.topK !== undefined) {
      const gm = kern.scoreGroupMax(req, this.topK);
      matrix = gm.scores;
      cols = this.topK;
      rowOf = gm.rows;
    } else {
      matrix = typeof t === 'function' ? this.transformedMatrix(kern, req, sources, t, total) : kern.scoreMatrix(req);
      if (typeof t !== 'function') this.maskNonCandidates(matrix, sources, batch, total);
      cols = total;
      if (this.topK !== undefined) {
        const gm = groupMaxOfMatrix(matrix, batch, total, this.topK, true);
        matrix = gm.scores;
        cols = this.topK;
        rowOf = gm.cols;
      }
    }
    const badScore = firstNonFinite(matrix, true);
    if (badScore >= 0) throw this.scoreError(matrix[badScore], Math.floor(badScore / cols));

    const r = kern.sampleCandidates(matrix, batch, cols, params);
    this.checkLse(r.lse, r.candidates);
    const candidates = r.candidates[0];
    let picked: Int32Array;
    if (custom === null || candidates === 0) {
      picked = r.indices;
      if (custom !== null) picked = new Int32Array(batch * k).fill(-1);
    } else {
      picked = this.runCustom(custom, matrix, batch, cols);
    }
    const rows = new Int32Array(batch * k);
    for (let i = 0; i < rows.length; i++) {
      const c = picked[i];
      rows[i] = c < 0 ? -1 : rowOf === null ? c : rowOf[(Math.floor(i / k)) * cols + c];
    }
    return { rows, lse: r.lse, candidates };
  }

  private checkLse(lse: Float32Array, candidates: Int32Array): void {
    for (let b = 0; b < lse.length; b++) {
      const v = lse[b];
      if (candidates[b] > 0 && !(Number.isFinite(v))) throw this.scoreError(v, b);
    }
  }

  private scoreError(v: number, row: number): RangeError {
    return rangeError('scores', 'finite (check queryEmbeddings, the cached embeddings and scoreTransform)',
      `${describe(v)} for query row ${row}`);
  }

  private maskNonCandidates(matrix: Float32Array, sources: Source[], batch: number, total: number): void {
    if (this.scoreEmptyRows) return;
    for (const s of sources) {
      const filled = s.store.readFilled();
      for (let j = 0; j < s.size; j++) {
        if (filled[j]) continue;
        for (let b = 0; b < batch; b++) matrix[b * total + s.start + j] = -Infinity;
      }
    }
  }

  /** Slow path: plain dot products, then the function transform with tf ops. */
  private transformedMatrix(kern: KernelBackend, req: ScoreRequest, sources: Source[],
                            t: (s: tf.Tensor) => tf.Tensor, total: number): Float32Array {
    const { batch } = req;
    const raw = kern.scoreMatrix({ ...req, scale: 1, scoreEmptyRows: true });
    let out = raw;
    tf.tidy(() => {
      const x = tf.tensor2d(raw, [batch, total]);
      const y = this.transform(x, 'the cache scores');
      out = Float32Array.from(y.dataSync() as Float32Array);
    });
    this.maskNonCandidates(out, sources, batch, total);
    return out;
  }

  private runCustom(fn: CustomRetrievalFn, matrix: Float32Array, batch: number, cols: number): Int32Array {
    const k = this.numNegatives;
    let values: number[] = [];
    let shapeText = '';
    tf.tidy(() => {
      const res = fn(tf.tensor2d(matrix, [batch, cols]));
      if (isTensor(res)) {
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

  /** Data of the drawn rows for docNetwork (compact, valid draws in slot order) and their stored embeddings (all slots). */
  private gather(sources: Source[], rows: Int32Array, numValid: number):
      { data: Record<string, Float32Array | Int32Array>; embeddings: Float32Array } {
    const slots = rows.length;
    // Compact position of each valid slot, and per source the local rows and positions.
    const perSource = sources.map(() => ({ rows: [] as number[], pos: [] as number[], slots: [] as number[] }));
    let c = 0;
    for (let i = 0; i < slots; i++) {
      const j = rows[i];
      if (j < 0) continue;
      let s = 0;
      while (j >= sources[s].start + sources[s].size) s++;
      perSource[s].rows.push(j - sources[s].start);
      perSource[s].pos.push(c++);
      perSource[s].slots.push(i);
    }
    const keys = new Set([...this.dataKeys]);
    const data: Record<string, Float32Array | Int32Array> = {};
    const cache0 = sources[0].cache;
    for (const key of keys) {
      const spec = cache0.specs[key];
      const width = spec.shape.reduce((a, b) => a * b, 1);
      const arr = spec.dtype === 'int32' ? new Int32Array(numValid * width) : new Float32Array(numValid * width);
      sources.forEach((src, si) => {
        const ps = perSource[si];
        if (ps.rows.length === 0) return;
        const got = src.store.gatherRows(key, Int32Array.from(ps.rows));
        for (let r = 0; r < ps.pos.length; r++) {
          arr.set(got.subarray(r * width, (r + 1) * width), ps.pos[r] * width);
        }
      });
      data[key] = arr;
    }
    const emb = cache0.specs[this.embeddingKey];
    const dim = emb.shape.reduce((a, b) => a * b, 1);
    const embeddings = new Float32Array(slots * dim);
    sources.forEach((src, si) => {
      const ps = perSource[si];
      if (ps.rows.length === 0) return;
      const got = src.store.gatherRows(this.embeddingKey, Int32Array.from(ps.rows)) as Float32Array;
      for (let r = 0; r < ps.slots.length; r++) {
        embeddings.set(got.subarray(r * dim, (r + 1) * dim), ps.slots[r] * dim);
      }
    });
    return { data, embeddings };
  }
}
