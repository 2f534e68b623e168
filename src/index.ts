/**
 * negative-cache: a streaming cache of negatives for training retrieval
 * models (dual encoders) in TensorFlow.js. See README.md and docs/design.md.
 *
 * The public surface, named one by one: every other module is internal.
 */
export { CacheManager, NegativeCache } from './cache_manager';
export type {
  BatchLike, CacheManagerOptions, CacheUpdateInput, FeatureSpec, IndexLike, InitialCache, MaskLike, Specs,
} from './cache_manager';
export { CacheClassificationLoss } from './loss';
export type {
  CacheClassificationLossOptions, CacheLoss, CacheLossReturn, DocNetwork, Reducer, ScoreTransform,
} from './loss';
export { GumbelMaxRetrievalFn, MaxScoreRetrievalFn, approximateTopKWithIndices } from './retrieval';
export type { CustomRetrievalFn, GumbelMaxRetrievalFnOptions, RetrievalFn } from './retrieval';
export { CacheLossHandler, MultiCacheLossHandler, inBatchCrossEntropy } from './handler';
export type { CacheLossHandlerOptions, HandlerMetrics, SummaryWriter } from './handler';
export { IsInCacheFilterFn } from './filter';
export { cacheLogSumExp } from './cache_lse';
export type { CacheList, CacheLogSumExpOptions } from './cache_lse';
export { NegativeCacheError } from './errors';
export { availableBackends } from './backends';
export type { BackendName, StorageDType, FeatureDType } from './backend';
export * from './distributed';     // initDistributed, Communicator (MPI, optional)
