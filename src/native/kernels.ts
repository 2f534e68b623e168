/**
 * The native kernels: a KernelBackend over the addon's fused scoring and
 * sampling functions (native/kernels.h). Outputs are allocated here and
 * written in place by the addon; the addon re-checks every length.
 */
import type {
  BackendName, GroupMaxResult, KernelBackend, SampleParams, SampleResult, ScoreRequest, StoreBackend,
} from '../backend';
import { typeError } from '../errors';
import type { NativeAddon, NativeSampleParams, NativeScoreRequest, NativeStoreHandle } from './addon';
import { callNative } from './cache_store';

const MODE_CODE: Record<SampleParams['mode'], number> = { gumbel: 0, max: 1, none: 2 };

interface NativeStoreLike extends StoreBackend {
  readonly handle: NativeStoreHandle;
  columnIndex(key: string): number;
}

function isNativeStore(s: StoreBackend): s is NativeStoreLike {
  const n = s as Partial<NativeStoreLike>;
  return s.kind === 'native' && typeof n.columnIndex === 'function' && n.handle !== undefined;
}

function toNativeRequest(req: ScoreRequest): NativeScoreRequest {
  return {
    queries: req.queries,
    batch: req.batch,
    dim: req.dim,
    segments: req.sources.map((src, i) => {
      if (!isNativeStore(src.store)) {
        throw typeError(`sources[${i}].store`, 'a native cache store', src.store);
      }
      return { store: src.store.handle, column: src.store.columnIndex(src.key) };
    }),
    scale: req.scale,
    scoreEmptyRows: req.scoreEmptyRows,
    threads: req.threads ?? 0,
  };
}

function toNativeParams(p: SampleParams): NativeSampleParams {
  const mode = MODE_CODE[p.mode];
  if (mode === undefined) throw typeError('params.mode', "'gumbel', 'max' or 'none'", p.mode);
  return { mode, invTemp: p.invTemp, numDraws: p.numDraws, seed: p.seed, call: p.call };
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

/** A KernelBackend over a loaded addon. */
export function createNativeKernels(addon: NativeAddon): KernelBackend {
  const kind: BackendName = 'native';
  return {
    kind,
    scoreAndSample(req: ScoreRequest, params: SampleParams): SampleResult {
      const nreq = toNativeRequest(req);
      const nparams = toNativeParams(params);
      const out = allocSample(req.batch, params.numDraws);
      callNative(() => addon.scoreAndSample(nreq, nparams, out));
      return out;
    },
    scoreGroupMax(req: ScoreRequest, groups: number): GroupMaxResult {
      const nreq = toNativeRequest(req);
      const scores = new Float32Array(len(req.batch, groups));
      const rows = new Int32Array(len(req.batch, groups));
      callNative(() => addon.scoreGroupMax(nreq, groups, scores, rows));
      return { scores, rows };
    },
    sampleCandidates(scores: Float32Array, batch: number, cols: number, params: SampleParams): SampleResult {
      const nparams = toNativeParams(params);
      const out = allocSample(batch, params.numDraws);
      callNative(() => addon.sampleCandidates(scores, batch, cols, nparams, 0, out));
      return out;
    },
    scoreMatrix(req: ScoreRequest): Float32Array {
      const nreq = toNativeRequest(req);
      const out = new Float32Array(len(req.batch, totalRows(req)));
      callNative(() => addon.scoreMatrix(nreq, out));
      return out;
    },
  };
}
