/**
 * Handlers: one training step's loss on the cache plus the cache update that
 * follows it (docs/design.md §3.3), for one cache (CacheLossHandler) or
 * several named sources (MultiCacheLossHandler).
 *
 * Beyond the reference (all off by default; docs/design.md §5):
 * - `inBatchWeight`: add the in-batch softmax cross-entropy over the batch's
 *   own positives (scaled scores) to the cache term;
 * - `warmupSteps`: for the first W calls train with the in-batch
 *   cross-entropy alone while still filling the cache (hard negatives from a
 *   warm start);
 * - `dedupe` / `filter`: documents already in the cache are not inserted again
 *   (their cached row gets the fresh embedding instead), and of several equal
 *   documents in one batch only the first is inserted;
 * - `removeAccidentalHits`: a cached row equal to a query's own positive (on
 *   the chosen keys) is not a negative of that query: it is left out of that
 *   query's candidates, for the lse and the draws alike (found in O(batch)
 *   through the content index of IsInCacheFilterFn).
 */
import * as tf from '@tensorflow/tfjs-core';
import type { NegativeCache } from './cache';
import type { BatchLike, CacheManager, PackedRows } from './cache_manager';
import { isTensor, toRows } from './convert';
import { describe, knownKeys, rangeError, rejectUnknownKeys, typeError, typeErrorText } from './errors';
import { IsInCacheFilterFn } from './filter';
import type { Exclusions } from './draw';
import { restoreHandler, saveHandler, type HandlerCheckpointView } from './handler_checkpoint';
import { CacheClassificationLoss, type CacheLoss, type CacheLossReturn, type DocNetwork, type LossArgNames } from './loss';

/** The `scalar(name, value, step)` shape of tfjs-node's `tf.node.summaryFileWriter`. */
export interface SummaryWriter {
  scalar(name: string, value: number, step?: number): void;
}

export interface CacheLossHandlerOptions {
  /** The cache feature holding document embeddings. */
  embeddingKey: string;
  /** The cache features the document network reads. */
  dataKeys: string[];
  /** Receives `cache/interpretable_prediction_loss` and `cache/staleness` (and `cache/in_batch_loss` when computed) each step. */
  summaryWriter?: SummaryWriter;
  /**
   * Weight of the in-batch softmax cross-entropy added to the cache loss
   * (0 = off, the reference). Measured on WordNet: see docs/demo.md.
   */
  inBatchWeight?: number;
  /** Scale of the in-batch logits (scale · q·p). Default: the loss's numeric scoreTransform, else 1. */
  inBatchScale?: number;
  /** The first `warmupSteps` calls use the in-batch cross-entropy only (no cache loss) and still insert into the cache. Default 0. */
  warmupSteps?: number;
  /**
   * Store every document once: `true` = an IsInCacheFilterFn on `dataKeys`,
   * or a filter of your own. A new item already in the cache is not inserted;
   * its cached row is refreshed with the new embedding instead. Default off.
   */
  dedupe?: boolean | IsInCacheFilterFn;
  /**
   * Accidental hits: a cached row equal to the query's own positive on these
   * keys (`true` = all `dataKeys`; a list = some of them) is left out of that
   * query's candidates (lse and draws), e.g. the same document inserted by an
   * earlier batch. Needs a CacheClassificationLoss. Default false (the
   * reference: such a row is a negative).
   */
  removeAccidentalHits?: boolean | string[];
}
const HANDLER_OPTION_KEYS = knownKeys<CacheLossHandlerOptions>({
  embeddingKey: true, dataKeys: true, summaryWriter: true, inBatchWeight: true, inBatchScale: true,
  warmupSteps: true, dedupe: true, removeAccidentalHits: true,
});

/** What one call did, for logging (also in `handler.lastMetrics`). */
export interface HandlerMetrics {
  /** 0-based call number. */
  step: number;
  phase: 'warmup' | 'cache';
  /** The returned loss. */
  trainingLoss: number;
  /** -log p_pos (cache phase; NaN during warm-up). */
  interpretableLoss: number;
  /** Relative error of the drawn negatives' cached embeddings (cache phase; NaN during warm-up). */
  staleness: number;
  /** The in-batch cross-entropy (NaN when not computed). */
  inBatchLoss: number;
  /** Rows inserted, and new items skipped as already cached or repeated in the batch. */
  inserted: number;
  duplicates: number;
  /** Cached rows refreshed with a re-embedded negative or a duplicate's embedding. */
  refreshed: number;
  /**
   * removeAccidentalHits: (query, cached row) pairs left out of the
   * candidates as copies of the query's positive (0 when off or in warm-up).
   */
  accidentalHits: number;
}

interface CommonOptions {
  embeddingKey: string;
  dataKeys: string[];
  summaryWriter: SummaryWriter | undefined;
  inBatchWeight: number;
  inBatchScale: number;
  warmupSteps: number;
  filter: IsInCacheFilterFn | null;
  /** removeAccidentalHits: the filter whose content index finds the positives' copies (null = off). */
  hits: IsInCacheFilterFn | null;
}

function nonNegative(name: string, v: unknown, fallback: number, integer = false): number {
  if (v === undefined) return fallback;
  if (typeof v !== 'number') throw typeError(`options.${name}`, integer ? 'a non-negative integer' : 'a non-negative finite number', v);
  if (!Number.isFinite(v) || v < 0 || (integer && !Number.isSafeInteger(v))) {
    throw rangeError(`options.${name}`, integer ? 'a non-negative integer' : 'a non-negative finite number', describe(v));
  }
  return v;
}

function checkOptions(options: unknown, cacheLoss: unknown): CommonOptions {
  if (options === null || typeof options !== 'object') throw typeError('options', 'an object {embeddingKey, dataKeys, ...}', options);
  rejectUnknownKeys('options', options, HANDLER_OPTION_KEYS);
  const o = options as CacheLossHandlerOptions;
  if (typeof o.embeddingKey !== 'string' || o.embeddingKey === '') throw typeError('options.embeddingKey', 'a non-empty string', o.embeddingKey);
  if (!Array.isArray(o.dataKeys) || o.dataKeys.some((k) => typeof k !== 'string')) {
    throw typeError('options.dataKeys', 'an array of strings', o.dataKeys);
  }
  if (o.summaryWriter !== undefined && (o.summaryWriter === null || typeof o.summaryWriter.scalar !== 'function')) {
    throw typeError('options.summaryWriter', 'an object with a scalar(name, value, step) method', o.summaryWriter);
  }
  const lossScale = (cacheLoss as { scoreTransform?: unknown }).scoreTransform;
  const inBatchScale = o.inBatchScale === undefined
    ? (typeof lossScale === 'number' ? lossScale : 1)
    : nonNegative('inBatchScale', o.inBatchScale, 1);
  let filter: IsInCacheFilterFn | null = null;
  if (o.dedupe === true) filter = new IsInCacheFilterFn(o.dataKeys);
  else if (o.dedupe instanceof IsInCacheFilterFn) filter = o.dedupe;
  else if (o.dedupe !== undefined && o.dedupe !== false) throw typeError('options.dedupe', 'a boolean or an IsInCacheFilterFn', o.dedupe);
  const hitKeys = accidentalHitKeys(o.removeAccidentalHits, o.dataKeys);
  let hits: IsInCacheFilterFn | null = null;
  if (hitKeys !== null) {
    if (!(cacheLoss instanceof CacheClassificationLoss)) {
      throw typeError('options.removeAccidentalHits', 'used with a CacheClassificationLoss (its kernels take the exclusions)', cacheLoss);
    }
    // Share the dedupe filter's content index when it compares the same keys.
    hits = filter !== null && filter.keys.length === hitKeys.length && filter.keys.every((k, i) => k === hitKeys[i])
      ? filter : new IsInCacheFilterFn(hitKeys);
  }
  return {
    embeddingKey: o.embeddingKey,
    dataKeys: [...o.dataKeys],
    summaryWriter: o.summaryWriter,
    inBatchWeight: nonNegative('inBatchWeight', o.inBatchWeight, 0),
    inBatchScale,
    warmupSteps: nonNegative('warmupSteps', o.warmupSteps, 0, true),
    filter,
    hits,
  };
}

/** The keys removeAccidentalHits compares (null = off): true = all dataKeys, or a list of distinct dataKeys. */
function accidentalHitKeys(v: unknown, dataKeys: string[]): string[] | null {
  const name = 'options.removeAccidentalHits';
  const known = `dataKeys (${dataKeys.map((k) => JSON.stringify(k)).join(', ') || 'none'})`;
  if (v === undefined || v === false) return null;
  if (v === true) {
    if (dataKeys.length === 0) throw typeError(name, 'false when dataKeys is empty (nothing to compare)', v);
    return [...dataKeys];
  }
  if (!Array.isArray(v)) throw typeError(name, `a boolean or an array of ${known}`, v);
  if (v.length === 0) throw typeError(name, `true, false or a non-empty array of ${known}`, v);
  for (const k of v) {
    if (typeof k !== 'string' || !dataKeys.includes(k)) {
      throw typeErrorText(name, `an array of ${known}`, `an array with ${typeof k === 'string' ? JSON.stringify(k) : describe(k)}`);
    }
  }
  if (new Set(v).size !== v.length) throw typeErrorText(name, `distinct ${known}`, `[${v.join(', ')}]`);
  return [...(v as string[])];
}

function checkLoss(cacheLoss: unknown): CacheLoss {
  if (cacheLoss === null || typeof cacheLoss !== 'object' || typeof (cacheLoss as CacheLoss).compute !== 'function') {
    throw typeError('cacheLoss', 'an object with a compute(docNetwork, queries, positives, caches) method', cacheLoss);
  }
  return cacheLoss as CacheLoss;
}

function checkEmbeddings(q: unknown, p: unknown, pName: string): void {
  for (const [name, t] of [['queryEmbeddings', q], [pName, p]] as const) {
    if (!isTensor(t) || t.shape.length !== 2) throw typeError(name, 'a rank-2 tf.Tensor [batch, dim]', t);
  }
  const qs = (q as tf.Tensor).shape, ps = (p as tf.Tensor).shape;
  if (qs[0] !== ps[0] || qs[1] !== ps[1]) throw rangeError(pName, `shape [${qs.join(', ')}] like queryEmbeddings`, `shape [${ps.join(', ')}]`);
}

/**
 * Mean softmax cross-entropy of each query's own positive against the batch's
 * positives (logits scale · q·pᵀ, positive on the diagonal).
 */
export function inBatchCrossEntropy(queryEmbeddings: tf.Tensor2D, posEmbeddings: tf.Tensor2D, scale: number): tf.Scalar {
  return tf.tidy(() => {
    const logits = tf.mul(tf.matMul(queryEmbeddings, posEmbeddings, false, true), scale);
    const diagonal = tf.mul(tf.sum(tf.mul(queryEmbeddings, posEmbeddings), 1), scale);
    return tf.mean(tf.sub(tf.logSumExp(logits, 1), diagonal)) as tf.Scalar;
  });
}

function scalarValue(t: tf.Tensor): number {
  const v = t.dataSync();
  if (v.length === 1) return v[0];
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i];
  return s / Math.max(v.length, 1);
}

/** One source's cache update: refresh drawn negatives (and duplicates), insert new positives. */
interface SourceUpdate {
  manager: CacheManager;
  cache: NegativeCache;
  /** The loss's refresh for this source (absent during warm-up). */
  refreshData?: tf.Tensor;
  refreshIndices?: tf.Tensor | Int32Array;
  refreshMask?: tf.Tensor | Uint8Array;
  /** Several sources: the mask routes rows. One source: the mask is used only where a draw found nothing (index out of range). */
  severalSources: boolean;
  /** The positives to insert, every spec key, checked and converted before the loss ran (absent: no insert this step). */
  newItems?: PackedRows;
}

/** The handlers' names for the loss's arguments, so that a loss error names what the caller passed. */
const HANDLER_ARG_NAMES: LossArgNames = { docNetwork: 'itemNetwork', posDocEmbeddings: 'posItemEmbeddings' };

/** Shared step logic of both handlers. */
abstract class HandlerBase {
  /** The last call's figures. */
  lastMetrics: HandlerMetrics | null = null;
  /** Calls so far (the next call's step). */
  step = 0;
  protected readonly opts: CommonOptions;
  protected readonly cacheLoss: CacheLoss;

  constructor(cacheLoss: unknown, options: unknown) {
    this.cacheLoss = checkLoss(cacheLoss);
    this.opts = checkOptions(options, cacheLoss);
  }

  /** The in-batch term's weight (settable between steps, e.g. for a schedule). */
  get inBatchWeight(): number { return this.opts.inBatchWeight; }
  set inBatchWeight(v: number) { this.opts.inBatchWeight = nonNegative('inBatchWeight', v, 0); }
  /** Calls that train in-batch only (settable between steps). */
  get warmupSteps(): number { return this.opts.warmupSteps; }
  set warmupSteps(v: number) { this.opts.warmupSteps = nonNegative('warmupSteps', v, 0, true); }

  /**
   * Writes one checkpoint file (docs/checkpoint.md) with the cache(s) and the
   * training state: step count, warm-up length, in-batch weight, the loss's
   * seed and call counter, and the dedupe index. Atomic like NegativeCache.save.
   */
  save(path: string): void { saveHandler(path, this._checkpointView()); }

  /**
   * Continues from a checkpoint of handler.save: the caches take the saved
   * rows, the counters and the loss's noise state their saved values, so the
   * next step is the one that would have followed the save. The handler must
   * be configured like the saved one (same specs, sizes, storage, keys, loss
   * options, dedupe): otherwise NegativeCacheError 'ERR_CHECKPOINT_MISMATCH'.
   * On any error nothing changes. Needs memory for a second copy of the
   * caches while it reads.
   */
  restore(path: string): void { restoreHandler(path, this._checkpointView()); }

  /** @internal The sources as the checkpoint code sees them. */
  protected abstract checkpointSources(): HandlerCheckpointView['sources'];

  /** @internal */
  _checkpointView(): HandlerCheckpointView {
    return {
      type: this instanceof MultiCacheLossHandler ? 'MultiCacheLossHandler' : 'CacheLossHandler',
      sources: this.checkpointSources(),
      embeddingKey: this.opts.embeddingKey,
      dataKeys: this.opts.dataKeys,
      filter: this.opts.filter,
      loss: this.cacheLoss,
      state: () => ({ step: this.step, warmupSteps: this.opts.warmupSteps, inBatchWeight: this.opts.inBatchWeight,
        inBatchScale: this.opts.inBatchScale }),
      setState: (st) => {
        this.step = st.step;
        this.opts.warmupSteps = st.warmupSteps;
        this.opts.inBatchWeight = st.inBatchWeight;
      },
    };
  }

  /**
   * One step. `accidentalHits` (with removeAccidentalHits) finds, on the
   * cache as it is, the rows equal to each query's positive.
   */
  protected run(itemNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posItemEmbeddings: tf.Tensor2D,
                caches: NegativeCache | Record<string, NegativeCache>,
                updates: (ret: CacheLossReturn | null) => SourceUpdate[],
                accidentalHits: (hits: IsInCacheFilterFn) => Exclusions): tf.Scalar {
    if (typeof itemNetwork !== 'function') throw typeError('itemNetwork', 'a function (data) => tf.Tensor2D', itemNetwork);
    const step = this.step;
    const o = this.opts;
    const warm = step < o.warmupSteps;
    let ret: CacheLossReturn | null = null;
    let inBatch: tf.Scalar | null = null;
    let loss: tf.Scalar;
    let hitCount = 0;
    if (warm) {
      inBatch = inBatchCrossEntropy(queryEmbeddings, posItemEmbeddings, o.inBatchScale);
      loss = inBatch;
    } else {
      const exclusions = o.hits !== null ? accidentalHits(o.hits) : null;
      if (exclusions !== null) hitCount = exclusions.rows.length;
      ret = this.cacheLoss instanceof CacheClassificationLoss
        ? this.cacheLoss._compute(HANDLER_ARG_NAMES, itemNetwork, queryEmbeddings, posItemEmbeddings, caches,
          exclusions !== null ? { exclusions } : {})
        : this.cacheLoss.compute(itemNetwork, queryEmbeddings, posItemEmbeddings, caches);
      const cacheTerm = ret.trainingLoss.rank === 0 ? ret.trainingLoss as tf.Scalar : tf.mean(ret.trainingLoss) as tf.Scalar;
      if (o.inBatchWeight > 0) {
        inBatch = inBatchCrossEntropy(queryEmbeddings, posItemEmbeddings, o.inBatchScale);
        loss = tf.add(cacheTerm, tf.mul(inBatch, o.inBatchWeight));
      } else {
        loss = cacheTerm;
      }
    }

    // Cache updates: reads values (dataSync) of tensors the tape may still need; disposes none of them.
    let inserted = 0, duplicates = 0, refreshed = 0;
    for (const u of updates(ret)) {
      const counts = this.applyUpdate(u);
      inserted += counts.inserted;
      duplicates += counts.duplicates;
      refreshed += counts.refreshed;
    }

    const metrics: HandlerMetrics = {
      step,
      phase: warm ? 'warmup' : 'cache',
      trainingLoss: scalarValue(loss),
      interpretableLoss: ret ? scalarValue(ret.interpretableLoss) : NaN,
      staleness: ret ? scalarValue(ret.staleness) : NaN,
      inBatchLoss: inBatch ? scalarValue(inBatch) : NaN,
      inserted, duplicates, refreshed,
      accidentalHits: hitCount,
    };
    if (ret) {
      // Not on the path to the loss: safe to free now.
      if (ret.interpretableLoss !== ret.trainingLoss) ret.interpretableLoss.dispose();
      if (ret.staleness !== ret.trainingLoss) ret.staleness.dispose();
    }
    const w = o.summaryWriter;
    if (w) {
      if (ret) {
        w.scalar('cache/interpretable_prediction_loss', metrics.interpretableLoss, step);
        w.scalar('cache/staleness', metrics.staleness, step);
      }
      if (inBatch) w.scalar('cache/in_batch_loss', metrics.inBatchLoss, step);
    }
    this.lastMetrics = metrics;
    this.step = step + 1;
    return loss;
  }

  private applyUpdate(u: SourceUpdate): { inserted: number; duplicates: number; refreshed: number } {
    const o = this.opts;
    // Refresh list: the loss's re-embedded negatives, then cached duplicates of new items.
    let refreshData: Float32Array | tf.Tensor | null = null;
    let refreshIndices: Int32Array | null = null;
    let refreshMask: Uint8Array | null = null;
    if (u.refreshData && u.refreshIndices) {
      const idx = isTensor(u.refreshIndices) ? Int32Array.from(u.refreshIndices.dataSync()) : u.refreshIndices;
      const mask = u.refreshMask === undefined ? null
        : Uint8Array.from(isTensor(u.refreshMask) ? u.refreshMask.dataSync() : u.refreshMask);
      const size = u.cache.size;
      const useMask = mask !== null && (u.severalSources || idx.some((j) => j < 0 || j >= size));
      if (!useMask || mask!.some((v) => v !== 0)) {
        refreshData = u.refreshData;
        refreshIndices = idx;
        refreshMask = useMask ? mask : null;
      }
    }
    let inserted = 0, duplicates = 0;
    let insertMask: Uint8Array | null = null;
    const newItems = u.newItems ?? null;
    if (newItems !== null) {
      const rows = newItems.rows;
      inserted = rows;
      if (o.filter) {
        const { insertMask: keep, cachedRows } = o.filter._classifyRows(u.cache, newItems.values, rows);
        insertMask = keep;
        inserted = keep.reduce((a, v) => a + v, 0);
        duplicates = rows - inserted;
        const picks: number[] = [];
        for (let i = 0; i < rows; i++) if (cachedRows[i] >= 0) picks.push(i);
        if (picks.length > 0) {
          // A document already cached: refresh its row with the fresh embedding instead of inserting it again.
          const emb = newItems.values[o.embeddingKey] as Float32Array;
          const dim = emb.length / rows;
          const n = refreshIndices ? refreshIndices.length : 0;
          const data = new Float32Array((n + picks.length) * dim);
          const idx = new Int32Array(n + picks.length);
          if (refreshData !== null && refreshIndices !== null) {
            data.set(isTensor(refreshData) ? refreshData.dataSync() as Float32Array : refreshData, 0);
            idx.set(refreshIndices, 0);
          }
          picks.forEach((i, m) => { data.set(emb.subarray(i * dim, (i + 1) * dim), (n + m) * dim); idx[n + m] = cachedRows[i]; });
          if (refreshMask !== null) {
            const mask = new Uint8Array(n + picks.length).fill(1);
            mask.set(refreshMask, 0);
            refreshMask = mask;
          }
          refreshData = data;
          refreshIndices = idx;
        }
      }
    }
    let refreshed = 0;
    const refresh: Parameters<CacheManager['_updateWithRows']>[3] = {};
    if (refreshData !== null && refreshIndices !== null) {
      refresh.updatedItemData = { [o.embeddingKey]: refreshData };
      refresh.updatedItemIndices = refreshIndices;
      if (refreshMask !== null) refresh.updatedItemMask = refreshMask;
      refreshed = refreshMask === null ? refreshIndices.length : refreshMask.reduce((a, v) => a + v, 0);
    }
    if (newItems !== null || refresh.updatedItemData !== undefined) u.manager._updateWithRows(u.cache, newItems, insertMask, refresh);
    return { inserted, duplicates, refreshed };
  }
}

/** Loss on one cache plus its update (docs/design.md §3.3). */
export class CacheLossHandler extends HandlerBase {
  readonly cacheManager: CacheManager;
  readonly cache: NegativeCache;

  constructor(cacheManager: CacheManager, cacheLoss: CacheLoss, options: CacheLossHandlerOptions) {
    super(cacheLoss, options);
    if (cacheManager === null || typeof cacheManager !== 'object' || typeof (cacheManager as CacheManager).initCache !== 'function') {
      throw typeError('cacheManager', 'a CacheManager', cacheManager);
    }
    checkSpecs(cacheManager, this.opts, 'cacheManager');
    this.cacheManager = cacheManager;
    this.cache = cacheManager.initCache();
  }

  /**
   * The loss on the cache as it is (plus the in-batch term when configured),
   * then the cache update: refresh the re-embedded negatives, insert the
   * batch's positives {embeddingKey: posItemEmbeddings, ...features}.
   * Works inside optimizer.minimize / tf.variableGrads; returns a scalar.
   */
  updateCacheAndComputeLoss(itemNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posItemEmbeddings: tf.Tensor2D,
                            features: Record<string, BatchLike>): tf.Scalar {
    checkEmbeddings(queryEmbeddings, posItemEmbeddings, 'posItemEmbeddings');
    const newItems = packNewItems(this.cacheManager, this.opts, features, 'features', posItemEmbeddings, 'posItemEmbeddings');
    return this.run(itemNetwork, queryEmbeddings, posItemEmbeddings, this.cache, (ret) => {
      const u: SourceUpdate = { manager: this.cacheManager, cache: this.cache, severalSources: false, newItems };
      if (ret) {
        const name = Object.keys(ret.updatedItemIndices)[0];
        u.refreshData = ret.updatedItemData[name][this.opts.embeddingKey];
        u.refreshIndices = ret.updatedItemIndices[name];
        u.refreshMask = ret.updatedItemMask[name];
      }
      return [u];
    }, (hits) => hits._matchingRows(this.cache, newItems.values, newItems.rows));
  }

  /** Frees the cache. */
  dispose(): void { this.cache.dispose(); }

  protected checkpointSources(): HandlerCheckpointView['sources'] {
    return [{ name: 'cache', manager: this.cacheManager, cache: this.cache }];
  }
}

/** Several named sources, one cache each (e.g. one per corpus); masks route refreshed rows to their source. */
export class MultiCacheLossHandler extends HandlerBase {
  readonly cacheManagers: Readonly<Record<string, CacheManager>>;
  readonly caches: Readonly<Record<string, NegativeCache>>;

  constructor(cacheManagers: Record<string, CacheManager>, cacheLoss: CacheLoss, options: CacheLossHandlerOptions) {
    super(cacheLoss, options);
    if (cacheManagers === null || typeof cacheManagers !== 'object' || Object.keys(cacheManagers).length === 0) {
      throw typeError('cacheManagers', 'a non-empty record of CacheManagers', cacheManagers);
    }
    const names = Object.keys(cacheManagers).sort();
    for (const n of names) {
      const m = cacheManagers[n];
      if (m === null || typeof m !== 'object' || typeof m.initCache !== 'function') throw typeError(`cacheManagers['${n}']`, 'a CacheManager', m);
      checkSpecs(m, this.opts, `cacheManagers['${n}']`);
    }
    const caches: Record<string, NegativeCache> = {};
    for (const n of names) caches[n] = cacheManagers[n].initCache();
    this.cacheManagers = Object.freeze({ ...cacheManagers });
    this.caches = Object.freeze(caches);
  }

  /**
   * The loss over all sources (the positives are posItemEmbeddings), then per
   * source: refresh its re-embedded negatives (by mask) and insert its new
   * items {embeddingKey: newItemEmbeddings[source], ...newItemFeatures[source]}.
   * A source missing from newItemEmbeddings gets no inserts this step.
   */
  updateCacheAndComputeLoss(itemNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posItemEmbeddings: tf.Tensor2D,
                            newItemEmbeddings: Record<string, tf.Tensor2D>,
                            newItemFeatures: Record<string, Record<string, BatchLike>>): tf.Scalar {
    checkEmbeddings(queryEmbeddings, posItemEmbeddings, 'posItemEmbeddings');
    if (newItemEmbeddings === null || typeof newItemEmbeddings !== 'object') {
      throw typeError('newItemEmbeddings', 'a record of tf.Tensor2D per source', newItemEmbeddings);
    }
    if (newItemFeatures === null || typeof newItemFeatures !== 'object') {
      throw typeError('newItemFeatures', 'a record of features per source', newItemFeatures);
    }
    const names = Object.keys(this.caches);
    const newItems: Record<string, PackedRows> = {};
    for (const n of Object.keys(newItemEmbeddings)) {
      if (!names.includes(n)) throw rangeError('newItemEmbeddings', `keys among the sources (${names.join(', ')})`, JSON.stringify(n));
      const e = newItemEmbeddings[n];
      if (!isTensor(e) || e.shape.length !== 2 || e.shape[1] !== queryEmbeddings.shape[1]) {
        throw typeError(`newItemEmbeddings['${n}']`, `a tf.Tensor2D [rows, ${queryEmbeddings.shape[1]}]`, e);
      }
      newItems[n] = packNewItems(this.cacheManagers[n], this.opts, newItemFeatures[n], `newItemFeatures['${n}']`, e, `newItemEmbeddings['${n}']`);
    }
    for (const n of Object.keys(newItemFeatures)) {
      if (!names.includes(n)) throw rangeError('newItemFeatures', `keys among the sources (${names.join(', ')})`, JSON.stringify(n));
    }
    const batch = queryEmbeddings.shape[0];
    if (this.opts.hits !== null) {
      const given = names.reduce((a, n) => a + (newItems[n]?.rows ?? 0), 0);
      if (given !== batch) {
        throw rangeError('newItemFeatures', `with removeAccidentalHits, the sources' new items in source order (${names.join(', ')}) `
          + `being the batch's positives row by row (${batch} rows in all)`, `${given} rows`);
      }
    }
    return this.run(itemNetwork, queryEmbeddings, posItemEmbeddings, this.caches as Record<string, NegativeCache>, (ret) => {
      const out: SourceUpdate[] = [];
      for (const n of names) {
        if (newItems[n] === undefined && !ret) continue;
        const u: SourceUpdate = {
          manager: this.cacheManagers[n], cache: this.caches[n], severalSources: names.length > 1, newItems: newItems[n],
        };
        if (ret) {
          u.refreshData = ret.updatedItemData[n][this.opts.embeddingKey];
          u.refreshIndices = ret.updatedItemIndices[n];
          u.refreshMask = ret.updatedItemMask[n];
        }
        out.push(u);
      }
      return out;
    }, (hits) => this.accidentalHits(hits, names, newItems, batch));
  }

  /**
   * Per query (the positives = the sources' new items in source order), the
   * rows of every source's cache equal to its positive, as global rows of
   * the concatenated index space (sources by name).
   */
  private accidentalHits(hits: IsInCacheFilterFn, names: string[], newItems: Record<string, PackedRows>,
                         batch: number): Exclusions {
    const perQuery: number[][] = Array.from({ length: batch }, () => []);
    let start = 0;
    for (const s of names) {
      const cache = this.caches[s];
      let b0 = 0;
      for (const g of names) {
        const items = newItems[g];
        if (items === undefined) continue;
        const m = hits._matchingRows(cache, items.values, items.rows);
        for (let i = 0; i < items.rows; i++) {
          for (let t = m.offsets[i]; t < m.offsets[i + 1]; t++) perQuery[b0 + i].push(start + m.rows[t]);
        }
        b0 += items.rows;
      }
      start += cache.size;
    }
    const offsets = new Int32Array(batch + 1);
    for (let b = 0; b < batch; b++) offsets[b + 1] = offsets[b] + perQuery[b].length;
    const rows = new Int32Array(offsets[batch]);
    for (let b = 0; b < batch; b++) rows.set(perQuery[b], offsets[b]);
    return { rows, offsets };
  }

  /** Frees every cache. */
  dispose(): void { for (const c of Object.values(this.caches)) c.dispose(); }

  protected checkpointSources(): HandlerCheckpointView['sources'] {
    return Object.keys(this.caches).map((n) => ({ name: n, manager: this.cacheManagers[n], cache: this.caches[n] }));
  }
}

function checkSpecs(manager: CacheManager, o: CommonOptions, argName: string): void {
  const specs = manager.specs;
  const e = specs[o.embeddingKey];
  if (!e || e.dtype !== 'float32') {
    throw rangeError('options.embeddingKey', `a float32 feature of ${argName}'s specs (${Object.keys(specs).join(', ')})`, JSON.stringify(o.embeddingKey));
  }
  for (const k of o.dataKeys) {
    if (!specs[k]) throw rangeError('options.dataKeys', `features of ${argName}'s specs (${Object.keys(specs).join(', ')})`, JSON.stringify(k));
  }
}

/**
 * The batch's new items, checked and converted once (before the loss runs,
 * so that a call rejected here changes nothing): `features` must hold
 * exactly the spec keys other than embeddingKey, each with one row per
 * positive document; the embeddings fill embeddingKey.
 */
function packNewItems(manager: CacheManager, o: CommonOptions, features: unknown, argName: string,
                      embeddings: tf.Tensor2D, embeddingsName: string): PackedRows {
  const want = Object.keys(manager.specs).filter((k) => k !== o.embeddingKey).sort();
  if (features === null || typeof features !== 'object' || Array.isArray(features) || isTensor(features)) {
    throw typeError(argName, `an object with the document features (${want.join(', ')})`, features);
  }
  if (o.embeddingKey in (features as object)) {
    throw typeError(argName, `the features without '${o.embeddingKey}' (the embedding comes from posItemEmbeddings)`, `an object with key '${o.embeddingKey}'`);
  }
  const got = Object.keys(features as object).sort();
  if (got.length !== want.length || got.some((k, i) => k !== want[i])) {
    throw rangeError(argName, `an object with exactly the keys ${want.join(', ')}`, `keys ${got.join(', ') || '(none)'}`);
  }
  const rows = embeddings.shape[0];
  const f = features as Record<string, unknown>;
  const values: Record<string, Float32Array | Int32Array> = {};
  for (const k of want) values[k] = toRows(`${argName}.${k}`, f[k], manager.specs[k], rows).data;
  values[o.embeddingKey] = toRows(embeddingsName, embeddings, manager.specs[o.embeddingKey], rows).data;
  return { values, rows };
}
