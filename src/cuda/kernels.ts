/**
 * The CUDA kernels: a KernelBackend over addon.cuda (native/cuda). Every
 * source must be a CUDA store. sampleCandidates works on a small host matrix
 * (batch x topK groups) and uses the CPU kernel, so its draws are the CPU's.
 */
import type {
  BackendName, GroupMaxResult, KernelBackend, SampleParams, SampleResult, ScoreRequest, StoreBackend,
} from '../backend';
import { NegativeCacheError, typeError } from '../errors';
import type { NativeAddon, NativeCuda, NativeSampleParams, NativeScoreRequest, NativeStoreHandle } from '../native/addon';
import { callNative } from '../native/cache_store';

const MODE_CODE: Record<SampleParams['mode'], number> = { gumbel: 0, max: 1, none: 2 };

interface CudaStoreLike extends StoreBackend {
  readonly handle: NativeStoreHandle;
  columnIndex(key: string): number;
}

function isCudaStore(s: StoreBackend): s is CudaStoreLike {
  const n = s as Partial<CudaStoreLike>;
  return s.kind === 'cuda' && typeof n.columnIndex === 'function' && n.handle !== undefined;
}

function toRequest(req: ScoreRequest): NativeScoreRequest {
  return {
    queries: req.queries,
    batch: req.batch,
    dim: req.dim,
    segments: req.sources.map((src, i) => {
      if (!isCudaStore(src.store)) throw typeError(`sources[${i}].store`, 'a CUDA cache store', src.store);
      return { store: src.store.handle, column: src.store.columnIndex(src.key) };
    }),
    scale: req.scale,
    scoreEmptyRows: req.scoreEmptyRows,
    threads: 0,
  };
}

function toParams(p: SampleParams): NativeSampleParams {
  const mode = MODE_CODE[p.mode];
  if (mode === undefined) throw typeError('params.mode', "'gumbel', 'max' or 'none'", p.mode);
  return { mode, invTemp: p.invTemp, numDraws: p.numDraws, seed: p.seed, call: p.call };
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
  const cuda = builtCuda(addon);
  const kind: BackendName = 'cuda';
  return {
    kind,
    scoreAndSample(req: ScoreRequest, params: SampleParams): SampleResult {
      const nreq = toRequest(req);
      const nparams = toParams(params);
      const out = allocSample(req.batch, params.numDraws);
      callNative(() => cuda.scoreAndSample(nreq, nparams, out));
      return out;
    },
    scoreGroupMax(req: ScoreRequest, groups: number): GroupMaxResult {
      const nreq = toRequest(req);
      const scores = new Float32Array(len(req.batch, groups));
      const rows = new Int32Array(len(req.batch, groups));
      callNative(() => cuda.scoreGroupMax(nreq, groups, scores, rows));
      return { scores, rows };
    },
    sampleCandidates(scores: Float32Array, batch: number, cols: number, params: SampleParams): SampleResult {
      const nparams = toParams(params);
      const out = allocSample(batch, params.numDraws);
      callNative(() => addon.sampleCandidates(scores, batch, cols, nparams, 0, out));
      return out;
    },
    scoreMatrix(req: ScoreRequest): Float32Array {
      const nreq = toRequest(req);
      let n = 0;
      for (const s of req.sources) n += s.store.size;
      const out = new Float32Array(len(req.batch, n));
      callNative(() => cuda.scoreMatrix(nreq, out));
      return out;
    },
  };
}

/** The CUDA device in use, e.g. "NVIDIA H100 80GB HBM3 (sm_90, 132 SMs, 81000 MiB)". */
export function cudaDeviceDescription(addon: NativeAddon): string {
  return callNative(() => builtCuda(addon).device());
}
