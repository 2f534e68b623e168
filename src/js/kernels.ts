/**
 * The pure-JS reference kernels (KernelBackend of src/backend.ts). The native
 * and CUDA kernels are checked against these, so the arithmetic is spelled out:
 *
 *   S[b, j]   = fround(scale * (q_b . e_j))      dot product in float64 from the
 *                                                stored (decoded) float32 values
 *   lse[b]    = logsumexp_j S[b, j] over candidates, float64, stored as float32
 *   perturbed = invTemp * S[b, j] + gumbel(seed, call, rowOffset + b, columnOffset + col)   float64
 *   draws     = the k largest perturbed scores (ties -> smaller column), in
 *               decreasing order; 'max' mode ranks by S instead.
 *
 *   cacheLse  = lse as above over the candidates (and the extra row), and
 *               weighted[b] = sum_j exp(S[b, j] - lse[b]) e_j, float64,
 *               stored as float32
 *
 * `col` is the global row in the concatenated index space (scoreAndSample) or
 * the matrix column (sampleCandidates); the indices returned are
 * columnOffset + col (both offsets 0 unless given: a shard of a global problem). Rows are streamed tile by tile; no
 * batch x N matrix is built except by scoreMatrix. A query's excluded rows
 * (request.exclusions, the request's own row numbers before columnOffset) are
 * skipped like rows that are not candidates, by scoreAndSample and
 * scoreGroupMax; the other rows keep their noise.
 */
import type {
  CacheLseResult, GroupMaxResult, KernelBackend, SampleParams, SampleResult, ScoreRequest, StoreBackend,
} from '../backend';
import { rangeError, typeError } from '../errors';
import { groupStart } from './groups';
import { decodeTable } from './half';
import { GUMBEL_MAX, GumbelNoise } from './philox';
import { TopKLists } from './top_k';

/** Row count of one tile: 256 rows of 128 float32 = 128 KiB, about an L2's share. */
const TILE_ROWS = 256;

// ---------------------------------------------------------------- segments

interface Segment {
  /** float32 values, or half bits decoded through `table`. */
  data: Float32Array | Uint16Array;
  table: Float32Array | null;
  rows: number;
  offset: number;           // global index of local row 0
  filled: Uint8Array | null; // null = every row is a candidate
}

interface JsStoreViews {
  columnView(key: string): Float32Array | Uint16Array | Int32Array;
  filledView(): Uint8Array;
}

function isJsStore(store: StoreBackend): store is StoreBackend & JsStoreViews {
  const s = store as unknown as Partial<JsStoreViews>;
  return store.kind === 'js' && typeof s.columnView === 'function' && typeof s.filledView === 'function';
}

/** The request's sources as segments of the index space; every store must be a JS store (read in place). */
function segmentsOf(req: ScoreRequest): Segment[] {
  const segments: Segment[] = [];
  let offset = 0;
  req.sources.forEach((src, i) => {
    const store = src.store;
    if (!isJsStore(store)) throw typeError(`sources[${i}].store`, 'a JS cache store', store);
    const col = store.columns.find((c) => c.key === src.key);
    if (!col) throw new Error(`negative-cache: internal: column ${src.key} missing in the store`);
    if (col.dtype !== 'float32') throw new Error(`negative-cache: internal: column ${src.key} is not a float column`);
    if (col.width !== req.dim) throw new Error(`negative-cache: internal: column ${src.key} has width ${col.width}, queries ${req.dim}`);
    const data = store.columnView(src.key) as Float32Array | Uint16Array;
    const table = col.storage === 'float16' || col.storage === 'bfloat16' ? decodeTable(col.storage) : null;
    const filled = req.scoreEmptyRows ? null : store.filledView();
    segments.push({ data, table, rows: store.size, offset, filled });
    offset += store.size;
  });
  return segments;
}

/** Per-query excluded rows, each query's sorted (CSR), or null when the request has none. */
interface SortedExclusions {
  rows: Int32Array;
  offsets: Int32Array;   // batch + 1
}

/** The request's exclusions, checked against batch and `total` rows, each query's rows sorted. */
function exclusionsOf(req: ScoreRequest, total: number): SortedExclusions | null {
  const ex = req.exclusions, off = req.exclusionOffsets;
  if (ex === undefined && off === undefined) return null;
  if (!(off instanceof Int32Array)) {
    throw typeError('request.exclusionOffsets', `an Int32Array of ${req.batch + 1} offsets (with request.exclusions)`, off);
  }
  if (off.length !== req.batch + 1) {
    throw rangeError('request.exclusionOffsets', `an Int32Array of length ${req.batch + 1}`, `length ${off.length}`);
  }
  if (off[0] !== 0) throw rangeError('request.exclusionOffsets', '0 at index 0', off[0]);
  for (let b = 0; b < req.batch; b++) {
    if (off[b + 1] < off[b]) throw rangeError('request.exclusionOffsets', 'non-decreasing', `${off[b + 1]} after ${off[b]} at index ${b + 1}`);
  }
  const count = off[req.batch];
  if (!(ex instanceof Int32Array)) throw typeError('request.exclusions', `an Int32Array of ${count} rows (with request.exclusionOffsets)`, ex);
  if (ex.length !== count) throw rangeError('request.exclusions', `an Int32Array of length ${count} (exclusionOffsets[batch])`, `length ${ex.length}`);
  for (let i = 0; i < count; i++) {
    if (ex[i] < 0 || ex[i] >= total) throw rangeError('request.exclusions', `rows in [0, ${total})`, `${ex[i]} at index ${i}`);
  }
  if (count === 0) return null;
  const rows = Int32Array.from(ex);
  for (let b = 0; b < req.batch; b++) rows.subarray(off[b], off[b + 1]).sort();
  return { rows, offsets: Int32Array.from(off) };
}

/** Rows of the index space. */
function totalOf(segments: Segment[]): number {
  return segments.reduce((n, s) => n + s.rows, 0);
}

/**
 * Calls visit(tile, globalStart, rows, filled, filledStart) for every tile of
 * TILE_ROWS rows; `tile` holds rows x dim float32 values from index 0.
 */
function forEachTile(req: ScoreRequest, segments: Segment[],
                     visit: (tile: Float32Array, start: number, rows: number,
                             filled: Uint8Array | null, filledStart: number) => void): void {
  const dim = req.dim;
  let scratch: Float32Array | null = null;
  for (const seg of segments) {
    for (let r0 = 0; r0 < seg.rows; r0 += TILE_ROWS) {
      const rows = Math.min(TILE_ROWS, seg.rows - r0);
      let tile: Float32Array;
      if (seg.table === null) {
        tile = (seg.data as Float32Array).subarray(r0 * dim, (r0 + rows) * dim);
      } else {
        if (scratch === null) scratch = new Float32Array(TILE_ROWS * dim);
        const bits = seg.data as Uint16Array, table = seg.table, base = r0 * dim, n = rows * dim;
        for (let i = 0; i < n; i++) scratch[i] = table[bits[base + i]];
        tile = scratch;
      }
      visit(tile, seg.offset + r0, rows, seg.filled, r0);
    }
  }
}

/**
 * out[b * rows + r] = q_b . tile_r in float64 for every query and tile row
 * (skipping rows that are not candidates). Four queries share each load of a
 * tile row; every dot product sums in index order whatever the blocking, so a
 * score does not depend on the query's position in the batch.
 */
function tileDots(q: Float32Array, batch: number, dim: number, tile: Float32Array, rows: number,
                  filled: Uint8Array | null, fStart: number, out: Float64Array): void {
  let b = 0;
  for (; b + 3 < batch; b += 4) {
    const o0 = b * dim, o1 = o0 + dim, o2 = o1 + dim, o3 = o2 + dim;
    for (let r = 0; r < rows; r++) {
      if (filled !== null && filled[fStart + r] === 0) continue;
      const e0 = r * dim;
      let a0 = 0, a1 = 0, a2 = 0, a3 = 0;
      for (let i = 0; i < dim; i++) {
        const e = tile[e0 + i];
        a0 += q[o0 + i] * e;
        a1 += q[o1 + i] * e;
        a2 += q[o2 + i] * e;
        a3 += q[o3 + i] * e;
      }
      out[b * rows + r] = a0;
      out[(b + 1) * rows + r] = a1;
      out[(b + 2) * rows + r] = a2;
      out[(b + 3) * rows + r] = a3;
    }
  }
  for (; b < batch; b++) {
    const o0 = b * dim;
    for (let r = 0; r < rows; r++) {
      if (filled !== null && filled[fStart + r] === 0) continue;
      const e0 = r * dim;
      let a0 = 0;
      for (let i = 0; i < dim; i++) a0 += q[o0 + i] * tile[e0 + i];
      out[b * rows + r] = a0;
    }
  }
}

// ---------------------------------------------------------------- sampler state

/**
 * Per-row streaming state: a running logsumexp over the candidates offered,
 * and the k best perturbed scores (invTemp·S + Gumbel noise; S itself in
 * 'max' mode; none in 'none' mode).
 */
class Sampler {
  readonly lseMax: Float64Array;
  readonly lseSum: Float64Array;
  readonly candidates: Int32Array;
  readonly best: TopKLists;
  private readonly gumbel: boolean;
  private readonly invTemp: number;
  private readonly noise: GumbelNoise;
  private readonly rowOffset: number;
  private readonly columnOffset: number;

  constructor(batch: number, params: SampleParams) {
    this.rowOffset = params.rowOffset ?? 0;
    this.columnOffset = params.columnOffset ?? 0;
    this.best = new TopKLists(batch, params.mode === 'none' ? 0 : params.numDraws);
    this.gumbel = params.mode === 'gumbel';
    this.invTemp = params.invTemp;
    this.noise = new GumbelNoise(params.seed, params.call);
    this.lseMax = new Float64Array(batch).fill(-Infinity);
    this.lseSum = new Float64Array(batch);
    this.candidates = new Int32Array(batch);
  }

  /** Offers candidate `col` with score s (float32 value) to row b. */
  offer(b: number, localCol: number, s: number): void {
    const col = this.columnOffset + localCol;
    this.candidates[b]++;
    // Online logsumexp; -inf adds nothing, NaN and +inf poison it on purpose.
    if (s > this.lseMax[b]) {
      this.lseSum[b] = this.lseSum[b] * Math.exp(this.lseMax[b] - s) + 1;
      this.lseMax[b] = s;
    } else if (s !== -Infinity) {
      this.lseSum[b] += Math.exp(s - this.lseMax[b]);
    }
    if (this.best.k === 0) return;
    if (!this.gumbel) {
      this.best.offer(b, s, col, s);
      return;
    }
    const a = this.invTemp * s;
    // The noise is computed only where it could matter: noise <= GUMBEL_MAX.
    if (!(a + GUMBEL_MAX > this.best.threshold[b])) return;
    this.best.offer(b, a + this.noise.at(this.rowOffset + b, col), col, s);
  }

  result(batch: number, k: number): SampleResult {
    const lse = new Float32Array(batch);
    for (let b = 0; b < batch; b++) {
      lse[b] = this.candidates[b] === 0 || this.lseMax[b] === -Infinity
        ? -Infinity
        : this.lseMax[b] + Math.log(this.lseSum[b]);
    }
    if (this.best.k === k) {
      return { indices: this.best.columns, scores: this.best.scores, lse, candidates: this.candidates };
    }
    // mode 'none': no draws, but the documented batch x k shape.
    return {
      indices: new Int32Array(batch * k).fill(-1), scores: new Float32Array(batch * k).fill(NaN),
      lse, candidates: this.candidates,
    };
  }
}

// ---------------------------------------------------------------- kernels

function scoreAndSample(req: ScoreRequest, params: SampleParams): SampleResult {
  const segments = segmentsOf(req);
  const { batch, dim, queries } = req;
  const scale = req.scale;
  const sampler = new Sampler(batch, params);
  const ex = exclusionsOf(req, totalOf(segments));
  // Per query: the first of its excluded rows not yet passed (rows come in increasing order).
  const cursor = ex === null ? null : ex.offsets.slice(0, batch);
  const dots = new Float64Array(batch * TILE_ROWS);
  forEachTile(req, segments, (tile, start, rows, filled, fStart) => {
    tileDots(queries, batch, dim, tile, rows, filled, fStart, dots);
    for (let b = 0; b < batch; b++) {
      const dOff = b * rows;
      let c = 0, cEnd = 0;
      if (ex !== null) { c = cursor![b]; cEnd = ex.offsets[b + 1]; }
      for (let r = 0; r < rows; r++) {
        if (filled !== null && filled[fStart + r] === 0) continue;
        if (c < cEnd) {
          const j = start + r;
          while (c < cEnd && ex!.rows[c] < j) c++;
          if (c < cEnd && ex!.rows[c] === j) continue;
        }
        sampler.offer(b, start + r, Math.fround(scale * dots[dOff + r]));
      }
      if (ex !== null) cursor![b] = c;
    }
  });
  return sampler.result(batch, params.numDraws);
}

function scoreGroupMax(req: ScoreRequest, groups: number): GroupMaxResult {
  const segments = segmentsOf(req);
  const total = totalOf(segments);
  const { batch, dim, queries } = req;
  const scale = req.scale;
  const scores = new Float32Array(batch * groups).fill(-Infinity);
  const rowsOut = new Int32Array(batch * groups).fill(-1);
  // Group of each global row, walked incrementally (src/js/groups.ts).
  const starts = new Float64Array(groups + 1);
  for (let g = 0; g <= groups; g++) starts[g] = groupStart(g, total, groups);
  const ex = exclusionsOf(req, total);
  const cursor = ex === null ? null : ex.offsets.slice(0, batch);
  const dots = new Float64Array(batch * TILE_ROWS);
  forEachTile(req, segments, (tile, start, rows, filled, fStart) => {
    tileDots(queries, batch, dim, tile, rows, filled, fStart, dots);
    let g0 = 0;
    while (starts[g0 + 1] <= start) g0++;
    for (let b = 0; b < batch; b++) {
      const dOff = b * rows;
      let g = g0;
      let c = 0, cEnd = 0;
      if (ex !== null) { c = cursor![b]; cEnd = ex.offsets[b + 1]; }
      for (let r = 0; r < rows; r++) {
        const j = start + r;
        while (starts[g + 1] <= j) g++;
        if (filled !== null && filled[fStart + r] === 0) continue;
        if (c < cEnd) {
          while (c < cEnd && ex!.rows[c] < j) c++;
          if (c < cEnd && ex!.rows[c] === j) continue;
        }
        const s = Math.fround(scale * dots[dOff + r]);
        const o = b * groups + g;
        const cur = scores[o];
        if (cur !== cur) continue;                 // a NaN stays (the caller rejects it)
        if (rowsOut[o] < 0 || s > cur || s !== s) {
          scores[o] = s;
          rowsOut[o] = j;
        }
      }
      if (ex !== null) cursor![b] = c;
    }
  });
  return { scores, rows: rowsOut };
}

function sampleCandidates(scores: Float32Array, batch: number, cols: number, params: SampleParams): SampleResult {
  const sampler = new Sampler(batch, params);
  for (let b = 0; b < batch; b++) {
    const off = b * cols;
    for (let c = 0; c < cols; c++) {
      const s = scores[off + c];
      if (s === -Infinity) continue;
      sampler.offer(b, c, s);
    }
  }
  return sampler.result(batch, params.numDraws);
}

function scoreMatrix(req: ScoreRequest): Float32Array {
  const segments = segmentsOf(req);
  const total = totalOf(segments);
  const { batch, dim, queries } = req;
  const scale = req.scale;
  const out = new Float32Array(batch * total).fill(-Infinity);
  const dots = new Float64Array(batch * TILE_ROWS);
  forEachTile(req, segments, (tile, start, rows, filled, fStart) => {
    tileDots(queries, batch, dim, tile, rows, filled, fStart, dots);
    for (let b = 0; b < batch; b++) {
      const dOff = b * rows, oOff = b * total + start;
      for (let r = 0; r < rows; r++) {
        if (filled !== null && filled[fStart + r] === 0) continue;
        out[oOff + r] = scale * dots[dOff + r];
      }
    }
  });
  return out;
}

/**
 * The full-cache log-sum-exp and the softmax-weighted mean of the candidate
 * embeddings (online: running max, sum and weighted sum per query, rescaled
 * when the max grows); row b of `extra` is one more candidate of query b.
 */
function cacheLse(req: ScoreRequest, extra: Float32Array | null): CacheLseResult {
  const segments = segmentsOf(req);
  const { batch, dim, queries } = req;
  const scale = req.scale;
  const max = new Float64Array(batch).fill(-Infinity);
  const sum = new Float64Array(batch);
  const acc = new Float64Array(batch * dim);
  const candidates = new Int32Array(batch);
  // Candidate embedding `e` (values e[eOff .. eOff + dim)) with score s for query b.
  const offer = (b: number, s: number, e: Float32Array, eOff: number): void => {
    candidates[b]++;
    const a = b * dim;
    if (s > max[b]) {
      const f = max[b] === -Infinity ? 0 : Math.exp(max[b] - s);
      sum[b] *= f;
      for (let d = 0; d < dim; d++) acc[a + d] *= f;
      max[b] = s;
    }
    const w = Math.exp(s - max[b]);   // NaN (from an overflowed score) poisons the sum on purpose
    sum[b] += w;
    for (let d = 0; d < dim; d++) acc[a + d] += w * e[eOff + d];
  };
  const dots = new Float64Array(batch * TILE_ROWS);
  forEachTile(req, segments, (tile, _start, rows, filled, fStart) => {
    tileDots(queries, batch, dim, tile, rows, filled, fStart, dots);
    for (let b = 0; b < batch; b++) {
      for (let r = 0; r < rows; r++) {
        if (filled !== null && filled[fStart + r] === 0) continue;
        offer(b, Math.fround(scale * dots[b * rows + r]), tile, r * dim);
      }
    }
  });
  if (extra !== null) {
    for (let b = 0; b < batch; b++) {
      let dot = 0;
      for (let d = 0; d < dim; d++) dot += queries[b * dim + d] * extra[b * dim + d];
      offer(b, Math.fround(scale * dot), extra, b * dim);
    }
  }
  const lse = new Float32Array(batch);
  const weighted = new Float32Array(batch * dim);
  for (let b = 0; b < batch; b++) {
    if (candidates[b] === 0 || max[b] === -Infinity) {
      lse[b] = -Infinity;
      continue;
    }
    lse[b] = max[b] + Math.log(sum[b]);
    for (let d = 0; d < dim; d++) weighted[b * dim + d] = acc[b * dim + d] / sum[b];
  }
  return { lse, weighted, candidates };
}

/** The pure-JS kernels: the reference every other backend is checked against. */
export const jsKernels: KernelBackend = {
  kind: 'js',
  scoreAndSample,
  scoreGroupMax,
  sampleCandidates,
  scoreMatrix,
  cacheLse,
};
