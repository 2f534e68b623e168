/**
 * handler.save / handler.restore (docs/checkpoint.md): the handler's caches
 * plus the training state around them, in one checkpoint file of kind
 * 'handler': the step count, warm-up length and in-batch weight, the loss's
 * seed and call counter (the noise of the next step), and the dedupe
 * filter's index order (the part of it the cache contents do not fix).
 *
 * Restore reads everything into fresh stores and checks it before it
 * touches the handler: on any error the handler, its caches, the loss and
 * the filter are exactly as they were.
 */
import type { NegativeCache } from './cache';
import type { CacheManager } from './cache_manager';
import { checkPath, mismatch, readCheckpoint, writeCheckpoint, type CheckpointMeta } from './checkpoint';
import { describe, NegativeCacheError } from './errors';
import type { IsInCacheFilterFn } from './filter';
import { CacheClassificationLoss, type CacheLoss } from './loss';
import { GumbelMaxRetrievalFn, MaxScoreRetrievalFn } from './retrieval';

/** @internal What a handler shows its checkpoint code. */
export interface HandlerCheckpointView {
  type: 'CacheLossHandler' | 'MultiCacheLossHandler';
  sources: Array<{ name: string; manager: CacheManager; cache: NegativeCache }>;
  embeddingKey: string;
  dataKeys: string[];
  filter: IsInCacheFilterFn | null;
  loss: CacheLoss;
  state(): TrainingState;
  setState(s: TrainingState): void;
}

/** @internal The handler's own counters. */
export interface TrainingState {
  step: number;
  warmupSteps: number;
  inBatchWeight: number;
  inBatchScale: number;
}

interface SavedHandler extends TrainingState {
  type: string;
  embeddingKey: string;
  dataKeys: string[];
  sources: Array<{ name: string; useLru: boolean }>;
  loss: { seed: number; calls: number; config: Record<string, unknown> } | null;
  dedupe: { keys: string[] } | null;
}

/** The loss options that decide the draws; a restore into a loss configured otherwise is refused. */
function lossConfig(l: CacheClassificationLoss): Record<string, unknown> {
  const r = l.retrievalFn;
  return {
    embeddingKey: l.embeddingKey,
    dataKeys: [...l.dataKeys],
    numNegatives: l.numNegatives,
    topK: l.topK ?? null,
    scoreEmptyRows: l.scoreEmptyRows,
    reducer: typeof l.reducer === 'function' ? 'function' : l.reducer,
    scoreTransform: typeof l.scoreTransform === 'function' ? 'function' : (l.scoreTransform ?? null),
    retrievalFn: r instanceof GumbelMaxRetrievalFn ? `GumbelMaxRetrievalFn(invTemp ${r.invTemp})`
      : r instanceof MaxScoreRetrievalFn ? 'MaxScoreRetrievalFn' : 'function',
  };
}

const dedupeBlob = (source: string) => `dedupe:${source}`;

export function saveHandler(argPath: unknown, h: HandlerCheckpointView): void {
  const file = checkPath('path', argPath);
  const loss = h.loss instanceof CacheClassificationLoss
    ? { seed: h.loss.seed, calls: h.loss.calls, config: lossConfig(h.loss) } : null;
  const blobs: Array<{ name: string; bytes: Uint8Array }> = [];
  if (h.filter) {
    for (const s of h.sources) {
      const order = h.filter._exportIndex(s.cache);
      if (order !== null) blobs.push({ name: dedupeBlob(s.name), bytes: new Uint8Array(order.buffer, order.byteOffset, order.byteLength) });
    }
  }
  const state: SavedHandler = {
    type: h.type,
    ...h.state(),
    embeddingKey: h.embeddingKey,
    dataKeys: [...h.dataKeys],
    sources: h.sources.map((s) => ({ name: s.name, useLru: s.manager.useLru })),
    loss,
    dedupe: h.filter ? { keys: [...h.filter.keys] } : null,
  };
  writeCheckpoint(file, h.sources.map((s) => ({ name: s.name, cache: s.cache })), { kind: 'handler', blobs, handler: state });
}

/** The saved handler state, shape-checked (ERR_CHECKPOINT_CORRUPT when malformed). */
function savedState(file: string, meta: CheckpointMeta): SavedHandler {
  const h = meta.handler as Partial<SavedHandler> | undefined;
  const bad = (what: string): never => {
    throw new NegativeCacheError('ERR_CHECKPOINT_CORRUPT', `negative-cache: cannot load checkpoint '${file}': the handler state is malformed: ${what}`);
  };
  if (h === null || typeof h !== 'object') return bad('missing');
  const count = (v: unknown) => Number.isSafeInteger(v) && (v as number) >= 0;
  if (typeof h.type !== 'string') bad('type');
  if (!count(h.step) || !count(h.warmupSteps)) bad('step / warmupSteps');
  if (typeof h.inBatchWeight !== 'number' || typeof h.inBatchScale !== 'number') bad('inBatchWeight / inBatchScale');
  if (typeof h.embeddingKey !== 'string' || !Array.isArray(h.dataKeys)) bad('embeddingKey / dataKeys');
  if (!Array.isArray(h.sources) || h.sources.some((s) => !s || typeof s.name !== 'string' || typeof s.useLru !== 'boolean')) bad('sources');
  if (h.loss !== null && (typeof h.loss !== 'object' || !count(h.loss!.seed) || !count(h.loss!.calls) ||
      h.loss!.config === null || typeof h.loss!.config !== 'object')) bad('loss');
  if (h.dedupe !== null && (typeof h.dedupe !== 'object' || !Array.isArray(h.dedupe!.keys))) bad('dedupe');
  return h as SavedHandler;
}

const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export function restoreHandler(argPath: unknown, h: HandlerCheckpointView): void {
  const file = checkPath('path', argPath);
  for (const s of h.sources) {
    s.cache._store('the handler\'s cache');
    s.cache._checkWritable('handler.restore');
  }
  const loaded = readCheckpoint(file, 'handler', h.sources.map((s) => s.manager._loadTarget(s.name)));
  const prepared: unknown[] = [];
  try {
    const saved = savedState(file, loaded.meta);
    if (saved.type !== h.type) throw mismatch(file, `it was saved by a ${saved.type}; this is a ${h.type}`);
    if (saved.embeddingKey !== h.embeddingKey) {
      throw mismatch(file, `embeddingKey was '${saved.embeddingKey}'; this handler's is '${h.embeddingKey}'`);
    }
    if (!same(saved.dataKeys, h.dataKeys)) {
      throw mismatch(file, `dataKeys were [${saved.dataKeys.join(', ')}]; this handler's are [${h.dataKeys.join(', ')}]`);
    }
    for (const s of h.sources) {
      const e = saved.sources.find((x) => x.name === s.name);
      if (!e) throw mismatch(file, `no saved state for the source '${s.name}'`);
      if (e.useLru !== s.manager.useLru) {
        throw mismatch(file, `source '${s.name}' was saved with useLru ${e.useLru}; this manager has useLru ${s.manager.useLru}`);
      }
    }
    const isLoss = h.loss instanceof CacheClassificationLoss;
    if ((saved.loss !== null) !== isLoss) {
      throw mismatch(file, saved.loss !== null
        ? 'it holds the state of a CacheClassificationLoss; this handler has a loss of its own kind'
        : 'it was saved with a loss of its own kind; this handler has a CacheClassificationLoss');
    }
    if (saved.loss !== null) {
      const now = lossConfig(h.loss as CacheClassificationLoss);
      for (const k of Object.keys(now)) {
        if (!same(saved.loss.config[k], now[k])) {
          throw mismatch(file, `the loss's ${k} was ${JSON.stringify(saved.loss.config[k])}; this loss has ${JSON.stringify(now[k])}`);
        }
      }
    }
    const keys = h.filter ? [...h.filter.keys] : null;
    if (!same(saved.dedupe ? saved.dedupe.keys : null, keys)) {
      throw mismatch(file, `dedupe was ${saved.dedupe ? `on keys [${saved.dedupe.keys.join(', ')}]` : 'off'}; ` +
        `this handler's is ${keys ? `on keys [${keys.join(', ')}]` : 'off'}`);
    }
    h.sources.forEach((s, i) => {
      const blob = loaded.blobs[dedupeBlob(s.name)];
      if (!h.filter) return;
      let order: Int32Array | null = null;
      if (blob !== undefined) {
        if (blob.byteLength % 4 !== 0) throw new Error('dedupe index of odd length');
        order = new Int32Array(blob.buffer.slice(blob.byteOffset, blob.byteOffset + blob.byteLength));
      }
      try {
        prepared[i] = h.filter._prepareIndex(loaded.stores[i], s.manager.specs, order);
      } catch (e) {
        throw new NegativeCacheError('ERR_CHECKPOINT_CORRUPT',
          `negative-cache: cannot load checkpoint '${file}': the dedupe index of '${s.name}' does not fit its cache: ${(e as Error).message}`);
      }
    });
    if (!Number.isFinite(saved.inBatchWeight) || saved.inBatchWeight < 0) throw mismatch(file, `inBatchWeight ${describe(saved.inBatchWeight)}`);
    const scale = h.state().inBatchScale;
    if (saved.inBatchScale !== scale) throw mismatch(file, `inBatchScale was ${saved.inBatchScale}; this handler's is ${scale}`);
  } catch (e) {
    for (const s of loaded.stores) s.dispose();
    throw e;
  }
  // Everything checked: commit (nothing below can fail on a valid state).
  const saved = loaded.meta.handler as SavedHandler;
  h.sources.forEach((s, i) => {
    s.cache._replaceStore(loaded.stores[i]);
    if (h.filter) h.filter._installIndex(s.cache, prepared[i] ?? null);
  });
  if (saved.loss !== null) (h.loss as CacheClassificationLoss)._restoreNoise(saved.loss.seed, saved.loss.calls);
  h.setState({ step: saved.step, warmupSteps: saved.warmupSteps, inBatchWeight: saved.inBatchWeight, inBatchScale: saved.inBatchScale });
}
