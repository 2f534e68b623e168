/** Failures of the native engine (allocation, CUDA, a broken build). `code` is stable. */
export class NegativeCacheError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.name = 'NegativeCacheError';
    this.code = code;
  }
}

/** Short description of a value for error messages: its type and, where cheap, its value. */
export function describe(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (typeof value === 'number') return Number.isNaN(value) ? 'NaN' : `${value}`;
  if (typeof value === 'string') return JSON.stringify(value.length > 40 ? value.slice(0, 40) + '…' : value);
  if (typeof value === 'boolean' || typeof value === 'bigint') return `${value}`;
  if (typeof value === 'function') return 'a function';
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  if (ArrayBuffer.isView(value)) return `a ${value.constructor.name} of length ${(value as unknown as ArrayLike<number>).length}`;
  const v = value as { shape?: unknown; dtype?: unknown; constructor?: { name?: string } };
  if (Array.isArray(v.shape) && typeof v.dtype === 'string') return `a ${v.dtype} tensor of shape [${v.shape.join(', ')}]`;
  return `an object (${v.constructor?.name ?? 'Object'})`;
}

/** TypeError "`name` must be EXPECTED; got ACTUAL". */
export function typeError(name: string, expected: string, actual: unknown): TypeError {
  return new TypeError(`negative-cache: ${name} must be ${expected}; got ${describe(actual)}`);
}

/** RangeError "`name` must be EXPECTED; got ACTUAL" (actual given as text). */
export function rangeError(name: string, expected: string, actual: string | number): RangeError {
  return new RangeError(`negative-cache: ${name} must be ${expected}; got ${actual}`);
}
