/**
 * NegativeCache: one cache's state behind a store backend (JS, native or
 * CUDA), plus the internal hooks other parts of the package use (storeOf,
 * write listeners, version).
 */
import type { BackendName, FeatureDType, StorageDType, StoreBackend } from './backend';
import { describe, knownKeys, NegativeCacheError, typeError } from './errors';

/** One feature of the cache: its per-row shape, dtype and (float features) storage type. */
export interface FeatureSpec {
  shape: number[];
  dtype: FeatureDType;
  storage?: StorageDType;
}
/** @internal */
export const FEATURE_SPEC_KEYS = knownKeys<FeatureSpec>({ shape: true, dtype: true, storage: true });
export type Specs = Record<string, FeatureSpec>;

const CREATE = Symbol('negative-cache.create');
/** The value of NegativeCache._thread: a symbol, which structured clone refuses (naming it). */
const THREAD_BOUND = Symbol('negative-cache: a NegativeCache lives in the thread that created it and cannot be ' +
  'posted to another thread (worker_threads postMessage / structuredClone); create the cache in the thread that ' +
  'uses it with CacheManager.initCache()');

/** A cache created by CacheManager.initCache(): per spec key a row-major array [size, ...shape] and int32 ages. */
export class NegativeCache {
  /** Rows. */
  readonly size: number;
  /** The manager's specs (normalized, frozen). */
  readonly specs: Readonly<Specs>;
  /** The backend holding the rows. */
  readonly backend: BackendName;
  /** Incremented by every successful updateCache (internal; for caches of derived data). */
  version = 0;
  /** @internal Makes postMessage(cache) / structuredClone(cache) throw a DataCloneError saying why (docs/reliability.md). */
  readonly _thread: symbol = THREAD_BOUND;
  #store: StoreBackend | null;
  #listeners: Array<(rows: Int32Array) => void> = [];
  /** Asynchronous saves in flight (saveAsync); the store to free when the last ends. */
  #busy = 0;
  #disposeWhenIdle: StoreBackend | null = null;

  /** @internal Created by CacheManager.initCache(). */
  constructor(token: symbol, store: StoreBackend, specs: Readonly<Specs>) {
    if (token !== CREATE) throw new TypeError('negative-cache: NegativeCache objects are created by CacheManager.initCache()');
    this.#store = store;
    this.size = store.size;
    this.specs = specs;
    this.backend = store.kind;
  }

  /** True after dispose(). */
  get disposed(): boolean { return this.#store === null || this.#store.disposed; }

  /** @internal The store; throws if disposed. */
  _store(argName: string): StoreBackend {
    if (this.#store === null || this.#store.disposed) {
      throw new TypeError(`negative-cache: ${argName} was disposed (NegativeCache.dispose() was called); create a new cache with CacheManager.initCache()`);
    }
    return this.#store;
  }

  /** A copy of feature `key`, row-major [size, ...shape]: Float32Array for float features (whatever the storage), Int32Array for int32. */
  read(key: string): Float32Array | Int32Array {
    const store = this._store('the cache');
    if (typeof key !== 'string' || !Object.prototype.hasOwnProperty.call(this.specs, key)) {
      throw typeError('key', `one of ${Object.keys(this.specs).map((k) => `'${k}'`).join(', ')}`, key);
    }
    return store.readColumn(key);
  }

  /** A copy of the ages (int32, one per row). */
  readAge(): Int32Array {
    return this._store('the cache').readAge();
  }

  /** A copy of the filled flags: 1 where a row was written by an insert, a refresh or initCache with data. */
  readFilled(): Uint8Array {
    return this._store('the cache').readFilled();
  }

  /**
   * Frees the rows (native memory included). Later use throws; calling it
   * twice is harmless. During a saveAsync the cache is unusable at once and
   * the memory is freed when the save ends.
   */
  dispose(): void {
    if (this.#store !== null) {
      if (this.#busy > 0) this.#disposeWhenIdle = this.#store;
      else this.#store.dispose();
      this.#store = null;
      this.#listeners = [];
    }
  }

  /**
   * Writes the cache to one checkpoint file (docs/checkpoint.md): every row of
   * every feature as stored, the ages, the filled flags, the specs and
   * storage types, with checksums. Atomic: a temporary file in the same
   * folder, fsync, rename, fsync of the folder; an existing file is replaced
   * only by a complete one. Load it with CacheManager.load(path).
   */
  save(path: string): void {
    const { checkPath, writeCheckpoint } = require('./checkpoint') as typeof import('./checkpoint');
    writeCheckpoint(checkPath('path', path), [{ name: 'cache', cache: this }], { kind: 'cache' });
  }

  /**
   * save() off the main thread: the native backends write on a worker
   * thread, the JS backend with fs promises. Until the promise settles the
   * cache is busy: reads and scoring work, updates throw NegativeCacheError
   * 'ERR_BUSY', dispose() takes effect at once but frees the memory when the
   * save ends.
   */
  saveAsync(path: string): Promise<void> {
    try {
      const { checkPath, writeCheckpointAsync } = require('./checkpoint') as typeof import('./checkpoint');
      return writeCheckpointAsync(checkPath('path', path), [{ name: 'cache', cache: this }], { kind: 'cache' });
    } catch (e) {
      return Promise.reject(e);
    }
  }

  /** True while a saveAsync of this cache runs. */
  get busy(): boolean { return this.#busy > 0; }

  /** @internal A saveAsync starts / ends reading the store. */
  _beginBusy(): void { this.#busy++; }
  /** @internal */
  _endBusy(): void {
    if (this.#busy > 0) this.#busy--;
    if (this.#busy === 0 && this.#disposeWhenIdle !== null) {
      const s = this.#disposeWhenIdle;
      this.#disposeWhenIdle = null;
      s.dispose();
    }
  }

  /** @internal Throws ERR_BUSY while a saveAsync runs (before any mutation; `what` names the call). */
  _checkWritable(what: string): void {
    if (this.#busy > 0) {
      throw new NegativeCacheError('ERR_BUSY', `negative-cache: ${what}: the cache is being saved (saveAsync); wait for its promise`);
    }
  }

  /**
   * @internal Checkpoint restore: the cache takes `store` (same layout, fresh)
   * and frees its old one; listeners are kept, the version moves on.
   */
  _replaceStore(store: StoreBackend): void {
    const old = this._store('the cache');
    this._checkWritable('restore');
    if (store.size !== this.size) throw new TypeError('negative-cache: _replaceStore: size differs');
    this.#store = store;
    old.dispose();
    this.version++;
  }

  /**
   * @internal Calls fn with the distinct rows written (sorted) after every
   * successful updateCache. Returns the unsubscribe function.
   */
  addWriteListener(fn: (rows: Int32Array) => void): () => void {
    if (typeof fn !== 'function') throw typeError('listener', 'a function', fn);
    this.#listeners.push(fn);
    return () => {
      const i = this.#listeners.indexOf(fn);
      if (i >= 0) this.#listeners.splice(i, 1);
    };
  }

  /** @internal */
  get _hasListeners(): boolean { return this.#listeners.length > 0; }

  /** @internal Bumps the version and tells the listeners which rows were written. */
  _notifyWritten(rows: Int32Array | null): void {
    this.version++;
    if (rows === null) return;
    for (const fn of this.#listeners.slice()) fn(rows);
  }

  toString(): string {
    return `NegativeCache(${this.size} rows, ${this.backend}, keys ${Object.keys(this.specs).join(', ')})`;
  }
}

/** @internal Creates a NegativeCache (for CacheManager). */
export function createNegativeCache(store: StoreBackend, specs: Readonly<Specs>): NegativeCache {
  return new NegativeCache(CREATE, store, specs);
}

/** The store behind a NegativeCache from this package; TypeError naming argName otherwise (or when disposed). */
export function storeOf(cache: NegativeCache, argName = 'cache'): StoreBackend {
  if (!(cache instanceof NegativeCache)) {
    throw new TypeError(`negative-cache: ${argName} must be a NegativeCache created by CacheManager.initCache(); got ${describe(cache)}`);
  }
  return cache._store(argName);
}
