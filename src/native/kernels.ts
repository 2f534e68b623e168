/**
 * The native kernels: a KernelBackend over the addon's fused scoring and
 * sampling functions (native/kernels.h). Outputs are allocated here and
 * written in place by the addon; the addon re-checks every length. The CUDA
 * kernels (src/cuda/kernels.ts) are the same over addon.cuda.
 */
import type {
  BackendName, CacheLseResult, GroupMaxResult, KernelBackend, SampleParams, SampleResult, ScoreRequest, StoreBackend,
} from '../backend';
import { typeError } from '../errors';
import type { NativeAddon, NativeSampleParams, NativeScoreRequest, NativeStoreHandle } from './addon';
import { callNative } from './cache_store';

const MODE_CODE: Record<SampleParams['mode'], number> = { gumbel: 0, max: 1, none: 2 };

interface HandleStoreLike extends StoreBackend {
  readonly handle: NativeStoreHandle;
  columnIndex(key: string): number;
}

function isHandleStore(s: StoreBackend, kind: BackendName): s is HandleStoreLike {
  const n = s as Partial<HandleStoreLike>;
  return s.kind === kind && typeof n.columnIndex === 'function' && n.handle !== undefined;
}

/** The request in the addon's form; every source must be a store of `kind` (storeLabel names it in the error). */
function toNativeRequest(req: ScoreRequest, kind: BackendName, storeLabel: string): NativeScoreRequest {
  const out: NativeScoreRequest = {
    queries: req.queries,
    batch: req.batch,
    dim: req.dim,
    segments: req.sources.map((src, i) => {
      if (!isHandleStore(src.store, kind)) {
        throw typeError(`sources[${i}].store`, storeLabel, src.store);
      }
      return { store: src.store.handle, column: src.store.columnIndex(src.key) };
    }),
    scale: req.scale,
    scoreEmptyRows: req.scoreEmptyRows,
    threads: req.threads ?? 0,
  };
  if (req.exclusions !== undefined || req.exclusionOffsets !== undefined) {
    out.exclusions = req.exclusions;
    out.exclusionOffsets = req.exclusionOffsets;
  }
  return out;
}
function toNativeParams(p: SampleParams): NativeSampleParams {
  const mode = MODE_CODE[p.mode];
  if (mode === undefined) throw typeError('params.mode', "'gumbel', 'max' or 'none'", p.mode);
  const out: NativeSampleParams = { mode, invTemp: p.invTemp, numDraws: p.numDraws, seed: p.seed, call: p.call };
  if (p.rowOffset !== undefined) out.rowOffset = p.rowOffset;
  if (p.columnOffset !== undefined) out.columnOffset = p.columnOffset;
  return out;
}

function totalRows(req: ScoreRequest): number {
  let n = 0;
  for (const s of req.sources) n += s.store.size;
  return n;
}

/** A typed-array length, or 0 for a bad count (the addon then throws the argument's error). */
function len(...counts: number[]): number {
  let n = 1;
  for (const c of counts) n *= c;
  return Number.isSafeInteger(n) && n >= 0 && n <= 2 ** 31 ? n : 0;
}

function allocSample(batch: number, k: number): SampleResult {
  return {
    indices: new Int32Array(len(batch, k)),
    scores: new Float32Array(len(batch, k)),
    lse: new Float32Array(len(batch)),
    candidates: new Int32Array(len(batch)),
  };
}

/** The addon functions that score cache rows (addon, or addon.cuda for the CUDA kernels). */
export type ScoringFunctions = Pick<NativeAddon, 'scoreAndSample' | 'scoreGroupMax' | 'scoreMatrix' | 'cacheLse'>;

/**
 * A KernelBackend whose sources are stores of `kind` (HandleCacheStore); the
 * scoring calls go to `scoring`, sampleCandidates (a host matrix) to the CPU
 * addon. storeLabel names the expected store in errors ('a native cache store').
 */
export function createHandleKernels(kind: BackendName, storeLabel: string, scoring: ScoringFunctions,
  addon: NativeAddon): KernelBackend {
  return {
    kind,
    scoreAndSample(req: ScoreRequest, params: SampleParams): SampleResult {
      const nreq = toNativeRequest(req, kind, storeLabel);
      const nparams = toNativeParams(params);
      const out = allocSample(req.batch, params.numDraws);
      callNative(() => scoring.scoreAndSample(nreq, nparams, out));
      return out;
    },
    scoreGroupMax(req: ScoreRequest, groups: number): GroupMaxResult {
      const nreq = toNativeRequest(req, kind, storeLabel);
      const scores = new Float32Array(len(req.batch, groups));
      const rows = new Int32Array(len(req.batch, groups));
      callNative(() => scoring.scoreGroupMax(nreq, groups, scores, rows));
      return { scores, rows };
    },
    sampleCandidates(scores: Float32Array, batch: number, cols: number, params: SampleParams): SampleResult {
      const nparams = toNativeParams(params);
      const out = allocSample(batch, params.numDraws);
      callNative(() => addon.sampleCandidates(scores, batch, cols, nparams, 0, out));
      return out;
    },
    scoreMatrix(req: ScoreRequest): Float32Array {
      const nreq = toNativeRequest(req, kind, storeLabel);
      const out = new Float32Array(len(req.batch, totalRows(req)));
      callNative(() => scoring.scoreMatrix(nreq, out));
      return out;
    },
    cacheLse(req: ScoreRequest, extra: Float32Array | null): CacheLseResult {
      const nreq = toNativeRequest(req, kind, storeLabel);
      const out: CacheLseResult = {
        lse: new Float32Array(len(req.batch)),
        weighted: new Float32Array(len(req.batch, req.dim)),
        candidates: new Int32Array(len(req.batch)),
      };
      callNative(() => scoring.cacheLse(nreq, extra, out.lse, out.weighted, out.candidates));
      return out;
    },
  };
}

/** A KernelBackend over a loaded addon. */
export function createNativeKernels(addon: NativeAddon): KernelBackend {
  return createHandleKernels('native', 'a native cache store', addon, addon);
}
