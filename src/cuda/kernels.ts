/**
 * The CUDA kernels: a KernelBackend over addon.cuda (native/cuda). Every
 * source must be a CUDA store. sampleCandidates works on a small host matrix
 * (batch x topK groups) and uses the CPU kernel, so its draws are the CPU's.
 * Everything but the addon entry points is shared with the CPU kernels
 * (createHandleKernels).
 */
import type { KernelBackend } from '../backend';
import { NegativeCacheError } from '../errors';
import type { NativeAddon, NativeCuda } from '../native/addon';
import { callNative } from '../native/cache_store';
import { createHandleKernels } from '../native/kernels';

type BuiltCuda = Required<NativeCuda>;

function builtCuda(addon: NativeAddon): BuiltCuda {
  const c = addon.cuda;
  if (!c.built || !c.scoreAndSample || !c.scoreGroupMax || !c.scoreMatrix) {
    throw new NegativeCacheError('ERR_CUDA', 'negative-cache: the addon was built without CUDA (rebuild with nvcc on PATH)');
  }
  return c as BuiltCuda;
}

/** A KernelBackend over a loaded addon built with CUDA. */
export function createCudaKernels(addon: NativeAddon): KernelBackend {
  return createHandleKernels('cuda', 'a CUDA cache store', builtCuda(addon), addon);
}

/** The CUDA device in use, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 81000 MiB)". */
export function cudaDeviceDescription(addon: NativeAddon): string {
  return callNative(() => builtCuda(addon).device());
}
