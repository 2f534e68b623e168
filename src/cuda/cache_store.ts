/**
 * The CUDA cache store: a StoreBackend over addon.cuda.CacheStore, whose rows
 * live in device memory (ages and insertion order on the host, same semantics
 * as the CPU store). Reads and gathers copy back to the host. Everything but
 * the handle constructor is shared with the CPU store (HandleCacheStore).
 */
import type { ColumnLayout } from '../backend';
import { NegativeCacheError } from '../errors';
import type { NativeAddon } from '../native/addon';
import { HandleCacheStore, type NativeStoreCtor } from '../native/cache_store';

/** addon.cuda.CacheStore, or a NegativeCacheError saying why CUDA cannot be used. */
function cudaStoreCtor(addon: NativeAddon): NativeStoreCtor {
  const cuda = addon.cuda;
  if (!cuda.built || !cuda.CacheStore) {
    throw new NegativeCacheError('ERR_CUDA', 'negative-cache: the addon was built without CUDA (rebuild with nvcc on PATH)');
  }
  if (!cuda.available()) {
    throw new NegativeCacheError('ERR_CUDA', `negative-cache: no usable CUDA device: ${cuda.error()}`);
  }
  return cuda.CacheStore;
}

export class CudaCacheStore extends HandleCacheStore {
  constructor(addon: NativeAddon, columns: readonly ColumnLayout[], size: number) {
    super('cuda', cudaStoreCtor(addon), columns, size);
  }
}
