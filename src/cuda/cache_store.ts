// PLACEHOLDER: replaced by the real implementation.
import type { StoreBackend } from '../backend';
export const CudaCacheStore = class {
  constructor(..._args: unknown[]) { throw new Error('CudaCacheStore: not implemented yet'); }
} as unknown as new (...args: any[]) => StoreBackend;
