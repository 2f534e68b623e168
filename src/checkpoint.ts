/**
 * Checkpoints (docs/checkpoint.md): one file per checkpoint holding caches
 * (every row, ages, filled flags, specs and storage types) and, for a
 * handler, the training state around them.
 *
 * Layout, little-endian throughout:
 *
 *   file header (24 bytes): "NEGCACHE", u32 version (1), u32 sections,
 *                           u32 flags (0), u32 CRC32C of the 20 bytes before
 *   section:  header (24 bytes): 4-byte tag, u32 index, u32 column,
 *                                u64 payload bytes, u32 CRC32C of the 20 before
 *             payload
 *             u32 CRC32C of the payload
 *   sections, in this order: META (JSON, CheckpointMeta below); per cache
 *   AGES (int32 per row), FILL (uint8 0/1 per row), DATA per column (the
 *   stored bytes: float32, float16, bfloat16 or int32 per element); then the
 *   BLOBs META names. Nothing may follow the last section.
 *
 * Native and CUDA stores are written and read by the addon (native/checkpoint.cc:
 * straight from the store memory, in chunks, the async save on a worker
 * thread); JS stores by the same format written out again below. Both sides
 * are tested against each other (test/80-checkpoint.test.js).
 */
import * as fs from 'fs';
import * as path from 'path';
import type { BackendName, StoreBackend } from './backend';
import { NegativeCache, storeOf, type Specs } from './cache';
import { describe, NegativeCacheError, typeError } from './errors';
import { JsCacheStore } from './js/cache_store';
import { loadAddon, type CheckpointWriteOptions, type NativeCheckpointReader, type NativeStoreHandle } from './native/addon';
import { callNative } from './native/cache_store';

export const CHECKPOINT_MAGIC = 'NEGCACHE';
export const CHECKPOINT_VERSION = 1;
const FILE_HEADER_BYTES = 24;
const SECTION_HEADER_BYTES = 24;
const CHUNK_BYTES = 8 << 20;
const MAX_META_BYTES = 64 << 20;
const FORMAT_NAME = 'negative-cache-checkpoint';

const TAGS = { META: tagOf('META'), AGES: tagOf('AGES'), FILL: tagOf('FILL'), DATA: tagOf('DATA'), BLOB: tagOf('BLOB') };
function tagOf(s: string): number {
  return (s.charCodeAt(0) | (s.charCodeAt(1) << 8) | (s.charCodeAt(2) << 16) | (s.charCodeAt(3) << 24)) >>> 0;
}
function tagName(t: number): string {
  let s = '';
  for (let i = 0; i < 4; i++) {
    const c = (t >>> (8 * i)) & 0xff;
    s += c >= 32 && c < 127 ? String.fromCharCode(c) : '?';
  }
  return s;
}

// ---- CRC32C ------------------------------------------------------------------

const CRC_TABLES: Uint32Array[] = (() => {
  const t: Uint32Array[] = [];
  for (let s = 0; s < 8; s++) t.push(new Uint32Array(256));
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? (c >>> 1) ^ 0x82f63b78 : c >>> 1;
    t[0][i] = c >>> 0;
  }
  for (let i = 0; i < 256; i++) {
    for (let s = 1; s < 8; s++) t[s][i] = ((t[s - 1][i] >>> 8) ^ t[0][t[s - 1][i] & 0xff]) >>> 0;
  }
  return t;
})();

/** CRC32C (Castagnoli) of `bytes` continuing from `crc` (0 to start), slicing-by-8 in TypeScript. */
export function crc32cJs(bytes: Uint8Array, crc = 0): number {
  const [t0, t1, t2, t3, t4, t5, t6, t7] = CRC_TABLES;
  let c = ~crc >>> 0;
  const n = bytes.length;
  let i = 0;
  for (; i + 8 <= n; i += 8) {
    const lo = (bytes[i] | (bytes[i + 1] << 8) | (bytes[i + 2] << 16) | (bytes[i + 3] << 24)) ^ c;
    c = t7[lo & 0xff] ^ t6[(lo >>> 8) & 0xff] ^ t5[(lo >>> 16) & 0xff] ^ t4[lo >>> 24] ^
      t3[bytes[i + 4]] ^ t2[bytes[i + 5]] ^ t1[bytes[i + 6]] ^ t0[bytes[i + 7]];
  }
  for (; i < n; i++) c = t0[(c ^ bytes[i]) & 0xff] ^ (c >>> 8);
  return ~c >>> 0;
}

/** CRC32C: the addon's (SSE4.2 or tables) when it is loaded, else crc32cJs. Same values. */
export function crc32c(bytes: Uint8Array, crc = 0): number {
  const addon = loadAddon();
  if (addon && addon.checkpoint && bytes.length >= 4096) return addon.checkpoint.crc32c(bytes, crc);
  return crc32cJs(bytes, crc);
}

// ---- META --------------------------------------------------------------------

/** One feature as stored in a checkpoint (file order = the saving cache's column order). */
export interface CheckpointColumn {
  key: string;
  dtype: 'float32' | 'int32';
  storage: 'float32' | 'float16' | 'bfloat16' | 'int32';
  shape: number[];
}
export interface CheckpointCache {
  name: string;
  size: number;
  /** The backend that saved it (informational: any backend loads any checkpoint). */
  backend: BackendName;
  columns: CheckpointColumn[];
}
export interface CheckpointMeta {
  format: typeof FORMAT_NAME;
  kind: 'cache' | 'handler';
  /** "negative-cache <version>". */
  writer: string;
  createdAt: string;
  caches: CheckpointCache[];
  /** Names of the BLOB sections, in file order. */
  blobs: string[];
  /** The handler's state (kind 'handler'). */
  handler?: unknown;
}

function writerName(): string {
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    return `negative-cache ${(require('../package.json') as { version: string }).version}`;
  } catch {
    return 'negative-cache';
  }
}

function cacheEntry(name: string, cache: NegativeCache, store: StoreBackend): CheckpointCache {
  return {
    name,
    size: cache.size,
    backend: store.kind,
    columns: store.columns.map((c) => {
      const spec = cache.specs[c.key];
      return { key: c.key, dtype: spec.dtype, storage: c.storage, shape: [...spec.shape] };
    }),
  };
}

// ---- errors ------------------------------------------------------------------

function loadError(code: string, file: string, problem: string): NegativeCacheError {
  return new NegativeCacheError(code, `negative-cache: cannot load checkpoint '${file}': ${problem}`);
}
function corrupt(file: string, problem: string): NegativeCacheError {
  return loadError('ERR_CHECKPOINT_CORRUPT', file, problem);
}
/** ERR_CHECKPOINT_MISMATCH: the file is intact but does not fit what it is loaded into. */
export function mismatch(file: string, problem: string): NegativeCacheError {
  return loadError('ERR_CHECKPOINT_MISMATCH', file, problem);
}
function ioError(file: string, what: string, e: unknown): NegativeCacheError {
  const err = e as NodeJS.ErrnoException;
  return new NegativeCacheError('ERR_CHECKPOINT_IO', `negative-cache: checkpoint '${file}': ${what}: ${err?.message ?? String(e)}`);
}

/** A checkpoint path: a non-empty string (TypeError naming argName otherwise). */
export function checkPath(argName: string, p: unknown): string {
  if (typeof p !== 'string' || p === '' || p.includes('\0')) throw typeError(argName, 'a non-empty file path (string)', p);
  return p;
}

/** Parses and checks the META JSON; ERR_CHECKPOINT_CORRUPT when it is not what this format writes. */
function parseMeta(file: string, text: string): CheckpointMeta {
  let m: unknown;
  try {
    m = JSON.parse(text);
  } catch (e) {
    throw corrupt(file, `the META section is not JSON (${(e as Error).message})`);
  }
  const bad = (what: string): never => { throw corrupt(file, `the META section is malformed: ${what}`); };
  const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
  if (!isObj(m)) return bad('not an object');
  if (m.format !== FORMAT_NAME) bad(`format ${describe(m.format)}`);
  if (m.kind !== 'cache' && m.kind !== 'handler') bad(`kind ${describe(m.kind)}`);
  if (!Array.isArray(m.caches)) bad('caches is not an array');
  if (!Array.isArray(m.blobs) || m.blobs.some((b) => typeof b !== 'string')) bad('blobs is not an array of names');
  for (const c of m.caches as unknown[]) {
    if (!isObj(c) || typeof c.name !== 'string' || !Number.isSafeInteger(c.size) || (c.size as number) < 1 ||
        (c.size as number) > 0x7fffffff || !Array.isArray(c.columns) || c.columns.length === 0) {
      bad('a cache entry needs name, size in [1, 2^31-1] and columns');
    }
    const cc = c as Record<string, unknown>;
    for (const col of cc.columns as unknown[]) {
      if (!isObj(col) || typeof col.key !== 'string' || !Array.isArray(col.shape) ||
          col.shape.some((d) => !Number.isSafeInteger(d) || (d as number) < 1) ||
          !((col.dtype === 'int32' && col.storage === 'int32') ||
            (col.dtype === 'float32' && ['float32', 'float16', 'bfloat16'].includes(col.storage as string)))) {
        bad(`column ${describe(isObj(col) ? col.key : col)} of cache ${describe(cc.name)}`);
      }
    }
  }
  return m as unknown as CheckpointMeta;
}

/** Section count the header announces for a META. */
function sectionCount(meta: CheckpointMeta): number {
  let n = 1 + meta.blobs.length;
  for (const c of meta.caches) n += 2 + c.columns.length;
  return n;
}

// ---- the JS writer -------------------------------------------------------------

function fileHeader(sections: number): Uint8Array {
  const h = new Uint8Array(FILE_HEADER_BYTES);
  const v = new DataView(h.buffer);
  for (let i = 0; i < 8; i++) h[i] = CHECKPOINT_MAGIC.charCodeAt(i);
  v.setUint32(8, CHECKPOINT_VERSION, true);
  v.setUint32(12, sections, true);
  v.setUint32(16, 0, true);
  v.setUint32(20, crc32cJs(h.subarray(0, 20)), true);
  return h;
}

function sectionHeader(tag: number, index: number, column: number, length: number): Uint8Array {
  const h = new Uint8Array(SECTION_HEADER_BYTES);
  const v = new DataView(h.buffer);
  v.setUint32(0, tag, true);
  v.setUint32(4, index, true);
  v.setUint32(8, column, true);
  v.setBigUint64(12, BigInt(length), true);
  v.setUint32(20, crc32cJs(h.subarray(0, 20)), true);
  return h;
}

function u32(v: number): Uint8Array {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, v >>> 0, true);
  return b;
}

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/** What a JS save writes, as a sequence of pieces (payloads are views of the store's memory). */
function* jsPieces(metaBytes: Uint8Array, meta: CheckpointMeta, stores: JsCacheStore[], blobs: Uint8Array[]): Generator<Uint8Array> {
  yield fileHeader(sectionCount(meta));
  function* section(tag: number, index: number, column: number, payload: Uint8Array): Generator<Uint8Array> {
    yield sectionHeader(tag, index, column, payload.length);
    let crc = 0;
    for (let off = 0; off < payload.length; off += CHUNK_BYTES) {
      const piece = payload.subarray(off, Math.min(payload.length, off + CHUNK_BYTES));
      crc = crc32c(piece, crc);
      yield piece;
    }
    yield u32(crc);
  }
  yield* section(TAGS.META, 0, 0, metaBytes);
  for (let i = 0; i < stores.length; i++) {
    const s = stores[i];
    yield* section(TAGS.AGES, i, 0, bytesOf(s.readAge()));
    yield* section(TAGS.FILL, i, 0, s.filledView());
    for (let c = 0; c < s.columns.length; c++) yield* section(TAGS.DATA, i, c, bytesOf(s.columnView(s.columns[c].key)));
  }
  for (let i = 0; i < blobs.length; i++) yield* section(TAGS.BLOB, i, 0, blobs[i]);
}

let tmpCounter = 0;
function tempPathFor(file: string): string {
  return path.join(path.dirname(file), `.${path.basename(file)}.tmp-${process.pid}-js${tmpCounter++}`);
}

function checkTarget(file: string): void {
  let st: fs.Stats | undefined;
  try {
    st = fs.statSync(file);
  } catch {
    return;   // absent: fine
  }
  if (st.isDirectory()) throw new NegativeCacheError('ERR_CHECKPOINT_IO', `negative-cache: checkpoint '${file}': the path is a directory`);
}

function fsyncDir(file: string): void {
  const dir = path.dirname(file);
  const fd = fs.openSync(dir, 'r');
  try {
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
}

function writeJsSync(file: string, pieces: Iterable<Uint8Array>): void {
  checkTarget(file);
  const tmp = tempPathFor(file);
  let fd: number;
  try {
    fd = fs.openSync(tmp, 'wx', 0o644);
  } catch (e) {
    throw ioError(file, `cannot create the temporary file '${tmp}'`, e);
  }
  try {
    for (const p of pieces) {
      let off = 0;
      while (off < p.length) off += fs.writeSync(fd, p, off, p.length - off);
    }
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = -1;
    fs.renameSync(tmp, file);
  } catch (e) {
    if (fd >= 0) try { fs.closeSync(fd); } catch { /* already failing */ }
    try { fs.unlinkSync(tmp); } catch { /* gone */ }
    throw e instanceof NegativeCacheError ? e : ioError(file, 'write', e);
  }
  try { fsyncDir(file); } catch (e) { throw ioError(file, 'fsync of the folder', e); }
}

async function writeJsAsync(file: string, pieces: Iterable<Uint8Array>): Promise<void> {
  checkTarget(file);
  const tmp = tempPathFor(file);
  let fh: fs.promises.FileHandle | null;
  try {
    fh = await fs.promises.open(tmp, 'wx', 0o644);
  } catch (e) {
    throw ioError(file, `cannot create the temporary file '${tmp}'`, e);
  }
  try {
    for (const p of pieces) {
      let off = 0;
      while (off < p.length) off += (await fh.write(p, off, p.length - off)).bytesWritten;
    }
    await fh.sync();
    await fh.close();
    fh = null;
    await fs.promises.rename(tmp, file);
  } catch (e) {
    if (fh) await fh.close().catch(() => undefined);
    await fs.promises.unlink(tmp).catch(() => undefined);
    throw e instanceof NegativeCacheError ? e : ioError(file, 'write', e);
  }
  try {
    const dh = await fs.promises.open(path.dirname(file), 'r');
    try { await dh.sync(); } finally { await dh.close(); }
  } catch (e) {
    throw ioError(file, 'fsync of the folder', e);
  }
}

// ---- the JS reader -------------------------------------------------------------

/** A checkpoint being read: META first, then the stores in file order, the blobs, finish(). */
interface CheckpointReader {
  readonly meta: CheckpointMeta;
  readStore(index: number, store: StoreBackend, columnMap: number[]): void;
  /** readStore without blocking the event loop (the rows are read on another thread, or with fs callbacks). */
  readStoreAsync(index: number, store: StoreBackend, columnMap: number[]): Promise<void>;
  readBlob(index: number): Uint8Array;
  finish(): void;
  close(): void;
}

class JsReader implements CheckpointReader {
  readonly meta: CheckpointMeta;
  private fd: number;
  private offset = 0;
  private readonly fileSize: number;
  private sections = 0;
  private sectionsRead = 0;

  constructor(private readonly file: string) {
    try {
      this.fd = fs.openSync(file, 'r');
    } catch (e) {
      throw ioError(file, 'cannot open', e);
    }
    try {
      const st = fs.fstatSync(this.fd);
      if (st.isDirectory()) throw new NegativeCacheError('ERR_CHECKPOINT_IO', `negative-cache: checkpoint '${file}': the path is a directory`);
      this.fileSize = st.size;
      if (this.fileSize < FILE_HEADER_BYTES) throw corrupt(file, `truncated: ${this.fileSize} bytes, shorter than the header`);
      const h = this.read(FILE_HEADER_BYTES, 'the file header');
      for (let i = 0; i < 8; i++) {
        if (h[i] !== CHECKPOINT_MAGIC.charCodeAt(i)) throw corrupt(file, 'not a negative-cache checkpoint (bad magic bytes)');
      }
      const v = new DataView(h.buffer, h.byteOffset, h.byteLength);
      if (crc32cJs(h.subarray(0, 20)) !== v.getUint32(20, true)) throw corrupt(file, 'file header checksum mismatch');
      const version = v.getUint32(8, true), flags = v.getUint32(16, true);
      if (version !== CHECKPOINT_VERSION || flags !== 0) {
        throw loadError('ERR_CHECKPOINT_VERSION', file, `format version ${version} (flags ${flags}); ` +
          `this version of negative-cache reads format version ${CHECKPOINT_VERSION}`);
      }
      this.sections = v.getUint32(12, true);
      if (this.sections < 1) throw corrupt(file, 'the header announces no sections');
      const n = this.sectionHeader(TAGS.META, 0, 0, -1, 'the META section');
      if (n > MAX_META_BYTES) throw corrupt(file, `META section of ${n} bytes (at most 64 MiB)`);
      const metaBytes = this.read(n, 'the META section');
      this.trailer(crc32c(metaBytes), 'the META section');
      this.meta = parseMeta(file, Buffer.from(metaBytes.buffer, metaBytes.byteOffset, metaBytes.byteLength).toString('utf8'));
    } catch (e) {
      this.close();
      throw e;
    }
  }

  private readInto(dst: Uint8Array, what: string): void {
    let off = 0;
    while (off < dst.length) {
      let r: number;
      try {
        r = fs.readSync(this.fd, dst, off, Math.min(dst.length - off, 1 << 30), this.offset);
      } catch (e) {
        throw ioError(this.file, `read of ${what}`, e);
      }
      if (r === 0) throw corrupt(this.file, `truncated: the file ends at byte ${this.offset} inside ${what}`);
      off += r;
      this.offset += r;
    }
  }

  private read(n: number, what: string): Uint8Array {
    const b = new Uint8Array(n);
    this.readInto(b, what);
    return b;
  }

  private sectionHeader(tag: number, index: number, column: number, expected: number, what: string): number {
    if (this.sectionsRead >= this.sections) {
      throw corrupt(this.file, `the header announces ${this.sections} sections but ${what} follows them`);
    }
    const where = `section ${this.sectionsRead} (${what})`;
    if (this.fileSize - this.offset < SECTION_HEADER_BYTES + 4) {
      throw corrupt(this.file, `truncated: the file ends at byte ${this.fileSize} before ${where}`);
    }
    const h = this.read(SECTION_HEADER_BYTES, what);
    const v = new DataView(h.buffer);
    if (crc32cJs(h.subarray(0, 20)) !== v.getUint32(20, true)) throw corrupt(this.file, `${where}: header checksum mismatch`);
    const t = v.getUint32(0, true), i = v.getUint32(4, true), c = v.getUint32(8, true);
    const big = v.getBigUint64(12, true);
    if (t !== tag || i !== index || c !== column) {
      throw corrupt(this.file, `${where}: expected ${tagName(tag)} #${index}.${column}, found ${tagName(t)} #${i}.${c}`);
    }
    const left = this.fileSize - this.offset - 4;
    if (big > BigInt(left)) throw corrupt(this.file, `truncated: ${where} announces ${big} bytes, the file has ${left} left`);
    const length = Number(big);
    if (expected >= 0 && length !== expected) throw corrupt(this.file, `${where}: ${length} bytes where the cache needs ${expected}`);
    this.sectionsRead++;
    return length;
  }

  private trailer(crc: number, what: string): void {
    const t = this.read(4, what);
    if (new DataView(t.buffer).getUint32(0, true) !== crc) {
      throw corrupt(this.file, `section ${this.sectionsRead - 1} (${what}): checksum mismatch`);
    }
  }

  /** readInto with fs.read (libuv's thread pool): the event loop runs meanwhile. */
  private async readIntoAsync(dst: Uint8Array, what: string): Promise<void> {
    let off = 0;
    while (off < dst.length) {
      const position = this.offset;
      let r: number;
      try {
        r = await new Promise<number>((resolve, reject) => {
          fs.read(this.fd, dst, off, Math.min(dst.length - off, 1 << 30), position, (e, n) => (e ? reject(e) : resolve(n)));
        });
      } catch (e) {
        throw ioError(this.file, `read of ${what}`, e);
      }
      if (r === 0) throw corrupt(this.file, `truncated: the file ends at byte ${this.offset} inside ${what}`);
      off += r;
      this.offset += r;
    }
  }

  private async payloadAsync(dst: Uint8Array, what: string): Promise<void> {
    let crc = 0;
    for (let off = 0; off < dst.length; off += CHUNK_BYTES) {
      const piece = dst.subarray(off, Math.min(dst.length, off + CHUNK_BYTES));
      await this.readIntoAsync(piece, what);
      crc = crc32c(piece, crc);
    }
    this.trailer(crc, what);
  }

  private payload(dst: Uint8Array, what: string): void {
    let crc = 0;
    for (let off = 0; off < dst.length; off += CHUNK_BYTES) {
      const piece = dst.subarray(off, Math.min(dst.length, off + CHUNK_BYTES));
      this.readInto(piece, what);
      crc = crc32c(piece, crc);
    }
    this.trailer(crc, what);
  }

  readStore(index: number, store: StoreBackend, columnMap: number[]): void {
    this.storeSections(index, store, columnMap, (dst, what) => { this.payload(dst, what); });
  }

  readStoreAsync(index: number, store: StoreBackend, columnMap: number[]): Promise<void> {
    return this.storeSections(index, store, columnMap, (dst, what) => this.payloadAsync(dst, what));
  }

  /**
   * AGES, FILL and the DATA sections of one store, each payload read by
   * `payload` (synchronous, or a promise each: the headers and trailers are
   * a few bytes, read in place; the payloads wait for their turn).
   */
  private storeSections<R extends void | Promise<void>>(index: number, store: StoreBackend, columnMap: number[],
                                                         payload: (dst: Uint8Array, what: string) => R): R {
    if (!(store instanceof JsCacheStore)) throw new TypeError('negative-cache: the JS checkpoint reader fills JS stores only');
    const size = store.size;
    const ages = new Int32Array(size);
    const filled = new Uint8Array(size);
    const steps: Array<() => R | void> = [];
    steps.push(() => { this.sectionHeader(TAGS.AGES, index, 0, size * 4, 'AGES'); });
    steps.push(() => payload(bytesOf(ages), 'AGES'));
    steps.push(() => { this.sectionHeader(TAGS.FILL, index, 0, size, 'FILL'); });
    steps.push(() => payload(filled, 'FILL'));
    steps.push(() => { for (let r = 0; r < size; r++) if (filled[r] > 1) throw corrupt(this.file, `FILL section: flag ${filled[r]} at row ${r}`); });
    for (let f = 0; f < columnMap.length; f++) {
      const col = store.columns[columnMap[f]];
      const view = bytesOf(store.columnView(col.key));
      steps.push(() => { this.sectionHeader(TAGS.DATA, index, f, view.length, 'DATA'); });
      steps.push(() => payload(view, 'DATA'));
    }
    steps.push(() => { store.restoreState(ages, filled); });
    let i = 0;
    const run = (): R | void => {
      while (i < steps.length) {
        const out = steps[i++]();
        if (out instanceof Promise) return out.then(run) as R;
      }
      return undefined;
    };
    return run() as R;
  }

  readBlob(index: number): Uint8Array {
    const n = this.sectionHeader(TAGS.BLOB, index, 0, -1, 'BLOB');
    const b = this.read(n, 'BLOB');
    this.trailer(crc32c(b), 'BLOB');
    return b;
  }

  finish(): void {
    if (this.sectionsRead !== this.sections) {
      throw corrupt(this.file, `the header announces ${this.sections} sections, the META describes ${this.sectionsRead}`);
    }
    if (this.offset !== this.fileSize) throw corrupt(this.file, `${this.fileSize - this.offset} unexpected bytes after the last section`);
    this.close();
  }

  close(): void {
    if (this.fd >= 0) {
      try { fs.closeSync(this.fd); } catch { /* closing anyway */ }
      this.fd = -1;
    }
  }
}

/** The addon's reader (native and CUDA stores). */
class NativeReader implements CheckpointReader {
  readonly meta: CheckpointMeta;
  private readonly r: NativeCheckpointReader;
  constructor(file: string) {
    const addon = loadAddon()!;
    this.r = callNative(() => new addon.checkpoint.Reader(file));
    try {
      this.meta = parseMeta(file, this.r.meta());
    } catch (e) {
      this.r.close();
      throw e;
    }
  }
  readStore(index: number, store: StoreBackend, columnMap: number[]): void {
    callNative(() => this.r.readStore(index, handleOf(store), columnMap));
  }
  readStoreAsync(index: number, store: StoreBackend, columnMap: number[]): Promise<void> {
    return callNative(() => this.r.readStoreAsync(index, handleOf(store), columnMap)).catch((e: unknown) => { throw asNegativeCacheError(e); });
  }
  readBlob(index: number): Uint8Array { return callNative(() => this.r.readBlob(index)); }
  finish(): void { callNative(() => this.r.finish()); }
  close(): void { this.r.close(); }
}

function handleOf(store: StoreBackend): NativeStoreHandle {
  const h = (store as { handle?: NativeStoreHandle }).handle;
  if (h === undefined) throw new TypeError(`negative-cache: a ${store.kind} store has no addon handle`);
  return h;
}

function openReader(file: string, target: BackendName): CheckpointReader {
  return target === 'js' ? new JsReader(file) : new NativeReader(file);
}

// ---- saving and loading caches -------------------------------------------------

/** What a checkpoint holds besides the caches. */
export interface CheckpointExtras {
  kind: 'cache' | 'handler';
  blobs?: Array<{ name: string; bytes: Uint8Array }>;
  handler?: unknown;
}

interface Prepared {
  meta: CheckpointMeta;
  metaText: string;
  stores: StoreBackend[];
  blobs: Uint8Array[];
  backend: 'js' | 'addon';
}

function prepare(argName: string, caches: Array<{ name: string; cache: NegativeCache }>, extras: CheckpointExtras): Prepared {
  const stores = caches.map((c) => storeOf(c.cache, argName));
  const js = stores.filter((s) => s instanceof JsCacheStore).length;
  if (js !== 0 && js !== stores.length) {
    throw new TypeError(`negative-cache: ${argName}: the caches of one checkpoint must all be on the JS backend or all on the addon's ` +
      `(got ${stores.map((s) => s.kind).join(', ')})`);
  }
  const blobs = extras.blobs ?? [];
  const meta: CheckpointMeta = {
    format: FORMAT_NAME,
    kind: extras.kind,
    writer: writerName(),
    createdAt: new Date().toISOString(),
    caches: caches.map((c, i) => cacheEntry(c.name, c.cache, stores[i])),
    blobs: blobs.map((b) => b.name),
  };
  if (extras.handler !== undefined) meta.handler = extras.handler;
  return { meta, metaText: JSON.stringify(meta), stores, blobs: blobs.map((b) => b.bytes), backend: js > 0 ? 'js' : 'addon' };
}

/** Writes caches (+ extras) to `file` atomically. */
export function writeCheckpoint(file: string, caches: Array<{ name: string; cache: NegativeCache }>, extras: CheckpointExtras,
                                options?: CheckpointWriteOptions): void {
  const p = prepare('cache', caches, extras);
  if (p.backend === 'js') {
    writeJsSync(file, jsPieces(Buffer.from(p.metaText, 'utf8'), p.meta, p.stores as JsCacheStore[], p.blobs));
  } else {
    const addon = loadAddon()!;
    callNative(() => addon.checkpoint.save(file, p.metaText, p.stores.map(handleOf), p.blobs, options));
  }
}

/**
 * The same off the main thread (the addon's worker for native/CUDA stores,
 * fs promises for JS stores). Every cache is busy until the promise settles
 * (updates throw ERR_BUSY, dispose() waits).
 */
export function writeCheckpointAsync(file: string, caches: Array<{ name: string; cache: NegativeCache }>, extras: CheckpointExtras,
                                     options?: CheckpointWriteOptions): Promise<void> {
  const p = prepare('cache', caches, extras);
  for (const c of caches) c.cache._beginBusy();
  const done = () => { for (const c of caches) c.cache._endBusy(); };
  let work: Promise<void>;
  try {
    if (p.backend === 'js') {
      work = writeJsAsync(file, jsPieces(Buffer.from(p.metaText, 'utf8'), p.meta, p.stores as JsCacheStore[], p.blobs));
    } else {
      const addon = loadAddon()!;
      work = addon.checkpoint.saveAsync(file, p.metaText, p.stores.map(handleOf), p.blobs, options);
    }
  } catch (e) {
    done();
    return Promise.reject(e);
  }
  return work.then(done, (e: unknown) => {
    done();
    throw asNegativeCacheError(e);
  });
}

/** A NegativeCacheError-shaped rejection of the addon as a NegativeCacheError instance. */
function asNegativeCacheError(e: unknown): unknown {
  const err = e as { name?: string; code?: unknown; message?: string };
  if (err && err.name === 'NegativeCacheError' && typeof err.code === 'string' && !(e instanceof NegativeCacheError)) {
    return new NegativeCacheError(err.code, err.message ?? 'negative-cache: native error');
  }
  return e;
}

/** A cache to load: the entry of the file it must match, and how to make its store. */
export interface LoadTarget {
  name: string;
  specs: Readonly<Specs>;
  size: number;
  backend: BackendName;
  createStore(): StoreBackend;
}

export interface Loaded {
  meta: CheckpointMeta;
  stores: StoreBackend[];
  blobs: Record<string, Uint8Array>;
}

/** Checks a file's cache entry against a target; ERR_CHECKPOINT_MISMATCH naming what differs. */
function checkEntry(file: string, entry: CheckpointCache, t: LoadTarget, label: string): void {
  if (entry.size !== t.size) throw mismatch(file, `${label} has ${entry.size} rows; this one has ${t.size}`);
  const want = Object.keys(t.specs);
  const got = entry.columns.map((c) => c.key);
  const missing = want.filter((k) => !got.includes(k)), extra = got.filter((k) => !want.includes(k));
  if (missing.length > 0 || extra.length > 0 || got.length !== want.length) {
    throw mismatch(file, `${label} has features ${got.join(', ')}; this one has ${want.join(', ')}`);
  }
  for (const c of entry.columns) {
    const s = t.specs[c.key];
    const storage = s.dtype === 'int32' ? 'int32' : s.storage;
    if (c.dtype !== s.dtype || c.storage !== storage || c.shape.length !== s.shape.length || c.shape.some((d, i) => d !== s.shape[i])) {
      throw mismatch(file, `${label}: feature '${c.key}' is ${c.dtype} [${c.shape.join(', ')}] stored as ${c.storage}; ` +
        `this one is ${s.dtype} [${s.shape.join(', ')}] stored as ${storage}`);
    }
  }
}

/**
 * Reads a checkpoint into fresh stores (one per target, in the file's order
 * of caches matched by name). Everything is checked before the caller sees a
 * store; on any failure the fresh stores are disposed and nothing else changed.
 */
export function readCheckpoint(file: string, kind: 'cache' | 'handler', targets: LoadTarget[]): Loaded {
  const { reader, ordered } = openChecked(file, kind, targets);
  const stores: StoreBackend[] = [];
  try {
    reader.meta.caches.forEach((entry, i) => {
      const store = ordered[i].createStore();
      stores.push(store);
      reader.readStore(i, store, columnMapOf(entry, store));
    });
    return finishRead(reader, targets, stores);
  } catch (e) {
    reader.close();
    for (const s of stores) s.dispose();
    throw e;
  }
}

/**
 * readCheckpoint that does not block the event loop while the rows are read
 * (native and CUDA: the addon's worker thread; JS: fs callbacks). Opening the
 * file and checking its header and META (a few KB) happens at once.
 */
export async function readCheckpointAsync(file: string, kind: 'cache' | 'handler', targets: LoadTarget[]): Promise<Loaded> {
  const { reader, ordered } = openChecked(file, kind, targets);
  const stores: StoreBackend[] = [];
  try {
    const caches = reader.meta.caches;
    for (let i = 0; i < caches.length; i++) {
      const store = ordered[i].createStore();
      stores.push(store);
      await reader.readStoreAsync(i, store, columnMapOf(caches[i], store));
    }
    return finishRead(reader, targets, stores);
  } catch (e) {
    reader.close();
    for (const s of stores) s.dispose();
    throw e;
  }
}

/** Opens a checkpoint and checks its META against the targets (their order in the file returned). */
function openChecked(file: string, kind: 'cache' | 'handler', targets: LoadTarget[]): { reader: CheckpointReader; ordered: LoadTarget[] } {
  const backends = new Set(targets.map((t) => t.backend === 'js' ? 'js' : 'addon'));
  if (backends.size > 1) throw new TypeError('negative-cache: the caches of one checkpoint load onto the JS backend or the addon, not both');
  const reader = openReader(file, targets[0]?.backend ?? 'js');
  try {
    const meta = reader.meta;
    if (meta.kind !== kind) {
      throw mismatch(file, kind === 'cache'
        ? 'it is a handler checkpoint (handler.save); restore it with handler.restore()'
        : 'it is a cache checkpoint (cache.save); load it with CacheManager.load()');
    }
    const names = meta.caches.map((c) => c.name);
    const want = targets.map((t) => t.name);
    if (names.length !== want.length || names.some((n) => !want.includes(n))) {
      throw mismatch(file, `it holds the caches ${names.map((n) => `'${n}'`).join(', ')}; expected ${want.map((n) => `'${n}'`).join(', ')}`);
    }
    const ordered: LoadTarget[] = [];
    meta.caches.forEach((entry) => {
      const t = targets.find((x) => x.name === entry.name)!;
      checkEntry(file, entry, t, kind === 'cache' ? 'the saved cache' : `the saved cache '${entry.name}'`);
      ordered.push(t);
    });
    return { reader, ordered };
  } catch (e) {
    reader.close();
    throw e;
  }
}

function columnMapOf(entry: CheckpointCache, store: StoreBackend): number[] {
  return entry.columns.map((c) => store.columns.findIndex((x) => x.key === c.key));
}

/** The blobs, the last checks, and the stores back in the caller's order of targets. */
function finishRead(reader: CheckpointReader, targets: LoadTarget[], stores: StoreBackend[]): Loaded {
  const meta = reader.meta;
  const blobs: Record<string, Uint8Array> = {};
  meta.blobs.forEach((name, i) => { blobs[name] = reader.readBlob(i); });
  reader.finish();
  const out = targets.map((t) => stores[meta.caches.findIndex((c) => c.name === t.name)]);
  return { meta, stores: out, blobs };
}

/** Sections a META announces (for the tests' hand-made files). */
export const _internal = { sectionCount, parseMeta, fileHeader, sectionHeader, TAGS };
