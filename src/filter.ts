/**
 * IsInCacheFilterFn: which new items are not yet in a cache, by exact match
 * of their values on the given keys, in O(batch) per call.
 *
 * Each cache gets an index (row contents -> rows) built once in O(size) on
 * first use, then kept current from the cache's write listener (O(rows
 * written) per update). The index lives as long as the cache.
 */
import type { StoreBackend } from './backend';
import { NegativeCache, storeOf, type FeatureSpec, type Specs } from './cache';
import type { BatchLike } from './cache_manager';
import { toRows, widthOf } from './convert';
import { describe, typeError } from './errors';

/** Row contents of one cache: content key -> rows holding it. */
class RowIndex {
  readonly rowsByContent = new Map<string, number[]>();
  readonly contentOfRow: Array<string | undefined>;
  version = -1;
  unsubscribe: () => void = () => undefined;
  cache: NegativeCache | null = null;

  /** The index of rows with `filled` set, from the key columns (row-major [size, width] each). */
  constructor(size: number, readonly keys: readonly string[], columns: ArrayLike<number>[], widths: number[], filled: Uint8Array) {
    this.contentOfRow = new Array(size);
    for (let r = 0; r < size; r++) {
      if (filled[r]) this.add(r, contentKey(columns, widths, r));
    }
  }

  static of(cache: NegativeCache, keys: readonly string[]): RowIndex {
    const index = new RowIndex(cache.size, keys, keys.map((k) => cache.read(k)), keys.map((k) => widthOf(cache.specs[k].shape)),
      cache.readFilled());
    index.attach(cache);
    return index;
  }

  /** Follows `cache`'s writes from now on. */
  attach(cache: NegativeCache): void {
    this.cache = cache;
    this.version = cache.version;
    this.unsubscribe = cache.addWriteListener((rows) => this.rowsWritten(rows));
  }

  /**
   * The order of rows among equal contents (which one find() returns):
   * [buckets, then per bucket of two or more rows: its length and rows].
   */
  exportOrder(): Int32Array {
    const out: number[] = [0];
    for (const rows of this.rowsByContent.values()) {
      if (rows.length < 2) continue;
      out[0]++;
      out.push(rows.length);
      for (const r of rows) out.push(r);
    }
    return Int32Array.from(out);
  }

  /** Applies an exportOrder(); throws an Error saying what does not fit this index. */
  importOrder(order: Int32Array): void {
    const n = order.length > 0 ? order[0] : -1;
    if (n < 0) throw new Error('empty order');
    let p = 1;
    for (let b = 0; b < n; b++) {
      const len = order[p++];
      if (!(len >= 2) || p + len > order.length) throw new Error(`bucket ${b} runs past the end`);
      const rows = Array.from(order.subarray(p, p + len));
      p += len;
      const content = this.contentOfRow[rows[0]];
      const current = content === undefined ? undefined : this.rowsByContent.get(content);
      const sorted = [...rows].sort((x, y) => x - y);
      const have = current ? [...current].sort((x, y) => x - y) : [];
      if (!current || have.length !== sorted.length || have.some((r, i) => r !== sorted[i])) {
        throw new Error(`bucket ${b} (rows ${rows.slice(0, 4).join(', ')}${rows.length > 4 ? ', ...' : ''}) does not match the cache's rows`);
      }
      this.rowsByContent.set(content!, rows);
    }
    if (p !== order.length) throw new Error('trailing entries');
  }

  private add(row: number, content: string): void {
    this.contentOfRow[row] = content;
    const rows = this.rowsByContent.get(content);
    if (rows === undefined) this.rowsByContent.set(content, [row]);
    else rows.push(row);
  }

  private remove(row: number): void {
    const content = this.contentOfRow[row];
    if (content === undefined) return;
    this.contentOfRow[row] = undefined;
    const rows = this.rowsByContent.get(content)!;
    if (rows.length === 1) this.rowsByContent.delete(content);
    else rows.splice(rows.indexOf(row), 1);
  }

  private rowsWritten(rows: Int32Array): void {
    const cache = this.cache!;
    const store = storeOf(cache, 'cache');
    const columns = this.keys.map((k) => store.gatherRows(k, rows));
    const widths = this.keys.map((k) => widthOf(cache.specs[k].shape));
    for (let i = 0; i < rows.length; i++) {
      this.remove(rows[i]);
      this.add(rows[i], contentKey(columns, widths, i));
    }
    this.version = cache.version;
  }

  /** A row holding exactly `content`, or -1. */
  find(content: string): number {
    const rows = this.rowsByContent.get(content);
    return rows === undefined ? -1 : rows[0];
  }

  /** Every row holding exactly `content` (do not modify). */
  findAll(content: string): readonly number[] {
    return this.rowsByContent.get(content) ?? NO_ROWS;
  }
}

const NO_ROWS: readonly number[] = Object.freeze([]);

/** The content keys of rows 0..rows-1. */
function contentKeys(columns: ArrayLike<number>[], widths: number[], rows: number): string[] {
  const out = new Array<string>(rows);
  for (let r = 0; r < rows; r++) out[r] = contentKey(columns, widths, r);
  return out;
}

/**
 * The exact identity of row `r` over several columns: int32 values as
 * integers, float32 values by their bit patterns (so -0 and 0 differ and
 * NaN matches NaN of the same payload).
 */
function contentKey(columns: ArrayLike<number>[], widths: number[], r: number): string {
  let key = '';
  for (let c = 0; c < columns.length; c++) {
    const col = columns[c];
    const w = widths[c];
    const bits = col instanceof Float32Array ? new Int32Array(col.buffer, col.byteOffset, col.length) : col;
    for (let i = r * w, end = i + w; i < end; i++) key += bits[i] + ',';
    key += '|';
  }
  return key;
}

/**
 * true (1) = NOT yet in the cache: no filled row of the cache holds exactly
 * these values on every key of `keys`.
 *
 * Matching is exact on the values as stored: int32 features (ids) are the
 * natural keys; a float feature stored as float16/bfloat16 only matches
 * values that are exactly representable in that storage.
 */
export class IsInCacheFilterFn {
  readonly keys: readonly string[];
  readonly #indices = new WeakMap<NegativeCache, RowIndex>();

  constructor(keys: string[]) {
    if (!Array.isArray(keys) || keys.length === 0 || keys.some((k) => typeof k !== 'string')) {
      throw typeError('keys', 'a non-empty array of feature names', keys);
    }
    if (new Set(keys).size !== keys.length) throw typeError('keys', 'distinct feature names', `[${keys.join(', ')}]`);
    this.keys = Object.freeze([...keys]);
  }

  /** 1 for each new item that is not in the cache, 0 for one that is. O(batch) after the first call on a cache. */
  apply(cache: NegativeCache, newItems: Record<string, BatchLike>): Uint8Array {
    const rows = this.lookup(cache, newItems);
    const out = new Uint8Array(rows.length);
    for (let i = 0; i < rows.length; i++) out[i] = rows[i] < 0 ? 1 : 0;
    return out;
  }

  /**
   * Like apply(), and also 0 for a repeat within the batch: of several equal
   * new items only the first is kept (1) when none of them is in the cache.
   * This is the insert mask a handler uses to store every document once.
   */
  insertMask(cache: NegativeCache, newItems: Record<string, BatchLike>): Uint8Array {
    return this.classify(cache, this.contents(cache, newItems)).insertMask;
  }

  /** For each new item, a cache row holding exactly its values (one of them when several do), or -1. */
  lookup(cache: NegativeCache, newItems: Record<string, BatchLike>): Int32Array {
    return this.classify(cache, this.contents(cache, newItems)).cachedRows;
  }

  /**
   * @internal insertMask() and lookup() in one pass over rows already
   * checked and converted against the cache's specs (`values` holds at least
   * this filter's keys, `rows` rows each): the handlers' path.
   */
  _classifyRows(cache: NegativeCache, values: Record<string, Float32Array | Int32Array>, rows: number):
      { insertMask: Uint8Array; cachedRows: Int32Array } {
    storeOf(cache, 'cache');
    const columns = this.keys.map((key) => {
      this.specOf(cache, key);
      return values[key];
    });
    const widths = this.keys.map((key) => widthOf(cache.specs[key].shape));
    return this.classify(cache, contentKeys(columns, widths, rows));
  }

  /**
   * @internal For each of `rows` items (values checked and converted as for
   * _classifyRows): every filled cache row holding exactly its values, as
   * CSR (item i's rows are rows[offsets[i] .. offsets[i + 1]), increasing).
   * O(rows + matches) after the index is built: the handlers' accidental hits.
   */
  _matchingRows(cache: NegativeCache, values: Record<string, Float32Array | Int32Array>, rows: number):
      { rows: Int32Array; offsets: Int32Array } {
    storeOf(cache, 'cache');
    const columns = this.keys.map((key) => {
      this.specOf(cache, key);
      return values[key];
    });
    const widths = this.keys.map((key) => widthOf(cache.specs[key].shape));
    const contents = contentKeys(columns, widths, rows);
    const index = this.indexOf(cache);
    const offsets = new Int32Array(rows + 1);
    const found: Array<readonly number[]> = new Array(rows);
    for (let i = 0; i < rows; i++) {
      found[i] = index.findAll(contents[i]);
      offsets[i + 1] = offsets[i] + found[i].length;
    }
    const out = new Int32Array(offsets[rows]);
    for (let i = 0; i < rows; i++) {
      out.set(found[i], offsets[i]);
      out.subarray(offsets[i], offsets[i + 1]).sort();
    }
    return { rows: out, offsets };
  }

  /** Per item: the cached row holding its content (or -1), and 1 where it is to be inserted. */
  private classify(cache: NegativeCache, contents: string[]): { insertMask: Uint8Array; cachedRows: Int32Array } {
    const index = this.indexOf(cache);
    const seen = new Set<string>();
    const insertMask = new Uint8Array(contents.length);
    const cachedRows = new Int32Array(contents.length);
    for (let i = 0; i < contents.length; i++) {
      const c = contents[i];
      cachedRows[i] = index.find(c);
      if (cachedRows[i] < 0 && !seen.has(c)) insertMask[i] = 1;
      seen.add(c);
    }
    return { insertMask, cachedRows };
  }

  /** The spec of one of this filter's keys; TypeError naming `keys` when the cache has no such feature. */
  private specOf(cache: NegativeCache, key: string): FeatureSpec {
    const spec = cache.specs[key];
    if (spec === undefined) {
      throw typeError('keys', `feature names of the cache (${Object.keys(cache.specs).join(', ')})`, JSON.stringify(key));
    }
    return spec;
  }

  /** Validates the items (before anything else) and returns their content keys. */
  private contents(cache: NegativeCache, newItems: Record<string, BatchLike>): string[] {
    storeOf(cache, 'cache');
    if (newItems === null || typeof newItems !== 'object' || Array.isArray(newItems) || ArrayBuffer.isView(newItems)) {
      throw typeError('newItems', `an object with keys ${this.keys.join(', ')}`, newItems);
    }
    const columns: Array<Float32Array | Int32Array> = [];
    const widths: number[] = [];
    let rows = -1;
    for (const key of this.keys) {
      const spec = this.specOf(cache, key);
      if (!(key in newItems)) throw typeError(`newItems['${key}']`, 'a batch of rows', undefined);
      const conv = toRows(`newItems['${key}']`, (newItems as Record<string, unknown>)[key], spec);
      if (rows >= 0 && conv.rows !== rows) {
        throw typeError(`newItems['${key}']`, `${rows} rows like newItems['${this.keys[0]}']`, `${conv.rows} rows (${describe((newItems as Record<string, unknown>)[key])})`);
      }
      rows = conv.rows;
      columns.push(conv.data);
      widths.push(widthOf(spec.shape));
    }
    return contentKeys(columns, widths, rows);
  }

  private indexOf(cache: NegativeCache): RowIndex {
    let index = this.#indices.get(cache);
    if (index !== undefined && index.version !== cache.version) {
      index.unsubscribe();   // written while no listener saw it (should not happen): rebuild
      index = undefined;
    }
    if (index === undefined) {
      index = RowIndex.of(cache, this.keys);
      this.#indices.set(cache, index);
    }
    return index;
  }

  /**
   * @internal Checkpoints: the state of this filter's index of `cache` that
   * its contents do not determine (the order among rows of equal content),
   * or null when no current index exists (it is then built on first use).
   */
  _exportIndex(cache: NegativeCache): Int32Array | null {
    const index = this.#indices.get(cache);
    if (index === undefined || index.version !== cache.version) return null;
    return index.exportOrder();
  }

  /**
   * @internal Checkpoints, step 1 of 2: an index of a restored store (not
   * yet in its cache) with the saved order applied. Throws an Error saying
   * what does not fit.
   */
  _prepareIndex(store: StoreBackend, specs: Readonly<Specs>, order: Int32Array | null): unknown {
    if (order === null) return null;
    for (const k of this.keys) if (!specs[k]) throw new Error(`the cache has no feature '${k}'`);
    const index = new RowIndex(store.size, this.keys, this.keys.map((k) => store.readColumn(k)),
      this.keys.map((k) => widthOf(specs[k].shape)), store.readFilled());
    index.importOrder(order);
    return index;
  }

  /** @internal Step 2: `cache` (now holding the restored store) gets the prepared index (null: none, built on first use). */
  _installIndex(cache: NegativeCache, prepared: unknown): void {
    const old = this.#indices.get(cache);
    if (old !== undefined) old.unsubscribe();
    this.#indices.delete(cache);
    if (prepared instanceof RowIndex) {
      prepared.attach(cache);
      this.#indices.set(cache, prepared);
    }
  }
}
