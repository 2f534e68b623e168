/**
 * The pure-JS reference kernels (KernelBackend of src/backend.ts). The native
 * and CUDA kernels are checked against these, so the arithmetic is spelled out:
 *
 *   S[b, j]   = fround(scale * (q_b . e_j))      dot product in float64 from the
 *                                                stored (decoded) float32 values
 *   lse[b]    = logsumexp_j S[b, j] over candidates, float64, stored as float32
 *   perturbed = invTemp * S[b, j] + gumbel(seed, call, b, col)   float64
 *   draws     = the k largest perturbed scores (ties -> smaller column), in
 *               decreasing order; 'max' mode ranks by S instead.
 *
 * `col` is the global row in the concatenated index space (scoreAndSample) or
 * the matrix column (sampleCandidates). Rows are streamed tile by tile; no
 * batch x N matrix is built except by scoreMatrix.
 */
import type {
  GroupMaxResult, KernelBackend, SampleParams, SampleResult, ScoreRequest, StoreBackend,
} from '../backend';

const TWO32 = 4294967296;
const TWO_M32 = 1 / TWO32;
const M0 = 0xd2511f53;
const M1 = 0xcd9e8d57;
const W0 = 0x9e3779b9;
const W1 = 0xbb67ae85;

/**
 * Philox4x32-10 of counter (c0..c3) and key (k0, k1) into out; same function as
 * src/js/philox.ts, with a cheaper exact high-word product:
 * a*b = (a*bh)*2^16 + a*bl, both partial products exact in doubles.
 */
export function philoxBlock(c0: number, c1: number, c2: number, c3: number, k0: number, k1: number,
                            out: Uint32Array): void {
  for (let round = 0; round < 10; round++) {
    const x0 = M0 * (c0 >>> 16), y0 = M0 * (c0 & 0xffff);
    const hi0 = Math.floor((x0 + Math.floor(y0 / 65536)) / 65536) >>> 0;
    const lo0 = Math.imul(M0, c0) >>> 0;
    const x1 = M1 * (c2 >>> 16), y1 = M1 * (c2 & 0xffff);
    const hi1 = Math.floor((x1 + Math.floor(y1 / 65536)) / 65536) >>> 0;
    const lo1 = Math.imul(M1, c2) >>> 0;
    c0 = (hi1 ^ c1 ^ k0) >>> 0;
    c1 = lo1;
    c2 = (hi0 ^ c3 ^ k1) >>> 0;
    c3 = lo0;
    k0 = (k0 + W0) >>> 0;
    k1 = (k1 + W1) >>> 0;
  }
  out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/** Largest Gumbel value the mapping can produce (word = 2^32 - 1), plus a margin. */
const GUMBEL_MAX = -Math.log(-Math.log((TWO32 - 0.5) * TWO_M32)) + 1e-6;

/** Row count of one tile: 256 rows of 128 float32 = 128 KiB, about an L2's share. */
const TILE_ROWS = 256;

// ---------------------------------------------------------------- half decode

let f16Table: Float32Array | null = null;
let bf16Table: Float32Array | null = null;

function float16Table(): Float32Array {
  if (f16Table) return f16Table;
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const exp = (h >>> 10) & 0x1f;
    const frac = h & 0x3ff;
    let v: number;
    if (exp === 0) v = frac * 2 ** -24;
    else if (exp === 31) v = frac === 0 ? Infinity : NaN;
    else v = (1 + frac / 1024) * 2 ** (exp - 15);
    t[h] = sign * v;
  }
  f16Table = t;
  return t;
}

function bfloat16Table(): Float32Array {
  if (bf16Table) return bf16Table;
  const bits = new Uint32Array(65536);
  for (let h = 0; h < 65536; h++) bits[h] = h << 16;
  bf16Table = new Float32Array(bits.buffer);
  return bf16Table;
}

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

function hasViews(store: StoreBackend): store is StoreBackend & JsStoreViews {
  const s = store as unknown as Partial<JsStoreViews>;
  return store.kind === 'js' && typeof s.columnView === 'function' && typeof s.filledView === 'function';
}

function segmentsOf(req: ScoreRequest): { segments: Segment[]; total: number } {
  const segments: Segment[] = [];
  let offset = 0;
  for (const src of req.sources) {
    const store = src.store;
    const col = store.columns.find((c) => c.key === src.key);
    if (!col) throw new Error(`negative-cache: internal: column ${src.key} missing in the store`);
    if (col.dtype !== 'float32') throw new Error(`negative-cache: internal: column ${src.key} is not a float column`);
    if (col.width !== req.dim) throw new Error(`negative-cache: internal: column ${src.key} has width ${col.width}, queries ${req.dim}`);
    let data: Float32Array | Uint16Array;
    let table: Float32Array | null = null;
    let filled: Uint8Array | null = null;
    if (hasViews(store)) {
      const view = store.columnView(src.key);
      if (view instanceof Int32Array) throw new Error(`negative-cache: internal: column ${src.key} is stored as int32`);
      data = view;
      if (view instanceof Uint16Array) table = col.storage === 'bfloat16' ? bfloat16Table() : float16Table();
      if (!req.scoreEmptyRows) filled = store.filledView();
    } else {
      data = store.readColumn(src.key) as Float32Array;
      if (!req.scoreEmptyRows) filled = store.readFilled();
    }
    segments.push({ data, table, rows: store.size, offset, filled });
    offset += store.size;
  }
  return { segments, total: offset };
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
 * Per-row streaming state: running logsumexp and the k best (perturbed) scores
 * in decreasing order, ties kept in arrival (= column) order.
 */
class Sampler {
  readonly lseMax: Float64Array;
  readonly lseSum: Float64Array;
  readonly candidates: Int32Array;
  readonly topValue: Float64Array;
  readonly topIndex: Int32Array;
  readonly topScore: Float32Array;
  readonly topCount: Int32Array;
  /** Value a new entry must beat: -inf until k entries, then the k-th best. */
  readonly threshold: Float64Array;
  readonly k: number;
  readonly gumbel: boolean;
  readonly ranked: boolean;   // false for mode 'none'
  readonly invTemp: number;
  private readonly key0: number;
  private readonly key1: number;
  private readonly call0: number;
  private readonly call1: number;
  private readonly words = new Uint32Array(4);
  private blockRow = -1;
  private blockId = -1;

  constructor(batch: number, params: SampleParams) {
    const k = params.mode === 'none' ? 0 : params.numDraws;
    this.k = k;
    this.gumbel = params.mode === 'gumbel';
    this.ranked = params.mode !== 'none';
    this.invTemp = params.invTemp;
    this.lseMax = new Float64Array(batch).fill(-Infinity);
    this.lseSum = new Float64Array(batch);
    this.candidates = new Int32Array(batch);
    this.topValue = new Float64Array(batch * k).fill(-Infinity);
    this.topIndex = new Int32Array(batch * k).fill(-1);
    this.topScore = new Float32Array(batch * k).fill(NaN);
    this.topCount = new Int32Array(batch);
    this.threshold = new Float64Array(batch).fill(-Infinity);
    this.key0 = params.seed % TWO32;
    this.key1 = Math.floor(params.seed / TWO32);
    this.call0 = params.call % TWO32;
    this.call1 = Math.floor(params.call / TWO32);
  }

  /** Standard Gumbel noise for (row, col), reusing the Philox block of 4 columns. */
  noise(row: number, col: number): number {
    const block = Math.floor(col / 4);
    if (block !== this.blockId || row !== this.blockRow) {
      philoxBlock(block % TWO32, row, this.call0, this.call1, this.key0, this.key1, this.words);
      this.blockId = block;
      this.blockRow = row;
    }
    return -Math.log(-Math.log((this.words[col & 3] + 0.5) * TWO_M32));
  }

  /** Offers candidate `col` with score s (float32 value) to row b. */
  offer(b: number, col: number, s: number): void {
    this.candidates[b]++;
    // Online logsumexp; -inf adds nothing, NaN and +inf poison it on purpose.
    if (s > this.lseMax[b]) {
      this.lseSum[b] = this.lseSum[b] * Math.exp(this.lseMax[b] - s) + 1;
      this.lseMax[b] = s;
    } else if (s !== -Infinity) {
      this.lseSum[b] += Math.exp(s - this.lseMax[b]);
    }
    if (this.k === 0) return;
    const thr = this.threshold[b];
    let v: number;
    if (this.gumbel) {
      const a = this.invTemp * s;
      if (!(a + GUMBEL_MAX > thr)) return;  // safe bound: noise <= GUMBEL_MAX
      v = a + this.noise(b, col);
    } else {
      v = s;
    }
    if (!(v > thr)) return;
    this.insert(b, col, s, v);
  }

  private insert(b: number, col: number, s: number, v: number): void {
    const k = this.k, base = b * k;
    const vals = this.topValue, idx = this.topIndex, sc = this.topScore;
    let n = this.topCount[b];
    let p = n < k ? n : k - 1;
    // Shift worse entries down; equal values stay ahead (smaller column wins).
    while (p > 0 && vals[base + p - 1] < v) {
      vals[base + p] = vals[base + p - 1];
      idx[base + p] = idx[base + p - 1];
      sc[base + p] = sc[base + p - 1];
      p--;
    }
    vals[base + p] = v;
    idx[base + p] = col;
    sc[base + p] = s;
    if (n < k) this.topCount[b] = ++n;
    if (n === k) this.threshold[b] = vals[base + k - 1];
  }

  result(batch: number, k: number): SampleResult {
    const lse = new Float32Array(batch);
    for (let b = 0; b < batch; b++) {
      lse[b] = this.candidates[b] === 0 || this.lseMax[b] === -Infinity
        ? -Infinity
        : this.lseMax[b] + Math.log(this.lseSum[b]);
    }
    if (this.k === k) {
      return { indices: this.topIndex, scores: this.topScore, lse, candidates: this.candidates };
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
  const { segments } = segmentsOf(req);
  const { batch, dim, queries } = req;
  const scale = req.scale;
  const sampler = new Sampler(batch, params);
  const dots = new Float64Array(batch * TILE_ROWS);
  forEachTile(req, segments, (tile, start, rows, filled, fStart) => {
    tileDots(queries, batch, dim, tile, rows, filled, fStart, dots);
    for (let b = 0; b < batch; b++) {
      const dOff = b * rows;
      for (let r = 0; r < rows; r++) {
        if (filled !== null && filled[fStart + r] === 0) continue;
        sampler.offer(b, start + r, Math.fround(scale * dots[dOff + r]));
      }
    }
  });
  return sampler.result(batch, params.numDraws);
}

function scoreGroupMax(req: ScoreRequest, groups: number): GroupMaxResult {
  const { segments, total } = segmentsOf(req);
  const { batch, dim, queries } = req;
  const scale = req.scale;
  const scores = new Float32Array(batch * groups).fill(-Infinity);
  const rowsOut = new Int32Array(batch * groups).fill(-1);
  // Group of each global row, walked incrementally: group g = [floor(gN/K), floor((g+1)N/K)).
  const groupStart = new Float64Array(groups + 1);
  for (let g = 0; g <= groups; g++) groupStart[g] = Math.floor((g * total) / groups);
  const dots = new Float64Array(batch * TILE_ROWS);
  forEachTile(req, segments, (tile, start, rows, filled, fStart) => {
    tileDots(queries, batch, dim, tile, rows, filled, fStart, dots);
    let g0 = 0;
    while (groupStart[g0 + 1] <= start) g0++;
    for (let b = 0; b < batch; b++) {
      const dOff = b * rows;
      let g = g0;
      for (let r = 0; r < rows; r++) {
        const j = start + r;
        while (groupStart[g + 1] <= j) g++;
        if (filled !== null && filled[fStart + r] === 0) continue;
        const s = Math.fround(scale * dots[dOff + r]);
        const o = b * groups + g;
        const cur = scores[o];
        if (cur !== cur) continue;                 // a NaN stays (the caller rejects it)
        if (rowsOut[o] < 0 || s > cur || s !== s) {
          scores[o] = s;
          rowsOut[o] = j;
        }
      }
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
  const { segments, total } = segmentsOf(req);
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

/** The pure-JS kernels: the reference every other backend is checked against. */
export const jsKernels: KernelBackend = {
  kind: 'js',
  scoreAndSample,
  scoreGroupMax,
  sampleCandidates,
  scoreMatrix,
};
