/**
 * Conversions of user inputs (BatchLike / MaskLike / IndexLike) into typed
 * arrays, with TypeError/RangeError messages naming the argument, what was
 * expected and what was given. Tensors are read with dataSync().
 */
import { describe, rangeError, typeError } from './errors';

/** The part of a tf.Tensor used here (duck-typed: no runtime tfjs import). */
export interface TensorLike {
  shape: number[];
  dtype: string;
  dataSync(): ArrayLike<number> | ArrayLike<string> | unknown;
  isDisposed?: boolean;
}

/** The part of a feature spec these helpers need. */
interface RowSpec {
  shape: readonly number[];
  dtype: 'float32' | 'int32';
}

/**
 * True for a tf.Tensor (or anything shaped like one): the one tensor test of
 * the package. `isTensor<tf.Tensor>(x)` narrows to the tfjs type where the
 * caller imports tfjs.
 */
export function isTensor<T extends TensorLike = TensorLike>(v: unknown): v is T {
  if (v === null || typeof v !== 'object') return false;
  const t = v as Partial<TensorLike>;
  return typeof t.dataSync === 'function' && Array.isArray(t.shape) && typeof t.dtype === 'string';
}

/** True for a numeric (non-BigInt) typed array. */
function isNumericTypedArray(v: unknown): v is Float32Array | Float64Array | Int32Array | Uint32Array | Int16Array | Uint16Array | Int8Array | Uint8Array | Uint8ClampedArray {
  return ArrayBuffer.isView(v) && !(v instanceof DataView) && !(v instanceof BigInt64Array) && !(v instanceof BigUint64Array);
}

function shapeText(shape: readonly number[]): string {
  return `[${shape.join(', ')}]`;
}

/** Product of a shape (1 for []). */
export function widthOf(shape: readonly number[]): number {
  let w = 1;
  for (const d of shape) w *= d;
  return w;
}

/** Values of a live tensor (throws TypeError naming argName for a disposed one). */
function tensorValues(argName: string, t: TensorLike): ArrayLike<number> {
  if (t.isDisposed) throw new TypeError(`negative-cache: ${argName} must be a live tensor; got a disposed tensor`);
  if (t.dtype === 'string' || t.dtype === 'complex64') throw typeError(argName, 'a numeric tensor', t);
  return t.dataSync() as ArrayLike<number>;
}

/** Shape of a nested array, checking that it is rectangular with number (or boolean when allowed) leaves. */
function nestedShape(argName: string, value: unknown[], allowBoolean: boolean): number[] {
  const shape: number[] = [];
  let cur: unknown = value;
  while (Array.isArray(cur)) {
    shape.push(cur.length);
    if (cur.length === 0) break;
    cur = cur[0];
  }
  const check = (v: unknown, depth: number, path: string): void => {
    if (depth === shape.length) {
      if (typeof v !== 'number' && !(allowBoolean && typeof v === 'boolean')) {
        throw typeError(`${argName}${path}`, allowBoolean ? 'a number or boolean' : 'a number', v);
      }
      return;
    }
    if (!Array.isArray(v) || v.length !== shape[depth]) {
      throw typeError(`${argName}${path}`, `an array of length ${shape[depth]} (the input must be rectangular)`, v);
    }
    for (let i = 0; i < v.length; i++) check(v[i], depth + 1, `${path}[${i}]`);
  };
  check(value, 0, '');
  return shape;
}

function flattenNested(value: unknown, out: number[]): void {
  if (Array.isArray(value)) for (const v of value) flattenNested(v, out);
  else out.push(typeof value === 'boolean' ? (value ? 1 : 0) : (value as number));
}

/** Copies numbers into the column type: float32 as is; int32 only from integers in int32 range. */
function toColumnArray(argName: string, values: ArrayLike<number>, dtype: 'float32' | 'int32'): Float32Array | Int32Array {
  if (dtype === 'float32') {
    if (values instanceof Float32Array) return values.slice();
    return Float32Array.from(values as ArrayLike<number>);
  }
  if (values instanceof Int32Array) return values.slice();
  const out = new Int32Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (!Number.isInteger(v) || v < -2147483648 || v > 2147483647) {
      throw rangeError(`${argName}[${i}]`, 'an int32 integer (the feature dtype is int32)', describe(v));
    }
    out[i] = v;
  }
  return out;
}

/**
 * Rows of one feature: `value` (tf.Tensor of shape [rows, ...spec.shape], a
 * typed array or flat number[] of rows*width values, or nested arrays) ->
 * row-major Float32Array (float32 features) / Int32Array (int32 features).
 * Throws TypeError/RangeError naming argName; checks expectedRows when given.
 */
export function toRows(argName: string, value: unknown, spec: RowSpec,
                       expectedRows?: number): { data: Float32Array | Int32Array; rows: number } {
  const width = widthOf(spec.shape);
  const rowShape = `[rows, ${spec.shape.join(', ')}]`.replace(', ]', ']');
  let flat: ArrayLike<number>;
  let rows: number;
  if (isTensor(value)) {
    if (spec.dtype === 'int32' ? value.dtype !== 'int32' : (value.dtype !== 'float32' && value.dtype !== 'int32')) {
      throw typeError(argName, spec.dtype === 'int32' ? 'an int32 tensor (the feature dtype is int32)'
        : 'a float32 (or int32) tensor', value);
    }
    const shape = value.shape;
    const trailing = shape.slice(1);
    if (shape.length !== spec.shape.length + 1 || trailing.some((d, i) => d !== spec.shape[i])) {
      throw rangeError(argName, `a tensor of shape ${rowShape}`, `shape ${shapeText(shape)}`);
    }
    rows = shape[0];
    flat = tensorValues(argName, value);
  } else if (isNumericTypedArray(value) || (Array.isArray(value) && (value.length === 0 || typeof value[0] === 'number'))) {
    const arr = value as ArrayLike<number>;
    if (Array.isArray(arr)) {
      for (let i = 0; i < arr.length; i++) if (typeof arr[i] !== 'number') throw typeError(`${argName}[${i}]`, 'a number', arr[i]);
    }
    if (arr.length % width !== 0) {
      throw rangeError(argName, `a flat array whose length is a multiple of ${width} (rows of shape ${shapeText(spec.shape)})`,
        `length ${arr.length}`);
    }
    rows = arr.length / width;
    flat = arr;
  } else if (Array.isArray(value)) {
    const shape = nestedShape(argName, value, false);
    const full = shape.length === spec.shape.length + 1 && shape.slice(1).every((d, i) => d === spec.shape[i]);
    const rowFlat = shape.length === 2 && shape[1] === width;
    if (!full && !rowFlat) {
      throw rangeError(argName, `nested arrays of shape ${rowShape} (or [rows, ${width}])`, `shape ${shapeText(shape)}`);
    }
    rows = shape[0];
    const out: number[] = [];
    flattenNested(value, out);
    flat = out;
  } else {
    throw typeError(argName, 'a tf.Tensor, a typed array, a number[] or nested number arrays', value);
  }
  if (expectedRows !== undefined && rows !== expectedRows) {
    throw rangeError(argName, `${expectedRows} rows`, `${rows} rows`);
  }
  return { data: toColumnArray(argName, flat, spec.dtype), rows };
}

/** A mask (tf.Tensor of rank 1, typed array, boolean[] or number[] of 0/1) of exactly `length` entries -> Uint8Array of 0/1. */
export function toMask(argName: string, value: unknown, length: number): Uint8Array {
  let values: ArrayLike<number | boolean>;
  if (isTensor(value)) {
    if (value.shape.length !== 1) throw rangeError(argName, `a rank-1 tensor of length ${length}`, `shape ${shapeText(value.shape)}`);
    values = tensorValues(argName, value);
  } else if (isNumericTypedArray(value)) {
    values = value;
  } else if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) {
      if (typeof value[i] !== 'number' && typeof value[i] !== 'boolean') throw typeError(`${argName}[${i}]`, 'a boolean or a number', value[i]);
    }
    values = value;
  } else {
    throw typeError(argName, 'a tf.Tensor, a typed array or an array of booleans/numbers', value);
  }
  if (values.length !== length) throw rangeError(argName, `of length ${length}`, `length ${values.length}`);
  const out = new Uint8Array(length);
  for (let i = 0; i < length; i++) {
    const v = values[i];
    if (typeof v === 'number' && Number.isNaN(v)) throw rangeError(`${argName}[${i}]`, 'a boolean or a number (not NaN)', 'NaN');
    out[i] = v ? 1 : 0;
  }
  return out;
}

/**
 * Indices (tf.Tensor of rank 1, typed array or number[]) -> Int32Array when
 * given one, else a Float64Array copy (NaN / fractions kept so the caller can
 * report them for the entries that matter).
 */
export function toIndices(argName: string, value: unknown): Int32Array | Float64Array {
  if (isTensor(value)) {
    if (value.shape.length !== 1) throw rangeError(argName, 'a rank-1 tensor', `shape ${shapeText(value.shape)}`);
    const v = tensorValues(argName, value);
    return v instanceof Int32Array ? v.slice() : Float64Array.from(v);
  }
  if (value instanceof Int32Array) return value.slice();
  if (isNumericTypedArray(value)) return Float64Array.from(value);
  if (Array.isArray(value)) {
    for (let i = 0; i < value.length; i++) if (typeof value[i] !== 'number') throw typeError(`${argName}[${i}]`, 'a number', value[i]);
    return Float64Array.from(value as number[]);
  }
  throw typeError(argName, 'a tf.Tensor, a typed array or a number[] of row indices', value);
}

/** Checks that every entry of `indices` where mask is on is an integer in [0, size); returns them as Int32Array (masked-out entries 0). */
export function checkedIndices(argName: string, indices: Int32Array | Float64Array, mask: Uint8Array | null,
                               size: number): Int32Array {
  const out = new Int32Array(indices.length);
  for (let i = 0; i < indices.length; i++) {
    if (mask !== null && mask[i] === 0) continue;
    const v = indices[i];
    if (!Number.isInteger(v) || v < 0 || v >= size) {
      throw rangeError(`${argName}[${i}]`, `an integer in [0, ${size}) (the row of an unmasked entry)`, describe(v));
    }
    out[i] = v;
  }
  return out;
}

/** Index of the first NaN or ±Infinity (-Infinity allowed with skipMinusInf), or -1. */
export function firstNonFinite(values: ArrayLike<number>, skipMinusInf = false): number {
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v - v !== 0 && !(skipMinusInf && v === -Infinity)) return i;
  }
  return -1;
}
