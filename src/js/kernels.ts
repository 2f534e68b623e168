// PLACEHOLDER: replaced by the pure-JS reference kernels.
import type { KernelBackend } from '../backend';
export const jsKernels: KernelBackend = undefined as unknown as KernelBackend;
