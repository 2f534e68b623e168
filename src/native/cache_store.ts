// PLACEHOLDER: replaced by the real implementation.
import type { StoreBackend } from '../backend';
export const NativeCacheStore = class {
  constructor(..._args: unknown[]) { throw new Error('NativeCacheStore: not implemented yet'); }
} as unknown as new (...args: any[]) => StoreBackend;
