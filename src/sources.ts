/**
 * The loss's sources: the caches it scores, sorted by name and concatenated
 * into one index space (source a's rows first, then b's, ...); and the
 * gathering of drawn rows back out of them.
 */
import type { StoreBackend } from './backend';
import { NegativeCache, storeOf } from './cache';
import { widthOf } from './convert';
import { rangeError, typeError, typeErrorText } from './errors';

/** One cache in the concatenated index space: global rows [start, start + size). */
export interface Source {
  name: string;
  cache: NegativeCache;
  store: StoreBackend;
  start: number;
  size: number;
}

/**
 * The sources of `caches` (a lone NegativeCache is the source 'cache'),
 * checked against the loss's keys and the query dimension: TypeError /
 * RangeError naming the cache (`caches`, `caches["a"]`) otherwise.
 */
export function resolveSources(caches: NegativeCache | Record<string, NegativeCache>, embeddingKey: string,
                               dataKeys: readonly string[], dim: number): Source[] {
  const named: Array<[string, unknown, string]> = [];
  if (caches instanceof NegativeCache) {
    named.push(['cache', caches, 'caches']);
  } else {
    if (caches === null || typeof caches !== 'object' || Array.isArray(caches)) {
      throw typeError('caches', 'a NegativeCache or a non-empty record of NegativeCaches', caches);
    }
    const names = Object.keys(caches).sort();
    if (names.length === 0) throw typeError('caches', 'a NegativeCache or a non-empty record of NegativeCaches', 'an empty object');
    for (const n of names) named.push([n, (caches as Record<string, unknown>)[n], `caches[${JSON.stringify(n)}]`]);
  }
  const sources: Source[] = [];
  let start = 0;
  let first: NegativeCache | null = null;
  for (const [name, c, arg] of named) {
    const store = storeOf(c as NegativeCache, arg);
    const cache = c as NegativeCache;
    const emb = cache.specs[embeddingKey];
    const keys = Object.keys(cache.specs).join(', ');
    if (!emb) throw rangeError('options.embeddingKey', `a key of ${arg}'s specs (${keys})`, JSON.stringify(embeddingKey));
    if (emb.dtype !== 'float32') {
      throw typeError('options.embeddingKey', `a float32 feature of ${arg}`, `${JSON.stringify(embeddingKey)} of dtype ${emb.dtype}`);
    }
    const width = widthOf(emb.shape);
    if (width !== dim) {
      throw rangeError('queryEmbeddings', `dimension ${width} to match ${arg}'s ${JSON.stringify(embeddingKey)} (shape [${emb.shape.join(', ')}])`,
        `dimension ${dim}`);
    }
    for (const key of dataKeys) {
      const spec = cache.specs[key];
      if (!spec) throw rangeError('options.dataKeys', `keys of ${arg}'s specs (${keys})`, JSON.stringify(key));
      if (first) {
        const f = first.specs[key];
        if (f.dtype !== spec.dtype || f.shape.join(',') !== spec.shape.join(',')) {
          throw rangeError(arg, `feature ${JSON.stringify(key)} like the first source (${f.dtype} [${f.shape.join(', ')}])`,
            `${spec.dtype} [${spec.shape.join(', ')}]`);
        }
      }
    }
    if (first && first.specs[embeddingKey].shape.join(',') !== emb.shape.join(',')) {
      throw rangeError(arg, `embedding shape [${first.specs[embeddingKey].shape.join(', ')}] like the first source`,
        `[${emb.shape.join(', ')}]`);
    }
    first = first ?? cache;
    sources.push({ name, cache, store, start, size: store.size });
    start += store.size;
  }
  // One pass of one backend's kernels scores every source; mixing backends
  // would mean copying whole columns to one of them on every call.
  if (sources.some((s) => s.store.kind !== sources[0].store.kind)) {
    throw typeErrorText('caches', 'NegativeCaches of one backend (one kernel pass scores every source; create them all with the same CacheManager backend)',
      sources.map((s) => `${s.name} (${s.store.kind})`).join(', '));
  }
  return sources;
}

/** Rows of the concatenated index space. */
export function totalRows(sources: readonly Source[]): number {
  return sources.reduce((n, s) => n + s.size, 0);
}

/**
 * Per source, the draws as that source's refresh: indices j - start (-1 where
 * nothing was drawn) and a mask of the draws that fall inside it.
 */
export function refreshBySource(sources: readonly Source[], rows: Int32Array):
    { indices: Record<string, Int32Array>; masks: Record<string, Uint8Array> } {
  const slots = rows.length;
  const indices: Record<string, Int32Array> = {};
  const masks: Record<string, Uint8Array> = {};
  for (const s of sources) {
    const idx = new Int32Array(slots).fill(-1);
    const mask = new Uint8Array(slots);
    for (let i = 0; i < slots; i++) {
      const j = rows[i];
      if (j < 0) continue;
      idx[i] = j - s.start;
      if (j >= s.start && j < s.start + s.size) mask[i] = 1;
    }
    indices[s.name] = idx;
    masks[s.name] = mask;
  }
  return { indices, masks };
}

/**
 * The drawn rows' data for docNetwork (`dataKeys`, compact: valid draws in
 * slot order, numValid rows) and their stored embeddings (every slot; zeros
 * where nothing was drawn). `rows` holds global rows, -1 = no draw.
 */
export function gatherDrawn(sources: readonly Source[], rows: Int32Array, numValid: number, dataKeys: readonly string[],
                            embeddingKey: string): { data: Record<string, Float32Array | Int32Array>; embeddings: Float32Array } {
  const slots = rows.length;
  // Per source: its local rows, their compact positions and their slots.
  const perSource = sources.map(() => ({ rows: [] as number[], pos: [] as number[], slots: [] as number[] }));
  let c = 0;
  for (let i = 0; i < slots; i++) {
    const j = rows[i];
    if (j < 0) continue;
    let s = 0;
    while (j >= sources[s].start + sources[s].size) s++;
    perSource[s].rows.push(j - sources[s].start);
    perSource[s].pos.push(c++);
    perSource[s].slots.push(i);
  }
  const specs = sources[0].cache.specs;
  const data: Record<string, Float32Array | Int32Array> = {};
  for (const key of new Set(dataKeys)) {
    const spec = specs[key];
    const width = widthOf(spec.shape);
    const arr = spec.dtype === 'int32' ? new Int32Array(numValid * width) : new Float32Array(numValid * width);
    sources.forEach((src, si) => {
      const ps = perSource[si];
      if (ps.rows.length === 0) return;
      const got = src.store.gatherRows(key, Int32Array.from(ps.rows));
      for (let r = 0; r < ps.pos.length; r++) arr.set(got.subarray(r * width, (r + 1) * width), ps.pos[r] * width);
    });
    data[key] = arr;
  }
  const dim = widthOf(specs[embeddingKey].shape);
  const embeddings = new Float32Array(slots * dim);
  sources.forEach((src, si) => {
    const ps = perSource[si];
    if (ps.rows.length === 0) return;
    const got = src.store.gatherRows(embeddingKey, Int32Array.from(ps.rows)) as Float32Array;
    for (let r = 0; r < ps.slots.length; r++) embeddings.set(got.subarray(r * dim, (r + 1) * dim), ps.slots[r] * dim);
  });
  return { data, embeddings };
}
