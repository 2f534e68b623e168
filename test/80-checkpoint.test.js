'use strict';
// Checkpoints (docs/checkpoint.md): cache.save / saveAsync, CacheManager.load,
// handler.save / restore. Round trips on every backend and across backends,
// CRC32C against known values and between its three implementations, a
// refusal for every flipped byte and every truncation, wrong versions and
// mismatched specs, atomic replacement under SIGKILL, the busy rules of
// saveAsync with the event loop running, and a training run resumed in a
// new process that continues step for step like the one that never stopped.
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn, execFileSync } = require('child_process');
const nc = require('..');
const { mulberry32 } = require('./helpers/rng');
const { loadAddon, storeOf } = require('./helpers/internals');
const ckpt = require('../dist/checkpoint');

const BACKENDS = nc.availableBackends();
const addon = loadAddon();
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'nc-ckpt-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let fileNo = 0;
const tmpFile = (name = 'c') => path.join(tmp, `${name}-${fileNo++}.ckpt`);

const SPECS = {
  emb: { shape: [3], dtype: 'float32', storage: 'float16' },
  bf: { shape: [2, 2], dtype: 'float32', storage: 'bfloat16' },
  f32: { shape: [2], dtype: 'float32' },
  id: { shape: [1], dtype: 'int32' },
};

/** Random rows for every spec key. */
function rowsFor(specs, n, rng) {
  const out = {};
  for (const [k, s] of Object.entries(specs)) {
    const w = s.shape.reduce((a, b) => a * b, 1);
    out[k] = s.dtype === 'int32'
      ? Int32Array.from({ length: n * w }, () => Math.floor(rng() * 2000) - 1000)
      : Float32Array.from({ length: n * w }, () => (rng() - 0.5) * 8);
  }
  return out;
}

/** A random update (insert some, refresh some rows of some keys). */
function randomUpdate(specs, size, rng) {
  const nNew = Math.floor(rng() * Math.min(size, 6));
  const nUpd = Math.floor(rng() * 5);
  const u = {};
  if (nNew > 0) {
    u.newItems = rowsFor(specs, nNew, rng);
    u.newItemsMask = Array.from({ length: nNew }, () => rng() < 0.8);
  }
  if (nUpd > 0) {
    const keys = Object.keys(specs).filter(() => rng() < 0.6);
    if (keys.length > 0) {
      const all = rowsFor(specs, nUpd, rng);
      u.updatedItemData = Object.fromEntries(keys.map((k) => [k, all[k]]));
      u.updatedItemIndices = Array.from({ length: nUpd }, () => Math.floor(rng() * size));
    }
  }
  return u;
}

function stateOf(cache) {
  const s = { age: Array.from(cache.readAge()), filled: Array.from(cache.readFilled()) };
  for (const k of Object.keys(cache.specs)) s[k] = Array.from(cache.read(k));
  return s;
}

/** Raw stored bits of every column (float16/bfloat16 as stored, not decoded). */
function rawBits(cache) {
  const store = storeOf(cache);
  if (store.columnView) return store.columns.map((c) => Array.from(store.columnView(c.key)));
  return null;
}

function expectCode(fn, code, fileName) {
  assert.throws(fn, (e) => {
    assert.ok(e instanceof nc.NegativeCacheError, `not a NegativeCacheError: ${e && e.stack}`);
    if (Array.isArray(code)) assert.ok(code.includes(e.code), `code ${e.code}, expected one of ${code}: ${e.message}`);
    else assert.strictEqual(e.code, code, e.message);
    if (fileName) assert.ok(e.message.includes(fileName), `message does not name the file: ${e.message}`);
    return true;
  });
}

describe('checkpoints', function () {
  this.timeout(120000);

  describe('CRC32C', () => {
    it('matches the published check value and the RFC 3720 vectors', () => {
      const impls = [['js', (b, c) => ckpt.crc32cJs(b, c)]];
      if (addon) impls.push(['native', (b, c) => addon.checkpoint.crc32c(b, c)], ['native tables', (b, c) => addon.checkpoint.crc32cSoftware(b, c)]);
      for (const [name, f] of impls) {
        assert.strictEqual(f(Buffer.from('123456789')), 0xe3069283, name);
        assert.strictEqual(f(new Uint8Array(32)), 0x8a9136aa, `${name}: 32 zeros`);
        assert.strictEqual(f(new Uint8Array(32).fill(0xff)), 0x62a8ab43, `${name}: 32 ones`);
        assert.strictEqual(f(Uint8Array.from({ length: 32 }, (_, i) => i)), 0x46dd794e, `${name}: 0..31`);
      }
    });

    it('agrees between the TypeScript, hardware and table code on random lengths, offsets and continuations', function () {
      if (!addon) this.skip();
      const rng = mulberry32(5);
      const big = Uint8Array.from({ length: 70000 }, () => Math.floor(rng() * 256));
      for (let t = 0; t < 200; t++) {
        const off = Math.floor(rng() * 64), len = Math.floor(rng() * (t < 100 ? 100 : 69000 - off));
        const b = big.subarray(off, off + len);
        const js = ckpt.crc32cJs(b);
        assert.strictEqual(addon.checkpoint.crc32c(b), js, `length ${len} offset ${off}`);
        assert.strictEqual(addon.checkpoint.crc32cSoftware(b), js);
        const cut = Math.floor(rng() * len);
        assert.strictEqual(addon.checkpoint.crc32c(b.subarray(cut), ckpt.crc32cJs(b.subarray(0, cut))), js, 'continuation');
      }
    });
  });

  describe('save and load', () => {
    for (const from of BACKENDS) {
      for (const to of BACKENDS) {
        it(`${from} -> ${to}: every row, age and flag, then the same behaviour under further updates`, () => {
          const rng = mulberry32(11);
          const size = 41;
          const m1 = new nc.CacheManager(SPECS, size, { backend: from });
          const m2 = new nc.CacheManager(SPECS, size, { backend: to });
          const c = m1.initCache();
          for (let i = 0; i < 4; i++) m1.updateCache(c, randomUpdate(SPECS, size, rng));
          assert.ok(c.readFilled().some((f) => f === 0), 'some rows should still be empty');
          const file = tmpFile();
          c.save(file);
          const d = m2.load(file);
          assert.strictEqual(d.backend, to);
          assert.deepStrictEqual(stateOf(d), stateOf(c));
          // The stored bits (not only their float32 reading) survive.
          const bitsC = rawBits(c), bitsD = rawBits(d);
          if (bitsC && bitsD) assert.deepStrictEqual(bitsD, bitsC);
          // Same ages -> same choice of rows from now on.
          for (let i = 0; i < 12; i++) {
            const u = randomUpdate(SPECS, size, rng);
            m1.updateCache(c, u);
            m2.updateCache(d, u);
            assert.deepStrictEqual(stateOf(d), stateOf(c), `after update ${i}`);
          }
          // A file written by the loaded cache is the same cache again.
          const file2 = tmpFile();
          d.save(file2);
          assert.deepStrictEqual(stateOf(m1.load(file2)), stateOf(c));
          c.dispose();
          d.dispose();
        });
      }
    }

    for (const backend of BACKENDS) {
      it(`${backend}: ages outside [0, 2^31-1) (initCache) and a fully filled cache come back exactly`, () => {
        const m = new nc.CacheManager({ a: { shape: [1], dtype: 'int32' } }, 6, { backend });
        const c = m.initCache({ data: { a: [[1], [2], [3], [4], [5], [6]] }, age: [-5, 2147483647, 0, -2147483648, 7, 7] });
        const file = tmpFile();
        c.save(file);
        for (const to of BACKENDS) {
          const d = new nc.CacheManager({ a: { shape: [1], dtype: 'int32' } }, 6, { backend: to }).load(file);
          assert.deepStrictEqual(stateOf(d), stateOf(c));
          const u = { newItems: { a: [[9], [10]] } };
          m.updateCache(c, u);
          m.updateCache(d, u);
          assert.deepStrictEqual(stateOf(d), stateOf(c));
          c.save(file);
        }
      });
    }

    it('loads with the features in another key order', () => {
      const file = tmpFile();
      const m1 = new nc.CacheManager({ a: { shape: [2], dtype: 'float32' }, b: { shape: [1], dtype: 'int32' } }, 4, { backend: BACKENDS[0] });
      const c = m1.initCache({ data: { a: [[1, 2], [3, 4], [5, 6], [7, 8]], b: [[1], [2], [3], [4]] } });
      c.save(file);
      for (const to of BACKENDS) {
        const d = new nc.CacheManager({ b: { shape: [1], dtype: 'int32' }, a: { shape: [2], dtype: 'float32' } }, 4, { backend: to }).load(file);
        assert.deepStrictEqual(Array.from(d.read('a')), Array.from(c.read('a')));
        assert.deepStrictEqual(Array.from(d.read('b')), Array.from(c.read('b')));
      }
    });

    it('replaces an existing checkpoint and leaves no temporary file', () => {
      const file = tmpFile();
      const m = new nc.CacheManager({ a: { shape: [1], dtype: 'int32' } }, 3, { backend: BACKENDS[0] });
      const c = m.initCache();
      for (let g = 1; g <= 3; g++) {
        m.updateCache(c, { newItems: { a: [[g]] } });
        c.save(file);
        assert.deepStrictEqual(stateOf(m.load(file)), stateOf(c));
      }
      assert.deepStrictEqual(fs.readdirSync(path.dirname(file)).filter((n) => n.includes('.tmp-')), []);
    });
  });

  describe('refusals', () => {
    const small = () => {
      const m = new nc.CacheManager({ e: { shape: [2], dtype: 'float32', storage: 'float16' }, id: { shape: [1], dtype: 'int32' } }, 3,
        { backend: BACKENDS[0] });
      const c = m.initCache();
      m.updateCache(c, { newItems: { e: [[1, 2], [3, 4]], id: [[5], [6]] } });
      return { m, c };
    };

    it('refuses every flipped byte of a small checkpoint, on both readers, naming the file', () => {
      const { c } = small();
      const file = tmpFile('flip');
      c.save(file);
      const good = fs.readFileSync(file);
      const bad = tmpFile('flipped');
      const rng = mulberry32(3);
      const readers = BACKENDS.filter((b) => b !== 'cuda');
      let checked = 0;
      for (let i = 0; i < good.length; i++) {
        const b = Buffer.from(good);
        b[i] ^= 1 + Math.floor(rng() * 255);
        fs.writeFileSync(bad, b);
        for (const backend of readers) {
          const m = new nc.CacheManager(c.specs, 3, { backend });
          expectCode(() => m.load(bad), ['ERR_CHECKPOINT_CORRUPT', 'ERR_CHECKPOINT_VERSION'], bad);
          checked++;
        }
      }
      assert.strictEqual(checked, good.length * readers.length);
      // ... and loads the original.
      for (const backend of readers) new nc.CacheManager(c.specs, 3, { backend }).load(file);
    });

    it('refuses every truncation and trailing bytes', () => {
      const { c } = small();
      const file = tmpFile();
      c.save(file);
      const good = fs.readFileSync(file);
      const bad = tmpFile('cut');
      for (const backend of BACKENDS.filter((b) => b !== 'cuda')) {
        const m = new nc.CacheManager(c.specs, 3, { backend });
        for (let n = 0; n < good.length; n++) {
          fs.writeFileSync(bad, good.subarray(0, n));
          expectCode(() => m.load(bad), 'ERR_CHECKPOINT_CORRUPT', bad);
        }
        fs.writeFileSync(bad, Buffer.concat([good, Buffer.from([0])]));
        expectCode(() => m.load(bad), 'ERR_CHECKPOINT_CORRUPT', bad);
      }
    });

    it('refuses another format version (valid checksum) with ERR_CHECKPOINT_VERSION', () => {
      const { c } = small();
      const file = tmpFile();
      c.save(file);
      const b = fs.readFileSync(file);
      b.writeUInt32LE(2, 8);
      b.writeUInt32LE(ckpt.crc32cJs(b.subarray(0, 20)), 20);
      fs.writeFileSync(file, b);
      for (const backend of BACKENDS.filter((x) => x !== 'cuda')) {
        assert.throws(() => new nc.CacheManager(c.specs, 3, { backend }).load(file),
          (e) => e.code === 'ERR_CHECKPOINT_VERSION' && /format version 2/.test(e.message) && e.message.includes(file));
      }
    });

    it('refuses a different size, feature set, shape, dtype or storage with ERR_CHECKPOINT_MISMATCH', () => {
      const { c } = small();
      const file = tmpFile();
      c.save(file);
      const cases = [
        [c.specs, 4, /3 rows; this one has 4/],
        [{ e: { shape: [2], dtype: 'float32', storage: 'float16' } }, 3, /features e, id; this one has e/],
        [{ e: { shape: [2], dtype: 'float32', storage: 'float16' }, idx: { shape: [1], dtype: 'int32' } }, 3, /features/],
        [{ e: { shape: [1, 2], dtype: 'float32', storage: 'float16' }, id: { shape: [1], dtype: 'int32' } }, 3, /'e'/],
        [{ e: { shape: [2], dtype: 'float32', storage: 'float32' }, id: { shape: [1], dtype: 'int32' } }, 3, /stored as float16; this one .* stored as float32/],
        [{ e: { shape: [2], dtype: 'float32', storage: 'float16' }, id: { shape: [1], dtype: 'float32' } }, 3, /'id'/],
      ];
      for (const backend of BACKENDS) {
        for (const [specs, size, re] of cases) {
          const m = new nc.CacheManager(specs, size, { backend });
          assert.throws(() => m.load(file), (e) => e.code === 'ERR_CHECKPOINT_MISMATCH' && re.test(e.message) && e.message.includes(file), `${JSON.stringify(specs)} ${size}`);
        }
      }
    });

    it('bad paths: TypeError for a non-string, ERR_CHECKPOINT_IO naming the file for a missing file, a folder or a missing folder', () => {
      const { m, c } = small();
      for (const p of [undefined, 3, '', null]) {
        assert.throws(() => c.save(p), (e) => e instanceof TypeError && /path must be/.test(e.message));
        assert.throws(() => m.load(p), (e) => e instanceof TypeError && /path must be/.test(e.message));
      }
      const missing = path.join(tmp, 'no-such-folder', 'x.ckpt');
      for (const backend of BACKENDS) {
        const mm = new nc.CacheManager(c.specs, 3, { backend });
        const cc = mm.initCache();
        expectCode(() => cc.save(missing), 'ERR_CHECKPOINT_IO', missing);
        expectCode(() => cc.save(tmp), 'ERR_CHECKPOINT_IO', tmp);
        expectCode(() => mm.load(missing), 'ERR_CHECKPOINT_IO', missing);
        expectCode(() => mm.load(tmp), 'ERR_CHECKPOINT_IO', tmp);
      }
    });

    it('a failing write (simulated full disk) is ERR_CHECKPOINT_IO and leaves the previous checkpoint intact', function () {
      if (!addon) this.skip();
      const m = new nc.CacheManager({ v: { shape: [64], dtype: 'float32' } }, 1000, { backend: 'native' });
      const c = m.initCache();
      m.updateCache(c, { newItems: { v: new Float32Array(64 * 10).fill(1) } });
      const file = tmpFile('full');
      c.save(file);
      const before = fs.readFileSync(file);
      m.updateCache(c, { newItems: { v: new Float32Array(64 * 10).fill(2) } });
      for (const failAfterBytes of [0, 100, 5000, 200000]) {
        assert.throws(() => ckpt.writeCheckpoint(file, [{ name: 'cache', cache: c }], { kind: 'cache' }, { failAfterBytes }),
          (e) => e.code === 'ERR_CHECKPOINT_IO' && /No space left/.test(e.message) && e.message.includes(file));
        assert.ok(before.equals(fs.readFileSync(file)), 'the previous checkpoint changed');
      }
      assert.deepStrictEqual(fs.readdirSync(tmp).filter((n) => n.includes('.tmp-')), []);
    });
  });

  describe('loadAsync', () => {
    for (const backend of BACKENDS) {
      it(`${backend}: the event loop runs during the load; the cache equals load()'s; every backend's file loads`, async () => {
        const rows = backend === 'js' ? 1 << 14 : 1 << 16, width = 256;
        const specs = { v: { shape: [width], dtype: 'float32', storage: 'float16' }, id: { shape: [2], dtype: 'int32' } };
        const m = new nc.CacheManager(specs, rows, { backend });
        const c = m.initCache();
        const rng = mulberry32(7);
        for (let i = 0; i < 3; i++) {
          const n = 1000;
          m.updateCache(c, { newItems: { v: Float32Array.from({ length: n * width }, () => rng() - 0.5), id: Int32Array.from({ length: n * 2 }, (_, j) => j + i) } });
        }
        const file = tmpFile('load-async');
        c.save(file);
        let ticks = 0;
        const t = setInterval(() => { ticks++; }, 1);
        const p = m.loadAsync(file);
        assert.ok(p instanceof Promise);
        const d = await p;
        clearInterval(t);
        assert.ok(ticks >= 1, `only ${ticks} timer ticks during the load`);
        const e = m.load(file);
        for (const k of ['v', 'id']) assert.deepStrictEqual(d.read(k), e.read(k), k);
        assert.deepStrictEqual(d.readAge(), c.readAge());
        assert.deepStrictEqual(d.read('v'), c.read('v'));
        m.updateCache(d, { newItems: { v: new Float32Array(width), id: [[5, 5]] } });   // a normal, writable cache
        for (const other of BACKENDS.filter((b) => b !== backend)) {
          const mo = new nc.CacheManager(specs, rows, { backend: other });
          const o = await mo.loadAsync(file);
          assert.deepStrictEqual(o.read('id'), c.read('id'), `${backend} -> ${other}`);
          o.dispose();
        }
        c.dispose(); d.dispose(); e.dispose();
      });

      it(`${backend}: loadAsync rejects as load() throws (TypeError, ERR_CHECKPOINT_IO/CORRUPT/MISMATCH) with the same messages`, async () => {
        const specs = { v: { shape: [64], dtype: 'float32' } };
        const m = new nc.CacheManager(specs, 4096, { backend });
        const c = m.initCache();
        m.updateCache(c, { newItems: { v: new Float32Array(64 * 100).fill(1.25) } });
        const file = tmpFile('load-async-bad');
        c.save(file);
        await assert.rejects(m.loadAsync(42), (e) => e instanceof TypeError && /path/.test(e.message));
        await assert.rejects(m.loadAsync(''), TypeError);
        const missing = path.join(tmp, 'nope', 'x.ckpt');
        await assert.rejects(m.loadAsync(missing), (e) => e instanceof nc.NegativeCacheError && e.code === 'ERR_CHECKPOINT_IO' && e.message.includes(missing));
        const other = new nc.CacheManager(specs, 4095, { backend });
        await assert.rejects(other.loadAsync(file), (e) => e instanceof nc.NegativeCacheError && e.code === 'ERR_CHECKPOINT_MISMATCH');
        const good = fs.readFileSync(file);
        const bad = tmpFile('load-async-flip');
        for (const at of [10, 200, Math.floor(good.length / 2), good.length - 2]) {
          const b = Buffer.from(good);
          b[at] ^= 0x40;
          fs.writeFileSync(bad, b);
          let syncMsg = null;
          try { m.load(bad); } catch (e) { syncMsg = e.message; }
          await assert.rejects(m.loadAsync(bad), (e) => e instanceof nc.NegativeCacheError && e.code === 'ERR_CHECKPOINT_CORRUPT' && e.message === syncMsg);
        }
        fs.writeFileSync(bad, good.subarray(0, good.length - 100));
        await assert.rejects(m.loadAsync(bad), (e) => e.code === 'ERR_CHECKPOINT_CORRUPT' && /truncated/.test(e.message));
        const d = await m.loadAsync(file);
        assert.strictEqual(d.read('v')[0], 1.25);
        c.dispose(); d.dispose();
      });
    }

    it('native reader: while readStoreAsync runs, the reader refuses other calls with ERR_BUSY and the store is busy', async function () {
      if (!addon) this.skip();
      const m = new nc.CacheManager({ v: { shape: [128], dtype: 'float32' } }, 1 << 15, { backend: 'native' });
      const c = m.initCache();
      m.updateCache(c, { newItems: { v: new Float32Array(128 * 10).fill(4) } });
      const file = tmpFile('reader-busy');
      c.save(file);
      const r = new addon.checkpoint.Reader(file);
      const fresh = m.initCache();
      const h = storeOf(fresh).handle;
      const p = r.readStoreAsync(0, h, [0]);
      const busy = (e) => e.code === 'ERR_BUSY';
      assert.throws(() => r.readBlob(0), busy);
      assert.throws(() => r.finish(), busy);
      assert.throws(() => r.close(), busy);
      assert.throws(() => r.readStore(0, h, [0]), busy);
      assert.throws(() => m.updateCache(fresh, { newItems: { v: new Float32Array(128) } }), busy);
      await p;
      r.finish();
      assert.strictEqual(fresh.read('v')[0], 4);
      assert.throws(() => r.readStoreAsync(0, h, [0]), /closed/);
      const r2 = new addon.checkpoint.Reader(file);
      assert.throws(() => r2.readStoreAsync(0, h, [0, 0]), RangeError);
      assert.throws(() => r2.readStoreAsync(0, {}, [0]), TypeError);
      assert.throws(() => r2.readStoreAsync(-1, h, [0]), RangeError);
      r2.close();
      c.dispose(); fresh.dispose();
    });
  });

  describe('SIGKILL during saves', () => {
    const saver = path.join(__dirname, 'checkpoint', 'saver.js');

    function killRun(backend, mode, kills, seed) {
      const rng = mulberry32(seed);
      const file = tmpFile(`kill-${backend}`);
      const rows = 40000, width = 32;
      const m = new nc.CacheManager({ v: { shape: [width], dtype: 'float32' }, g: { shape: [1], dtype: 'int32' } }, rows, { backend: BACKENDS.includes('native') ? 'native' : 'js' });
      const gens = [];
      let k = 0;
      const one = () => new Promise((resolve, reject) => {
        const child = spawn(process.execPath, [saver, backend, file, String(rows), String(width), mode], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '', err = '', timer = null;
        child.stdout.on('data', (d) => {
          out += d;
          if (timer === null && out.includes('saved')) {
            timer = setTimeout(() => child.kill('SIGKILL'), Math.floor(rng() * 400));
          }
        });
        child.stderr.on('data', (d) => { err += d; });
        child.on('exit', (code, signal) => {
          if (signal !== 'SIGKILL') return reject(new Error(`saver exited ${code} ${signal}: ${err}`));
          const saved = out.trim().split('\n').map((l) => Number(l.split(' ')[1]));
          const c = m.load(file);   // must load intact
          const g = c.read('g'), v = c.read('v');
          const gen = g[0];
          assert.ok(g.every((x) => x === gen), 'a mixed generation');
          assert.ok(v.every((x) => x === gen + 0.5), 'rows of another generation');
          // The file holds the last reported save or the one after it (killed after its rename).
          const last = saved[saved.length - 1];
          assert.ok(gen === last || gen === last + 1, `generation ${gen}, last reported ${last}`);
          gens.push(gen);
          c.dispose();
          for (const n of fs.readdirSync(tmp)) if (n.startsWith(`.${path.basename(file)}.tmp-`)) fs.unlinkSync(path.join(tmp, n));
          resolve();
        });
      });
      const loop = async () => { for (; k < kills; k++) await one(); return gens; };
      return loop();
    }

    for (const backend of BACKENDS.filter((b) => b !== 'cuda')) {
      it(`${backend}: the checkpoint always loads intact with one whole generation (${backend === 'native' ? 32 : 12} kills)`, async () => {
        const gens = await killRun(backend, 'sync', backend === 'native' ? 32 : 12, backend === 'native' ? 1 : 2);
        assert.ok(gens.length >= 12);
      });
    }
    if (BACKENDS.includes('native')) {
      it('native saveAsync: the same under 8 kills', async () => {
        const gens = await killRun('native', 'async', 8, 3);
        assert.strictEqual(gens.length, 8);
      });
    }
  });

  describe('saveAsync', () => {
    for (const backend of BACKENDS) {
      it(`${backend}: the event loop runs during the save; updates throw ERR_BUSY; reads work; the file loads`, async () => {
        const rows = backend === 'js' ? 1 << 15 : 1 << 16, width = 512;
        const m = new nc.CacheManager({ v: { shape: [width], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } }, rows, { backend });
        const c = m.initCache();
        m.updateCache(c, { newItems: { v: new Float32Array(width * 4).fill(3), id: [[1], [2], [3], [4]] } });
        const file = tmpFile('async');
        let ticks = 0;
        const t = setInterval(() => { ticks++; }, 1);
        const p = c.saveAsync(file);
        assert.strictEqual(c.busy, true);
        assert.throws(() => m.updateCache(c, { newItems: { v: new Float32Array(width), id: [[9]] } }),
          (e) => e instanceof nc.NegativeCacheError && e.code === 'ERR_BUSY' && /saveAsync/.test(e.message));
        assert.strictEqual(c.read('id')[0], 1);   // reads are fine
        await p;
        clearInterval(t);
        assert.strictEqual(c.busy, false);
        assert.ok(ticks >= 3, `only ${ticks} timer ticks during the save`);
        m.updateCache(c, { newItems: { v: new Float32Array(width), id: [[9]] } });
        const d = m.load(file);
        assert.deepStrictEqual(Array.from(d.read('id').subarray(0, 5)), [1, 2, 3, 4, 0]);
        assert.deepStrictEqual(Array.from(d.readAge().subarray(0, 5)), [0, 0, 0, 0, 1]);
        c.dispose();
        d.dispose();
      });

      it(`${backend}: dispose() during the save takes effect at once and frees the rows after it; the file is complete`, async () => {
        const m = new nc.CacheManager({ v: { shape: [256], dtype: 'float32' } }, 1 << 14, { backend });
        const c = m.initCache();
        m.updateCache(c, { newItems: { v: new Float32Array(256).fill(7) } });
        const file = tmpFile('dispose');
        const p = c.saveAsync(file);
        c.dispose();
        assert.strictEqual(c.disposed, true);
        assert.throws(() => c.read('v'), /disposed/);
        await p;
        assert.strictEqual(m.load(file).read('v')[0], 7);
      });

      it(`${backend}: a failing async save rejects with ERR_CHECKPOINT_IO and the cache is usable again`, async () => {
        const m = new nc.CacheManager({ v: { shape: [2], dtype: 'float32' } }, 4, { backend });
        const c = m.initCache();
        await assert.rejects(c.saveAsync(path.join(tmp, 'missing', 'x.ckpt')), (e) => e instanceof nc.NegativeCacheError && e.code === 'ERR_CHECKPOINT_IO');
        await assert.rejects(c.saveAsync(42), TypeError);
        m.updateCache(c, { newItems: { v: [[1, 2]] } });
      });
    }
  });

  describe('handler save / restore', () => {
    const train = path.join(__dirname, 'checkpoint', 'train.js');
    const runTrain = (cfg) => JSON.parse(execFileSync(process.execPath, [train, JSON.stringify(cfg)], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }));

    for (const backend of BACKENDS) {
      for (const multi of [false, true]) {
        for (const saveAt of [2, 5]) {
          it(`${backend}, ${multi ? 'MultiCacheLossHandler' : 'CacheLossHandler'}, save after ${saveAt} steps (${saveAt < 3 ? 'in' : 'after'} warm-up): ` +
             'a new process restores and continues with the same draws, losses, caches and weights', () => {
            const ckptFile = tmpFile('train');
            const steps = 10;
            const full = runTrain({ backend, from: 0, to: steps, multi });
            const first = runTrain({ backend, from: 0, to: steps, saveAt, ckpt: ckptFile, multi });
            const second = runTrain({ backend, from: saveAt, to: steps, ckpt: ckptFile, restore: true, multi });
            assert.strictEqual(first.log.length, saveAt);
            assert.deepStrictEqual([...first.log, ...second.log], full.log);
            assert.deepStrictEqual(second.digest, full.digest);
            assert.ok(full.log.some((l) => l.drawn.length > 0) && full.log.some((l) => l.duplicates > 0), 'the run should draw and dedupe');
          });
        }
      }
    }

    const makeHandler = (backend, over = {}, lossOver = {}) => {
      const manager = new nc.CacheManager({ e: { shape: [2], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } }, 8, { backend, ...(over.manager || {}) });
      const loss = new nc.CacheClassificationLoss({ embeddingKey: 'e', dataKeys: ['id'], seed: 77, ...lossOver });
      const handler = new nc.CacheLossHandler(manager, loss, { embeddingKey: 'e', dataKeys: ['id'], dedupe: true, warmupSteps: 1, ...(over.handler || {}) });
      return { manager, loss, handler };
    };
    const tf = require('@tensorflow/tfjs');
    const step = (h, ids) => tf.tidy(() => {
      const q = tf.tensor2d(ids.map((i) => [i / 10, 1]));
      return h.updateCacheAndComputeLoss((d) => tf.concat([tf.cast(d.id, 'float32'), tf.onesLike(tf.cast(d.id, 'float32'))], 1), q, q, { id: ids.map((i) => [i]) });
    });

    for (const backend of BACKENDS) {
      it(`${backend}: refuses mismatched handlers with ERR_CHECKPOINT_MISMATCH and a damaged file with ERR_CHECKPOINT_CORRUPT, changing nothing`, () => {
        const a = makeHandler(backend);
        for (let s = 0; s < 3; s++) tf.dispose(step(a.handler, [s, s + 1, 5]));
        const file = tmpFile('h');
        a.handler.save(file);
        const b = makeHandler(backend);
        tf.dispose(step(b.handler, [9, 8]));
        const snapshot = () => ({ cache: stateOf(b.handler.cache), step: b.handler.step, calls: b.loss.calls, seed: b.loss.seed, warm: b.handler.warmupSteps });
        const before = snapshot();
        const cases = [
          [makeHandler(backend, { manager: { useLru: false } }), /useLru/],
          [makeHandler(backend, {}, { numNegatives: 2 }), /numNegatives/],
          [makeHandler(backend, { handler: { dedupe: false } }), /dedupe was on keys \[id\]; this handler's is off/],
        ];
        for (const [h, re] of cases) {
          assert.throws(() => h.handler.restore(file), (e) => e.code === 'ERR_CHECKPOINT_MISMATCH' && re.test(e.message) && e.message.includes(file));
          assert.strictEqual(h.handler.step, 0);
        }
        const m = new nc.CacheManager(b.manager.specs, 8, { backend });
        assert.throws(() => m.load(file), (e) => e.code === 'ERR_CHECKPOINT_MISMATCH' && /handler checkpoint/.test(e.message));
        const cacheFile = tmpFile('plain');
        b.handler.cache.save(cacheFile);
        assert.throws(() => b.handler.restore(cacheFile), (e) => e.code === 'ERR_CHECKPOINT_MISMATCH' && /cache checkpoint/.test(e.message));
        const bytes = fs.readFileSync(file);
        const rng = mulberry32(9);
        for (let t = 0; t < 40; t++) {
          const bad = Buffer.from(bytes);
          bad[Math.floor(rng() * bad.length)] ^= 0x10;
          const badFile = tmpFile('hbad');
          fs.writeFileSync(badFile, bad);
          expectCode(() => b.handler.restore(badFile), ['ERR_CHECKPOINT_CORRUPT', 'ERR_CHECKPOINT_VERSION'], badFile);
        }
        assert.deepStrictEqual(snapshot(), before);
        b.handler.restore(file);
        assert.deepStrictEqual(stateOf(b.handler.cache), stateOf(a.handler.cache));
        assert.strictEqual(b.handler.step, 3);
        assert.strictEqual(b.loss.calls, a.loss.calls);
      });
    }

    it('restores the dedupe index order (which of equal rows a lookup finds), across backends', () => {
      for (const from of BACKENDS) {
        for (const to of BACKENDS) {
          const a = makeHandler(from);
          const filter = a.handler._checkpointView().filter;
          // Rows 0 and 1 both hold id 7; the live index lists row 1 first (row 0 got 7 later).
          a.manager.updateCache(a.handler.cache, { newItems: { e: [[1, 1], [2, 2]], id: [[3], [7]] } });
          assert.deepStrictEqual(Array.from(filter.lookup(a.handler.cache, { id: [[7]] })), [1]);
          a.manager.updateCache(a.handler.cache, { updatedItemData: { id: [[7]] }, updatedItemIndices: [0] });
          assert.deepStrictEqual(Array.from(filter.lookup(a.handler.cache, { id: [[7]] })), [1]);
          const file = tmpFile('dd');
          a.handler.save(file);
          const b = makeHandler(to);
          const fb = b.handler._checkpointView().filter;
          b.handler.restore(file);
          assert.deepStrictEqual(Array.from(fb.lookup(b.handler.cache, { id: [[7]] })), [1], `${from} -> ${to}`);
          // A fresh filter on the same rows would find row 0: the order came from the file.
          assert.deepStrictEqual(Array.from(new nc.IsInCacheFilterFn(['id']).lookup(b.handler.cache, { id: [[7]] })), [0]);
          // The index keeps following writes after the restore.
          b.manager.updateCache(b.handler.cache, { updatedItemData: { id: [[8]] }, updatedItemIndices: [1] });
          assert.deepStrictEqual(Array.from(fb.lookup(b.handler.cache, { id: [[7], [8]] })), [0, 1]);
        }
      }
    });

    if (BACKENDS.includes('native')) {
      it('a handler saved on native restores into a JS handler (and back) with the same caches and counters', () => {
        const a = makeHandler('native');
        for (let s = 0; s < 4; s++) tf.dispose(step(a.handler, [s, 2 * s, 5]));
        const file = tmpFile('x');
        a.handler.save(file);
        const b = makeHandler('js', {}, { seed: 1 });
        b.handler.restore(file);
        assert.deepStrictEqual(stateOf(b.handler.cache), stateOf(a.handler.cache));
        assert.deepStrictEqual([b.handler.step, b.loss.calls, b.loss.seed], [a.handler.step, a.loss.calls, 77]);
        const file2 = tmpFile('y');
        b.handler.save(file2);
        const c = makeHandler('native', {}, { seed: 2 });
        c.handler.restore(file2);
        assert.deepStrictEqual(stateOf(c.handler.cache), stateOf(a.handler.cache));
        assert.strictEqual(c.loss.seed, 77);
      });
    }
  });
});
