/**
 * DistributedCacheClassificationLoss (docs/distributed.md "Sharded loss"):
 * rank r's caches are shard r of one global cache; the loss on every rank
 * equals, query by query, the single-process CacheClassificationLoss over the
 * concatenated shards and the concatenated batches.
 *
 * Global index space: per source (sorted by name, as in one process), the
 * shards in rank order; source a's shards come before source b's. Global
 * query rows: the ranks' batches in rank order. The noise is keyed by
 * (seed, call, global query row, global cache row) through the kernels'
 * rowOffset / columnOffset, so a shard draws exactly the noise one process
 * would.
 *
 * One step, every rank (all collectives carry a status, so an error on one
 * rank makes every rank throw at the same point, nothing changed):
 *  0. header allgather (validation status, batch, dim, call, shard sizes);
 *     at the first call a checkSame of the configuration;
 *  1. allgather of the queries (B_total x D);
 *  2. each rank scores every gathered query against its shard: its lse and its
 *     k best perturbed scores (or, with topK, the maxima of the global groups
 *     meeting its shard); alltoallv to each query's owner;
 *  3. the owner merges (global lse = logsumexp of the shard lse's; the k best
 *     perturbed scores of the union; or the topK candidates, then samples)
 *     and asks the owning shards for the drawn rows' features and cached
 *     embeddings (alltoallv, answered by alltoallv);
 *  4. docNetwork re-embeds the drawn rows on the owner; the fresh embeddings
 *     go back to the shard owning each row (alltoallv); compute() returns the
 *     rows this shard received as its refresh.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { SampleParams, ScoreRequest, StoreBackend } from '../backend';
import { kernelsFor } from '../backends';
import type { NegativeCache } from '../cache';
import { firstNonFinite, widthOf } from '../convert';
import { transformScores } from '../draw';
import { NegativeCacheError, describe, knownKeys, rangeError, rejectUnknownKeys, typeError } from '../errors';
import { groupStart } from '../js/groups';
import { GumbelNoise } from '../js/philox';
import {
  CacheClassificationLoss, type CacheClassificationLossOptions, type CacheLossReturn, type DocNetwork, type LossArgNames,
  checkComputeArgs, finiteQueries,
} from '../loss';
import { GumbelMaxRetrievalFn, MaxScoreRetrievalFn, sampleParamsOf } from '../retrieval';
import type { Source } from '../sources';
import type { Communicator } from './communicator';

export interface DistributedCacheClassificationLossOptions extends CacheClassificationLossOptions {
  /** The ranks sharing the cache (initDistributed()). */
  communicator: Communicator;
}
const DIST_OPTION_KEYS = knownKeys<DistributedCacheClassificationLossOptions>({
  embeddingKey: true, dataKeys: true, scoreTransform: true, topK: true, reducer: true, retrievalFn: true,
  seed: true, numNegatives: true, scoreEmptyRows: true, communicator: true,
});

const OWN_ARG_NAMES: LossArgNames = { docNetwork: 'docNetwork', posDocEmbeddings: 'posDocEmbeddings' };
/** Scores held at once by the dense paths (topK, function transforms): query chunks of at most this many entries. */
const DENSE_CHUNK = 1 << 22;

function isCommunicator(c: unknown): c is Communicator {
  if (c === null || typeof c !== 'object') return false;
  const o = c as Partial<Communicator>;
  return Number.isInteger(o.rank) && Number.isInteger(o.size) && typeof o.allgather === 'function'
    && typeof o.alltoallv === 'function' && typeof o.checkSame === 'function';
}

function logAddExp(a: number, b: number): number {
  if (b === -Infinity) return a;
  if (a === -Infinity) return b;
  const m = Math.max(a, b);
  return m + Math.log1p(Math.exp(-Math.abs(a - b)));
}

/** Per query, the k best (perturbed desc, global row asc) of everything offered. */
class BestLists {
  readonly pert: Float64Array;
  readonly rows: Int32Array;
  constructor(readonly batch: number, readonly k: number) {
    this.pert = new Float64Array(batch * k).fill(-Infinity);
    this.rows = new Int32Array(batch * k).fill(-1);
  }
  offer(b: number, p: number, row: number): void {
    const k = this.k, o = b * k, P = this.pert, R = this.rows;
    const better = (i: number): boolean => R[o + i] < 0 || p > P[o + i] || (p === P[o + i] && row < R[o + i]);
    if (!better(k - 1)) return;
    let i = k - 1;
    while (i > 0 && better(i - 1)) { P[o + i] = P[o + i - 1]; R[o + i] = R[o + i - 1]; i--; }
    P[o + i] = p;
    R[o + i] = row;
  }
}

/** Bit-casts between float32 values and the int32 words sent with int32 features. */
const castBuf = new ArrayBuffer(4);
const castF = new Float32Array(castBuf);
const castI = new Int32Array(castBuf);
function floatBits(v: number): number { castF[0] = v; return castI[0]; }
function bitsFloat(w: number): number { castI[0] = w; return castF[0]; }

/** What the ranks agree on, per step (from the header allgather). */
interface Geometry {
  batches: number[];          // per rank
  queryStart: number[];       // per rank: global row of its first query
  totalQueries: number;
  sizes: number[][];          // [rank][source]
  start: number[][];          // [rank][source]: global row of the shard's row 0
  total: number;              // global rows
}

/**
 * The cache loss over shards (see the file header): the same options as
 * CacheClassificationLoss plus `communicator`; every rank constructs it with
 * the same options (checked at the first call) and calls compute() (or the
 * handler's step) at the same steps, with its own batch and its own shard.
 */
export class DistributedCacheClassificationLoss extends CacheClassificationLoss {
  readonly communicator: Communicator;
  private configChecked = false;
  /** Bytes this rank sent in the last compute() call, by phase (for benchmarks). */
  lastBytesSent: { header: number; queries: number; candidates: number; fetch: number; refresh: number } | null = null;

  constructor(options: DistributedCacheClassificationLossOptions) {
    if (options === null || typeof options !== 'object') throw typeError('options', 'an object', options);
    rejectUnknownKeys('options', options, DIST_OPTION_KEYS);
    const { communicator, ...rest } = options;
    if (!isCommunicator(communicator)) throw typeError('options.communicator', 'a Communicator (initDistributed())', communicator);
    const r = rest.retrievalFn;
    if (r !== undefined && !(r instanceof GumbelMaxRetrievalFn) && !(r instanceof MaxScoreRetrievalFn)) {
      throw typeError('options.retrievalFn',
        'a GumbelMaxRetrievalFn or a MaxScoreRetrievalFn (a custom function needs the whole score matrix, which no rank holds)', r);
    }
    super(rest);
    this.communicator = communicator;
  }

  override compute(docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D, posDocEmbeddings: tf.Tensor2D,
                   caches: NegativeCache | Record<string, NegativeCache>): CacheLossReturn {
    return this._compute(OWN_ARG_NAMES, docNetwork, queryEmbeddings, posDocEmbeddings, caches);
  }

  /** @internal */
  override _compute(names: LossArgNames, docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D,
                    posDocEmbeddings: tf.Tensor2D, caches: NegativeCache | Record<string, NegativeCache>): CacheLossReturn {
    const comm = this.communicator;
    const R = comm.size, me = comm.rank;
    const call = this.calls;
    const k = this.numNegatives;
    const bytes = { header: 0, queries: 0, candidates: 0, fetch: 0, refresh: 0 };

    // ---- 0. local validation, then the header every rank sees
    let local: { q: tf.Tensor2D; p: tf.Tensor2D; batch: number; dim: number; sources: Source[]; queries: Float32Array } | null = null;
    let localError: unknown = null;
    try {
      local = this.validateLocal(names, docNetwork, queryEmbeddings, posDocEmbeddings, caches);
    } catch (e) {
      localError = e;
    }
    const ns = local ? local.sources.length : 0;
    const header = new Float64Array(4 + ns);
    header[0] = local ? 0 : 1;
    header[1] = local ? local.batch : 0;
    header[2] = local ? local.dim : 0;
    header[3] = call;
    if (local) local.sources.forEach((s, i) => { header[4 + i] = s.size; });
    bytes.header = header.byteLength * (R - 1);
    const H = comm.allgather(header);
    this.raiseIfFailed(Array.from({ length: R }, (_, r) => H.data[H.offsets[r]]), localError, 'argument checks', call);
    const L = local!;
    const dim = L.dim;
    const geo = this.geometry(H, R, L.sources.length, dim, call);
    if (!this.configChecked) {
      comm.checkSame('DistributedCacheClassificationLoss configuration', this.configOf(L.sources, dim));
      this.configChecked = true;
    }
    if (this.topK !== undefined && this.topK > geo.total) {
      throw rangeError('options.topK', `an integer in [1, ${geo.total}] (the number of cached rows over all shards)`, this.topK);
    }

    // ---- 1. the queries of every rank
    const G = comm.allgather(L.queries);
    bytes.queries = L.queries.byteLength * (R - 1);
    const all = G.data as Float32Array;

    // ---- 2. score them against this shard; send each owner its part
    const kern = kernelsFor(L.sources[0].store.kind);
    const params = sampleParamsOf(this.retrievalFn, k, this.seed, call);
    const perQuery = this.topK === undefined ? 1 + 3 * k : 0;
    let groupRanges: Array<Array<[number, number]>> = [];  // [rank][source]: groups [g0, g1) meeting that shard
    if (this.topK !== undefined) groupRanges = this.groupRanges(geo);
    const perQueryOf = (r: number): number => this.topK === undefined ? perQuery
      : 2 * groupRanges[r].reduce((n, [g0, g1]) => n + (g1 - g0), 0);
    let candidates: Float64Array;
    let stage1Error: unknown = null;
    const myPer = perQueryOf(me);
    const sendCounts = geo.batches.map((b) => 1 + b * myPer);
    candidates = new Float64Array(sendCounts.reduce((a, b) => a + b, 0));
    try {
      const payload = this.topK === undefined
        ? this.localDraws(kern, L.sources, all, geo, dim, params)
        : this.localGroups(kern, L.sources, all, geo, dim, groupRanges[me]);
      let o = 0;
      for (let r = 0; r < R; r++) {
        candidates[o++] = 0;
        candidates.set(payload.subarray(geo.queryStart[r] * myPer, (geo.queryStart[r] + geo.batches[r]) * myPer), o);
        o += geo.batches[r] * myPer;
      }
    } catch (e) {
      stage1Error = e;
      let o = 0;
      for (let r = 0; r < R; r++) { candidates[o] = 1; o += sendCounts[r]; }
    }
    const C = comm.alltoallv(candidates, sendCounts);
    bytes.candidates = (candidates.length - sendCounts[me]) * 8;
    this.raiseIfFailed(Array.from({ length: R }, (_, r) => C.data[C.offsets[r]]), stage1Error, 'scoring', call);

    // ---- 3. merge, draw, fetch the drawn rows from their shards
    const batch = L.batch;
    let rows: Int32Array | null = null;
    let lse: Float32Array | null = null;
    let stage2Error: unknown = null;
    try {
      ({ rows, lse } = this.topK === undefined
        ? this.mergeDraws(C, batch, R)
        : this.mergeGroups(kern, C, batch, R, groupRanges, geo, params, me));
    } catch (e) {
      stage2Error = e;
    }
    const slots = batch * k;
    const owner = new Int32Array(slots).fill(-1);      // rank owning each drawn row
    const ownerSource = new Int32Array(slots);
    const ownerLocal = new Int32Array(slots);
    const reqLists: number[][] = Array.from({ length: R }, () => []);
    const reqSlots: number[][] = Array.from({ length: R }, () => []);
    if (rows) {
      for (let i = 0; i < slots; i++) {
        const j = rows[i];
        if (j < 0) continue;
        const [r, s, lr] = this.locate(geo, j);
        owner[i] = r; ownerSource[i] = s; ownerLocal[i] = lr;
        reqLists[r].push(s, lr);
        reqSlots[r].push(i);
      }
    }
    const reqCounts = reqLists.map((l) => 1 + l.length);
    const req = new Int32Array(reqCounts.reduce((a, b) => a + b, 0));
    {
      let o = 0;
      for (let r = 0; r < R; r++) {
        req[o++] = stage2Error === null ? 0 : 1;
        req.set(reqLists[r], o);
        o += reqLists[r].length;
      }
    }
    const Q = comm.alltoallv(req, reqCounts);
    bytes.fetch = (req.length - reqCounts[me]) * 4;
    this.raiseIfFailed(Array.from({ length: R }, (_, r) => Q.data[Q.offsets[r]]), stage2Error, 'merging the draws', call);
    // Answer: per requested row, the data keys' values then the cached embedding (float32 as bits).
    const keys = [...new Set(this.dataKeys)];
    const specs = L.sources[0].cache.specs;
    const widths = keys.map((key) => widthOf(specs[key].shape));
    const rowWidth = widths.reduce((a, b) => a + b, 0) + dim;
    const ansCounts: number[] = [];
    const answers: Int32Array[] = [];
    for (let r = 0; r < R; r++) {
      const n = (Q.counts[r] - 1) / 2;
      const out = new Int32Array(1 + n * rowWidth);
      const block = (Q.data as Int32Array).subarray(Q.offsets[r] + 1, Q.offsets[r] + Q.counts[r]);
      // Per source, its rows and where they go.
      for (let s = 0; s < L.sources.length; s++) {
        const pos: number[] = [], lrows: number[] = [];
        for (let m = 0; m < n; m++) if (block[2 * m] === s) { pos.push(m); lrows.push(block[2 * m + 1]); }
        if (pos.length === 0) continue;
        const store = L.sources[s].store;
        const idx = Int32Array.from(lrows);
        let col = 0;
        const put = (values: Float32Array | Int32Array, width: number, isFloat: boolean): void => {
          for (let m = 0; m < pos.length; m++) {
            const base = 1 + pos[m] * rowWidth + col;
            for (let w = 0; w < width; w++) out[base + w] = isFloat ? floatBits(values[m * width + w]) : values[m * width + w];
          }
          col += width;
        };
        keys.forEach((key, ki) => put(store.gatherRows(key, idx), widths[ki], specs[key].dtype !== 'int32'));
        put(store.gatherRows(this.embeddingKey, idx), dim, true);
      }
      answers.push(out);
      ansCounts.push(out.length);
    }
    const ans = new Int32Array(ansCounts.reduce((a, b) => a + b, 0));
    { let o = 0; for (const a of answers) { ans.set(a, o); o += a.length; } }
    const A = comm.alltoallv(ans, ansCounts);
    bytes.fetch += (ans.length - ansCounts[me]) * 4;
    const drawnRows = rows!;
    let numValid = 0;
    for (let i = 0; i < slots; i++) if (drawnRows[i] >= 0) numValid++;
    let gathered: { data: Record<string, Float32Array | Int32Array>; embeddings: Float32Array } | null = null;
    if (numValid > 0) {
      const data: Record<string, Float32Array | Int32Array> = {};
      keys.forEach((key, ki) => {
        data[key] = specs[key].dtype === 'int32' ? new Int32Array(numValid * widths[ki]) : new Float32Array(numValid * widths[ki]);
      });
      const embeddings = new Float32Array(slots * dim);
      const compact = new Int32Array(slots);
      { let c = 0; for (let i = 0; i < slots; i++) compact[i] = drawnRows[i] >= 0 ? c++ : -1; }
      const Ad = A.data as Int32Array;
      for (let r = 0; r < R; r++) {
        reqSlots[r].forEach((slot, m) => {
          const base = A.offsets[r] + 1 + m * rowWidth;
          let col = 0;
          keys.forEach((key, ki) => {
            const w = widths[ki], dst = data[key], isFloat = specs[key].dtype !== 'int32';
            for (let x = 0; x < w; x++) dst[compact[slot] * w + x] = isFloat ? bitsFloat(Ad[base + col + x]) : Ad[base + col + x];
            col += w;
          });
          for (let x = 0; x < dim; x++) embeddings[slot * dim + x] = bitsFloat(Ad[base + col + x]);
        });
      }
      gathered = { data, embeddings };
    }

    // ---- 4. the loss on the owner; fresh embeddings back to the owning shards
    let losses: ReturnType<CacheClassificationLoss['_lossFromDraws']> | null = null;
    let stage4Error: unknown = null;
    let negValues: Float32Array | null = null;
    try {
      losses = this._lossFromDraws(names, docNetwork, L.q, L.p, drawnRows, lse!, gathered, specs);
      negValues = losses.neg.dataSync() as Float32Array;
    } catch (e) {
      stage4Error = e;
    }
    const refCounts = new Array<number>(R).fill(1);
    if (negValues) for (let i = 0; i < slots; i++) if (owner[i] >= 0) refCounts[owner[i]] += 2 + dim;
    const refBuf = new Int32Array(refCounts.reduce((a, b) => a + b, 0));
    {
      const at = new Array<number>(R);
      let o = 0;
      for (let r = 0; r < R; r++) { at[r] = o + 1; refBuf[o] = stage4Error === null ? 0 : 1; o += refCounts[r]; }
      if (negValues) {
        for (let i = 0; i < slots; i++) {
          const r = owner[i];
          if (r < 0) continue;
          refBuf[at[r]++] = ownerSource[i];
          refBuf[at[r]++] = ownerLocal[i];
          for (let x = 0; x < dim; x++) refBuf[at[r]++] = floatBits(negValues[i * dim + x]);
        }
      }
    }
    let F: ReturnType<Communicator['alltoallv']>;
    try {
      F = comm.alltoallv(refBuf, refCounts);
    } catch (e) {
      if (losses) tf.dispose([losses.trainingLoss, losses.interpretableLoss, losses.staleness, losses.neg]);
      throw e;
    }
    bytes.refresh = (refBuf.length - refCounts[me]) * 4;
    const failedAt4 = Array.from({ length: R }, (_, r) => F.data[F.offsets[r]]);
    if (stage4Error !== null || failedAt4.some((v) => v !== 0)) {
      if (losses) tf.dispose([losses.trainingLoss, losses.interpretableLoss, losses.staleness, losses.neg]);
      this.raiseIfFailed(failedAt4, stage4Error, 'the loss (docNetwork)', call);
    }
    const ls = losses!;
    ls.neg.dispose();  // the owner's copy; this shard's refresh is what it received
    const embeddingShape = specs[this.embeddingKey].shape;
    const perSource = L.sources.map(() => ({ rows: [] as number[], values: [] as number[] }));
    const Fd = F.data as Int32Array;
    for (let r = 0; r < R; r++) {
      const end = F.offsets[r] + F.counts[r];
      for (let o = F.offsets[r] + 1; o < end; o += 2 + dim) {
        const ps = perSource[Fd[o]];
        ps.rows.push(Fd[o + 1]);
        for (let x = 0; x < dim; x++) ps.values.push(bitsFloat(Fd[o + 2 + x]));
      }
    }
    const updatedItemData: Record<string, Record<string, tf.Tensor>> = {};
    const updatedItemIndices: Record<string, Int32Array> = {};
    const updatedItemMask: Record<string, Uint8Array> = {};
    L.sources.forEach((s, si) => {
      const ps = perSource[si];
      const m = ps.rows.length;
      if (m === 0) {
        // Nothing for this shard: one masked-out row (index -1), which the handlers skip.
        updatedItemData[s.name] = { [this.embeddingKey]: tf.zeros([1, ...embeddingShape]) };
        updatedItemIndices[s.name] = Int32Array.of(-1);
        updatedItemMask[s.name] = Uint8Array.of(0);
        return;
      }
      updatedItemData[s.name] = { [this.embeddingKey]: tf.tensor(Float32Array.from(ps.values), [m, ...embeddingShape], 'float32') };
      updatedItemIndices[s.name] = Int32Array.from(ps.rows);
      updatedItemMask[s.name] = new Uint8Array(m).fill(1);
    });
    this.calls = call + 1;
    this.lastBytesSent = bytes;
    return {
      trainingLoss: ls.trainingLoss, interpretableLoss: ls.interpretableLoss, staleness: ls.staleness,
      updatedItemData, updatedItemIndices, updatedItemMask,
    };
  }

  // ------------------------------------------------------------------ parts

  /** The checks of CacheClassificationLoss.compute on this rank's arguments. */
  private validateLocal(names: LossArgNames, docNetwork: DocNetwork, queryEmbeddings: tf.Tensor2D,
                        posDocEmbeddings: tf.Tensor2D, caches: NegativeCache | Record<string, NegativeCache>) {
    const args = checkComputeArgs(names, docNetwork, queryEmbeddings, posDocEmbeddings, caches, this.embeddingKey,
      this.dataKeys);
    return { ...args, queries: finiteQueries(args.q, args.dim) };
  }

  /** Throws on every rank when any rank failed: its own error there, ERR_DISTRIBUTED_PEER_ERROR elsewhere. */
  private raiseIfFailed(status: number[], localError: unknown, stage: string, call: number): void {
    if (localError !== null) throw localError;
    const failed = status.map((v, r) => (v !== 0 ? r : -1)).filter((r) => r >= 0);
    if (failed.length === 0) return;
    const comm = this.communicator;
    const who = failed.length === 1 ? `rank ${failed[0]}` : `ranks ${failed.join(', ')}`;
    const err = new NegativeCacheError('ERR_DISTRIBUTED_PEER_ERROR',
      `negative-cache: rank ${comm.rank} of ${comm.size}: DistributedCacheClassificationLoss call ${call}: ${who} failed in ${stage} `
      + `(the error is thrown there); nothing changed on any rank`);
    (err as NegativeCacheError & { ranks: number[] }).ranks = failed;
    throw err;
  }

  /** Sizes and offsets from the header; ERR_DISTRIBUTED_MISMATCH on every rank when they do not fit together. */
  private geometry(H: { data: Float64Array | Float32Array | Int32Array | Uint8Array; counts: Int32Array; offsets: Int32Array },
                   R: number, ns: number, dim: number, call: number): Geometry {
    const comm = this.communicator;
    const fields: string[] = [];
    const per = (i: number): number[] => Array.from({ length: R }, (_, r) => H.data[H.offsets[r] + i]);
    const nsOf = Array.from({ length: R }, (_, r) => H.counts[r] - 4);
    if (nsOf.some((v) => v !== ns)) fields.push(`number of sources: ${nsOf.join(', ')}`);
    const dims = per(2), calls = per(3);
    if (dims.some((v) => v !== dim)) fields.push(`dimension: ${dims.join(', ')}`);
    if (calls.some((v) => v !== call)) fields.push(`call counter: ${calls.join(', ')}`);
    if (fields.length > 0) {
      throw new NegativeCacheError('ERR_DISTRIBUTED_MISMATCH',
        `negative-cache: rank ${comm.rank} of ${R}: DistributedCacheClassificationLoss: the ranks disagree (values in rank order): ${fields.join('; ')}`);
    }
    const batches = per(1);
    const queryStart: number[] = [];
    let t = 0;
    for (const b of batches) { queryStart.push(t); t += b; }
    const sizes = Array.from({ length: R }, (_, r) => Array.from({ length: ns }, (_, s) => H.data[H.offsets[r] + 4 + s]));
    const start = Array.from({ length: R }, () => new Array<number>(ns).fill(0));
    let g = 0;
    for (let s = 0; s < ns; s++) for (let r = 0; r < R; r++) { start[r][s] = g; g += sizes[r][s]; }
    if (g > 0x7fffffff) throw rangeError('caches', 'at most 2^31 - 1 rows over all shards', g);
    return { batches, queryStart, totalQueries: t, sizes, start, total: g };
  }

  /** What every rank must agree on (checked once, at the first call). */
  private configOf(sources: Source[], dim: number): Record<string, unknown> {
    const t = this.scoreTransform;
    const r = this.reducer;
    const rf = this.retrievalFn;
    return {
      dim, embeddingKey: this.embeddingKey, dataKeys: [...this.dataKeys],
      sources: sources.map((s) => s.name),
      specs: sources.map((s) => JSON.stringify(s.cache.specs)),
      seed: this.seed, numNegatives: this.numNegatives, topK: this.topK ?? 0,
      scoreTransform: t === undefined ? 'none' : typeof t === 'number' ? t : 'function',
      reducer: typeof r === 'function' ? 'function' : r,
      retrievalFn: rf instanceof MaxScoreRetrievalFn ? 'max' : `gumbel(invTemp=${(rf as GumbelMaxRetrievalFn).invTemp})`,
      scoreEmptyRows: this.scoreEmptyRows,
    };
  }

  /** The shard, rank and local row of global row j. */
  private locate(geo: Geometry, j: number): [number, number, number] {
    const R = geo.sizes.length, ns = geo.sizes[0].length;
    for (let s = ns - 1; s >= 0; s--) {
      for (let r = R - 1; r >= 0; r--) {
        if (j >= geo.start[r][s] && geo.sizes[r][s] > 0) {
          if (j < geo.start[r][s] + geo.sizes[r][s]) return [r, s, j - geo.start[r][s]];
        }
      }
    }
    throw new Error(`negative-cache: internal: global row ${j} in no shard`);
  }

  /** Scores of `batch` queries against one source, dense (scale or function applied, unfilled rows -inf). */
  private denseScores(kern: ReturnType<typeof kernelsFor>, src: Source, queries: Float32Array, batch: number,
                      dim: number): Float32Array {
    const t = this.scoreTransform;
    const req: ScoreRequest = {
      queries, batch, dim, sources: [{ store: src.store, key: this.embeddingKey }],
      scale: typeof t === 'number' ? t : 1, scoreEmptyRows: true,
    };
    let m = kern.scoreMatrix(req);
    if (typeof t === 'function') {
      tf.tidy(() => {
        const y = transformScores(t, tf.tensor2d(m, [batch, src.size]), 'the cache scores');
        m = Float32Array.from(y.dataSync() as Float32Array);
      });
    }
    if (!this.scoreEmptyRows) {
      const filled = src.store.readFilled();
      for (let j = 0; j < src.size; j++) {
        if (filled[j]) continue;
        for (let b = 0; b < batch; b++) m[b * src.size + j] = -Infinity;
      }
    }
    const bad = firstNonFinite(m, true);
    if (bad >= 0) throw scoreError(m[bad], Math.floor(bad / src.size));
    return m;
  }

  /**
   * Every gathered query against this shard: per query [lse, then k times
   * (perturbed score, score, global row)], rows -1 / scores -inf past the
   * shard's candidates.
   */
  private localDraws(kern: ReturnType<typeof kernelsFor>, sources: Source[], all: Float32Array, geo: Geometry, dim: number,
                     params: SampleParams): Float64Array {
    const B = geo.totalQueries, k = this.numNegatives, me = this.communicator.rank;
    const lse = new Float64Array(B).fill(-Infinity);
    const best = new BestLists(B, k);
    const score = new Map<number, number>();  // (b * total + row) -> S, for the kept entries
    const noise = new GumbelNoise(this.seed, params.call);
    const gumbel = params.mode === 'gumbel';
    const take = (b: number, l: number, row: number, s: number): void => {
      lse[b] = logAddExp(lse[b], l);
      if (row < 0) return;
      const p = gumbel ? params.invTemp * s + noise.at(b, row) : s;
      best.offer(b, p, row);
      score.set(b * geo.total + row, s);
    };
    sources.forEach((src, si) => {
      const columnOffset = geo.start[me][si];
      if (src.size === 0) return;
      if (typeof this.scoreTransform !== 'function') {
        const req: ScoreRequest = {
          queries: all, batch: B, dim, sources: [{ store: src.store, key: this.embeddingKey }],
          scale: typeof this.scoreTransform === 'number' ? this.scoreTransform : 1, scoreEmptyRows: this.scoreEmptyRows,
        };
        const r = kern.scoreAndSample(req, { ...params, rowOffset: 0, columnOffset });
        for (let b = 0; b < B; b++) {
          if (r.candidates[b] > 0 && !Number.isFinite(r.lse[b])) throw scoreError(r.lse[b], b);
          for (let d = 0; d < k; d++) take(b, d === 0 ? r.lse[b] : -Infinity, r.indices[b * k + d], r.scores[b * k + d]);
        }
        return;
      }
      const chunk = Math.max(1, Math.floor(DENSE_CHUNK / src.size));
      for (let b0 = 0; b0 < B; b0 += chunk) {
        const nb = Math.min(chunk, B - b0);
        const m = this.denseScores(kern, src, all.subarray(b0 * dim, (b0 + nb) * dim), nb, dim);
        const r = kern.sampleCandidates(m, nb, src.size, { ...params, rowOffset: b0, columnOffset });
        for (let b = 0; b < nb; b++) {
          for (let d = 0; d < k; d++) take(b0 + b, d === 0 ? r.lse[b] : -Infinity, r.indices[b * k + d], r.scores[b * k + d]);
        }
      }
    });
    const per = 1 + 3 * k;
    const out = new Float64Array(B * per);
    for (let b = 0; b < B; b++) {
      out[b * per] = lse[b];
      for (let d = 0; d < k; d++) {
        const row = best.rows[b * k + d];
        const o = b * per + 1 + 3 * d;
        out[o] = best.pert[b * k + d];
        out[o + 1] = row < 0 ? NaN : score.get(b * geo.total + row)!;
        out[o + 2] = row;
      }
    }
    return out;
  }

  /** For every rank and source, the global groups [g0, g1) that meet its shard. */
  private groupRanges(geo: Geometry): Array<Array<[number, number]>> {
    const K = this.topK!, N = geo.total;
    // The group of global row j: the largest g with groupStart(g) <= j (binary search; exact in float64).
    const groupOf = (j: number): number => {
      let lo = 0, hi = K - 1;
      while (lo < hi) {
        const mid = Math.ceil((lo + hi) / 2);
        if (groupStart(mid, N, K) <= j) lo = mid; else hi = mid - 1;
      }
      return lo;
    };
    return geo.sizes.map((perSource, r) => perSource.map((n, s): [number, number] => {
      if (n === 0) return [0, 0];
      const a = geo.start[r][s];
      return [groupOf(a), groupOf(a + n - 1) + 1];
    }));
  }

  /** topK: per gathered query, for each source's groups meeting this shard, (max score, its global row) or (-inf, -1). */
  private localGroups(kern: ReturnType<typeof kernelsFor>, sources: Source[], all: Float32Array, geo: Geometry, dim: number,
                      ranges: Array<[number, number]>): Float64Array {
    const B = geo.totalQueries, K = this.topK!, N = geo.total, me = this.communicator.rank;
    const per = 2 * ranges.reduce((n, [g0, g1]) => n + (g1 - g0), 0);
    const out = new Float64Array(B * per);
    for (let i = 0; i < out.length; i += 2) { out[i] = -Infinity; out[i + 1] = -1; }
    let base = 0;
    sources.forEach((src, si) => {
      const [g0, g1] = ranges[si];
      if (src.size === 0) return;
      const start = geo.start[me][si];
      const chunk = Math.max(1, Math.floor(DENSE_CHUNK / src.size));
      for (let b0 = 0; b0 < B; b0 += chunk) {
        const nb = Math.min(chunk, B - b0);
        const m = this.denseScores(kern, src, all.subarray(b0 * dim, (b0 + nb) * dim), nb, dim);
        for (let b = 0; b < nb; b++) {
          const o = (b0 + b) * per + base;
          let g = g0;
          for (let c = 0; c < src.size; c++) {
            const j = start + c;
            while (g + 1 < g1 && groupStart(g + 1, N, K) <= j) g++;
            const s = m[b * src.size + c];
            if (s === -Infinity) continue;
            const e = o + 2 * (g - g0);
            if (out[e + 1] < 0 || s > out[e]) { out[e] = s; out[e + 1] = j; }
          }
        }
      }
      base += 2 * (g1 - g0);
    });
    return out;
  }

  /** The owner's merge without topK: global lse and the k best of the union, per own query. */
  private mergeDraws(C: { data: Float64Array | Float32Array | Int32Array | Uint8Array; offsets: Int32Array }, batch: number,
                     R: number): { rows: Int32Array; lse: Float32Array } {
    const k = this.numNegatives, per = 1 + 3 * k;
    const best = new BestLists(batch, k);
    const lse = new Float32Array(batch);
    for (let b = 0; b < batch; b++) {
      let l = -Infinity;
      for (let r = 0; r < R; r++) {
        const o = C.offsets[r] + 1 + b * per;
        l = logAddExp(l, C.data[o]);
        for (let d = 0; d < k; d++) {
          const row = C.data[o + 1 + 3 * d + 2];
          if (row >= 0) best.offer(b, C.data[o + 1 + 3 * d], row);
        }
      }
      lse[b] = l;
    }
    return { rows: best.rows, lse };
  }

  /** The owner's merge with topK: the K candidates (max per global group), then the draw among them. */
  private mergeGroups(kern: ReturnType<typeof kernelsFor>, C: { data: Float64Array | Float32Array | Int32Array | Uint8Array; offsets: Int32Array },
                      batch: number, R: number, ranges: Array<Array<[number, number]>>, geo: Geometry, params: SampleParams,
                      me: number): { rows: Int32Array; lse: Float32Array } {
    const K = this.topK!, k = this.numNegatives;
    const scores = new Float32Array(batch * K).fill(-Infinity);
    const rowOf = new Int32Array(batch * K).fill(-1);
    for (let r = 0; r < R; r++) {
      const per = 2 * ranges[r].reduce((n, [g0, g1]) => n + (g1 - g0), 0);
      for (let b = 0; b < batch; b++) {
        let o = C.offsets[r] + 1 + b * per;
        for (const [g0, g1] of ranges[r]) {
          for (let g = g0; g < g1; g++, o += 2) {
            const row = C.data[o + 1];
            if (row < 0) continue;
            const s = C.data[o], e = b * K + g;
            if (rowOf[e] < 0 || s > scores[e] || (s === scores[e] && row < rowOf[e])) { scores[e] = s; rowOf[e] = row; }
          }
        }
      }
    }
    const res = kern.sampleCandidates(scores, batch, K, { ...params, rowOffset: geo.queryStart[me] });
    for (let b = 0; b < batch; b++) if (res.candidates[b] > 0 && !Number.isFinite(res.lse[b])) throw scoreError(res.lse[b], b);
    const rows = new Int32Array(batch * k);
    for (let i = 0; i < rows.length; i++) {
      const c = res.indices[i];
      rows[i] = c < 0 ? -1 : rowOf[Math.floor(i / k) * K + c];
    }
    return { rows, lse: res.lse };
  }
}

function scoreError(v: number, row: number): RangeError {
  return rangeError('scores', 'finite (check queryEmbeddings, the cached embeddings and scoreTransform)',
    `${describe(v)} for gathered query row ${row}`);
}

/** @internal The store type, for tests. */
export type { StoreBackend };
