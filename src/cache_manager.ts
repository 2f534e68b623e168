/**
 * CacheManager: creates caches and applies updates with the reference's
 * semantics (docs/design.md §3). Every argument is validated before anything is
 * written, so a rejected call leaves the cache exactly as it was.
 */
import type { BackendName, ColumnLayout, PackedUpdate, StorageDType, StoreBackend } from './backend';
import { resolveBackend, createStore, type BackendOption } from './backends';
import { FEATURE_SPEC_KEYS, NegativeCache, createNegativeCache, storeOf, type FeatureSpec, type Specs } from './cache';
import { checkedIndices, toIndices, toMask, toRows, widthOf, type TensorLike } from './convert';
import { describe, knownKeys, rangeError, rejectUnknownKeys, typeError, typeErrorText } from './errors';

export { NegativeCache } from './cache';
export type { FeatureSpec, Specs } from './cache';

/** A batch of rows: a tf.Tensor [rows, ...shape], a typed array or flat number[] (rows*width values), or nested number arrays. */
export type BatchLike = TensorLike | Float32Array | Int32Array | number[] | number[][] | number[][][];
/** One flag per row: a tf.Tensor, typed array, boolean[] or number[] (non-zero = on). */
export type MaskLike = TensorLike | ArrayLike<boolean | number>;
/** Row indices: a tf.Tensor, typed array or number[]. */
export type IndexLike = TensorLike | ArrayLike<number>;

export interface CacheManagerOptions {
  /** true (default): a refreshed row becomes the youngest (age -1 before the step). false: FIFO, refresh leaves ages. */
  useLru?: boolean;
  /** 'auto' (default): cuda when built and a device is present, else native, else js. */
  backend?: BackendOption;
}
const CACHE_MANAGER_OPTION_KEYS = knownKeys<CacheManagerOptions>({ useLru: true, backend: true });

export interface InitialCache {
  /** Full-size data for every spec key (cacheSize rows each). */
  data?: Record<string, BatchLike>;
  /** cacheSize ages (zeros when omitted). */
  age?: ArrayLike<number> | TensorLike;
}
const INITIAL_CACHE_KEYS = knownKeys<InitialCache>({ data: true, age: true }, "'data' and 'age'");

export interface CacheUpdateInput {
  newItems?: Record<string, BatchLike>;
  newItemsMask?: MaskLike;
  updatedItemData?: Record<string, BatchLike>;
  updatedItemIndices?: IndexLike;
  updatedItemMask?: MaskLike;
}
const CACHE_UPDATE_KEYS = knownKeys<CacheUpdateInput>({
  newItems: true, newItemsMask: true, updatedItemData: true, updatedItemIndices: true, updatedItemMask: true,
});

/** The refresh part of an update. */
type RefreshInput = Pick<CacheUpdateInput, 'updatedItemData' | 'updatedItemIndices' | 'updatedItemMask'>;

/** @internal Rows of features, validated and converted against a manager's specs: `rows` rows per key. */
export interface PackedRows {
  values: Record<string, Float32Array | Int32Array>;
  rows: number;
}

const FEATURE_DTYPES = ['float32', 'int32'];
const STORAGES = ['float32', 'float16', 'bfloat16'];

function isPlainRecord(v: unknown): v is Record<string, unknown> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

/** Validates and normalizes the specs (frozen copy; storage filled in for float features). */
function normalizeSpecs(specs: unknown): Readonly<Specs> {
  if (!isPlainRecord(specs)) throw typeError('specs', 'an object mapping feature names to {shape, dtype, storage?}', specs);
  const keys = Object.keys(specs);
  if (keys.length === 0) throw typeErrorText('specs', 'an object with at least one feature', 'an empty object');
  const out: Specs = {};
  for (const key of keys) {
    const s = specs[key];
    const name = `specs['${key}']`;
    if (!isPlainRecord(s)) throw typeError(name, 'an object {shape, dtype, storage?}', s);
    rejectUnknownKeys(name, s, FEATURE_SPEC_KEYS);
    if (typeof s.dtype !== 'string' || !FEATURE_DTYPES.includes(s.dtype)) {
      throw typeError(`${name}.dtype`, "'float32' or 'int32'", s.dtype);
    }
    const shape = s.shape;
    if (!Array.isArray(shape)) throw typeError(`${name}.shape`, 'an array of positive integers', shape);
    shape.forEach((d: unknown, i: number) => {
      if (typeof d !== 'number' || !Number.isSafeInteger(d) || d < 1) {
        throw typeError(`${name}.shape[${i}]`, 'a positive integer', d);
      }
    });
    if (widthOf(shape as number[]) > 0x7fffffff) throw rangeError(`${name}.shape`, 'a row of at most 2^31-1 values', `[${shape.join(', ')}]`);
    const dtype = s.dtype as 'float32' | 'int32';
    const spec: FeatureSpec = { shape: Object.freeze([...(shape as number[])]) as number[], dtype };
    if (dtype === 'float32') {
      const storage = s.storage ?? 'float32';
      if (typeof storage !== 'string' || !STORAGES.includes(storage)) {
        throw typeError(`${name}.storage`, "'float32', 'float16' or 'bfloat16' (or omitted)", s.storage);
      }
      spec.storage = storage as StorageDType;
    } else if (s.storage !== undefined) {
      throw typeError(`${name}.storage`, 'omitted for an int32 feature (int32 features are stored as int32)', s.storage);
    }
    out[key] = Object.freeze(spec);
  }
  return Object.freeze(out);
}

function sameSpecs(a: Readonly<Specs>, b: Readonly<Specs>): boolean {
  const ka = Object.keys(a), kb = Object.keys(b);
  if (ka.length !== kb.length) return false;
  for (const k of ka) {
    const x = a[k], y = b[k];
    if (!y || x.dtype !== y.dtype || x.storage !== y.storage || x.shape.length !== y.shape.length) return false;
    if (x.shape.some((d, i) => d !== y.shape[i])) return false;
  }
  return true;
}

/** Creates caches and applies updates (docs/design.md §3). */
export class CacheManager {
  /** The backend that holds this manager's caches ('auto' resolved). */
  readonly backend: BackendName;
  readonly specs: Readonly<Specs>;
  readonly cacheSize: number;
  readonly useLru: boolean;
  private readonly layout: ColumnLayout[];

  constructor(specs: Specs, cacheSize: number, options: CacheManagerOptions = {}) {
    this.specs = normalizeSpecs(specs);
    if (typeof cacheSize !== 'number' || !Number.isSafeInteger(cacheSize) || cacheSize < 1) {
      if (typeof cacheSize !== 'number') throw typeError('cacheSize', 'a positive integer', cacheSize);
      throw rangeError('cacheSize', 'a positive integer', describe(cacheSize));
    }
    if (cacheSize > 0x7fffffff) throw rangeError('cacheSize', 'at most 2^31-1', describe(cacheSize));
    if (options === null || typeof options !== 'object') throw typeError('options', 'an object', options);
    rejectUnknownKeys('options', options, CACHE_MANAGER_OPTION_KEYS);
    const useLru = options.useLru ?? true;
    if (typeof useLru !== 'boolean') throw typeError('options.useLru', 'a boolean', useLru);
    this.cacheSize = cacheSize;
    this.useLru = useLru;
    this.backend = resolveBackend(options.backend, 'options.backend');
    this.layout = Object.keys(this.specs).map((key) => {
      const s = this.specs[key];
      return { key, dtype: s.dtype, storage: s.dtype === 'int32' ? 'int32' : s.storage!, width: widthOf(s.shape) };
    });
  }

  /** A new cache: zeros and ages 0, or `initial.data` (all rows filled) and `initial.age`. */
  initCache(initial?: InitialCache): NegativeCache {
    let values: Record<string, Float32Array | Int32Array> = {};
    let ages: Int32Array | null = null;
    if (initial !== undefined && initial !== null) {
      if (!isPlainRecord(initial)) throw typeError('initial', 'an object {data, age?}', initial);
      rejectUnknownKeys('initial', initial, INITIAL_CACHE_KEYS);
      if (initial.data !== undefined) values = this.convertRecord('initial.data', initial.data, true, this.cacheSize).values;
      if (initial.age !== undefined) {
        const raw = toIndices('initial.age', initial.age);
        if (raw.length !== this.cacheSize) throw rangeError('initial.age', `of length ${this.cacheSize}`, `length ${raw.length}`);
        ages = new Int32Array(raw.length);
        for (let i = 0; i < raw.length; i++) {
          const v = raw[i];
          if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
            throw rangeError(`initial.age[${i}]`, 'an int32 integer', describe(v));
          }
          ages[i] = v;
        }
      }
    }
    const store = createStore(this.backend, this.layout, this.cacheSize);
    try {
      if (Object.keys(values).length > 0 || ages !== null) store.initialize(values, ages);
    } catch (e) {
      store.dispose();
      throw e;
    }
    return createNegativeCache(store, this.specs);
  }

  /**
   * A cache read from a checkpoint written by NegativeCache.save() (or
   * saveAsync), on this manager's backend whatever backend saved it. The file
   * must hold a cache of this manager's size, features, shapes and storage
   * types: otherwise NegativeCacheError 'ERR_CHECKPOINT_MISMATCH'; a damaged
   * file is 'ERR_CHECKPOINT_CORRUPT', another format version
   * 'ERR_CHECKPOINT_VERSION', a file-system failure 'ERR_CHECKPOINT_IO'. The
   * message names the file and the problem; nothing is created on failure.
   */
  load(path: string): NegativeCache {
    const { checkPath, readCheckpoint } = require('./checkpoint') as typeof import('./checkpoint');
    const file = checkPath('path', path);
    const loaded = readCheckpoint(file, 'cache', [this._loadTarget('cache')]);
    return createNegativeCache(loaded.stores[0], this.specs);
  }

  /**
   * load() without blocking the event loop while the rows are read: on the
   * native and CUDA backends a libuv worker thread reads them (the header
   * and the META, a few KB, are read at once), on the JS backend fs
   * callbacks do. The same checks and errors as load(), as a rejection; the
   * new cache exists only once the promise resolves.
   */
  async loadAsync(path: string): Promise<NegativeCache> {
    const { checkPath, readCheckpointAsync } = require('./checkpoint') as typeof import('./checkpoint');
    const file = checkPath('path', path);
    const loaded = await readCheckpointAsync(file, 'cache', [this._loadTarget('cache')]);
    return createNegativeCache(loaded.stores[0], this.specs);
  }

  /** @internal What a checkpoint entry of this manager's caches must match, and how to make a fresh store. */
  _loadTarget(name: string): import('./checkpoint').LoadTarget {
    return {
      name, specs: this.specs, size: this.cacheSize, backend: this.backend,
      createStore: () => createStore(this.backend, this.layout, this.cacheSize),
    };
  }

  /**
   * Applies one update in place (docs/design.md §3): refresh updatedItemIndices rows
   * with updatedItemData, insert the unmasked newItems into the oldest rows,
   * every age += 1. Validates everything first. Returns the same cache.
   */
  updateCache(cache: NegativeCache, update: CacheUpdateInput = {}): NegativeCache {
    const store = this.ownStore(cache);
    if (update === null || typeof update !== 'object') throw typeError('update', 'an object', update);
    rejectUnknownKeys('update', update, CACHE_UPDATE_KEYS);
    const { newItems, newItemsMask } = update;
    let insert: PackedRows | null = null;
    if (newItems !== undefined && newItems !== null) {
      insert = this.convertRecord('newItems', newItems, true);
    } else if (newItemsMask !== undefined && newItemsMask !== null) {
      throw typeError('newItems', 'given when newItemsMask is given', newItems);
    }
    return this.apply(cache, store, insert, newItemsMask, update);
  }

  /**
   * @internal updateCache with the new items already validated and converted
   * (every spec key, `rows` rows each): the handlers' path, which checks and
   * converts a batch once, before the loss runs. The rest is checked as usual.
   */
  _updateWithRows(cache: NegativeCache, newItems: PackedRows | null, newItemsMask: MaskLike | null,
                  refresh: RefreshInput): NegativeCache {
    return this.apply(cache, this.ownStore(cache), newItems, newItemsMask, refresh);
  }

  /** The store of a cache of this manager's layout; TypeError naming `cache` otherwise. */
  private ownStore(cache: NegativeCache): StoreBackend {
    const store = storeOf(cache, 'cache');
    if (cache.size !== this.cacheSize || !sameSpecs(cache.specs, this.specs)) {
      throw typeErrorText('cache', `a cache of this manager's layout (${this.cacheSize} rows, specs ${JSON.stringify(this.specs)})`,
        `a cache of ${cache.size} rows with specs ${JSON.stringify(cache.specs)}`);
    }
    return store;
  }

  /** Validates the rest of an update (masks, the refresh part), then mutates. */
  private apply(cache: NegativeCache, store: StoreBackend, insert: PackedRows | null, newItemsMask: MaskLike | null | undefined,
                refresh: RefreshInput): NegativeCache {
    cache._checkWritable('updateCache');
    const size = this.cacheSize;
    const packed: PackedUpdate = {
      useLru: this.useLru, numUpdated: 0, updatedValues: {}, updatedIndices: null, updatedMask: null,
      numNew: 0, newValues: {}, newMask: null,
    };

    // Insert part.
    let m = 0;
    if (insert !== null) {
      packed.newValues = insert.values;
      packed.numNew = insert.rows;
      if (newItemsMask !== undefined && newItemsMask !== null) packed.newMask = toMask('newItemsMask', newItemsMask, insert.rows);
      for (let i = 0; i < insert.rows; i++) if (packed.newMask === null || packed.newMask[i]) m++;
      if (m > size) {
        throw rangeError(packed.newMask ? 'newItemsMask' : 'newItems', `at most ${size} unmasked new items (the cache size)`, `${m}`);
      }
    }

    // Refresh part.
    const { updatedItemData, updatedItemIndices, updatedItemMask } = refresh;
    let refreshedRows: Int32Array | null = null;
    if (updatedItemIndices !== undefined && updatedItemIndices !== null) {
      if (updatedItemData === undefined || updatedItemData === null) {
        throw typeError('updatedItemData', 'given when updatedItemIndices is given', updatedItemData);
      }
      const raw = toIndices('updatedItemIndices', updatedItemIndices);
      const conv = this.convertRecord('updatedItemData', updatedItemData, false, raw.length, 'updatedItemIndices');
      const mask = updatedItemMask !== undefined && updatedItemMask !== null
        ? toMask('updatedItemMask', updatedItemMask, raw.length) : null;
      packed.numUpdated = raw.length;
      packed.updatedValues = conv.values;
      packed.updatedMask = mask;
      packed.updatedIndices = checkedIndices('updatedItemIndices', raw, mask, size);
      if (cache._hasListeners) {
        const rows: number[] = [];
        for (let i = 0; i < raw.length; i++) if (mask === null || mask[i]) rows.push(packed.updatedIndices[i]);
        refreshedRows = Int32Array.from(rows);
      }
    } else if (updatedItemData !== undefined && updatedItemData !== null) {
      throw typeError('updatedItemIndices', 'given when updatedItemData is given', updatedItemIndices);
    } else if (updatedItemMask !== undefined && updatedItemMask !== null) {
      throw typeError('updatedItemIndices', 'given when updatedItemMask is given', updatedItemIndices);
    }

    // Mutate.
    const listen = cache._hasListeners;
    if (listen && packed.numNew > 0) packed.insertedRows = new Int32Array(packed.numNew);
    store.update(packed);
    let written: Int32Array | null = null;
    if (listen) {
      const inserted = packed.insertedRows ? packed.insertedRows.subarray(0, m) : new Int32Array(0);
      const refreshed = refreshedRows ?? new Int32Array(0);
      const all = new Int32Array(inserted.length + refreshed.length);
      all.set(inserted, 0);
      all.set(refreshed, inserted.length);
      all.sort();
      let k = 0;
      for (let i = 0; i < all.length; i++) if (k === 0 || all[k - 1] !== all[i]) all[k++] = all[i];
      written = all.slice(0, k);
    }
    cache._notifyWritten(written);
    return cache;
  }

  /**
   * Converts a record of batches: exactly the spec keys (or a subset when
   * !allKeys), the same row count everywhere (= expectedRows when given).
   */
  private convertRecord(argName: string, record: unknown, allKeys: boolean, expectedRows?: number,
                        rowsFrom?: string): PackedRows {
    if (!isPlainRecord(record) || typeof record.dataSync === 'function') {   // a tensor is not a record
      throw typeError(argName, `an object mapping feature names (${Object.keys(this.specs).join(', ')}) to batches`, record);
    }
    for (const k of Object.keys(record)) {
      if (!Object.prototype.hasOwnProperty.call(this.specs, k)) {
        throw typeErrorText(argName, `an object whose keys are among the spec keys (${Object.keys(this.specs).join(', ')})`,
          `an object with unknown key '${k}'`);
      }
    }
    if (allKeys) {
      for (const k of Object.keys(this.specs)) {
        if (record[k] === undefined) {
          throw typeErrorText(argName, `an object with every spec key (${Object.keys(this.specs).join(', ')})`, `an object without '${k}'`);
        }
      }
    }
    const values: Record<string, Float32Array | Int32Array> = {};
    let rows = expectedRows;
    let first: string | undefined = rowsFrom;
    for (const k of Object.keys(this.specs)) {
      if (record[k] === undefined) continue;
      const name = `${argName}['${k}']`;
      const conv = toRows(name, record[k], this.specs[k]);
      if (rows !== undefined && conv.rows !== rows) {
        throw rangeError(name, `${rows} rows (${first ? `as ${first}` : 'the cache size'})`, `${conv.rows} rows`);
      }
      if (rows === undefined) {
        rows = conv.rows;
        first = name;
      }
      values[k] = conv.data;
    }
    return { values, rows: rows ?? 0 };
  }
}
