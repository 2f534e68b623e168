/** The native cache store: a StoreBackend over an addon CacheStore handle (shared with the CUDA store). */
import type { BackendName, ColumnLayout, PackedUpdate, StoreBackend } from '../backend';
import { NegativeCacheError } from '../errors';
import type { NativeAddon, NativeColumn, NativeStoreHandle } from './addon';

const STORAGE_CODE: Record<ColumnLayout['storage'], number> = { float32: 0, float16: 1, bfloat16: 2, int32: 3 };

/** Runs a call into the addon, turning its NegativeCacheError-shaped errors into NegativeCacheError instances. */
export function callNative<T>(fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    const err = e as { name?: string; code?: unknown; message?: string };
    if (err && err.name === 'NegativeCacheError' && typeof err.code === 'string' && !(e instanceof NegativeCacheError)) {
      throw new NegativeCacheError(err.code, err.message ?? 'negative-cache: native error');
    }
    throw e;
  }
}

/** An addon cache-store constructor: addon.CacheStore, or addon.cuda.CacheStore. */
export type NativeStoreCtor = new (columns: NativeColumn[], size: number) => NativeStoreHandle;

/**
 * A StoreBackend over an addon cache-store handle; the CPU store
 * (NativeCacheStore) and the CUDA store (src/cuda/cache_store.ts) differ only
 * in their kind and the handle constructor.
 */
export class HandleCacheStore implements StoreBackend {
  readonly kind: BackendName;
  readonly size: number;
  readonly columns: readonly ColumnLayout[];
  /** The addon handle (for the kernels binding of the same kind). */
  readonly handle: NativeStoreHandle;
  private readonly index = new Map<string, number>();
  private isDisposed = false;

  constructor(kind: BackendName, Ctor: NativeStoreCtor, columns: readonly ColumnLayout[], size: number) {
    this.kind = kind;
    this.size = size;
    this.columns = columns.map((c) => ({ ...c }));
    this.columns.forEach((c, i) => this.index.set(c.key, i));
    this.handle = callNative(() => new Ctor(
      this.columns.map((c) => ({ name: c.key, storage: STORAGE_CODE[c.storage], width: c.width })), size));
  }

  get disposed(): boolean { return this.isDisposed; }

  /** The addon's column number of a key. */
  columnIndex(key: string): number {
    const i = this.index.get(key);
    if (i === undefined) throw new RangeError(`negative-cache: no column '${key}' in this cache`);
    return i;
  }

  private alloc(c: ColumnLayout, rows: number): Float32Array | Int32Array {
    return c.storage === 'int32' ? new Int32Array(rows * c.width) : new Float32Array(rows * c.width);
  }

  initialize(values: Record<string, Float32Array | Int32Array>, ages: Int32Array | null): void {
    callNative(() => this.handle.initialize(this.columns.map((c) => values[c.key] ?? null), ages));
  }

  update(u: PackedUpdate): void {
    callNative(() => this.handle.update({
      useLru: u.useLru,
      numUpdated: u.numUpdated,
      updatedValues: this.columns.map((c) => u.updatedValues[c.key] ?? null),
      updatedIndices: u.updatedIndices,
      updatedMask: u.updatedMask,
      numNew: u.numNew,
      newValues: this.columns.map((c) => u.newValues[c.key] ?? null),
      newMask: u.newMask,
      insertedRows: u.insertedRows ?? null,
    }));
  }

  readColumn(key: string): Float32Array | Int32Array {
    const i = this.columnIndex(key);
    const out = this.alloc(this.columns[i], this.size);
    callNative(() => this.handle.readColumn(i, out));
    return out;
  }

  readAge(): Int32Array {
    const out = new Int32Array(this.size);
    callNative(() => this.handle.readAge(out));
    return out;
  }

  readFilled(): Uint8Array {
    const out = new Uint8Array(this.size);
    callNative(() => this.handle.readFilled(out));
    return out;
  }

  gatherRows(key: string, rows: Int32Array): Float32Array | Int32Array {
    const i = this.columnIndex(key);
    const out = this.alloc(this.columns[i], rows.length);
    callNative(() => this.handle.gatherRows(i, rows, out));
    return out;
  }

  /** Bytes of the data blocks (device memory for CUDA) and host bytes of the per-row bookkeeping. */
  stats(): { dataBytes: number; bookkeepingBytesPerRow: number } {
    return callNative(() => this.handle.stats());
  }

  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.handle.dispose();
  }
}

/** The CPU store: rows in host memory, behind addon.CacheStore. */
export class NativeCacheStore extends HandleCacheStore {
  constructor(addon: NativeAddon, columns: readonly ColumnLayout[], size: number) {
    super('native', addon.CacheStore, columns, size);
  }
}
