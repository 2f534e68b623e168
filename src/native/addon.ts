/**
 * Loads the compiled addon (build/Release first, then prebuilds/<platform>-<arch>)
 * through node-gyp-build and types its surface. Never re-exported: the public
 * classes wrap it.
 */
import * as path from 'path';

export interface NativeColumn { name: string; storage: number /* 0 f32, 1 f16, 2 bf16, 3 i32 */; width: number }

export interface NativeUpdate {
  useLru: boolean;
  numUpdated: number;
  updatedValues: Array<Float32Array | Int32Array | null>;   // per column, null = not refreshed
  updatedIndices: Int32Array | null;
  updatedMask: Uint8Array | null;
  numNew: number;
  newValues: Array<Float32Array | Int32Array | null>;       // per column (all present when numNew > 0)
  newMask: Uint8Array | null;
  insertedRows?: Int32Array | null;  // out (numNew entries): rows chosen for the unmasked new items, in order
}

export interface NativeStoreHandle {
  initialize(values: Array<Float32Array | Int32Array | null>, ages: Int32Array | null): void;
  update(u: NativeUpdate): void;
  readColumn(column: number, out: Float32Array | Int32Array): void;
  readAge(out: Int32Array): void;
  readFilled(out: Uint8Array): void;
  gatherRows(column: number, rows: Int32Array, out: Float32Array | Int32Array): void;
  stats(): { dataBytes: number; bookkeepingBytesPerRow: number };
  dispose(): void;
}

export interface NativeScoreRequest {
  queries: Float32Array; batch: number; dim: number;
  segments: Array<{ store: NativeStoreHandle; column: number }>;
  scale: number; scoreEmptyRows: boolean; threads: number;
}
export interface NativeSampleParams { mode: number /* 0 gumbel, 1 max, 2 none */; invTemp: number; numDraws: number; seed: number; call: number }
export interface NativeSampleOut { indices: Int32Array; scores: Float32Array; lse: Float32Array; candidates: Int32Array }

export interface NativeAddon {
  napiVersion: number;
  CacheStore: new (columns: NativeColumn[], size: number) => NativeStoreHandle;
  scoreAndSample(req: NativeScoreRequest, params: NativeSampleParams, out: NativeSampleOut): void;
  scoreGroupMax(req: NativeScoreRequest, groups: number, outScores: Float32Array, outRows: Int32Array): void;
  sampleCandidates(scores: Float32Array, batch: number, cols: number, params: NativeSampleParams, threads: number, out: NativeSampleOut): void;
  scoreMatrix(req: NativeScoreRequest, out: Float32Array): void;
  /** CPU features detected and the kernel tier in use ('avx2', 'neon' or 'baseline'). */
  cpuFeatures(): { avx2: boolean; fma: boolean; f16c: boolean; neon: boolean; usingAvx2: boolean; tier: string };
  setForceBaseline(force: boolean): void;
  cuda: NativeCuda;
}

/** addon.cuda: availability always; the rest only when built with CUDA (binding/cuda_binding.cc). */
export interface NativeCuda {
  built: boolean;
  available(): boolean;
  deviceCount(): number;
  error(): string;                       // why unavailable ('' when available)
  device?(): string;
  querySplits?(): number;                // bf16 tensor-core query terms (0-3)
  setQuerySplits?(splits: number): void;
  CacheStore?: new (columns: NativeColumn[], size: number) => NativeStoreHandle;  // rows in device memory
  scoreAndSample?(req: NativeScoreRequest, params: NativeSampleParams, out: NativeSampleOut): void;
  scoreGroupMax?(req: NativeScoreRequest, groups: number, outScores: Float32Array, outRows: Int32Array): void;
  scoreMatrix?(req: NativeScoreRequest, out: Float32Array): void;
}

export const packageRoot = path.resolve(__dirname, '..', '..');

let addon: NativeAddon | null | undefined;
let loadError: Error | null = null;

/** The addon, or null when it cannot be loaded (see addonLoadError()). */
export function loadAddon(): NativeAddon | null {
  if (addon !== undefined) return addon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    const nodeGypBuild = require('node-gyp-build') as (dir: string) => unknown;
    addon = nodeGypBuild(packageRoot) as NativeAddon;
  } catch (e) {
    addon = null;
    loadError = e as Error;
  }
  return addon;
}

/** Why loadAddon() returned null, as one message naming what was tried and the fixes. */
export function addonLoadError(): string | null {
  if (loadError === null) return null;
  return `negative-cache: the native addon could not be loaded: ${loadError.message.split('\n')[0].trim()} ` +
    `(looked in ${path.join(packageRoot, 'build', 'Release')} and ${path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`)}; ` +
    'prebuilt binaries ship for linux-x64 and linux-arm64 with glibc). ' +
    'Fixes: build it from source with a C++17 compiler and CMake >= 3.18: NEGATIVE_CACHE_BUILD_FROM_SOURCE=1 npm rebuild negative-cache ' +
    '(if your npm skips install scripts: npm install-scripts approve negative-cache); ' +
    "or use the pure-JS backend: backend: 'js' or NEGATIVE_CACHE_BACKEND=js. See the README, section Installation.";
}
