/**
 * The CUDA cache store: a StoreBackend over addon.cuda.CacheStore, whose rows
 * live in device memory (ages and insertion order on the host, same semantics
 * as the CPU store). Reads and gathers copy back to the host.
 */
import type { BackendName, ColumnLayout, PackedUpdate, StoreBackend } from '../backend';
import { NegativeCacheError } from '../errors';
import type { NativeAddon, NativeStoreHandle } from '../native/addon';
import { callNative } from '../native/cache_store';

const STORAGE_CODE: Record<ColumnLayout['storage'], number> = { float32: 0, float16: 1, bfloat16: 2, int32: 3 };

/** addon.cuda.CacheStore, or a NegativeCacheError saying why CUDA cannot be used. */
function cudaStoreCtor(addon: NativeAddon): NonNullable<NativeAddon['cuda']['CacheStore']> {
  const cuda = addon.cuda;
  if (!cuda.built || !cuda.CacheStore) {
    throw new NegativeCacheError('ERR_CUDA', 'negative-cache: the addon was built without CUDA (rebuild with nvcc on PATH)');
  }
  if (!cuda.available()) {
    throw new NegativeCacheError('ERR_CUDA', `negative-cache: no usable CUDA device: ${cuda.error()}`);
  }
  return cuda.CacheStore;
}

export class CudaCacheStore implements StoreBackend {
  readonly kind: BackendName = 'cuda';
  readonly size: number;
  readonly columns: readonly ColumnLayout[];
  /** The addon handle (for the CUDA kernels binding). */
  readonly handle: NativeStoreHandle;
  private readonly index = new Map<string, number>();
  private isDisposed = false;

  constructor(addon: NativeAddon, columns: readonly ColumnLayout[], size: number) {
    const Ctor = cudaStoreCtor(addon);
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

  /** Device bytes of the data (and filled flags) and host bytes of bookkeeping per row. */
  stats(): { dataBytes: number; bookkeepingBytesPerRow: number } {
    return callNative(() => this.handle.stats());
  }

  dispose(): void {
    if (this.isDisposed) return;
    this.isDisposed = true;
    this.handle.dispose();
  }
}
