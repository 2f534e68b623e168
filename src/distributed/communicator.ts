/**
 * initDistributed() and the Communicator over MPI (DESIGN §6). Every argument
 * is validated here before anything is sent; the binding checks only what
 * protects memory. Collectives are synchronous, bounded by `timeoutMs`, and
 * checked across ranks (same collective, compatible sizes, same layout) before
 * any data moves. See docs/distributed.md.
 */
import * as tf from '@tensorflow/tfjs-core';
import { isMainThread } from 'worker_threads';
import { NegativeCacheError, describe, rangeError, typeError, typeErrorText } from '../errors';
import { loadMpiAddon, type MpiAddon, type MpiArray } from './addon';

export type CollectiveArray = MpiArray;
export type ReducibleArray = Float32Array | Float64Array | Int32Array;
export type ReduceOp = 'sum' | 'max' | 'min';

/** A gathered array: `data` holds rank r's part at [offsets[r], offsets[r] + counts[r]). */
export interface Gathered<T extends CollectiveArray> {
  data: T;
  counts: Int32Array;
  offsets: Int32Array;
}

export interface DistributedOptions {
  /**
   * How long a collective may wait for the other ranks before it throws
   * ERR_DISTRIBUTED_TIMEOUT (also the bound on the exit handshake).
   * Default: NEGATIVE_CACHE_MPI_TIMEOUT_MS, else 60000.
   */
  timeoutMs?: number;
}

export interface Communicator {
  readonly rank: number;
  readonly size: number;
  /** The deadline of each collective, in milliseconds. */
  readonly timeoutMs: number;
  /** What MPI reported at start-up: thread level provided, library, host name. */
  readonly info: { readonly threadLevel: string; readonly library: string; readonly host: string };
  /** The mean over ranks of each float32 gradient (new tensors; one fused allreduce). */
  allReduceMean(grads: Record<string, tf.Tensor>): Record<string, tf.Tensor>;
  /** Sets every rank's variables to root's values (one fused broadcast). */
  broadcastVariables(vars: tf.Variable[], root?: number): void;
  /** Returns when every rank has called barrier(). */
  barrier(): void;
  /** Elementwise sum/max/min over ranks (a new array; `values` is left as it was). */
  allreduce<T extends ReducibleArray>(values: T, op?: ReduceOp): T;
  /** Fills `values` in place with root's values (the same length on every rank) and returns it. */
  broadcast<T extends CollectiveArray>(values: T, root?: number): T;
  /** Every rank's array, in rank order; lengths may differ (`counts`, if given, must match on every rank). */
  allgather<T extends CollectiveArray>(values: T, counts?: ArrayLike<number>): Gathered<T>;
  /** Sends values[sendOffsets[p], +sendCounts[p]) to rank p; returns what each rank sent here, in rank order. */
  alltoallv<T extends CollectiveArray>(values: T, sendCounts: ArrayLike<number>): Gathered<T>;
  /** Throws ERR_DISTRIBUTED_MISMATCH on every rank, naming each differing field and each rank's value, unless all ranks passed equal values. */
  checkSame(name: string, values: Record<string, unknown>): void;
}

const DEFAULT_TIMEOUT_MS = 60000;
const REDUCE_CODES: Record<ReduceOp, number> = { sum: 0, max: 1, min: 2 };

function isPlainRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/** tf.Tensor by shape, not instanceof: the caller's tfjs may be another copy of tfjs-core. */
function isTensorLike(v: unknown): v is tf.Tensor {
  if (v === null || typeof v !== 'object') return false;
  const t = v as Partial<tf.Tensor>;
  return typeof t.dataSync === 'function' && Array.isArray(t.shape) && typeof t.dtype === 'string' && typeof t.size === 'number';
}

function isVariableLike(v: unknown): v is tf.Variable {
  return isTensorLike(v) && typeof (v as Partial<tf.Variable>).assign === 'function';
}

function isCollectiveArray(v: unknown): v is CollectiveArray {
  return v instanceof Float32Array || v instanceof Float64Array || v instanceof Int32Array || v instanceof Uint8Array;
}

function checkTimeout(name: string, v: unknown): number {
  if (typeof v !== 'number') throw typeError(name, 'a number of milliseconds', v);
  if (!Number.isFinite(v) || v <= 0) throw rangeError(name, 'a positive finite number of milliseconds', describe(v));
  return v;
}

function timeoutFromEnv(): number {
  const raw = process.env.NEGATIVE_CACHE_MPI_TIMEOUT_MS;
  if (raw === undefined || raw === '') return DEFAULT_TIMEOUT_MS;
  const v = Number(raw);
  if (!/^\s*\d+(\.\d*)?\s*$/.test(raw) || !(v > 0)) {
    throw rangeError('NEGATIVE_CACHE_MPI_TIMEOUT_MS', 'a positive number of milliseconds', JSON.stringify(raw));
  }
  return v;
}

/** 64-bit layout signature: two 32-bit FNV-1a hashes of `text`. */
function signatureOf(text: string): bigint {
  let a = 0x811c9dc5, b = 0x01000193 ^ 0x5bd1e995;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    a = Math.imul(a ^ c, 0x01000193);
    b = Math.imul(b ^ c, 0x01000193) ^ (b >>> 15);
  }
  return (BigInt(a >>> 0) << 32n) | BigInt(b >>> 0);
}

/** JSON with sorted keys, typed arrays as arrays; TypeError naming `name` for what JSON cannot carry. */
function canonical(value: unknown, name: string): string {
  if (value === null || typeof value === 'boolean' || typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number') return Number.isFinite(value) ? JSON.stringify(value) : String(value);
  if (typeof value === 'bigint') return `${value}n`;
  if (ArrayBuffer.isView(value) && !(value instanceof DataView)) {
    return canonical(Array.from(value as unknown as ArrayLike<number | bigint>), name);
  }
  if (Array.isArray(value)) return `[${value.map((v, i) => canonical(v, `${name}[${i}]`)).join(',')}]`;
  if (isPlainRecord(value) && (Object.getPrototypeOf(value) === Object.prototype || Object.getPrototypeOf(value) === null)) {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonical(value[k], `${name}.${k}`)}`).join(',')}}`;
  }
  throw typeError(name, 'a number, string, boolean, null, bigint, typed array, array or plain object', value);
}

function offsetsOf(counts: Int32Array): Int32Array {
  const out = new Int32Array(counts.length);
  for (let i = 1; i < counts.length; i++) out[i] = out[i - 1] + counts[i - 1];
  return out;
}

function rankList(ranks: number[]): string {
  return ranks.length === 1 ? `rank ${ranks[0]}` : `ranks ${ranks.join(', ')}`;
}

function clip(text: string, max = 160): string {
  return text.length > max ? `${text.slice(0, max)}…` : text;
}

/** The binding's NegativeCacheError-shaped errors as real NegativeCacheError instances. */
function rethrow(e: unknown): never {
  const x = e as { code?: unknown; message?: unknown; ranks?: unknown; sameCall?: unknown } | null;
  if (x && !(e instanceof NegativeCacheError) && typeof x.code === 'string' && x.code.startsWith('ERR_')) {
    const err = new NegativeCacheError(x.code, String(x.message));
    if (Array.isArray(x.ranks)) Object.assign(err, { ranks: x.ranks });
    if (typeof x.sameCall === 'boolean') Object.assign(err, { sameCall: x.sameCall });
    throw err;
  }
  throw e;
}

class MpiCommunicator implements Communicator {
  readonly rank: number;
  readonly size: number;
  readonly info: { readonly threadLevel: string; readonly library: string; readonly host: string };
  timeoutMs: number;
  private readonly addon: MpiAddon;

  constructor(addon: MpiAddon, timeoutMs: number) {
    this.addon = addon;
    let init;
    try {
      init = addon.init();
    } catch (e) {
      rethrow(e);
    }
    this.rank = init.rank;
    this.size = init.size;
    this.timeoutMs = timeoutMs;
    this.info = Object.freeze({ threadLevel: init.threadLevel, library: init.library, host: init.host });
  }

  /** Runs a binding call, turning its errors into NegativeCacheError. */
  private call<R>(fn: () => R): R {
    try {
      return fn();
    } catch (e) {
      return rethrow(e);
    }
  }

  /**
   * Runs a collective whose layout (sizes, shapes) all ranks must share. When
   * the ranks are in the same method but disagree, every rank follows up with
   * checkSame on the layout, so the error names the field and each rank's value.
   */
  private withLayout<R>(label: string, layout: Record<string, unknown>, fn: () => R): R {
    try {
      return this.call(fn);
    } catch (e) {
      if (e instanceof NegativeCacheError && e.code === 'ERR_DISTRIBUTED_MISMATCH' &&
          (e as NegativeCacheError & { sameCall?: boolean }).sameCall) {
        this.checkSame(`${label} layout`, layout);
      }
      throw e;
    }
  }

  allReduceMean(grads: Record<string, tf.Tensor>): Record<string, tf.Tensor> {
    if (!isPlainRecord(grads) || isTensorLike(grads)) {
      throw typeError('allReduceMean grads', 'an object mapping names to float32 tf.Tensors', grads);
    }
    const names = Object.keys(grads).sort();
    const layout: Record<string, unknown> = {};
    let total = 0;
    for (const name of names) {
      const t = grads[name] as unknown;
      const what = `allReduceMean grads[${JSON.stringify(name)}]`;
      if (!isTensorLike(t)) throw typeError(what, 'a float32 tf.Tensor', t);
      if (t.isDisposed) throw typeErrorText(what, 'a tensor that is not disposed', 'a disposed tensor');
      if (t.dtype !== 'float32') throw typeError(what, 'a float32 tf.Tensor', t);
      layout[name] = t.shape;
      total += t.size;
    }
    if (total > 0x7fffffff) throw rangeError('allReduceMean grads', 'at most 2^31-1 values in all', total);
    const fused = new Float32Array(total);
    let offset = 0;
    for (const name of names) {
      const t = grads[name];
      fused.set(t.dataSync() as Float32Array, offset);
      offset += t.size;
    }
    const signature = signatureOf(canonical(layout, 'layout'));
    this.withLayout('allReduceMean', layout, () => this.addon.allreduce('allReduceMean', fused, REDUCE_CODES.sum, this.timeoutMs, signature));
    if (this.size > 1) {
      for (let i = 0; i < fused.length; i++) fused[i] = fused[i] / this.size;
    }
    const out: Record<string, tf.Tensor> = {};
    offset = 0;
    for (const name of names) {
      const t = grads[name];
      out[name] = tf.tensor(fused.subarray(offset, offset + t.size), t.shape, 'float32');
      offset += t.size;
    }
    return out;
  }

  broadcastVariables(vars: tf.Variable[], root = 0): void {
    if (!Array.isArray(vars)) throw typeError('broadcastVariables vars', 'an array of tf.Variables', vars);
    this.checkRoot('broadcastVariables root', root);
    const layout: Record<string, unknown> = { count: vars.length };
    const bytes: number[] = [];
    vars.forEach((v, i) => {
      const what = `broadcastVariables vars[${i}]`;
      if (!isVariableLike(v)) throw typeError(what, 'a tf.Variable', v);
      if (v.isDisposed) throw typeErrorText(what, 'a variable that is not disposed', 'a disposed variable');
      if (v.dtype !== 'float32' && v.dtype !== 'int32' && v.dtype !== 'bool') {
        throw typeErrorText(what, "a variable of dtype 'float32', 'int32' or 'bool'", `dtype ${v.dtype}`);
      }
      layout[`vars[${i}]`] = `${v.dtype} [${v.shape.join(', ')}]`;
      bytes.push(v.size * (v.dtype === 'bool' ? 1 : 4));
    });
    const total = bytes.reduce((a, b) => a + b, 0);
    if (total > 0x7fffffff) throw rangeError('broadcastVariables vars', 'at most 2^31-1 bytes in all', total);
    // One byte buffer for every dtype: a single broadcast whatever the mix.
    const buf = new Uint8Array(total);
    const isRoot = this.rank === root;
    if (isRoot) {
      let at = 0;
      vars.forEach((v, i) => {
        const d = v.dataSync() as Float32Array | Int32Array | Uint8Array;
        buf.set(new Uint8Array(d.buffer, d.byteOffset, bytes[i]), at);
        at += bytes[i];
      });
    }
    const signature = signatureOf(canonical(layout, 'layout'));
    this.withLayout('broadcastVariables', layout, () => this.addon.broadcast('broadcastVariables', buf, root, this.timeoutMs, signature));
    if (isRoot) return;
    let at = 0;
    vars.forEach((v, i) => {
      const raw = buf.slice(at, at + bytes[i]).buffer;
      at += bytes[i];
      const values = v.dtype === 'float32' ? new Float32Array(raw) : v.dtype === 'int32' ? new Int32Array(raw) : new Uint8Array(raw);
      const t = tf.tensor(values, v.shape, v.dtype);
      v.assign(t);
      t.dispose();
    });
  }

  barrier(): void {
    this.call(() => this.addon.barrier('barrier', this.timeoutMs));
  }

  allreduce<T extends ReducibleArray>(values: T, op: ReduceOp = 'sum'): T {
    if (!(values instanceof Float32Array || values instanceof Float64Array || values instanceof Int32Array)) {
      throw typeError('allreduce values', 'a Float32Array, Float64Array or Int32Array', values);
    }
    if (!Object.prototype.hasOwnProperty.call(REDUCE_CODES, op)) throw rangeError('allreduce op', "'sum', 'max' or 'min'", describe(op));
    const out = values.slice() as T;
    this.call(() => this.addon.allreduce('allreduce', out, REDUCE_CODES[op], this.timeoutMs));
    return out;
  }

  broadcast<T extends CollectiveArray>(values: T, root = 0): T {
    if (!isCollectiveArray(values)) throw typeError('broadcast values', 'a Float32Array, Float64Array, Int32Array or Uint8Array', values);
    this.checkRoot('broadcast root', root);
    this.call(() => this.addon.broadcast('broadcast', values, root, this.timeoutMs));
    return values;
  }

  allgather<T extends CollectiveArray>(values: T, counts?: ArrayLike<number>): Gathered<T> {
    if (!isCollectiveArray(values)) throw typeError('allgather values', 'a Float32Array, Float64Array, Int32Array or Uint8Array', values);
    let signature: bigint | undefined;
    let layout: Record<string, unknown> = {};
    if (counts !== undefined) {
      const c = this.checkCounts('allgather counts', counts);
      if (c[this.rank] !== values.length) {
        throw rangeError(`allgather counts[${this.rank}]`, `this rank's values.length (${values.length})`, c[this.rank]);
      }
      layout = { counts: Array.from(c) };
      signature = signatureOf(canonical(layout, 'layout'));
    }
    const r = this.withLayout('allgather', layout, () => this.addon.allgatherv('allgather', values, this.timeoutMs, signature));
    return { data: r.data, counts: r.counts, offsets: offsetsOf(r.counts) };
  }

  alltoallv<T extends CollectiveArray>(values: T, sendCounts: ArrayLike<number>): Gathered<T> {
    if (!isCollectiveArray(values)) throw typeError('alltoallv values', 'a Float32Array, Float64Array, Int32Array or Uint8Array', values);
    const c = this.checkCounts('alltoallv sendCounts', sendCounts);
    const sum = c.reduce((a, b) => a + b, 0);
    if (sum !== values.length) throw rangeError('alltoallv sendCounts', `counts summing to values.length (${values.length})`, `a sum of ${sum}`);
    const r = this.call(() => this.addon.alltoallv('alltoallv', values, c, this.timeoutMs));
    return { data: r.data, counts: r.counts, offsets: offsetsOf(r.counts) };
  }

  checkSame(name: string, values: Record<string, unknown>): void {
    if (typeof name !== 'string' || name.length === 0) throw typeError('checkSame name', 'a non-empty string', name);
    if (!isPlainRecord(values)) throw typeError('checkSame values', 'an object mapping field names to values', values);
    const fields = Object.keys(values).sort();
    const mine: Record<string, string> = {};
    for (const f of fields) mine[f] = canonical(values[f], `checkSame values.${f}`);
    const payload = new TextEncoder().encode(JSON.stringify(mine));
    // The name travels in the header's label, so ranks checking different things are told so.
    const label = `checkSame ${name}`;
    const r = this.call(() => this.addon.allgatherv(label.slice(0, 63), payload, this.timeoutMs, signatureOf(name)));
    const decoder = new TextDecoder();
    const all: Array<Record<string, string>> = [];
    let at = 0;
    for (let p = 0; p < this.size; p++) {
      all.push(JSON.parse(decoder.decode(r.data.subarray(at, at + r.counts[p]))));
      at += r.counts[p];
    }
    const union = Array.from(new Set(all.flatMap((o) => Object.keys(o)))).sort();
    const diffs: string[] = [];
    for (const f of union) {
      const seen = new Map<string, number[]>();
      all.forEach((o, p) => {
        const v = Object.prototype.hasOwnProperty.call(o, f) ? o[f] : '(missing)';
        seen.set(v, [...(seen.get(v) ?? []), p]);
      });
      if (seen.size > 1) {
        diffs.push(`field ${JSON.stringify(f)}: ` + Array.from(seen, ([v, ranks]) => `${rankList(ranks)}: ${clip(v)}`).join(', '));
      }
    }
    if (diffs.length > 0) {
      throw new NegativeCacheError('ERR_DISTRIBUTED_MISMATCH',
        `negative-cache: rank ${this.rank} of ${this.size}: ${JSON.stringify(name)} differs across ranks: ${diffs.join('; ')}`);
    }
  }

  private checkRoot(name: string, root: unknown): void {
    if (typeof root !== 'number') throw typeError(name, 'a rank number', root);
    if (!Number.isInteger(root) || root < 0 || root >= this.size) {
      throw rangeError(name, `an integer rank in [0, ${this.size - 1}]`, describe(root));
    }
  }

  /** size non-negative integer counts as an Int32Array. */
  private checkCounts(name: string, counts: unknown): Int32Array {
    const c = counts as ArrayLike<unknown> | null;
    if (c === null || typeof c !== 'object' || typeof c.length !== 'number') {
      throw typeError(name, `an array of ${this.size} counts`, counts);
    }
    if (c.length !== this.size) throw rangeError(`${name}.length`, `the number of ranks (${this.size})`, c.length);
    const out = new Int32Array(this.size);
    for (let i = 0; i < this.size; i++) {
      const v = c[i];
      if (typeof v !== 'number') throw typeError(`${name}[${i}]`, 'a non-negative integer', v);
      if (!Number.isInteger(v) || v < 0 || v > 0x7fffffff) throw rangeError(`${name}[${i}]`, 'a non-negative integer below 2^31', describe(v));
      out[i] = v;
    }
    return out;
  }
}

let current: MpiCommunicator | null = null;
let uncaught: unknown;

function firstLine(e: unknown): string {
  const text = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return text.split('\n')[0].slice(0, 63);
}

/**
 * The process's communicator over MPI_COMM_WORLD: under mpirun/srun one rank
 * per process, otherwise a singleton (rank 0 of 1). The first call starts MPI
 * (MPI_Init_thread, MPI_THREAD_MULTIPLE requested) and arranges MPI_Finalize at
 * process exit; later calls return the same communicator (a given timeoutMs
 * replaces the old one). Throws NegativeCacheError ERR_NO_MPI, saying why,
 * when the MPI addon is unavailable.
 */
export function initDistributed(options: DistributedOptions = {}): Communicator {
  if (!isPlainRecord(options)) throw typeError('initDistributed options', 'an object { timeoutMs? }', options);
  const timeoutMs = options.timeoutMs === undefined ? timeoutFromEnv() : checkTimeout('initDistributed options.timeoutMs', options.timeoutMs);
  if (current) {
    if (options.timeoutMs !== undefined) current.timeoutMs = timeoutMs;
    return current;
  }
  if (!isMainThread) {
    throw new NegativeCacheError('ERR_NO_MPI',
      'negative-cache: initDistributed() must be called on the main thread: MPI belongs to the process, not to a worker');
  }
  const addon = loadMpiAddon();
  const comm = new MpiCommunicator(addon, timeoutMs);
  current = comm;
  // 'exit' handlers run before Node prints an uncaught error, so remember it:
  // the exit handshake tells the other ranks why this one left.
  process.on('uncaughtExceptionMonitor', (err) => {
    if (uncaught === undefined) uncaught = err;
  });
  process.on('exit', (code) => {
    const reason = uncaught !== undefined ? firstLine(uncaught) : '';
    const text = uncaught === undefined ? '' : uncaught instanceof Error && uncaught.stack ? uncaught.stack : String(uncaught);
    addon.finalize(code, comm.timeoutMs, reason, text);
  });
  return comm;
}
