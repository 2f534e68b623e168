// PLACEHOLDER: replaced by the real implementation.
import type { StoreBackend } from '../backend';
export const JsCacheStore = class {
  constructor(..._args: unknown[]) { throw new Error('JsCacheStore: not implemented yet'); }
} as unknown as new (...args: any[]) => StoreBackend;
