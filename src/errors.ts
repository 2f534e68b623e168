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

/** TypeError "`name` must be EXPECTED; got ACTUAL" (actual already given as text). */
export function typeErrorText(name: string, expected: string, actualText: string): TypeError {
  return new TypeError(`negative-cache: ${name} must be ${expected}; got ${actualText}`);
}

/** RangeError "`name` must be EXPECTED; got ACTUAL" (actual given as text). */
export function rangeError(name: string, expected: string, actual: string | number): RangeError {
  return new RangeError(`negative-cache: ${name} must be ${expected}; got ${actual}`);
}

/**
 * The keys an options (or other record) type accepts, one list per type,
 * written next to its interface: `knownKeys<CacheManagerOptions>({ useLru: true, backend: true })`.
 * The compiler checks the list against the interface (a key missing or
 * extra is a type error), so adding an option means adding it here too.
 * `text` is how the list reads in the error message (default: comma-separated).
 */
export function knownKeys<T>(keys: { [K in keyof Required<T>]: true }, text?: string): KnownKeys {
  const names = Object.freeze(Object.keys(keys));
  return { names, text: text ?? names.join(', ') };
}

/** A list made by knownKeys(). */
export interface KnownKeys {
  readonly names: readonly string[];
  readonly text: string;
}

/**
 * TypeError "`name` must be an object with keys K1, K2, ...; got an object
 * with unknown key 'k'" for the first own key of `value` not in `known`
 * (a typo must never be silently ignored).
 */
export function rejectUnknownKeys(name: string, value: object, known: KnownKeys): void {
  for (const key of Object.keys(value)) {
    if (known.names.includes(key)) continue;
    const expected = known.names.length === 0 ? 'omitted or an empty object (it takes no options)' : `an object with keys ${known.text}`;
    throw new TypeError(`negative-cache: ${name} must be ${expected}; got an object with unknown key '${key}'`);
  }
}
