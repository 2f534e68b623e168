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
  cpuFeatures(): { avx2: boolean; fma: boolean; f16c: boolean; usingAvx2: boolean };
  setForceBaseline(force: boolean): void;
  cuda: { built: boolean; available(): boolean; deviceCount(): number; error(): string };
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
  return `negative-cache: the native addon could not be loaded (looked in ${path.join(packageRoot, 'build', 'Release')} ` +
    `and ${path.join(packageRoot, 'prebuilds', `${process.platform}-${process.arch}`)}): ${loadError.message.split('\n')[0]}. ` +
    'Fixes: reinstall the package (npm rebuild negative-cache) to build from source with a C++ compiler and CMake, ' +
    "or use backend: 'js' (NEGATIVE_CACHE_BACKEND=js).";
}
