#!/usr/bin/env node
// Checkpoint streaming benchmark (docs/checkpoint.md): save, saveAsync, load
// and loadAsync of a native cache against dd's sequential write and read of a file
// of the same size on the same disk, measured in the same run, and the peak
// RSS each adds. Prints one JSON object.
//
//   node bench/checkpoint.js [--rows 1048576] [--dir /tmp] [--repeat 2] [--backend native]
//
// Default cache: 2^20 rows of 768 float16 + 64 int32 (1.8 GiB). Writes are
// timed to the end of the fsync (dd: conv=fsync); before every read the
// file's pages are dropped from the page cache (dd iflag=nocache count=0),
// so reads come from the disk. Peak RSS: /proc/self/clear_refs resets the
// high-water mark before each operation; the load's figure includes the new
// cache itself (reported separately as loadOverheadMB). A load also
// first-touches the new cache's memory (initCache() maps it without touching
// it: initCacheSecs); that is part of the load's time. The files are deleted
// at the end.
'use strict';
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');
const nc = require('..');

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : dflt;
};
const rows = Number(opt('rows', 1 << 20));
const dir = opt('dir', os.tmpdir());
const repeat = Number(opt('repeat', 2));
const backend = opt('backend', 'native');
const MB = 1 << 20;

function status() {
  const s = fs.readFileSync('/proc/self/status', 'utf8');
  const kb = (k) => Number((s.match(new RegExp(`${k}:\\s+(\\d+)`)) || [0, 0])[1]) * 1024;
  return { rss: kb('VmRSS'), hwm: kb('VmHWM') };
}
function resetPeak() {
  try { fs.writeFileSync('/proc/self/clear_refs', '5'); return true; } catch { return false; }
}
/** Runs fn; seconds and peak RSS above the RSS before. */
function measure(fn) {
  if (global.gc) global.gc();
  const peakOk = resetPeak();
  const before = status().rss;
  const t0 = process.hrtime.bigint();
  const out = fn();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  const after = status();
  return { secs, peakDelta: peakOk ? after.hwm - before : NaN, out };
}
async function measureAsync(fn) {
  if (global.gc) global.gc();
  const peakOk = resetPeak();
  const before = status().rss;
  let ticks = 0, last = Date.now(), maxGap = 0;
  const timer = setInterval(() => { const now = Date.now(); maxGap = Math.max(maxGap, now - last); last = now; ticks++; }, 5);
  const t0 = process.hrtime.bigint();
  await fn();
  const secs = Number(process.hrtime.bigint() - t0) / 1e9;
  clearInterval(timer);
  const after = status();
  return { secs, peakDelta: peakOk ? after.hwm - before : NaN, ticks, maxGapMs: Math.max(maxGap, Date.now() - last) };
}
const dropCache = (file) => execFileSync('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' });
const dd = (ddArgs) => {
  const t0 = process.hrtime.bigint();
  execFileSync('dd', ddArgs, { stdio: 'ignore' });
  return Number(process.hrtime.bigint() - t0) / 1e9;
};

async function main() {
  const specs = { emb: { shape: [768], dtype: 'float32', storage: 'float16' }, ids: { shape: [64], dtype: 'int32' } };
  const manager = new nc.CacheManager(specs, rows, { backend });
  const cache = manager.initCache();
  // Fill every row (in slices, so the JS side stays small).
  const slice = 1 << 13;
  const emb = new Float32Array(slice * 768), ids = new Int32Array(slice * 64);
  for (let i = 0; i < emb.length; i++) emb[i] = ((i * 2654435761) % 1000) / 1000 - 0.5;
  for (let i = 0; i < ids.length; i++) ids[i] = i * 7;
  const idx = new Int32Array(slice);
  for (let r0 = 0; r0 < rows; r0 += slice) {
    const n = Math.min(slice, rows - r0);
    for (let i = 0; i < n; i++) idx[i] = r0 + i;
    manager.updateCache(cache, { updatedItemData: { emb: emb.subarray(0, n * 768), ids: ids.subarray(0, n * 64) }, updatedItemIndices: idx.subarray(0, n) });
  }
  const dataBytes = rows * (768 * 2 + 64 * 4);
  const file = path.join(dir, `nc-bench-${process.pid}.ckpt`);
  const ddFile = path.join(dir, `nc-bench-${process.pid}.dd`);
  const best = { save: Infinity, saveAsync: Infinity, load: Infinity, loadAsync: Infinity, ddWrite: Infinity, ddRead: Infinity, alloc: Infinity };
  const peak = { save: 0, saveAsync: 0, load: 0, loadAsync: 0 };
  let asyncTicks = 0, asyncMaxGap = 0, loadTicks = 0, loadMaxGap = 0, fileBytes = 0;
  try {
    for (let rep = 0; rep < repeat; rep++) {
      const s = measure(() => cache.save(file));
      best.save = Math.min(best.save, s.secs);
      peak.save = Math.max(peak.save, s.peakDelta);
      fileBytes = fs.statSync(file).size;
      const count = Math.ceil(fileBytes / (8 * MB));
      best.ddWrite = Math.min(best.ddWrite, dd(['if=/dev/zero', `of=${ddFile}`, 'bs=8M', `count=${count}`, 'conv=fsync']));

      const alloc = measure(() => manager.initCache());
      best.alloc = Math.min(best.alloc, alloc.secs);
      alloc.out.dispose();
      dropCache(file);
      const l = measure(() => manager.load(file));
      best.load = Math.min(best.load, l.secs);
      peak.load = Math.max(peak.load, l.peakDelta);
      l.out.dispose();
      dropCache(file);
      let loaded = null;
      const la = await measureAsync(async () => { loaded = await manager.loadAsync(file); });
      best.loadAsync = Math.min(best.loadAsync, la.secs);
      peak.loadAsync = Math.max(peak.loadAsync, la.peakDelta);
      loadTicks = la.ticks;
      loadMaxGap = Math.max(loadMaxGap, la.maxGapMs);
      loaded.dispose();
      dropCache(ddFile);
      best.ddRead = Math.min(best.ddRead, dd([`if=${ddFile}`, 'of=/dev/null', 'bs=8M']));

      const a = await measureAsync(() => cache.saveAsync(file));
      best.saveAsync = Math.min(best.saveAsync, a.secs);
      peak.saveAsync = Math.max(peak.saveAsync, a.peakDelta);
      asyncTicks = a.ticks;
      asyncMaxGap = Math.max(asyncMaxGap, a.maxGapMs);
    }
  } finally {
    for (const f of [file, ddFile]) try { fs.unlinkSync(f); } catch { /* gone */ }
    cache.dispose();
  }
  const rate = (secs) => +(fileBytes / MB / secs).toFixed(1);
  const out = {
    backend, rows, fileMB: +(fileBytes / MB).toFixed(1), dir, repeat, cpu: os.cpus()[0].model,
    crc32cHardware: backend !== 'js' && !!require('../dist/native/addon').loadAddon()?.checkpoint.crc32cHardware(),
    MBps: { save: rate(best.save), saveAsync: rate(best.saveAsync), load: rate(best.load), loadAsync: rate(best.loadAsync), ddWrite: rate(best.ddWrite), ddRead: rate(best.ddRead) },
    ratio: { save: +(best.ddWrite / best.save).toFixed(3), saveAsync: +(best.ddWrite / best.saveAsync).toFixed(3), load: +(best.ddRead / best.load).toFixed(3),
      loadAsync: +(best.ddRead / best.loadAsync).toFixed(3) },
    // initCache() of the same size on its own (the store's memory is mapped, not touched: a load pays the first touch).
    initCacheSecs: +best.alloc.toFixed(3),
    peakRssDeltaMB: { save: +(peak.save / MB).toFixed(1), saveAsync: +(peak.saveAsync / MB).toFixed(1), load: +(peak.load / MB).toFixed(1), loadAsync: +(peak.loadAsync / MB).toFixed(1) },
    loadOverheadMB: +((peak.load - dataBytes) / MB).toFixed(1),
    loadAsyncOverheadMB: +((peak.loadAsync - dataBytes) / MB).toFixed(1),
    saveAsyncEventLoop: { ticks5ms: asyncTicks, maxGapMs: asyncMaxGap },
    loadAsyncEventLoop: { ticks5ms: loadTicks, maxGapMs: loadMaxGap },
    loadavg: os.loadavg().map((x) => +x.toFixed(2)),
  };
  process.stdout.write(JSON.stringify(out, null, 2) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
