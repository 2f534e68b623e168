#!/usr/bin/env node
'use strict';
// One negative-cache scoring step: score B queries against N cached rows,
// draw numNegatives negatives per query (Gumbel-max / Gumbel-top-k, or topK
// grouping first) and compute the log-sum-exp the loss needs.
//
//   npm run bench -- [--json] [--n N] [--d D] [--b B] [--top-k K] [--num-negatives K]
//                    [--storage float32|float16|bfloat16] [--impl native,js,tfjs,tfjs-wasm]
//                    [--threads T] [--runs R] [--scale S] [--exclusions E]
//   npm run bench -- --compare [--json] [--runs R] [--max-log-n 21]
//   npm run bench -- --lse-grad [--json] [--runs R] [--threads T]
//   npm run bench -- --isa-compare [--json] [--runs R]     (ISA tiers, issue 10)
//   npm run bench -- --large [--isa T] ...                 (N=2^20, D=768, B=64, bfloat16)
//
// Native rows carry the tier that ran and its share of the machine's own
// multiply-add peak, measured by the bench (addon.measurePeak per usable tier,
// all threads): gflops = 2*N*D*B / time, peakFraction = gflops / peakGflops.
// On a shared machine wall time also counts other processes' slices, so the
// same figures are given per CPU-second (process.cpuUsage): cpuGflops,
// peakCpuGflops, cpuPeakFraction. --isa caps the tier (addon.setIsaCap).
// peakTier names the unit whose peak a row is compared with: on the AMX tier
// float32 rows run on AVX-512 (its peak), bfloat16 and float16 rows on the
// tiles (the AMX peak; flops counted once although the query is split).
//
// impl: native = this package's fused kernels; js = its pure-JS kernels;
// tfjs / tfjs-wasm = the same step written with tfjs ops (matMul, Gumbel
// noise, argMax / topk, logSumExp) on the tfjs cpu / wasm backend.
// --compare runs the issue's side-by-side comparison in one go (PyTorch peer
// included when /usr/bin/python3 has torch) and prints the ratios.
// --lse-grad times the full-cache log-sum-exp with its gradient
// (cacheLogSumExp: one fused pass) against the plain scoring pass at N =
// 131072, D = 128, B = 256, and against tfjs matMul + logSumExp + its
// gradient on the tfjs cpu / wasm backends at N = 16384, and prints the ratios.
// --json prints one JSON object per line; otherwise a table.
const path = require('path');
const { spawnSync } = require('child_process');
const { loadAddon } = require('../dist/native/addon');
const { createStore, kernelsFor } = require('../dist/backends');

class UsageError extends Error {}

const ISA_NAMES = ['baseline', 'avx2', 'avx512', 'amx'];
/** The large-cache row of issue 10. */
const LARGE = { n: 2 ** 20, d: 768, b: 64, storage: 'bfloat16' };

const USAGE = `Usage: npm run bench -- [options]
  --json                  one JSON object per line instead of a table
  --n N --d D --b B       cache rows, embedding width, queries (131072, 128, 256)
  --top-k K               topK grouping (0 = off)
  --num-negatives K       draws per query (1)
  --storage S             float32 | float16 | bfloat16 (float32)
  --impl LIST             native,js,tfjs,tfjs-wasm (native)
  --threads T             kernel threads (0 = all cores)
  --runs R                timed runs; the median is reported (7)
  --scale S               score scale (20)
  --exclusions E          excluded rows per query (0; removeAccidentalHits' per-query exclusions)
  --compare               the side-by-side comparison of issue 3 (PyTorch peer included
                          when /usr/bin/python3 has torch), ending with the ratios
  --max-log-n L           largest N = 2^L in --compare (21)
  --lse-grad              the fused lse + gradient pass (cacheLogSumExp) against the plain
                          scoring pass and against tfjs matMul + logSumExp + gradient

  --isa T                 cap the ISA tier: baseline | avx2 | avx512 | amx (default: the best usable)
  --large                 the large-cache row: N=2^20, D=768, B=64, bfloat16 storage
  --unit-norm             cache rows of unit length (scores = scale * cosine) instead of N(0, 1) entries
  --isa-compare           every usable tier interleaved run by run (float32 / float16 / bfloat16 /
                          numNegatives=32, N=131072 D=128 B=256), the PyTorch peer, the large row;
                          medians, per-tier peak fractions and ratios`;

function parseArgs(argv) {
  const a = {
    json: false, compare: false, n: 131072, d: 128, b: 256, topK: 0, numNegatives: 1, storage: 'float32',
    impl: 'native', threads: 0, runs: 7, scale: 20, maxLogN: 21, child: null, exclusions: 0, isa: null, large: false, isaCompare: false,
  };
  const num = (v, name) => {
    const x = Number(v);
    if (!Number.isFinite(x)) throw new UsageError(`--${name} must be a number; got ${v}`);
    return x;
  };
  for (let i = 2; i < argv.length; i++) {
    const k = argv[i], v = argv[i + 1];
    switch (k) {
      case '--json': a.json = true; break;
      case '--compare': a.compare = true; break;
      case '--lse-grad': a.lseGrad = true; break;
      case '--n': a.n = num(v, 'n'); i++; break;
      case '--d': a.d = num(v, 'd'); i++; break;
      case '--b': a.b = num(v, 'b'); i++; break;
      case '--top-k': a.topK = num(v, 'top-k'); i++; break;
      case '--num-negatives': a.numNegatives = num(v, 'num-negatives'); i++; break;
      case '--storage': a.storage = v; i++; break;
      case '--impl': a.impl = v; i++; break;
      case '--threads': a.threads = num(v, 'threads'); i++; break;
      case '--runs': a.runs = num(v, 'runs'); i++; break;
      case '--scale': a.scale = num(v, 'scale'); i++; break;
      case '--max-log-n': a.maxLogN = num(v, 'max-log-n'); i++; break;
      case '--exclusions': a.exclusions = num(v, 'exclusions'); i++; break;
      case '--child': a.child = v; i++; break;
      case '--isa': a.isa = v; i++; break;
      case '--large': a.large = true; break;
      case '--isa-compare': a.isaCompare = true; break;
      case '--unit-norm': a.unitNorm = true; break;
      case '--help': case '-h': a.help = true; break;
      default: throw new UsageError(`unknown option ${k} (see --help)`);
    }
  }
  if (a.isa !== null && !ISA_NAMES.includes(a.isa)) throw new UsageError(`--isa must be one of ${ISA_NAMES.join(', ')}; got ${a.isa}`);
  if (a.large) Object.assign(a, LARGE);
  if (!['float32', 'float16', 'bfloat16'].includes(a.storage)) throw new UsageError(`--storage must be float32, float16 or bfloat16; got ${a.storage}`);
  return a;
}

/** Deterministic data like the PyTorch peer: E ~ N(0, 1), q ~ N(0, 1/d). */
function normals(count, seed) {
  let s = seed >>> 0;
  const u = () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return (s + 0.5) / 4294967296;
  };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(u())), t = 2 * Math.PI * u();
    out[i] = r * Math.cos(t);
    if (i + 1 < count) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

/** --unit-norm: cache rows scaled to unit length (scores = scale · cosine, as a trained dual encoder gives). */
let unitNormRows = false;

/** The cache embeddings: a random block of up to 2^16 rows, repeated to n rows. */
function cacheValues(n, d) {
  const blockRows = Math.min(n, 65536);
  const block = normals(blockRows * d, 7);
  if (unitNormRows) {
    for (let r = 0; r < blockRows; r++) {
      let ss = 0;
      for (let j = r * d; j < (r + 1) * d; j++) ss += block[j] * block[j];
      const f = 1 / Math.sqrt(ss || 1);
      for (let j = r * d; j < (r + 1) * d; j++) block[j] *= f;
    }
  }
  if (blockRows === n) return block;
  const out = new Float32Array(n * d);
  for (let r = 0; r < n; r += blockRows) out.set(block.subarray(0, Math.min(blockRows, n - r) * d), r * d);
  return out;
}

function queries(b, d) {
  const q = normals(b * d, 11);
  const f = 1 / Math.sqrt(d);
  for (let i = 0; i < q.length; i++) q[i] *= f;
  return q;
}

const median = (xs) => {
  const s = [...xs].sort((x, y) => x - y);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

/** A step closure of our kernels (native or js) on a filled store. */
function kernelStep(kind, o, values) {
  const store = createStore(kind, [{ key: 'emb', dtype: 'float32', storage: o.storage, width: o.d }], o.n);
  store.initialize({ emb: values ?? cacheValues(o.n, o.d) }, null);
  const k = kernelsFor(kind);
  const req = { queries: queries(o.b, o.d), batch: o.b, dim: o.d, sources: [{ store, key: 'emb' }], scale: o.scale, scoreEmptyRows: false, threads: o.threads };
  if (o.exclusions > 0) {
    // E rows per query spread over the cache (as accidental hits would be).
    const e = o.exclusions;
    req.exclusions = Int32Array.from({ length: o.b * e }, (_, i) => (Math.floor(i / e) * 7919 + (i % e) * 104729) % o.n);
    req.exclusionOffsets = Int32Array.from({ length: o.b + 1 }, (_, b) => b * e);
  }
  let call = 0;
  const params = () => ({ mode: 'gumbel', invTemp: 1, numDraws: o.numNegatives, seed: 1234, call: call++ });
  const step = o.topK > 0
    ? () => {
      const g = k.scoreGroupMax(req, o.topK);
      const r = k.sampleCandidates(g.scores, o.b, o.topK, params());
      const rows = new Int32Array(r.indices.length);
      for (let i = 0; i < rows.length; i++) rows[i] = r.indices[i] < 0 ? -1 : g.rows[Math.floor(i / o.numNegatives) * o.topK + r.indices[i]];
      return { rows, lse: r.lse };
    }
    : () => k.scoreAndSample(req, params());
  return { step, dispose: () => store.dispose() };
}

/** The same step with tfjs ops (what a user writes without this package). */
async function tfjsStep(o, backend) {
  const tf = require('@tensorflow/tfjs');
  if (backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend(backend);
  await tf.ready();
  const E = tf.tensor2d(cacheValues(o.n, o.d), [o.n, o.d]);
  const q = tf.tensor2d(queries(o.b, o.d), [o.b, o.d]);
  const step = () => {
    const out = tf.tidy(() => {
      let s = tf.mul(tf.matMul(q, E, false, true), o.scale);
      let cols = o.n;
      let groupRows = null;
      if (o.topK > 0 && o.topK < o.n && o.n % o.topK === 0) {
        const g = s.reshape([o.b, o.topK, o.n / o.topK]);
        groupRows = tf.add(tf.argMax(g, 2), tf.mul(tf.range(0, o.topK, 1, 'int32'), o.n / o.topK));
        s = tf.max(g, 2);
        cols = o.topK;
      }
      const u = tf.randomUniform([o.b, cols], 1e-12, 1 - 1e-7);
      const perturbed = tf.sub(s, tf.log(tf.neg(tf.log(u))));
      const idx = o.numNegatives > 1 ? tf.topk(perturbed, o.numNegatives).indices : tf.argMax(perturbed, 1);
      const rows = groupRows ? tf.gather(groupRows, idx, 1, 1) : idx;
      return [rows, tf.logSumExp(s, 1)];
    });
    out.forEach((t) => t.dataSync());
    tf.dispose(out);
  };
  return { step, dispose: () => tf.dispose([E, q]) };
}

async function timeImpl(impl, o) {
  let h;
  if (impl === 'native' || impl === 'js') h = kernelStep(impl, o);
  else if (impl === 'tfjs') h = await tfjsStep(o, 'cpu');
  else if (impl === 'tfjs-wasm') h = await tfjsStep(o, 'wasm');
  else throw new Error(`unknown impl ${impl}`);
  const runs = impl === 'native' ? o.runs : Math.max(1, Math.min(o.runs, 3));
  h.step();  // warm-up
  const ts = [], cpu = [];
  for (let i = 0; i < runs; i++) {
    const c0 = cpuMs();
    const t0 = process.hrtime.bigint();
    h.step();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
    cpu.push(cpuMs() - c0);
  }
  h.dispose();
  const addon = loadAddon();
  const row = {
    impl, n: o.n, d: o.d, b: o.b, topK: o.topK, numNegatives: o.numNegatives, storage: o.storage, scale: o.scale, exclusions: o.exclusions,
    threads: o.threads || require('os').cpus().length, runs,
    median_ms: +median(ts).toFixed(3), min_ms: +Math.min(...ts).toFixed(3),
    ...(impl === 'native' && addon ? { avx2: addon.cpuFeatures().usingAvx2 } : {}),
  };
  return impl === 'native' && addon ? withPeakFraction(row, median(ts), median(cpu)) : row;
}

function readStatus(field) {
  const m = require('fs').readFileSync('/proc/self/status', 'utf8').match(new RegExp(`${field}:\\s+(\\d+) kB`));
  return m ? Number(m[1]) * 1024 : NaN;
}

/** Child: peak RSS growth over a native step, after the store is set up. */
function memoryChild(o) {
  const h = kernelStep('native', o);
  const fs = require('fs');
  let worst = 0;
  for (let i = 0; i < 3; i++) {
    if (global.gc) global.gc();
    fs.writeFileSync('/proc/self/clear_refs', '5');  // resets VmHWM to the current RSS
    const before = readStatus('VmRSS');
    h.step();
    worst = Math.max(worst, readStatus('VmHWM') - before);
  }
  h.dispose();
  return { impl: 'native', what: 'peak_extra_rss', n: o.n, d: o.d, b: o.b, topK: o.topK, numNegatives: o.numNegatives, storage: o.storage, extra_rss_mb: +(worst / 2 ** 20).toFixed(2) };
}

function runChild(kind, o) {
  const args = [process.argv[1], '--child', kind, '--json', '--n', `${o.n}`, '--d', `${o.d}`, '--b', `${o.b}`, '--top-k', `${o.topK}`,
    '--num-negatives', `${o.numNegatives}`, '--storage', o.storage, '--threads', `${o.threads}`, '--runs', `${o.runs}`, '--scale', `${o.scale}`,
    '--impl', o.impl, '--exclusions', `${o.exclusions}`, ...(unitNormRows ? ['--unit-norm'] : [])];
  const r = spawnSync(process.execPath, ['--expose-gc', ...args], { encoding: 'utf8', maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`child ${kind} failed: ${r.stderr}`);
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

function torchPeer(o) {
  const script = path.resolve(__dirname, '..', '..', 'shared', 'peers', 'torch_step.py');
  const candidates = [process.env.TORCH_STEP_PY, script, '/work/shared/peers/torch_step.py'].filter(Boolean);
  const file = candidates.find((f) => require('fs').existsSync(f));
  if (!file) return [];
  const r = spawnSync('/usr/bin/python3', [file, '--n', `${o.n}`, '--d', `${o.d}`, '--b', `${o.b}`, '--runs', `${o.runs}`,
    ...(o.threads ? ['--threads', `${o.threads}`] : [])], { encoding: 'utf8' });
  if (r.status !== 0) {
    process.stderr.write(`torch peer unavailable: ${(r.stderr || '').trim().split('\n').pop()}\n`);
    return [];
  }
  return r.stdout.trim().split('\n').filter(Boolean).map((l) => JSON.parse(l));
}

// --- ISA tiers and the machine's peaks (issue 10) ------------------------------

const cpuMs = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e3;
};

let peakCache = null;
/**
 * The float32 multiply-add peak of every usable tier on all threads, best of
 * `tries` probes of `seconds` each, in GFLOP/s of wall time; and per
 * CPU-second (process.cpuUsage), where the probe's own calibration (a short
 * single-thread run, timed by a calibration-only call right after) is taken
 * out: the best of the tries where that left most of the time (else of the
 * whole calls, which overstates the peak a little: fractions err low).
 */
function machinePeaks(threads = 0, tries = 3, seconds = 0.5) {
  if (peakCache) return peakCache;
  const addon = loadAddon();
  const peaks = {};
  for (const tier of addon.cpuFeatures().usableTiers) {
    let wall = -1;
    const perCpu = [], whole = [];
    for (let i = 0; i < tries; i++) {
      const c0 = cpuMs(), w0 = process.hrtime.bigint();
      const g = addon.measurePeak(tier, threads, seconds);
      const c1 = cpuMs(), w1 = process.hrtime.bigint();
      if (!(g > 0)) break;
      addon.measurePeak(tier, 1, 1e-6);  // calibration only
      const c2 = cpuMs(), w2 = process.hrtime.bigint();
      const callWall = Number(w1 - w0) / 1e9, callCpu = (c1 - c0) / 1e3;
      const mainWall = callWall - Number(w2 - w1) / 1e9, mainCpu = callCpu - (c2 - c1) / 1e3;
      wall = Math.max(wall, g);
      whole.push((g * callWall) / callCpu);
      if (mainWall > 0.7 * callWall && mainCpu > 0.7 * callCpu) perCpu.push((g * mainWall) / mainCpu);
    }
    if (wall > 0) peaks[tier] = { gflops: +wall.toFixed(1), cpuGflops: +Math.max(...(perCpu.length ? perCpu : whole)).toFixed(1) };
  }
  peakCache = peaks;
  return peaks;
}

/**
 * Adds the tier and the peak fractions to a native row (flops: the 2*N*D*B of
 * the score matrix, the useful ones: the AMX tier's split query is not
 * counted twice). peakTier is the unit the row's products ran on: the AMX
 * tier scores bfloat16 and float16 rows with tiles, float32 ones with AVX-512.
 */
function withPeakFraction(row, ms, cpu) {
  const tier = loadAddon().cpuFeatures().tier;
  const peakTier = tier === 'amx' && row.storage === 'float32' ? 'avx512' : tier;
  const peak = machinePeaks()[peakTier];
  const flops = 2 * row.n * row.d * row.b;
  const gflops = flops / ms / 1e6, cpuGflops = flops / cpu / 1e6;
  return {
    ...row, ...(unitNormRows ? { rows: 'unit-norm' } : {}), tier, peakTier, cpu_ms: +cpu.toFixed(3), gflops: +gflops.toFixed(1), peakGflops: peak ? peak.gflops : null,
    peakFraction: peak ? +(gflops / peak.gflops).toFixed(3) : null, cpuGflops: +cpuGflops.toFixed(1),
    peakCpuGflops: peak ? peak.cpuGflops : null, cpuPeakFraction: peak ? +(cpuGflops / peak.cpuGflops).toFixed(3) : null,
  };
}

/** The ISA line printed first: chosen tier, usable tiers, cap and measured peaks. */
function isaInfo() {
  const f = loadAddon().cpuFeatures();
  return { what: 'isa', tier: f.tier, usableTiers: f.usableTiers, isaCap: f.isaCap, peaks: machinePeaks() };
}

/**
 * Every usable tier above the baseline at the main shape, interleaved run by
 * run (so a load change hits every tier alike), then the PyTorch peer and the
 * large-cache row on the best tier; medians, peak fractions and ratios.
 */
async function isaCompare(o, emit) {
  const addon = loadAddon();
  const f = addon.cpuFeatures();
  const tiers = f.usableTiers.filter((t) => t !== 'baseline');
  const base = { ...o, n: 131072, d: 128, b: 256, topK: 0, numNegatives: 1, storage: 'float32', threads: 0, scale: 20 };
  const confs = [
    { label: 'f32', storage: 'float32' }, { label: 'f16', storage: 'float16' }, { label: 'bf16', storage: 'bfloat16' },
    { label: 'k32', storage: 'float32', numNegatives: 32 },
  ];
  const values = cacheValues(base.n, base.d);
  const steps = confs.map((c) => ({ ...c, h: kernelStep('native', { ...base, ...c }, values) }));
  const samples = {};
  const before = f.isaCap;
  try {
    for (const t of tiers) { addon.setIsaCap(t); for (const s of steps) s.h.step(); }  // warm-up
    for (let r = 0; r < o.runs; r++) {
      for (const t of tiers) {
        addon.setIsaCap(t);
        for (const s of steps) {
          const c0 = cpuMs(), t0 = process.hrtime.bigint();
          s.h.step();
          const ms = Number(process.hrtime.bigint() - t0) / 1e6;
          ((samples[`${t} ${s.label}`] ??= { ms: [], cpu: [] }).ms).push(ms);
          samples[`${t} ${s.label}`].cpu.push(cpuMs() - c0);
        }
      }
    }
  } finally {
    addon.setIsaCap(before);
  }
  for (const s of steps) s.h.dispose();
  const rows = [];
  const res = {};
  for (const t of tiers) {
    addon.setIsaCap(t);
    for (const s of steps) {
      const sm = samples[`${t} ${s.label}`];
      const row = withPeakFraction({
        impl: 'native', n: base.n, d: base.d, b: base.b, topK: 0, numNegatives: s.numNegatives || 1, storage: s.storage,
        scale: base.scale, threads: require('os').cpus().length, runs: o.runs, median_ms: +median(sm.ms).toFixed(3), min_ms: +Math.min(...sm.ms).toFixed(3),
      }, median(sm.ms), median(sm.cpu));
      row.label = `${t} ${s.label}`;
      res[row.label] = row;
      rows.push(row);
      emit(row);
    }
  }
  addon.setIsaCap(before);
  const peer = torchPeer(base);
  const tStep = peer.find((r) => r.impl === 'torch-step');
  for (const r of peer) { r.label = r.impl; rows.push(r); emit(r); }
  const large = await timeImpl('native', { ...base, ...LARGE, runs: Math.min(o.runs, 3) });
  large.label = `${large.tier} large`;
  rows.push(large);
  emit(large);
  const ratio = (a, b) => (a && b ? +(a / b).toFixed(3) : null);
  const summary = { what: 'isa-summary', tier: f.tier, tiers, load: require('os').loadavg().map((x) => +x.toFixed(2)) };
  for (const t of tiers) {
    const g = (l) => res[`${t} ${l}`];
    summary[t] = {
      f32PeakFraction: g('f32').peakFraction, f32CpuPeakFraction: g('f32').cpuPeakFraction,
      target_f32PeakFraction: t === 'avx512' || t === 'amx' ? 0.7 : null,
      bf16_over_f32: ratio(g('bf16').median_ms, g('f32').median_ms), f16_over_f32: ratio(g('f16').median_ms, g('f32').median_ms),
      k32_over_k1: ratio(g('k32').median_ms, g('f32').median_ms), target_k32_over_k1: 1.1,
      over_torch_step: tStep ? Object.fromEntries(['f32', 'f16', 'bf16'].map((l) => [l, ratio(g(l).median_ms, tStep.median_ms)])) : null,
      target_over_torch_step: 0.25,
    };
    if (t === 'amx') {
      Object.assign(summary[t], {
        bf16_speedup_over_f32: ratio(g('f32').median_ms, g('bf16').median_ms), target_bf16_speedup_over_f32: 5,
        bf16PeakFraction: g('bf16').peakFraction, bf16CpuPeakFraction: g('bf16').cpuPeakFraction, target_bf16PeakFraction: 0.2,
      });
    }
  }
  if (tiers.includes('avx512') && tiers.includes('avx2')) {
    summary.avx2_over_avx512 = Object.fromEntries(confs.map((c) => [c.label, ratio(res[`avx2 ${c.label}`].median_ms, res[`avx512 ${c.label}`].median_ms)]));
  }
  summary.large = { tier: large.tier, median_ms: large.median_ms, gflops: large.gflops, peakFraction: large.peakFraction, cpuPeakFraction: large.cpuPeakFraction };
  emit(summary, true);
  return rows;
}

function printTable(rows) {
  const cols = ['impl', 'n', 'd', 'b', 'topK', 'numNegatives', 'storage', 'scale', 'exclusions', 'threads', 'median_ms', 'min_ms', 'extra_rss_mb',
    'tier', 'peakTier', 'gflops', 'peakGflops', 'peakFraction', 'cpuGflops', 'peakCpuGflops', 'cpuPeakFraction'];
  const present = cols.filter((c) => rows.some((r) => r[c] !== undefined));
  const cell = (r, c) => (r[c] === undefined ? '' : `${r[c]}`);
  const w = present.map((c) => Math.max(c.length, ...rows.map((r) => cell(r, c).length)));
  console.log(present.map((c, i) => c.padStart(w[i])).join('  '));
  for (const r of rows) console.log(present.map((c, i) => cell(r, c).padStart(w[i])).join('  '));
}

async function compare(o, emit) {
  const base = { ...o, n: 131072, d: 128, b: 256, topK: 0, numNegatives: 1, storage: 'float32', threads: 0, exclusions: 0 };
  const rows = [];
  const add = (r, label) => { r.label = label; rows.push(r); emit(r); return r; };
  const peer = torchPeer(base);
  const tGemm = peer.find((r) => r.impl === 'torch-gemm'), tStep = peer.find((r) => r.impl === 'torch-step');
  if (tGemm) add(tGemm, 'torch-gemm');
  if (tStep) add(tStep, 'torch-step');
  const f32 = add(await timeImpl('native', base), 'native f32');
  const f16 = add(await timeImpl('native', { ...base, storage: 'float16' }), 'native f16');
  const bf16 = add(await timeImpl('native', { ...base, storage: 'bfloat16' }), 'native bf16');
  const topk = add(await timeImpl('native', { ...base, topK: 64 }), 'native topK=64');
  const negs = add(await timeImpl('native', { ...base, numNegatives: 32 }), 'native numNegatives=32');
  const dense = add(await timeImpl('native', { ...base, scale: 1 }), 'native scale=1');
  const excl = add(await timeImpl('native', { ...base, exclusions: 1 }), 'native exclusions=1');
  const one = add(await timeImpl('native', { ...base, threads: 1 }), 'native 1 thread');
  const two = add(await timeImpl('native', { ...base, threads: 2 }), 'native 2 threads');
  const perRow = [];
  for (let e = 14; e <= o.maxLogN; e++) {
    const r = add(await timeImpl('native', { ...base, n: 2 ** e, runs: Math.max(3, o.runs) }), `native N=2^${e}`);
    r.ns_per_row = +((r.median_ms * 1e6) / r.n).toFixed(2);
    perRow.push(r);
  }
  add(await timeImpl('native', { ...base, ...LARGE, runs: Math.min(o.runs, 3) }), 'native large (2^20 x 768, B=64, bf16)');
  const mem = runChild('memory', { ...base, n: 2 ** 20 })[0];
  add(mem, 'native memory N=2^20');
  for (const impl of ['tfjs', 'tfjs-wasm']) {
    try {
      add(await timeImpl(impl, { ...base, runs: 1 }), impl);
    } catch (e) {
      process.stderr.write(`${impl}: ${e.message}\n`);
    }
  }
  const ratio = (a, b) => (a && b ? +(a / b).toFixed(3) : null);
  const rowsPerN = perRow.map((r) => r.ns_per_row);
  const summary = {
    what: 'summary',
    native_over_torch_step: ratio(f32.median_ms, tStep && tStep.median_ms), target_native_over_torch_step: 0.25,
    native_over_torch_gemm: ratio(f32.median_ms, tGemm && tGemm.median_ms), target_native_over_torch_gemm: 1.25,
    f16_over_f32: ratio(f16.median_ms, f32.median_ms), bf16_over_f32: ratio(bf16.median_ms, f32.median_ms), target_half_over_f32: 1.0,
    topk64_over_base: ratio(topk.median_ms, f32.median_ms), negatives32_over_base: ratio(negs.median_ms, f32.median_ms), target_extra: 1.1,
    scale1_over_base: ratio(dense.median_ms, f32.median_ms),
    exclusions1_over_base: ratio(excl.median_ms, f32.median_ms),
    two_thread_speedup: ratio(one.median_ms, two.median_ms), target_speedup: 1.8,
    ns_per_row: Object.fromEntries(perRow.map((r) => [`2^${Math.log2(r.n)}`, r.ns_per_row])),
    ns_per_row_max_over_min: ratio(Math.max(...rowsPerN), Math.min(...rowsPerN)),
    extra_rss_mb_at_2_20: mem.extra_rss_mb, target_extra_rss_mb: 32,
  };
  emit(summary, true);
  return rows;
}

/** The fused lse + gradient pass: the kernel call, or the public op with tf.grad (api). */
function lseGradStep(o, api) {
  const store = createStore('native', [{ key: 'emb', dtype: 'float32', storage: o.storage, width: o.d }], o.n);
  store.initialize({ emb: cacheValues(o.n, o.d) }, null);
  const qv = queries(o.b, o.d);
  if (!api) {
    const k = kernelsFor('native');
    const req = { queries: qv, batch: o.b, dim: o.d, sources: [{ store, key: 'emb' }], scale: o.scale, scoreEmptyRows: false, threads: o.threads };
    return { step: () => k.cacheLse(req, null), dispose: () => store.dispose() };
  }
  // Through the package root: a NegativeCache over the same rows.
  const tf = require('@tensorflow/tfjs');
  const nc = require('..');
  store.dispose();
  const m = new nc.CacheManager({ emb: { shape: [o.d], dtype: 'float32', storage: o.storage } }, o.n, { backend: 'native' });
  const cache = m.initCache({ data: { emb: cacheValues(o.n, o.d) } });
  const q = tf.tensor2d(qv, [o.b, o.d]);
  const f = (x) => tf.sum(nc.cacheLogSumExp(x, cache, { embeddingKey: 'emb', scale: o.scale }));
  const step = () => {
    const g = tf.grad(f)(q);
    g.dataSync();
    g.dispose();
  };
  return { step, dispose: () => { q.dispose(); cache.dispose(); } };
}

/** tfjs ops: logSumExp(scale · q Eᵀ) and its gradient with respect to q. */
async function tfjsLseGradStep(o, backend) {
  const tf = require('@tensorflow/tfjs');
  if (backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend(backend);
  await tf.ready();
  const E = tf.tensor2d(cacheValues(o.n, o.d), [o.n, o.d]);
  const q = tf.tensor2d(queries(o.b, o.d), [o.b, o.d]);
  const f = (x) => tf.sum(tf.logSumExp(tf.mul(tf.matMul(x, E, false, true), o.scale), 1));
  const step = () => {
    const { value, grad } = tf.valueAndGrad(f)(q);
    value.dataSync();
    grad.dataSync();
    tf.dispose([value, grad]);
  };
  return { step, dispose: () => tf.dispose([E, q]) };
}

async function timeStep(h, runs) {
  h.step();  // warm-up
  const ts = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    h.step();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  h.dispose();
  return { runs, median_ms: +median(ts).toFixed(3), min_ms: +Math.min(...ts).toFixed(3) };
}

async function lseGradCompare(o, emit) {
  const threads = o.threads || require('os').cpus().length;
  const base = { ...o, n: 131072, d: 128, b: 256, topK: 0, numNegatives: 1, storage: 'float32' };
  const small = { ...base, n: 16384 };
  const rows = [];
  const add = (r, label) => { r.label = label; rows.push(r); emit(r); return r; };
  const row = (impl, x, t) => ({ impl, n: x.n, d: x.d, b: x.b, storage: x.storage, scale: x.scale, threads, ...t });
  const lse = {}, plain = {}, api = {};
  for (const scale of [20, 1]) {
    const x = { ...base, scale };
    lse[scale] = add(row('native-lse-grad', x, await timeStep(lseGradStep(x, false), o.runs)), `native lse+grad scale=${scale}`);
    plain[scale] = add(row('native-step', x, await timeStep(kernelStep('native', x), o.runs)), `native scoring step scale=${scale}`);
  }
  const k = kernelsFor('native');
  // The scoring pass with no draws (lse only): the GEMM and the online lse.
  const lseOnlyH = (() => {
    const store = createStore('native', [{ key: 'emb', dtype: 'float32', storage: 'float32', width: base.d }], base.n);
    store.initialize({ emb: cacheValues(base.n, base.d) }, null);
    const req = { queries: queries(base.b, base.d), batch: base.b, dim: base.d, sources: [{ store, key: 'emb' }], scale: base.scale, scoreEmptyRows: false, threads: o.threads };
    return { step: () => k.scoreAndSample(req, { mode: 'none', invTemp: 1, numDraws: 1, seed: 0, call: 0 }), dispose: () => store.dispose() };
  })();
  const lseOnly = add(row('native-lse-only', base, await timeStep(lseOnlyH, o.runs)), 'native lse only (no draws) scale=20');
  for (const storage of ['float16', 'bfloat16']) {
    add(row('native-lse-grad', { ...base, storage }, await timeStep(lseGradStep({ ...base, storage }, false), o.runs)), `native lse+grad ${storage}`);
  }
  api[20] = add(row('native-api', base, await timeStep(lseGradStep(base, true), o.runs)), 'cacheLogSumExp + tf.grad scale=20');
  const smallNative = add(row('native-lse-grad', small, await timeStep(lseGradStep(small, false), o.runs)), 'native lse+grad N=16384');
  const tfjs = {};
  for (const [impl, backend] of [['tfjs', 'cpu'], ['tfjs-wasm', 'wasm']]) {
    try {
      tfjs[impl] = add(row(`${impl}-lse-grad`, small, await timeStep(await tfjsLseGradStep(small, backend), Math.max(1, Math.min(o.runs, 3)))),
        `${impl} matMul+logSumExp+grad N=16384`);
    } catch (e) {
      process.stderr.write(`${impl}: ${e.message}\n`);
    }
  }
  const ratio = (a, b) => (a && b ? +(a / b).toFixed(3) : null);
  const summary = {
    what: 'summary_lse_grad',
    lse_grad_over_step_scale20: ratio(lse[20].median_ms, plain[20].median_ms),
    lse_grad_over_step_scale1: ratio(lse[1].median_ms, plain[1].median_ms),
    lse_grad_over_lse_only_scale20: ratio(lse[20].median_ms, lseOnly.median_ms),
    api_over_kernel_scale20: ratio(api[20].median_ms, lse[20].median_ms),
    tfjs_over_native_n16384: ratio(tfjs.tfjs && tfjs.tfjs.median_ms, smallNative.median_ms),
    tfjs_wasm_over_native_n16384: ratio(tfjs['tfjs-wasm'] && tfjs['tfjs-wasm'].median_ms, smallNative.median_ms),
  };
  emit(summary, true);
  return rows;
}

async function main() {
  const o = parseArgs(process.argv);
  if (o.help) {
    console.log(USAGE);
    return;
  }
  unitNormRows = !!o.unitNorm;
  if (o.child === 'memory') {
    console.log(JSON.stringify(memoryChild(o)));
    return;
  }
  if (!loadAddon() && o.impl.split(',').includes('native')) throw new Error('the native addon is not built (npm run build:native)');
  const emitJson = (r) => console.log(JSON.stringify(r));
  if (loadAddon()) {
    if (o.isa !== null) loadAddon().setIsaCap(o.isa);
    const info = isaInfo();
    if (o.json) emitJson(info);
    else console.log(`tier ${info.tier} (usable: ${info.usableTiers.join(', ')}; cap ${info.isaCap ?? 'none'}); peaks GFLOP/s (wall / per CPU-s): ${Object.entries(info.peaks).map(([t, p]) => `${t} ${p.gflops} / ${p.cpuGflops}`).join(', ')}; load ${require('os').loadavg().map((x) => x.toFixed(1)).join(' ')}`);
  }
  if (o.lseGrad) {
    const rows = await lseGradCompare(o, o.json ? emitJson : (r, isSummary) => { if (isSummary) console.log(JSON.stringify(r, null, 2)); });
    if (!o.json) printTable(rows.map((r) => ({ ...r, impl: r.label || r.impl })));
    return;
  }
  if (o.isaCompare) {
    const rows = await isaCompare(o, o.json ? emitJson : (r, isSummary) => { if (isSummary) console.log(JSON.stringify(r, null, 2)); });
    if (!o.json) printTable(rows.map((r) => ({ ...r, impl: r.label || r.impl })));
    return;
  }
  if (o.compare) {
    const rows = await compare(o, o.json ? emitJson : (r, isSummary) => { if (isSummary) console.log(JSON.stringify(r, null, 2)); });
    if (!o.json) printTable(rows.map((r) => ({ ...r, impl: r.label || r.impl })));
    return;
  }
  const rows = [];
  for (const impl of o.impl.split(',')) {
    const r = await timeImpl(impl.trim(), o);
    rows.push(r);
    if (o.json) emitJson(r);
  }
  if (!o.json) printTable(rows);
}

main().catch((e) => {
  console.error(e instanceof UsageError ? `bench: ${e.message}` : (e.stack || String(e)));
  process.exit(1);
});
