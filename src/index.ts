/**
 * negative-cache: a streaming cache of negatives for training retrieval
 * models (dual encoders) in TensorFlow.js. See README.md and DESIGN.md.
 */
export * from './cache_manager';   // CacheManager, NegativeCache, types
export * from './loss';            // CacheClassificationLoss, retrieval fns, approximateTopKWithIndices
export * from './handler';         // CacheLossHandler, MultiCacheLossHandler
export * from './filter';          // IsInCacheFilterFn
export { NegativeCacheError } from './errors';
export { availableBackends } from './backends';
export type { BackendName, StorageDType, FeatureDType } from './backend';
