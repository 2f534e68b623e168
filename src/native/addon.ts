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
  /** Per-query exclusions (CSR): both or neither (binding/args.cc). */
  exclusions?: Int32Array; exclusionOffsets?: Int32Array;
}
export interface NativeSampleParams {
  mode: number /* 0 gumbel, 1 max, 2 none */; invTemp: number; numDraws: number; seed: number; call: number;
  rowOffset?: number; columnOffset?: number;
}
export interface NativeSampleOut { indices: Int32Array; scores: Float32Array; lse: Float32Array; candidates: Int32Array }

/** addon.checkpoint (binding/checkpoint_binding.cc). */
export interface NativeCheckpoint {
  save(path: string, meta: string, stores: NativeStoreHandle[], blobs: Uint8Array[], options?: CheckpointWriteOptions): void;
  saveAsync(path: string, meta: string, stores: NativeStoreHandle[], blobs: Uint8Array[], options?: CheckpointWriteOptions): Promise<void>;
  crc32c(bytes: ArrayBufferView, crc?: number): number;
  crc32cSoftware(bytes: ArrayBufferView, crc?: number): number;
  crc32cHardware(): boolean;
  Reader: new (path: string) => NativeCheckpointReader;
}
export interface NativeCheckpointReader {
  meta(): string;
  sections(): number;
  readStore(index: number, store: NativeStoreHandle, columnMap: number[]): void;
  /** readStore on a libuv worker thread; until it settles the reader refuses other calls (ERR_BUSY). */
  readStoreAsync(index: number, store: NativeStoreHandle, columnMap: number[]): Promise<void>;
  readBlob(index: number): Uint8Array;
  finish(): void;
  close(): void;
  /** How the file is read: O_DIRECT for the bulk of it, on a read-ahead thread. */
  ioStats(): { direct: boolean; threaded: boolean };
}
/** @internal Test hooks of the native writer. */
export interface CheckpointWriteOptions {
  chunkBytes?: number;
  failAfterBytes?: number;
}

export interface NativeAddon {
  napiVersion: number;
  CacheStore: new (columns: NativeColumn[], size: number) => NativeStoreHandle;
  scoreAndSample(req: NativeScoreRequest, params: NativeSampleParams, out: NativeSampleOut): void;
  scoreGroupMax(req: NativeScoreRequest, groups: number, outScores: Float32Array, outRows: Int32Array): void;
  sampleCandidates(scores: Float32Array, batch: number, cols: number, params: NativeSampleParams, threads: number, out: NativeSampleOut): void;
  scoreMatrix(req: NativeScoreRequest, out: Float32Array): void;
  cacheLse(req: NativeScoreRequest, extra: Float32Array | null, outLse: Float32Array, outWeighted: Float32Array,
           outCandidates: Int32Array): void;
  cpuFeatures(): CpuFeatures;
  setForceBaseline(force: boolean): void;
  /** Caps the CPU tier ('baseline' | 'avx2' | 'avx512' | 'amx'; null = none). */
  setIsaCap(isa: string | null): void;
  /** GFLOP/s of a usable tier's multiply-add probe on `threads` threads (0 = all); -1 if it cannot run. */
  measurePeak(tier: string, threads: number, seconds: number): number;
  cuda: NativeCuda;
  checkpoint: NativeCheckpoint;
}

/** What the CPU offers and which kernel tier runs (native/cpu/dispatch.h). */
export interface CpuFeatures {
  avx2: boolean; fma: boolean; f16c: boolean;
  avx512f: boolean; avx512bw: boolean; avx512vl: boolean; avx512dq: boolean; avx512bf16: boolean;
  amxTile: boolean; amxBf16: boolean;
  neon: boolean;              // aarch64 Advanced SIMD
  usingAvx2: boolean;
  tier: string;               // the tier the kernels use now
  usableTiers: string[];      // compiled in and supported here, best first
  isaCap: string | null;      // NEGATIVE_CACHE_ISA or setIsaCap
  invalidIsaEnv: string | null;  // NEGATIVE_CACHE_ISA when it named no tier (then ignored)
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
  /** Throws NegativeCacheError ERR_UNSUPPORTED (no CUDA pass yet). */
  cacheLse?(req: NativeScoreRequest, extra: Float32Array | null, outLse: Float32Array, outWeighted: Float32Array,
            outCandidates: Int32Array): void;
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
    const bad = typeof addon.cpuFeatures === 'function' ? addon.cpuFeatures().invalidIsaEnv : null;
    if (bad !== null && bad !== undefined) {
      process.emitWarning(`NEGATIVE_CACHE_ISA must be one of baseline, avx2, avx512, amx; got '${bad}' (ignored: the best tier runs)`,
        { code: 'NEGATIVE_CACHE_ISA' });
    }
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
