/**
 * IsInCacheFilterFn: which new items are not yet in a cache, by exact match
 * of their values on the given keys, in O(batch) per call.
 *
 * Each cache gets an index (row contents -> rows) built once in O(size) on
 * first use, then kept current from the cache's write listener (O(rows
 * written) per update). The index lives as long as the cache.
 */
import { NegativeCache, storeOf, type FeatureSpec } from './cache';
import type { BatchLike } from './cache_manager';
import { toRows, widthOf } from './convert';
import { describe, typeError } from './errors';

/** Row contents of one cache: content key -> rows holding it. */
class RowIndex {
  readonly rowsByContent = new Map<string, number[]>();
  readonly contentOfRow: Array<string | undefined>;
  version: number;
  readonly unsubscribe: () => void;

  constructor(readonly cache: NegativeCache, readonly keys: readonly string[]) {
    this.contentOfRow = new Array(cache.size);
    const columns = keys.map((k) => cache.read(k));
    const widths = keys.map((k) => widthOf(cache.specs[k].shape));
    const filled = cache.readFilled();
    for (let r = 0; r < cache.size; r++) {
      if (filled[r]) this.add(r, contentKey(columns, widths, r));
    }
    this.version = cache.version;
    this.unsubscribe = cache.addWriteListener((rows) => this.rowsWritten(rows));
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
    const store = storeOf(this.cache, 'cache');
    const columns = this.keys.map((k) => store.gatherRows(k, rows));
    const widths = this.keys.map((k) => widthOf(this.cache.specs[k].shape));
    for (let i = 0; i < rows.length; i++) {
      this.remove(rows[i]);
      this.add(rows[i], contentKey(columns, widths, i));
    }
    this.version = this.cache.version;
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
      index = new RowIndex(cache, this.keys);
      this.#indices.set(cache, index);
    }
    return index;
  }
}
