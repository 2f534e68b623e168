// PLACEHOLDER: replaced by the real implementation.
import type { KernelBackend } from '../backend';
export function createNativeKernels(_addon: unknown): KernelBackend { throw new Error('not implemented yet'); }
