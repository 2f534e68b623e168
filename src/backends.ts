/** Backend selection: 'auto' -> cuda (built + device) -> native -> js (one warning). */
import type { BackendName, ColumnLayout, KernelBackend, StoreBackend } from './backend';
import { rangeError, typeError } from './errors';
import { addonLoadError, loadAddon } from './native/addon';

export type BackendOption = 'auto' | BackendName;
const NAMES: readonly string[] = ['auto', 'native', 'js', 'cuda'];
let warnedFallback = false;

function cudaUsable(): boolean {
  const a = loadAddon();
  return !!a && a.cuda.built && a.cuda.available();
}

/** The backends usable in this process, best first. */
export function availableBackends(): BackendName[] {
  const out: BackendName[] = [];
  if (cudaUsable()) out.push('cuda');
  if (loadAddon()) out.push('native');
  out.push('js');
  return out;
}

/**
 * Resolves a backend option. `undefined`/'auto' honours the environment
 * variable NEGATIVE_CACHE_BACKEND (auto|native|js|cuda) first.
 */
export function resolveBackend(requested: unknown, argName = 'options.backend'): BackendName {
  let want = requested;
  if (want === undefined || want === 'auto') {
    const env = process.env.NEGATIVE_CACHE_BACKEND;
    if (env !== undefined && env !== '') {
      if (!NAMES.includes(env)) throw rangeError('NEGATIVE_CACHE_BACKEND', `one of ${NAMES.join(', ')}`, JSON.stringify(env));
      want = env;
    } else {
      want = 'auto';
    }
  }
  if (typeof want !== 'string' || !NAMES.includes(want)) {
    throw typeError(argName, `one of 'auto', 'native', 'js', 'cuda'`, requested);
  }
  if (want === 'js') return 'js';
  if (want === 'native') {
    if (!loadAddon()) throw new Error(addonLoadError() ?? 'negative-cache: native addon unavailable');
    return 'native';
  }
  if (want === 'cuda') {
    const a = loadAddon();
    if (!a) throw new Error(addonLoadError() ?? 'negative-cache: native addon unavailable');
    if (!a.cuda.built) throw new Error("negative-cache: backend 'cuda' requested but the addon was built without CUDA (rebuild with nvcc on PATH)");
    if (!a.cuda.available()) throw new Error(`negative-cache: backend 'cuda' requested but no CUDA device is usable: ${a.cuda.error()}`);
    return 'cuda';
  }
  if (cudaUsable()) return 'cuda';
  if (loadAddon()) return 'native';
  if (!warnedFallback) {
    warnedFallback = true;
    process.emitWarning(`${addonLoadError()} Falling back to the pure-JS backend.`, { code: 'NEGATIVE_CACHE_JS_FALLBACK' });
  }
  return 'js';
}

/** A store of the given backend (resolved name). */
export function createStore(kind: BackendName, columns: ColumnLayout[], size: number): StoreBackend {
  if (kind === 'js') {
    const { JsCacheStore } = require('./js/cache_store') as typeof import('./js/cache_store');
    return new JsCacheStore(columns, size);
  }
  if (kind === 'cuda') {
    const { CudaCacheStore } = require('./cuda/cache_store') as typeof import('./cuda/cache_store');
    return new CudaCacheStore(loadAddon()!, columns, size);
  }
  const { NativeCacheStore } = require('./native/cache_store') as typeof import('./native/cache_store');
  return new NativeCacheStore(loadAddon()!, columns, size);
}

const kernelCache = new Map<BackendName, KernelBackend>();

/** The kernels of a backend. */
export function kernelsFor(kind: BackendName): KernelBackend {
  let k = kernelCache.get(kind);
  if (!k) {
    if (kind === 'js') k = (require('./js/kernels') as typeof import('./js/kernels')).jsKernels;
    else if (kind === 'cuda') k = (require('./cuda/kernels') as typeof import('./cuda/kernels')).createCudaKernels(loadAddon()!);
    else k = (require('./native/kernels') as typeof import('./native/kernels')).createNativeKernels(loadAddon()!);
    kernelCache.set(kind, k);
  }
  return k;
}
