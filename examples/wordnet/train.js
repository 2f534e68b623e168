#!/usr/bin/env node
'use strict';
// `npm run demo`: trains a two-tower retrieval model on WordNet 3.1 (queries =
// glosses, documents = lemmas) with in-batch negatives (batch B and 4B) and the
// negative cache, compares held-out recall on two test sets (held-out glosses;
// held-out usage examples with the lemma masked out) at equal steps and at
// equal wall time. See docs/demo.md.

const fs = require('fs');
const path = require('path');
const { parseArgs, helpText, Progress } = require('./cli');
const { loadWordNet, splitSynsets, PairSampler, clozeQueries } = require('./data');
const { Featurizer, gatherRows } = require('./features');
const { Towers } = require('./towers');
const { embedAll, recallAt } = require('./eval');
const { writeReport } = require('./report');
const { fullCacheTerm } = require('./full_cache');
const { SharedNegatives } = require('./shared_negatives');

const QUERY_WIDTH = 48;   // ids per gloss (words, then trigrams)
const DOC_WIDTH = 24;     // ids per lemma

const median = (xs) => { const s = [...xs].sort((a, b) => a - b); const n = s.length; return n === 0 ? NaN : n % 2 ? s[(n - 1) / 2] : (s[n / 2 - 1] + s[n / 2]) / 2; };
const wallNow = () => Number(process.hrtime.bigint()) / 1e9;
const cpuNow = () => { const u = process.cpuUsage(); return (u.user + u.system) / 1e6; };

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  if (opts.help) { process.stdout.write(helpText() + '\n'); return; }

  const now = opts.clock === 'cpu' ? cpuNow : wallNow;
  const tf = require('@tensorflow/tfjs');
  if (opts.backend === 'wasm') require('@tensorflow/tfjs-backend-wasm');
  await tf.setBackend(opts.backend);
  await tf.ready();
  const nc = require('../..');
  const log = (s) => process.stderr.write(s + '\n');
  const t0 = Date.now();

  // ---- data
  const wn = loadWordNet();
  let synsets = wn.synsets;
  if (opts.synsets > 0) synsets = synsets.slice(0, opts.synsets);
  const { train, heldOut: allHeldOut } = splitSynsets(synsets);
  // At most --eval-queries per test set, evenly spread (the held-out list is in file order: nouns first).
  const spread = (list) => (opts.evalQueries > 0 && list.length > opts.evalQueries
    ? Array.from({ length: opts.evalQueries }, (_, i) => list[Math.floor(i * list.length / opts.evalQueries)]) : list);
  const heldOut = spread(allHeldOut);
  const cloze = spread(clozeQueries(allHeldOut, wn.lemmas));
  // The corpus: every lemma of the synsets in use (all 147,478 with the full data).
  const used = new Set();
  for (const s of synsets) for (const l of s.lemmas) used.add(l);
  const corpusIds = Int32Array.from(used).sort();
  const rowOfLemma = new Int32Array(wn.lemmas.length).fill(-1);
  corpusIds.forEach((l, r) => { rowOfLemma[l] = r; });
  const features = new Featurizer({ buckets: opts.buckets });
  const lemmaFeatures = features.matrix(Array.from(corpusIds, (l) => wn.lemmas[l]), DOC_WIDTH);   // by corpus row
  const trainGloss = features.matrix(train.map((s) => s.gloss), QUERY_WIDTH);
  const testSets = [
    { name: 'gloss', prefix: '', ids: features.matrix(heldOut.map((s) => s.gloss), QUERY_WIDTH),
      positives: heldOut.map((s) => Int32Array.from(s.lemmas, (l) => rowOfLemma[l])) },
    { name: 'cloze', prefix: 'cloze', ids: features.matrix(cloze.map((c) => c.text), QUERY_WIDTH),
      positives: cloze.map((c) => Int32Array.from(c.synset.lemmas, (l) => rowOfLemma[l])) },
  ];
  const trainRows = train.map((s) => ({ lemmas: Int32Array.from(s.lemmas, (l) => rowOfLemma[l]) }));
  // A key per document (its feature row), for spotting accidental hits among cached rows.
  const docKey = (ids, offset) => { let h = 0x811c9dc5; for (let j = 0; j < DOC_WIDTH; j++) h = Math.imul(h ^ ids[offset + j], 0x01000193) >>> 0; return h; };
  const lemmaKey = new Uint32Array(corpusIds.length);
  for (let r = 0; r < corpusIds.length; r++) lemmaKey[r] = docKey(lemmaFeatures, r * DOC_WIDTH);
  log(`WordNet 3.1: ${synsets.length} synsets (${train.length} train; ${heldOut.length} held-out glosses and ${cloze.length} ` +
      `masked usage examples evaluated), ${corpusIds.length} lemmas in the corpus; tfjs ${opts.backend}; loaded in ${((Date.now() - t0) / 1000).toFixed(1)}s`);

  // ---- model pieces
  const specs = {
    embedding: { shape: [opts.dim], dtype: 'float32' },
    ids: { shape: [DOC_WIDTH], dtype: 'int32' },
  };
  const newModel = () => new Towers(tf, { buckets: opts.buckets, embeddingDim: opts.dim, outputDim: opts.dim, seed: opts.seed, lr: opts.lr });
  const docNetwork = (model) => (data) => model.doc(data.ids);

  /** A handler: the recipe (k draws, empty rows skipped, warm-up) or the reference (k=1, empty rows scored). */
  const newHandler = (kind, warmupSteps) => {
    if (kind !== 'reference' && opts.negatives === 'shared') {
      return new SharedNegatives({ nc, specs, cacheSize: opts.cacheSize, backend: opts.cacheBackend, k: opts.k, scale: opts.scale,
        invTemp: opts.invTemp, seed: opts.seed, dim: opts.dim, docWidth: DOC_WIDTH, lemmaKey, docKey, maxDrawn: opts.sharedMax, detach: opts.detachNegatives });
    }
    const manager = new nc.CacheManager(specs, opts.cacheSize, { backend: opts.cacheBackend });
    const reference = kind === 'reference';
    const loss = new nc.CacheClassificationLoss({
      embeddingKey: 'embedding', dataKeys: ['ids'], scoreTransform: opts.scale, seed: opts.seed,
      numNegatives: reference ? 1 : Math.max(opts.k, 1),
      scoreEmptyRows: reference,
      retrievalFn: new nc.GumbelMaxRetrievalFn({ invTemp: reference ? 1 : opts.invTemp }),
    });
    return new nc.CacheLossHandler(manager, loss, {
      embeddingKey: 'embedding', dataKeys: ['ids'],
      inBatchWeight: reference ? 0 : opts.inBatchWeight,
      warmupSteps: reference ? 0 : warmupSteps,
      dedupe: !reference && opts.dedupe,
      removeAccidentalHits: !reference && opts.removeAccidentalHits,
    });
  };

  /**
   * One optimizer step of a given kind:
   *   {batch, handler: null}            in-batch softmax;
   *   {batch, handler, phase: 'warm'}   the cache mode's warm-up step (in-batch softmax, positives inserted);
   *   {batch, handler, phase: 'cache'}  the cache mode's main step (sampled cache loss with k draws, or with
   *                                     k = 0 in-batch softmax only; plus the full-cache query-side term when
   *                                     --full-cache-weight > 0).
   */
  const step = (model, optimizer, sampler, kind) => {
    const B = kind.batch;
    const batch = sampler.next();
    const query = tf.tensor2d(gatherRows(trainGloss, QUERY_WIDTH, batch.synsets), [B, QUERY_WIDTH], 'int32');
    const doc = gatherRows(lemmaFeatures, DOC_WIDTH, batch.lemmas);
    const docIds = tf.tensor2d(doc, [B, DOC_WIDTH], 'int32');
    const handler = kind.handler;
    let record;
    if (handler instanceof SharedNegatives) {
      optimizer.minimize(() => {
        const q = model.query(query);
        const p = model.doc(docIds);
        const loss = handler.loss(tf, { q, p, docIds: doc, positives: Array.from(batch.synsets, (s) => trainRows[s].lemmas),
          docNetwork: (ids) => model.doc(ids), draw: kind.phase === 'cache' });
        const m = handler.lastMetrics;
        record = { loss: m.trainingLoss, staleness: m.staleness, drawn: m.drawn, accidentalHits: m.accidentalHits, phase: kind.phase };
        return loss;
      }, false, model.variables);
      model.applyTableGradients();
      tf.dispose([query, docIds]);
      return record;
    }
    if (handler) {
      const cachePhase = kind.phase === 'cache' && (kind.reference || opts.k > 0);
      handler.warmupSteps = cachePhase ? 0 : handler.step + 1;
    }
    optimizer.minimize(() => {
      const q = model.query(query);
      const p = model.doc(docIds);
      if (handler === null) {
        const loss = nc.inBatchCrossEntropy(q, p, opts.scale);
        record = { loss: loss.dataSync()[0] };
        return loss;
      }
      const useFull = kind.phase === 'cache' && opts.fullCacheWeight > 0;
      const fullTerm = () => fullCacheTerm(tf, {
        q, p, cache: handler.cache, scale: opts.scale, dim: opts.dim, docWidth: DOC_WIDTH,
        positives: Array.from(batch.synsets, (s) => trainRows[s].lemmas), lemmaKey, docKey,
      });
      // --full-cache-when before: on the cache as the step found it (like the sampled loss); after: once the
      // handler has refreshed the drawn rows with their fresh embeddings and inserted this batch's positives.
      let full = useFull && opts.fullCacheWhen === 'before' ? fullTerm() : null;
      let loss = handler.updateCacheAndComputeLoss(docNetwork(model), q, p, { ids: doc });
      if (useFull && opts.fullCacheWhen === 'after') full = fullTerm();
      const m = handler.lastMetrics;
      record = { loss: m.trainingLoss, interpretable: m.interpretableLoss, staleness: m.staleness, phase: kind.phase };
      if (full) {
        loss = tf.add(loss, tf.mul(full.loss, opts.fullCacheWeight));
        record.fullCache = full.value;
        record.accidentalHits = full.accidentalHits;
        record.loss = loss.dataSync()[0];
      }
      return loss;
    }, false, model.variables);
    model.applyTableGradients();
    tf.dispose([query, docIds]);
    return record;
  };

  /** Runs `total` steps of `kind`; returns {steps, seconds, curve} (measured training time only). */
  const trainLoop = (label, model, optimizer, sampler, kind, total, { curve = [], stepOffset = 0 } = {}) => {
    const bar = new Progress(label, total);
    let seconds = 0;
    let steps = 0;
    while (steps < total) {
      const start = now();
      const r = step(model, optimizer, sampler, kind);
      seconds += now() - start;
      steps++;
      r.step = stepOffset + steps;
      if (steps % 10 === 0 || steps === total) curve.push(r);
      bar.update(steps, `loss ${r.loss.toFixed(3)}`);
    }
    bar.done();
    return { steps, seconds, curve };
  };

  /** Recall on both test sets (the corpus is embedded once). */
  const evaluate = (label, model) => {
    const bar = new Progress(`eval ${label}`, corpusIds.length + testSets.reduce((a, t) => a + t.positives.length, 0));
    const corpus = embedAll(tf, (ids) => model.doc(ids), lemmaFeatures, DOC_WIDTH, corpusIds.length, opts.dim,
      (done) => bar.update(done));
    let offset = corpusIds.length;
    const out = {};
    for (const t of testSets) {
      const queries = embedAll(tf, (ids) => model.query(ids), t.ids, QUERY_WIDTH, t.positives.length, opts.dim);
      const base = offset;
      const [r1, r10, r100, r1000] = recallAt(queries, t.positives, corpus, opts.dim, [1, 10, 100, 1000],
        (done) => bar.update(base + done), opts.cacheBackend);
      offset += t.positives.length;
      out[t.name] = { r1, r10, r100, r1000 };
    }
    bar.done(`R@10 ${out.gloss.r10.toFixed(3)} / cloze ${out.cloze.r10.toFixed(3)}`);
    return out;
  };

  const snapshotOptimizer = async (optimizer) => (await optimizer.getWeights()).map((w) => ({ name: w.name, tensor: tf.clone(w.tensor) }));

  const modes = opts.modes;
  const B = opts.batch;
  const bigB = opts.batch * 4;
  const hasCache = modes.includes('cache');
  for (const m of ['in-batch-time', 'in-batch-4x']) if (modes.includes(m) && !hasCache) log(`${m} needs the cache mode (its time budget): skipped`);

  // ---- interleaved timing: per-step cost of every step kind, in alternating short bursts on a
  // throwaway model (medians over rounds), so that equal wall time does not hang on one noisy run.
  const cost = {};
  if (hasCache) {
    const model = newModel();
    const optimizer = tf.train.adam(opts.lr);
    const sampler = new PairSampler(trainRows, B, opts.seed + 1000);
    const bigSampler = new PairSampler(trainRows, bigB, opts.seed + 1001);
    const handler = newHandler('cache', 0);
    const kinds = {
      'in-batch': { batch: B, handler: null, sampler },
      'in-batch-4x': { batch: bigB, handler: null, sampler: bigSampler },
      warm: { batch: B, handler, phase: 'warm', sampler },
      cache: { batch: B, handler, phase: 'cache', sampler },
    };
    const bursts = { 'in-batch': 6, 'in-batch-4x': 2, warm: 6, cache: 6 };
    if (opts.warmup === 0) delete kinds.warm;
    if (!modes.includes('in-batch-4x')) delete kinds['in-batch-4x'];
    const bar = new Progress('timing (interleaved)', opts.timingRounds);
    const fill = Math.ceil(opts.cacheSize / B);
    for (let i = 0; i < fill; i++) step(model, optimizer, sampler, kinds.warm || { batch: B, handler, phase: 'warm' });
    const samples = Object.fromEntries(Object.keys(kinds).map((k) => [k, []]));
    for (let r = 0; r < opts.timingRounds; r++) {
      for (const [name, kind] of Object.entries(kinds)) {
        const start = now();
        for (let s = 0; s < bursts[name]; s++) step(model, optimizer, kind.sampler, kind);
        samples[name].push((now() - start) / bursts[name]);
      }
      bar.update(r + 1);
    }
    bar.done();
    for (const [name, xs] of Object.entries(samples)) cost[name] = median(xs);
    handler.dispose();
    model.dispose();
    log(`per-step cost (median of ${opts.timingRounds} bursts): ` + Object.entries(cost).map(([k, v]) => `${k} ${(v * 1000).toFixed(1)} ms`).join(', '));
  }

  const results = [];
  const curves = {};
  const emit = (mode, run, recall, extra) => {
    const r = {
      mode, steps: run.steps, batch: run.batch, cacheSize: opts.cacheSize,
      r1: +recall.gloss.r1.toFixed(4), r10: +recall.gloss.r10.toFixed(4), r100: +recall.gloss.r100.toFixed(4), r1000: +recall.gloss.r1000.toFixed(4),
      clozeR1: +recall.cloze.r1.toFixed(4), clozeR10: +recall.cloze.r10.toFixed(4), clozeR100: +recall.cloze.r100.toFixed(4),
      clozeR1000: +recall.cloze.r1000.toFixed(4),
      trainSeconds: +run.seconds.toFixed(2), measuredSeconds: +run.measured.toFixed(2),
      stepsPerSecond: +(run.steps / Math.max(run.seconds, 1e-9)).toFixed(2), ...extra,
    };
    results.push(r);
    log(`${mode.padEnd(14)} steps ${String(r.steps).padStart(5)}  gloss R@1/10/100 ${r.r1.toFixed(3)} ${r.r10.toFixed(3)} ${r.r100.toFixed(3)}  ` +
        `cloze ${r.clozeR1.toFixed(3)} ${r.clozeR10.toFixed(3)} ${r.clozeR100.toFixed(3)} ${r.clozeR1000.toFixed(3)}  train ${r.trainSeconds.toFixed(1)}s (measured ${r.measuredSeconds.toFixed(1)}s)`);
  };

  // ---- the cache mode's warm-up (in-batch; the handler fills its cache meanwhile), shared with in-batch
  const wantsWarm = hasCache || modes.includes('in-batch');
  let warm = null;
  if (wantsWarm) {
    const model = newModel();
    const optimizer = tf.train.adam(opts.lr);
    const sampler = new PairSampler(trainRows, B, opts.seed);
    const handler = hasCache ? newHandler('cache', 0) : null;
    const kind = handler ? { batch: B, handler, phase: 'warm' } : { batch: B, handler: null };
    const run = trainLoop('warm-up (in-batch)', model, optimizer, sampler, kind, opts.warmup);
    warm = {
      model, handler, run, optimizerLive: optimizer,
      weights: model.snapshot(), optimizer: await snapshotOptimizer(optimizer), sampler: sampler.clone(),
    };
    curves.warmup = run.curve;
  }
  const restore = async (model) => {
    model.restore(warm.weights);
    const optimizer = tf.train.adam(opts.lr);
    await optimizer.setWeights(warm.optimizer.map((w) => ({ name: w.name, tensor: tf.clone(w.tensor) })));
    return optimizer;
  };

  // ---- the cache mode: continue from the warm start with the cache
  let budget = null;   // the cache mode's cost in seconds (cost model: steps x median cost per step)
  if (hasCache) {
    const kind = { batch: B, handler: warm.handler, phase: 'cache' };
    const run = trainLoop(`cache k=${opts.k}${opts.fullCacheWeight > 0 ? ` +full-cache ${opts.fullCacheWeight}` : ''}`,
      warm.model, warm.optimizerLive, warm.sampler.clone(), kind, opts.steps, { stepOffset: warm.run.steps });
    curves.cache = run.curve;
    budget = opts.warmup * (cost.warm || 0) + opts.steps * cost.cache;
    const hits = run.curve.map((r) => r.accidentalHits).filter((x) => x !== undefined);
    emit('cache', { steps: warm.run.steps + run.steps, batch: B, seconds: budget, measured: warm.run.seconds + run.seconds },
      evaluate('cache', warm.model), {
        warmupSteps: warm.run.steps, k: opts.k, scale: opts.scale, invTemp: opts.invTemp, inBatchWeight: opts.inBatchWeight,
        fullCacheWeight: opts.fullCacheWeight, sharedMax: opts.sharedMax, detachNegatives: opts.detachNegatives, costPerStep: +(cost.cache * 1000).toFixed(2),
        ...(hits.length ? { accidentalHitsPerStep: +(hits.reduce((a, b) => a + b, 0) / hits.length).toFixed(2) } : {}),
      });
  }

  // ---- in-batch continuation (same warm start): at equal steps, and at the cache mode's cost
  if (modes.includes('in-batch') || (modes.includes('in-batch-time') && budget !== null)) {
    const model = newModel();
    const optimizer = await restore(model);
    const sampler = warm.sampler.clone();
    const kind = { batch: B, handler: null };
    const checkpoints = [];
    if (modes.includes('in-batch')) checkpoints.push({ mode: 'in-batch', steps: opts.warmup + opts.steps });
    // Equal time: as many in-batch steps as the cache mode's seconds buy at in-batch's own per-step cost
    // (its warm-up steps counted at in-batch cost too, which favours in-batch slightly).
    if (modes.includes('in-batch-time') && budget !== null) checkpoints.push({ mode: 'in-batch-time', steps: Math.max(opts.warmup, Math.round(budget / cost['in-batch'])) });
    for (const n of opts.checkpoints) checkpoints.push({ mode: `in-batch@${n}`, steps: n });
    checkpoints.sort((a, b) => a.steps - b.steps);
    const curve = [];
    let done = opts.warmup, measured = warm.run.seconds;
    for (const c of checkpoints) {
      if (c.steps > done) {
        const run = trainLoop(c.mode === 'in-batch-time' ? 'in-batch (equal time)' : 'in-batch', model, optimizer, sampler, kind,
          c.steps - done, { curve, stepOffset: done });
        done += run.steps;
        measured += run.seconds;
      }
      const recall = evaluate(c.mode, model);
      const seconds = budget === null ? measured : done * cost['in-batch'];
      emit(c.mode, { steps: done, batch: B, seconds, measured }, recall, { warmupSteps: opts.warmup, ...(cost['in-batch'] ? { costPerStep: +(cost['in-batch'] * 1000).toFixed(2) } : {}) });
    }
    curves['in-batch'] = curve;
    model.dispose();
  }

  // ---- in-batch with a 4x batch from scratch, at the cache mode's cost
  if (modes.includes('in-batch-4x') && (budget !== null || opts.checkpoints4x.length > 0)) {
    const model = newModel();
    const optimizer = tf.train.adam(opts.lr);
    const sampler = new PairSampler(trainRows, bigB, opts.seed);
    const marks = opts.checkpoints4x.map((n) => ({ mode: `in-batch-4x@${n}`, steps: n }));
    if (budget !== null) marks.push({ mode: 'in-batch-4x', steps: Math.max(1, Math.round(budget / cost['in-batch-4x'])) });
    marks.sort((a, b) => a.steps - b.steps);
    let done = 0, measured = 0;
    const curve = [];
    for (const c of marks) {
      const run = trainLoop(`in-batch B=${bigB}${c.mode === 'in-batch-4x' ? ' (equal time)' : ''}`, model, optimizer, sampler,
        { batch: bigB, handler: null }, c.steps - done, { curve, stepOffset: done });
      done += run.steps;
      measured += run.seconds;
      emit(c.mode, { steps: done, batch: bigB, seconds: done * (cost['in-batch-4x'] || 0), measured },
        evaluate(`in-batch B=${bigB}`, model), { costPerStep: +((cost['in-batch-4x'] || 0) * 1000).toFixed(2) });
    }
    curves['in-batch-4x'] = curve;
    model.dispose();
  }

  // ---- the reference: k = 1, empty rows scored, no warm-up, warmup+steps from scratch
  if (modes.includes('reference')) {
    const model = newModel();
    const optimizer = tf.train.adam(opts.lr);
    const sampler = new PairSampler(trainRows, B, opts.seed);
    const handler = newHandler('reference', 0);
    const total = opts.warmup + opts.steps;   // as many steps as the other modes, all with the reference loss
    const run = trainLoop('reference cache', model, optimizer, sampler, { batch: B, handler, phase: 'cache', reference: true }, total);
    curves.reference = run.curve;
    emit('reference', { steps: run.steps, batch: B, seconds: run.seconds, measured: run.seconds }, evaluate('reference', model), { k: 1, scoreEmptyRows: true });
    handler.dispose();
    model.dispose();
  }
  if (warm && warm.handler) warm.handler.dispose();

  // ---- outputs
  fs.mkdirSync(opts.out, { recursive: true });
  const config = { ...opts, queryWidth: QUERY_WIDTH, docWidth: DOC_WIDTH, synsets: synsets.length, train: train.length,
    heldOut: heldOut.length, cloze: cloze.length, corpus: corpusIds.length, costPerStepMs: Object.fromEntries(Object.entries(cost).map(([k, v]) => [k, +(v * 1000).toFixed(2)])),
    totalSeconds: +((Date.now() - t0) / 1000).toFixed(1), totalCpuSeconds: +cpuNow().toFixed(1) };
  fs.writeFileSync(path.join(opts.out, 'results.json'), JSON.stringify({ config, results }, null, 2));
  fs.writeFileSync(path.join(opts.out, 'curves.json'), JSON.stringify(curves));
  const reportPath = writeReport(path.join(opts.out, 'report.html'), { config, results, curves });
  log(`total ${config.totalSeconds}s (process CPU ${config.totalCpuSeconds}s); report: ${reportPath}`);
  if (opts.json) for (const r of results) process.stdout.write(JSON.stringify(r) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
