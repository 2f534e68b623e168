/**
 * Internal contract between the public classes (src/*.ts) and the backends
 * (src/js: pure TypeScript reference; src/native: the C++ addon; CUDA through
 * the same addon). Not exported from the package root.
 *
 * Data flows one way: the public classes validate and pack typed arrays, a
 * backend computes, results come back as typed arrays the caller owns.
 */

export type BackendName = 'native' | 'js' | 'cuda';
export type StorageDType = 'float32' | 'float16' | 'bfloat16';
export type FeatureDType = 'float32' | 'int32';

/** A validated column of the cache: `width` = product of the spec's shape. */
export interface ColumnLayout {
  key: string;
  dtype: FeatureDType;
  storage: StorageDType | 'int32';
  width: number;
}

/** A validated, packed update (docs/design.md §3.1 already checked). */
export interface PackedUpdate {
  useLru: boolean;
  /** Refresh: rows of data per refreshed key (keys not refreshed are absent). */
  numUpdated: number;
  updatedValues: Record<string, Float32Array | Int32Array>;
  updatedIndices: Int32Array | null;  // numUpdated entries (masked-out entries may be anything)
  updatedMask: Uint8Array | null;     // null = all on
  /** Insert: rows of data for every key. */
  numNew: number;
  newValues: Record<string, Float32Array | Int32Array>;
  newMask: Uint8Array | null;         // null = all on
  /** Out, optional: when given (numNew entries), the store writes the rows chosen for the unmasked new items, in order. */
  insertedRows?: Int32Array | null;
}

/** One cache's storage. Implementations: JsCacheStore, NativeCacheStore (and CUDA). */
export interface StoreBackend {
  readonly kind: BackendName;
  readonly size: number;
  readonly columns: readonly ColumnLayout[];
  /** Replace the whole state (values per key, full size; missing keys = zeros; rows with values become filled). */
  initialize(values: Record<string, Float32Array | Int32Array>, ages: Int32Array | null): void;
  update(u: PackedUpdate): void;
  /** Copies, row-major [size, width]: float32 for float columns, int32 for int columns. */
  readColumn(key: string): Float32Array | Int32Array;
  readAge(): Int32Array;
  /** 1 where a row was ever filled (insert, refresh, initCache with data). */
  readFilled(): Uint8Array;
  /** Rows `rows` of column `key` (float32 / int32), n x width. */
  gatherRows(key: string, rows: Int32Array): Float32Array | Int32Array;
  dispose(): void;
  readonly disposed: boolean;
}

/** A block of the concatenated index space: column `key` of `store`. */
export interface ScoreSource {
  store: StoreBackend;
  key: string;
}

export interface ScoreRequest {
  queries: Float32Array;      // batch x dim
  batch: number;
  dim: number;
  sources: ScoreSource[];     // concatenated in this order
  scale: number;              // S = scale * (q . e)
  scoreEmptyRows: boolean;    // false: never-filled rows are not candidates
  threads?: number;           // 0/undefined = all cores
  /**
   * Per-query exclusions (CSR), for scoreAndSample and scoreGroupMax (not
   * scoreMatrix): query b does not count the global rows
   * exclusions[exclusionOffsets[b] .. exclusionOffsets[b + 1]) among its
   * candidates (no lse term, never drawn). Any order, repeats allowed; both
   * or neither; offsets have batch + 1 entries starting at 0.
   */
  exclusions?: Int32Array;
  exclusionOffsets?: Int32Array;
}

export type SampleMode = 'gumbel' | 'max' | 'none';

export interface SampleParams {
  mode: SampleMode;
  invTemp: number;
  numDraws: number;           // k
  seed: number;               // non-negative safe integer
  call: number;               // call number on the loss object, from 0
  /** Shards of one global problem: query b is noise row rowOffset + b (default 0). */
  rowOffset?: number;
  /** Local row/column j is global index columnOffset + j: its noise column and the index returned (default 0). */
  columnOffset?: number;
}

export interface SampleResult {
  indices: Int32Array;        // batch x k global rows (scoreAndSample) or columns (sampleCandidates); -1 = no draw
  scores: Float32Array;       // batch x k: S at the draw (NaN where no draw)
  lse: Float32Array;          // batch: logsumexp of S over candidates (-Infinity when none)
  candidates: Int32Array;     // batch: number of candidates
}

export interface GroupMaxResult {
  scores: Float32Array;       // batch x groups, -Infinity for a group without candidates
  rows: Int32Array;           // batch x groups global rows, -1 for an empty group
}

/**
 * The full-cache log-sum-exp of cacheLogSumExp (src/cache_lse.ts), from one
 * streaming pass: per query b, lse[b] = log sum_j exp(S[b, j]) over the
 * candidates (plus row b of `extra` when given) and weighted[b] = sum_j
 * softmax_b(j) e_j over the same candidates (the gradient of lse[b] with
 * respect to q_b, divided by the scale).
 */
export interface CacheLseResult {
  lse: Float32Array;          // batch: -Infinity when a query has no candidate
  weighted: Float32Array;     // batch x dim: zeros when a query has no candidate
  candidates: Int32Array;     // batch: candidates counted (the extra row included)
}

/** The kernels. Every implementation draws the same noise (see src/js/philox.ts). */
export interface KernelBackend {
  readonly kind: BackendName;
  scoreAndSample(req: ScoreRequest, params: SampleParams): SampleResult;
  scoreGroupMax(req: ScoreRequest, groups: number): GroupMaxResult;
  /** Sampling on an explicit matrix (batch x cols, -Infinity = not a candidate); indices are columns. */
  sampleCandidates(scores: Float32Array, batch: number, cols: number, params: SampleParams): SampleResult;
  /** S as a dense batch x N matrix (slow path for function score transforms; tests). */
  scoreMatrix(req: ScoreRequest): Float32Array;
  /** lse and softmax-weighted mean embedding per query, one pass; extra: null or batch x dim (row b for query b only). */
  cacheLse(req: ScoreRequest, extra: Float32Array | null): CacheLseResult;
}
