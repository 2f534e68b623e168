/**
 * cacheLogSumExp: the log-sum-exp of every query's scores over the whole
 * cache as a differentiable tfjs op (docs/loss.md "Full-cache log-sum-exp").
 *
 *   lse_b = log sum_j exp(scale · q_b · e_j)      j: the candidates (+ extra row b)
 *   d lse_b / d q_b = scale · sum_j softmax_b(j) e_j
 *
 * The cached embeddings are constants (no gradient flows into the cache), as
 * is `extra`. Forward and gradient come from one fused streaming pass of the
 * kernels (KernelBackend.cacheLse: online softmax with a running weighted sum
 * per query, never a batch x N matrix); the forward keeps the weighted means
 * for the backward, so the backward is one multiply.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ScoreRequest, StoreBackend } from './backend';
import { kernelsFor } from './backends';
import { NegativeCache, storeOf } from './cache';
import { firstNonFinite, isTensor, widthOf } from './convert';
import { describe, knownKeys, rangeError, rejectUnknownKeys, typeError, typeErrorText } from './errors';

export interface CacheLogSumExpOptions {
  /** The cached float32 feature holding the (stale) embeddings. */
  embeddingKey: string;
  /** S = scale · (q · e); default 1. */
  scale?: number;
  /** false (default): never-filled rows are not candidates; true: every row, zeros included. */
  scoreEmptyRows?: boolean;
  /** [batch, dim] float32, no gradient: row b is one more candidate of query b only (e.g. its positive's embedding). */
  extra?: tf.Tensor2D | null;
}
const CACHE_LSE_OPTION_KEYS = knownKeys<CacheLogSumExpOptions>({
  embeddingKey: true, scale: true, scoreEmptyRows: true, extra: true,
});

/** Caches in index order: one, an array (in its order) or a record (sorted by name, as in the loss). */
export type CacheList = NegativeCache | readonly NegativeCache[] | Record<string, NegativeCache>;

const CACHES_EXPECTED = 'a NegativeCache, a non-empty array of NegativeCaches or a non-empty record of NegativeCaches';

function checkQueries(x: unknown): tf.Tensor2D {
  if (!isTensor<tf.Tensor>(x)) throw typeError('queries', 'a float32 tf.Tensor2D [batch, dim]', x);
  if (x.isDisposed) throw typeError('queries', 'a live tensor', 'a disposed tensor');
  if (x.rank !== 2) throw rangeError('queries', 'a rank-2 tensor [batch, dim]', `shape [${x.shape.join(', ')}]`);
  if (x.dtype !== 'float32') throw typeError('queries', 'a float32 tensor', x);
  if (x.shape[0]! < 1) throw rangeError('queries', 'a non-empty batch (at least one row)', `shape [${x.shape.join(', ')}]`);
  if (x.shape[1]! < 1) throw rangeError('queries', 'at least one column', `shape [${x.shape.join(', ')}]`);
  return x as tf.Tensor2D;
}

/** The stores of `caches` in index order, checked against embeddingKey and dim. */
function resolveStores(caches: unknown, embeddingKey: string, dim: number): StoreBackend[] {
  const named: Array<[unknown, string]> = [];
  if (caches instanceof NegativeCache) {
    named.push([caches, 'caches']);
  } else if (Array.isArray(caches)) {
    if (caches.length === 0) throw typeError('caches', CACHES_EXPECTED, caches);
    caches.forEach((c, i) => named.push([c, `caches[${i}]`]));
  } else {
    if (caches === null || typeof caches !== 'object' || isTensor(caches)) throw typeError('caches', CACHES_EXPECTED, caches);
    const names = Object.keys(caches).sort();
    if (names.length === 0) throw typeErrorText('caches', CACHES_EXPECTED, 'an empty object');
    for (const n of names) named.push([(caches as Record<string, unknown>)[n], `caches[${JSON.stringify(n)}]`]);
  }
  const stores: StoreBackend[] = [];
  for (const [c, arg] of named) {
    const store = storeOf(c as NegativeCache, arg);
    const cache = c as NegativeCache;
    const emb = cache.specs[embeddingKey];
    if (!emb) {
      throw rangeError('options.embeddingKey', `a key of ${arg}'s specs (${Object.keys(cache.specs).join(', ')})`, JSON.stringify(embeddingKey));
    }
    if (emb.dtype !== 'float32') {
      throw typeError('options.embeddingKey', `a float32 feature of ${arg}`, `${JSON.stringify(embeddingKey)} of dtype ${emb.dtype}`);
    }
    const width = widthOf(emb.shape);
    if (width !== dim) {
      throw rangeError('queries', `dimension ${width} to match ${arg}'s ${JSON.stringify(embeddingKey)} (shape [${emb.shape.join(', ')}])`,
        `dimension ${dim}`);
    }
    stores.push(store);
  }
  if (stores.some((s) => s.kind !== stores[0].kind)) {
    throw typeErrorText('caches', 'NegativeCaches of one backend (one kernel pass scores them all)',
      named.map(([, arg], i) => `${arg} (${stores[i].kind})`).join(', '));
  }
  return stores;
}

/**
 * Per query, the log-sum-exp of scale · q · e over every candidate row of
 * `caches` (concatenated), plus row b of options.extra for query b when
 * given: a float32 tf.Tensor1D [batch], differentiable with respect to
 * `queries` (the gradient is scale times the softmax-weighted mean of the
 * candidate embeddings; the cache and `extra` get none). A query without any
 * candidate gets -Infinity and a zero gradient.
 *
 * Bad arguments throw TypeError / RangeError naming them; nothing is changed.
 */
export function cacheLogSumExp(queries: tf.Tensor2D, caches: CacheList, options: CacheLogSumExpOptions): tf.Tensor1D {
  // ---- validate (nothing allocated, nothing changed on failure)
  const q = checkQueries(queries);
  if (options === null || typeof options !== 'object' || Array.isArray(options)) throw typeError('options', 'an object', options);
  rejectUnknownKeys('options', options, CACHE_LSE_OPTION_KEYS);
  const o = options;
  if (typeof o.embeddingKey !== 'string' || o.embeddingKey === '') throw typeError('options.embeddingKey', 'a non-empty string', o.embeddingKey);
  const scale = o.scale ?? 1;
  if (typeof scale !== 'number') throw typeError('options.scale', 'a finite number', scale);
  if (!Number.isFinite(scale) || !Number.isFinite(Math.fround(scale))) {
    throw rangeError('options.scale', 'a finite number (as float32)', describe(scale));
  }
  const scoreEmptyRows = o.scoreEmptyRows ?? false;
  if (typeof scoreEmptyRows !== 'boolean') throw typeError('options.scoreEmptyRows', 'a boolean', scoreEmptyRows);
  const [batch, dim] = q.shape;
  let extraTensor: tf.Tensor2D | null = null;
  if (o.extra !== undefined && o.extra !== null) {
    const x = o.extra as unknown;
    if (!isTensor<tf.Tensor>(x)) throw typeError('options.extra', `a float32 tf.Tensor2D [${batch}, ${dim}] or null`, x);
    if (x.isDisposed) throw typeError('options.extra', 'a live tensor', 'a disposed tensor');
    if (x.dtype !== 'float32') throw typeError('options.extra', 'a float32 tensor', x);
    if (x.rank !== 2 || x.shape[0] !== batch || x.shape[1] !== dim) {
      throw rangeError('options.extra', `shape [${batch}, ${dim}] like queries`, `shape [${x.shape.join(', ')}]`);
    }
    extraTensor = x as tf.Tensor2D;
  }
  const stores = resolveStores(caches, o.embeddingKey, dim);
  const values = Float32Array.from(q.dataSync() as Float32Array);
  const bad = firstNonFinite(values);
  if (bad >= 0) throw rangeError('queries', 'finite values', `${describe(values[bad])} at [${Math.floor(bad / dim)}, ${bad % dim}]`);
  let extra: Float32Array | null = null;
  if (extraTensor !== null) {
    extra = Float32Array.from(extraTensor.dataSync() as Float32Array);
    const badX = firstNonFinite(extra);
    if (badX >= 0) throw rangeError('options.extra', 'finite values', `${describe(extra[badX])} at [${Math.floor(badX / dim)}, ${badX % dim}]`);
  }

  // ---- the pass (forward and the backward's weighted means together)
  const req: ScoreRequest = {
    queries: values, batch, dim,
    sources: stores.map((store) => ({ store, key: o.embeddingKey })),
    scale, scoreEmptyRows,
  };
  const r = kernelsFor(stores[0].kind).cacheLse(req, extra);
  for (let b = 0; b < batch; b++) {
    const v = r.lse[b];
    if (Number.isNaN(v) || v === Infinity) {
      throw rangeError('queries', 'values giving finite scores with options.scale (scale · q · e overflowed float32)',
        `lse ${describe(v)} for row ${b}`);
    }
  }

  // ---- the op
  const weighted = r.weighted;
  const op = tf.customGrad(() => ({
    value: tf.tensor1d(r.lse),
    gradFunc: (dy: tf.Tensor) => tf.mul(tf.reshape(tf.mul(dy, scale), [batch, 1]), tf.tensor2d(weighted, [batch, dim])),
  }));
  return op(q) as tf.Tensor1D;
}
