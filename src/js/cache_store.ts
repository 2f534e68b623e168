/**
 * The pure-TypeScript cache store: the same algorithm as native/cache_store.cc
 * (see its header comment). Ages come from a step counter and per-row stamps
 * (age = counter - stamp, int32 wrapping); the rows sit in a doubly linked
 * list in (age desc, index asc) order, so an update of m rows is O(m log m).
 * States with ages outside [0, INT32_MAX) (only reachable through initCache)
 * take an exact O(N log N) path.
 */
import type { BackendName, ColumnLayout, PackedUpdate, StoreBackend } from '../backend';
import { NegativeCacheError } from '../errors';
import { bfloat16sToFloats, floatsToBFloat16s, floatsToHalves, halvesToFloats } from './half';

const NIL = -1;
const INT32_MAX = 0x7fffffff;

type Column = Float32Array | Uint16Array | Int32Array;

/** The distinct values of `a`, sorted (sorts `a` in place; returns a view of its start). */
function sortedUnique(a: Int32Array): Int32Array {
  a.sort();
  let k = 0;
  for (let i = 0; i < a.length; i++) if (k === 0 || a[k - 1] !== a[i]) a[k++] = a[i];
  return a.subarray(0, k);
}

export class JsCacheStore implements StoreBackend {
  readonly kind: BackendName = 'js';
  readonly size: number;
  readonly columns: readonly ColumnLayout[];
  private data: Map<string, Column> | null;
  private filled: Uint8Array;
  private prev: Int32Array;
  private next: Int32Array;
  private stamp: Int32Array;
  private head = NIL;
  private tail = NIL;
  private counter = 0;

  constructor(columns: readonly ColumnLayout[], size: number) {
    if (!Number.isSafeInteger(size) || size < 1 || size > INT32_MAX) {
      throw new NegativeCacheError('ERR_ARGUMENT', `negative-cache: cache size must be in [1, 2^31-1]; got ${size}`);
    }
    this.size = size;
    this.columns = columns.map((c) => ({ ...c }));
    this.data = new Map();
    for (const c of this.columns) {
      const n = size * c.width;
      this.data.set(c.key, c.storage === 'float32' ? new Float32Array(n)
        : c.storage === 'int32' ? new Int32Array(n) : new Uint16Array(n));
    }
    this.filled = new Uint8Array(size);
    this.prev = new Int32Array(size);
    this.next = new Int32Array(size);
    this.stamp = new Int32Array(size);
    for (let r = 0; r < size; r++) this.append(r);
  }

  get disposed(): boolean { return this.data === null; }

  private live(): Map<string, Column> {
    if (this.data === null) {
      throw new NegativeCacheError('ERR_DISPOSED', 'negative-cache: the cache was disposed (NegativeCache.dispose() frees it)');
    }
    return this.data;
  }

  private layout(key: string): ColumnLayout {
    const c = this.columns.find((x) => x.key === key);
    if (!c) throw new RangeError(`negative-cache: no column '${key}' in this cache`);
    return c;
  }

  /** The internal storage of a column (no copy): Float32Array (float32), Uint16Array (float16/bfloat16), Int32Array (int32). */
  columnView(key: string): Column {
    this.layout(key);
    return this.live().get(key)!;
  }

  /** The internal filled flags (no copy): 1 where a row was ever written. */
  filledView(): Uint8Array {
    this.live();
    return this.filled;
  }

  private age(r: number): number { return (this.counter - this.stamp[r]) | 0; }

  private unlink(r: number): void {
    const p = this.prev[r], n = this.next[r];
    if (p === NIL) this.head = n; else this.next[p] = n;
    if (n === NIL) this.tail = p; else this.prev[n] = p;
    this.prev[r] = NIL;
    this.next[r] = NIL;
  }

  private append(r: number): void {
    this.prev[r] = this.tail;
    this.next[r] = NIL;
    if (this.tail === NIL) this.head = r; else this.next[this.tail] = r;
    this.tail = r;
  }

  /** Rebuilds the list from explicit ages, order (age desc, index asc); counter 0. */
  private rebuild(ages: Int32Array): void {
    this.counter = 0;
    let allEqual = true;
    for (let r = 0; r < this.size; r++) {
      this.stamp[r] = -ages[r] | 0;
      if (ages[r] !== ages[0]) allEqual = false;
    }
    this.head = this.tail = NIL;
    if (allEqual) {
      for (let r = 0; r < this.size; r++) this.append(r);
      return;
    }
    const order = Array.from({ length: this.size }, (_, i) => i);
    order.sort((a, b) => (ages[a] !== ages[b] ? ages[b] - ages[a] : a - b));
    for (const r of order) this.append(r);
  }

  private writeRow(c: ColumnLayout, row: number, src: Float32Array | Int32Array, srcRow: number): void {
    const w = c.width;
    const dst = this.data!.get(c.key)!;
    if (c.storage === 'float16') floatsToHalves(src as Float32Array, srcRow * w, dst as Uint16Array, row * w, w);
    else if (c.storage === 'bfloat16') floatsToBFloat16s(src as Float32Array, srcRow * w, dst as Uint16Array, row * w, w);
    else (dst as Float32Array | Int32Array).set(src.subarray(srcRow * w, srcRow * w + w), row * w);
  }

  private readRows(c: ColumnLayout, row: number, n: number, out: Float32Array | Int32Array, outOff: number): void {
    const w = c.width;
    const src = this.data!.get(c.key)!;
    if (c.storage === 'float16') halvesToFloats(src as Uint16Array, row * w, out as Float32Array, outOff, n * w);
    else if (c.storage === 'bfloat16') bfloat16sToFloats(src as Uint16Array, row * w, out as Float32Array, outOff, n * w);
    else out.set((src as Float32Array | Int32Array).subarray(row * w, (row + n) * w), outOff);
  }

  private checkValues(what: string, c: ColumnLayout, v: Float32Array | Int32Array, rows: number): void {
    const ok = c.storage === 'int32' ? v instanceof Int32Array : v instanceof Float32Array;
    if (!ok || v.length !== rows * c.width) {
      throw new TypeError(`negative-cache: ${what}['${c.key}'] must be a ${c.storage === 'int32' ? 'Int32Array' : 'Float32Array'} ` +
        `of length ${rows * c.width}; got a ${v?.constructor?.name} of length ${v?.length}`);
    }
  }

  initialize(values: Record<string, Float32Array | Int32Array>, ages: Int32Array | null): void {
    const data = this.live();
    for (const c of this.columns) if (values[c.key] !== undefined) this.checkValues('initialize(values)', c, values[c.key], this.size);
    if (ages !== null && (!(ages instanceof Int32Array) || ages.length !== this.size)) {
      throw new TypeError(`negative-cache: initialize(ages) must be an Int32Array of length ${this.size}`);
    }
    let anyData = false;
    for (const c of this.columns) {
      const v = values[c.key];
      if (v === undefined) { data.get(c.key)!.fill(0); continue; }
      anyData = true;
      for (let r = 0; r < this.size; r++) this.writeRow(c, r, v, r);
    }
    this.filled.fill(anyData ? 1 : 0);
    this.rebuild(ages ?? new Int32Array(this.size));
  }

  /**
   * Checkpoint restore: the rows were written through columnView(); this sets
   * the ages (any int32 values) and the filled flags (size entries, 0/1).
   */
  restoreState(ages: Int32Array, filled: Uint8Array): void {
    this.live();
    if (ages.length !== this.size || filled.length !== this.size) {
      throw new TypeError(`negative-cache: restoreState needs ${this.size} ages and filled flags`);
    }
    for (let r = 0; r < this.size; r++) this.filled[r] = filled[r] !== 0 ? 1 : 0;
    this.rebuild(ages);
  }

  update(u: PackedUpdate): void {
    this.live();
    const size = this.size;
    // Checks that protect the state (the public layer validated everything).
    const nu = u.numUpdated, nn = u.numNew;
    const uon = (i: number) => u.updatedMask === null || u.updatedMask[i] !== 0;
    const non = (i: number) => u.newMask === null || u.newMask[i] !== 0;
    if (nu > 0) {
      if (!u.updatedIndices || u.updatedIndices.length !== nu) throw new TypeError(`negative-cache: updatedIndices must have ${nu} entries`);
      if (u.updatedMask && u.updatedMask.length !== nu) throw new TypeError(`negative-cache: updatedMask must have ${nu} entries`);
      for (const c of this.columns) if (u.updatedValues[c.key] !== undefined) this.checkValues('update(updatedValues)', c, u.updatedValues[c.key], nu);
      for (let i = 0; i < nu; i++) {
        const r = u.updatedIndices[i];
        if (uon(i) && !(r >= 0 && r < size)) throw new RangeError(`negative-cache: updatedIndices[${i}] must be in [0, ${size}); got ${r}`);
      }
    }
    let m = 0;
    if (nn > 0) {
      if (u.newMask && u.newMask.length !== nn) throw new TypeError(`negative-cache: newMask must have ${nn} entries`);
      for (const c of this.columns) this.checkValues('update(newValues)', c, u.newValues[c.key], nn);
      for (let i = 0; i < nn; i++) if (non(i)) m++;
      if (m > size) throw new RangeError(`negative-cache: at most ${size} unmasked new items; got ${m}`);
      if (u.insertedRows && u.insertedRows.length !== nn) throw new TypeError(`negative-cache: insertedRows must have ${nn} entries`);
    }
    const refreshedCols = this.columns.filter((c) => u.updatedValues[c.key] !== undefined);
    // Step 2's row write, shared by both paths: refresh item i into its row; returns the row.
    const refreshRow = (i: number): number => {
      const r = u.updatedIndices![i];
      for (const c of refreshedCols) this.writeRow(c, r, u.updatedValues[c.key], i);
      this.filled[r] = 1;
      return r;
    };
    // Step 3's row write: new item i into row `row`, the j-th row chosen.
    const insertRow = (i: number, j: number, row: number): void => {
      if (u.insertedRows) u.insertedRows[j] = row;
      for (const c of this.columns) this.writeRow(c, row, u.newValues[c.key], i);
      this.filled[row] = 1;
    };

    // Regular state: every age in [0, INT32_MAX) -> O(m log m) path. The list
    // is ordered by age, so the head holds the largest age and the tail the smallest.
    const regular = this.age(this.tail) >= 0 && this.age(this.head) < INT32_MAX;
    if (!regular) {
      // Exact slow path: materialize ages, apply the reference semantics, rebuild.
      const ages = this.readAge();
      for (let i = 0; i < nu; i++) {
        if (!uon(i)) continue;
        const r = refreshRow(i);
        if (u.useLru) ages[r] = -1;
      }
      if (m > 0) {
        const order = Array.from({ length: size }, (_, i) => i);
        order.sort((a, b) => (ages[a] !== ages[b] ? ages[b] - ages[a] : a - b));
        let j = 0;
        for (let i = 0; i < nn; i++) {
          if (!non(i)) continue;
          const r = order[j];
          insertRow(i, j++, r);
          ages[r] = -1;
        }
      }
      for (let r = 0; r < size; r++) ages[r] = (ages[r] + 1) | 0;
      this.rebuild(ages);
      return;
    }

    // 2. Refresh: write rows in order (a later i wins); with LRU the rows
    // become the youngest (age -1): unlink them and append them sorted by index.
    const written = new Int32Array(nu);
    let nr = 0;
    for (let i = 0; i < nu; i++) if (uon(i)) written[nr++] = refreshRow(i);
    const refreshed = sortedUnique(written.subarray(0, nr));
    const newStamp = (this.counter + 1) | 0;   // age -1 now, 0 after the step
    if (u.useLru) this.moveToTail(refreshed, newStamp);

    // 3. Insert: the m oldest rows in list order.
    if (m > 0) {
      const chosen = new Int32Array(m + (u.useLru ? refreshed.length : 0));
      let r = this.head;
      for (let j = 0; j < m; j++) { chosen[j] = r; r = this.next[r]; }
      let j = 0;
      for (let i = 0; i < nn; i++) if (non(i)) { insertRow(i, j, chosen[j]); j++; }
      // The youngest rows now: the chosen ones and, with LRU, the refreshed
      // ones (the chosen may include some of them when m exceeds the older rows).
      if (u.useLru) chosen.set(refreshed, m);
      this.moveToTail(sortedUnique(chosen), newStamp);
    }
    // 4. Every age += 1.
    this.counter = newStamp;
  }

  /** Unlinks `rows` (distinct, sorted) and appends them at the tail in that order with `stamp`. */
  private moveToTail(rows: Int32Array, stamp: number): void {
    for (let k = 0; k < rows.length; k++) this.unlink(rows[k]);
    for (let k = 0; k < rows.length; k++) { this.append(rows[k]); this.stamp[rows[k]] = stamp; }
  }

  readColumn(key: string): Float32Array | Int32Array {
    this.live();
    const c = this.layout(key);
    const out = c.storage === 'int32' ? new Int32Array(this.size * c.width) : new Float32Array(this.size * c.width);
    this.readRows(c, 0, this.size, out, 0);
    return out;
  }

  readAge(): Int32Array {
    this.live();
    const out = new Int32Array(this.size);
    const counter = this.counter, stamp = this.stamp;
    for (let r = 0; r < this.size; r++) out[r] = (counter - stamp[r]) | 0;
    return out;
  }

  readFilled(): Uint8Array {
    this.live();
    return this.filled.slice();
  }

  gatherRows(key: string, rows: Int32Array): Float32Array | Int32Array {
    this.live();
    const c = this.layout(key);
    for (let i = 0; i < rows.length; i++) {
      if (!(rows[i] >= 0 && rows[i] < this.size)) throw new RangeError(`negative-cache: gatherRows: row ${rows[i]} is outside [0, ${this.size})`);
    }
    const out = c.storage === 'int32' ? new Int32Array(rows.length * c.width) : new Float32Array(rows.length * c.width);
    for (let i = 0; i < rows.length; i++) this.readRows(c, rows[i], 1, out, i * c.width);
    return out;
  }

  dispose(): void {
    this.data = null;
  }
}
