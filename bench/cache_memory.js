#!/usr/bin/env node
'use strict';
// Resident memory of a full cache against its raw bytes: 1,048,576 rows with
// a 768-wide float16 embedding and a 64-wide int32 key (defaults). Each
// measurement runs in a fresh child process: RSS after loading the package,
// then after creating the cache and writing every row; the difference is
// compared with the raw bytes (rows x (768·2 + 64·4)). The delta right after
// initCache() is reported too: both stores' row memory is zeroed lazily (the
// native store maps columns of 2 MiB or more from the kernel, which zeroes
// pages on first touch; the JS store's typed arrays likewise), so that figure
// is the bookkeeping (ages, flags, index) alone.
//
//   node bench/cache_memory.js [--json] [--rows 1048576] [--emb 768] [--key 64]
//                              [--backends native,js]
const { execFileSync } = require('child_process');

function arg(name, def) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : def;
}

if (process.argv[2] === '--child') {
  const [backend, rowsS, embS, keyS] = process.argv.slice(3);
  const rows = Number(rowsS), emb = Number(embS), key = Number(keyS);
  const nc = require('..');
  const manager = new nc.CacheManager({ emb: { shape: [emb], dtype: 'float32', storage: 'float16' }, key: { shape: [key], dtype: 'int32' } },
    rows, { backend });
  const batch = 4096;
  const e = new Float32Array(batch * emb).map((_, i) => (i % 977) / 977 - 0.5);
  const k = new Int32Array(batch * key).map((_, i) => i);
  global.gc();
  const before = process.memoryUsage().rss;
  const cache = manager.initCache();
  const created = process.memoryUsage().rss;
  for (let done = 0; done < rows; done += batch) {
    const n = Math.min(batch, rows - done);
    manager.updateCache(cache, { newItems: { emb: e.subarray(0, n * emb), key: k.subarray(0, n * key) } });
  }
  global.gc();
  const after = process.memoryUsage().rss;
  const age = cache.readAge();
  if (age[0] !== Math.ceil(rows / batch) - 1) throw new Error('cache not filled as expected');
  process.stdout.write(JSON.stringify({ before, created, after }));
  process.exit(0);
}

const json = process.argv.includes('--json');
const rows = Number(arg('rows', 1048576));
const emb = Number(arg('emb', 768));
const key = Number(arg('key', 64));
const backends = arg('backends', 'native,js').split(',');
const raw = rows * (emb * 2 + key * 4);
const out = [];
for (const backend of backends) {
  const res = JSON.parse(execFileSync(process.execPath, ['--expose-gc', __filename, '--child', backend, rows, emb, key],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 20 }));
  const delta = res.after - res.before;
  const row = {
    bench: 'cache_memory', backend, rows, embWidth: emb, embStorage: 'float16', keyWidth: key,
    rawBytes: raw, rssDeltaBytes: delta, overheadBytes: delta - raw,
    rssDeltaAtCreateBytes: res.created - res.before,
    overheadAtCreateBytesPerRow: +((res.created - res.before - raw) / rows).toFixed(2),
    overheadBytesPerRow: +((delta - raw) / rows).toFixed(2), ratio: +(delta / raw).toFixed(4),
  };
  out.push(row);
  if (json) console.log(JSON.stringify(row));
}
if (!json) {
  const mib = (b) => (b / 1048576).toFixed(1);
  console.log(`cache of ${rows} rows: emb ${emb}-wide float16 + key ${key}-wide int32; raw ${mib(raw)} MiB`);
  console.log('backend   RSS delta MiB   raw MiB   overhead B/row   ratio   delta at create MiB   overhead B/row');
  for (const r of out) {
    console.log(`${r.backend.padEnd(9)} ${mib(r.rssDeltaBytes).padStart(13)} ${mib(r.rawBytes).padStart(9)} ` +
      `${String(r.overheadBytesPerRow).padStart(16)} ${r.ratio.toFixed(4).padStart(7)} ${mib(r.rssDeltaAtCreateBytes).padStart(21)} ` +
      `${String(r.overheadAtCreateBytesPerRow).padStart(16)}`);
  }
}
