#!/usr/bin/env node
'use strict';
// `npm run demo`: trains a two-tower retrieval model on WordNet 3.1 (queries =
// glosses, documents = lemmas) with in-batch negatives, the reference negative
// cache and the recommended cache recipe, then compares held-out recall.
// See docs/demo.md.

const fs = require('fs');
const path = require('path');
const { parseArgs, helpText, Progress } = require('./cli');
const { loadWordNet, splitSynsets, PairSampler } = require('./data');
const { Featurizer, gatherRows } = require('./features');
const { Towers } = require('./towers');
const { embedAll, recallAt } = require('./eval');
const { writeReport } = require('./report');

const QUERY_WIDTH = 48;   // ids per gloss (words, then trigrams)
const DOC_WIDTH = 24;     // ids per lemma

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    process.stderr.write(`${e.message}\n`);
    process.exit(2);
  }
  if (opts.help) { process.stdout.write(helpText() + '\n'); return; }

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
  const heldOut = opts.evalQueries > 0 ? allHeldOut.slice(0, opts.evalQueries) : allHeldOut;
  // The corpus: every lemma of the synsets in use (all 147,478 with the full data).
  const used = new Set();
  for (const s of synsets) for (const l of s.lemmas) used.add(l);
  const corpusIds = Int32Array.from(used).sort();
  const rowOfLemma = new Int32Array(wn.lemmas.length).fill(-1);
  corpusIds.forEach((l, r) => { rowOfLemma[l] = r; });
  const features = new Featurizer({ buckets: opts.buckets });
  const lemmaFeatures = features.matrix(Array.from(corpusIds, (l) => wn.lemmas[l]), DOC_WIDTH);   // by corpus row
  const trainGloss = features.matrix(train.map((s) => s.gloss), QUERY_WIDTH);
  const heldGloss = features.matrix(heldOut.map((s) => s.gloss), QUERY_WIDTH);
  const heldPositives = heldOut.map((s) => Int32Array.from(s.lemmas, (l) => rowOfLemma[l]));
  const trainRows = train.map((s) => ({ lemmas: Int32Array.from(s.lemmas, (l) => rowOfLemma[l]) }));
  log(`WordNet 3.1: ${synsets.length} synsets (${train.length} train, ${heldOut.length} held-out evaluated), ` +
      `${corpusIds.length} lemmas in the corpus; tfjs ${opts.backend}; loaded in ${((Date.now() - t0) / 1000).toFixed(1)}s`);

  // ---- model pieces
  const B = opts.batch;
  const batchTensors = (batch) => ({
    query: tf.tensor2d(gatherRows(trainGloss, QUERY_WIDTH, batch.synsets), [B, QUERY_WIDTH], 'int32'),
    doc: gatherRows(lemmaFeatures, DOC_WIDTH, batch.lemmas),
  });
  const specs = {
    embedding: { shape: [opts.dim], dtype: 'float32' },
    ids: { shape: [DOC_WIDTH], dtype: 'int32' },
  };
  const newModel = () => new Towers(tf, { buckets: opts.buckets, embeddingDim: opts.dim, outputDim: opts.dim, seed: opts.seed });
  const docNetwork = (model) => (data) => model.doc(data.ids);

  /** A handler: the recipe (k draws, empty rows skipped, warm-up) or the reference (k=1, empty rows scored). */
  const newHandler = (kind, warmupSteps) => {
    const manager = new nc.CacheManager(specs, opts.cacheSize, { backend: opts.cacheBackend });
    const reference = kind === 'reference';
    const loss = new nc.CacheClassificationLoss({
      embeddingKey: 'embedding', dataKeys: ['ids'], scoreTransform: opts.scale, seed: opts.seed,
      numNegatives: reference ? 1 : opts.k,
      scoreEmptyRows: reference,
      retrievalFn: new nc.GumbelMaxRetrievalFn({ invTemp: reference ? 1 : opts.invTemp }),
    });
    return new nc.CacheLossHandler(manager, loss, {
      embeddingKey: 'embedding', dataKeys: ['ids'],
      inBatchWeight: reference ? 0 : opts.inBatchWeight,
      warmupSteps: reference ? 0 : warmupSteps,
      dedupe: !reference && opts.dedupe,
    });
  };

  /** One optimizer step. handler = null: in-batch softmax; returns the step's figures. */
  const step = (model, optimizer, sampler, handler) => {
    const batch = sampler.next();
    const { query, doc } = batchTensors(batch);
    const docIds = tf.tensor2d(doc, [B, DOC_WIDTH], 'int32');
    let record;
    optimizer.minimize(() => {
      const q = model.query(query);
      const p = model.doc(docIds);
      if (handler === null) {
        const loss = nc.inBatchCrossEntropy(q, p, opts.scale);
        record = { loss: loss.dataSync()[0] };
        return loss;
      }
      const loss = handler.updateCacheAndComputeLoss(docNetwork(model), q, p, { ids: doc });
      const m = handler.lastMetrics;
      record = { loss: m.trainingLoss, interpretable: m.interpretableLoss, staleness: m.staleness, phase: m.phase };
      return loss;
    }, false, model.variables);
    tf.dispose([query, docIds]);
    return record;
  };

  /** Runs `total` steps or until `stopAtSeconds` of training; returns {steps, seconds, curve} (training time only). */
  const trainLoop = (label, model, optimizer, sampler, handler, total, { stopAtSeconds = Infinity, curve = [], stepOffset = 0, barTotal = total } = {}) => {
    const bar = new Progress(label, barTotal);
    let seconds = 0;
    let steps = 0;
    while (steps < total && seconds < stopAtSeconds) {
      const start = process.hrtime.bigint();
      const r = step(model, optimizer, sampler, handler);
      seconds += Number(process.hrtime.bigint() - start) / 1e9;
      steps++;
      r.step = stepOffset + steps;
      if (steps % 10 === 0 || steps === total) curve.push(r);
      bar.update(steps, `loss ${r.loss.toFixed(3)}`);
    }
    bar.done();
    return { steps, seconds, curve };
  };

  const evaluate = (label, model) => {
    const bar = new Progress(`eval ${label}`, corpusIds.length + heldOut.length);
    const corpus = embedAll(tf, (ids) => model.doc(ids), lemmaFeatures, DOC_WIDTH, corpusIds.length, opts.dim,
      (done) => bar.update(done));
    const queries = embedAll(tf, (ids) => model.query(ids), heldGloss, QUERY_WIDTH, heldOut.length, opts.dim);
    const [r1, r10, r100] = recallAt(queries, heldPositives, corpus, opts.dim, [1, 10, 100],
      (done) => bar.update(corpusIds.length + done), opts.cacheBackend);
    bar.done(`R@10 ${r10.toFixed(3)}`);
    return { r1, r10, r100 };
  };

  const snapshotOptimizer = async (optimizer) => (await optimizer.getWeights()).map((w) => ({ name: w.name, tensor: tf.clone(w.tensor) }));

  const modes = opts.modes;
  if (modes.includes('in-batch-time') && !modes.includes('cache')) log('in-batch-time needs the cache mode (its time budget): skipped');
  const wantsWarm = modes.some((m) => m !== 'reference');
  const results = [];
  const curves = {};
  const emit = (mode, run, recall, extra) => {
    const r = {
      mode, steps: run.steps, batch: B, cacheSize: opts.cacheSize,
      r1: +recall.r1.toFixed(4), r10: +recall.r10.toFixed(4), r100: +recall.r100.toFixed(4),
      trainSeconds: +run.seconds.toFixed(2), stepsPerSecond: +(run.steps / Math.max(run.seconds, 1e-9)).toFixed(2), ...extra,
    };
    results.push(r);
    log(`${mode.padEnd(14)} steps ${String(r.steps).padStart(5)}  R@1 ${r.r1.toFixed(3)}  R@10 ${r.r10.toFixed(3)}  R@100 ${r.r100.toFixed(3)}  ` +
        `train ${r.trainSeconds.toFixed(1)}s (${r.stepsPerSecond} steps/s)`);
  };

  // ---- shared warm-up (in-batch; the recipe's handler fills its cache meanwhile)
  let warm = null;
  if (wantsWarm) {
    const model = newModel();
    const optimizer = tf.train.adam(opts.lr);
    const sampler = new PairSampler(trainRows, B, opts.seed);
    const handler = modes.includes('cache') ? newHandler('cache', opts.warmup) : null;
    const run = trainLoop('warm-up (in-batch)', model, optimizer, sampler, handler, opts.warmup);
    warm = {
      model, handler, run,
      weights: model.snapshot(), optimizer: await snapshotOptimizer(optimizer), sampler: sampler.clone(), optimizerLive: optimizer,
    };
    curves.warmup = run.curve;
  }
  const restore = async (model) => {
    model.restore(warm.weights);
    const optimizer = tf.train.adam(opts.lr);
    await optimizer.setWeights(warm.optimizer.map((w) => ({ name: w.name, tensor: tf.clone(w.tensor) })));
    return optimizer;
  };

  // ---- the cache recipe: continue from the warm start with hard negatives
  let cacheSeconds = null;
  if (modes.includes('cache')) {
    const run = trainLoop(`cache k=${opts.k}`, warm.model, warm.optimizerLive, warm.sampler.clone(), warm.handler, opts.steps,
      { stepOffset: warm.run.steps });
    cacheSeconds = run.seconds;
    curves.cache = run.curve;
    const recall = evaluate('cache', warm.model);
    emit('cache', { steps: warm.run.steps + run.steps, seconds: warm.run.seconds + run.seconds }, recall,
      { warmupSteps: warm.run.steps, continuationSeconds: +run.seconds.toFixed(2), k: opts.k, scale: opts.scale, invTemp: opts.invTemp, inBatchWeight: opts.inBatchWeight });
  }

  // ---- in-batch continuation: at equal steps, and at the cache recipe's wall time
  if (modes.includes('in-batch') || modes.includes('in-batch-time')) {
    const model = newModel();
    const optimizer = await restore(model);
    const sampler = warm.sampler.clone();
    const checkpoints = [];
    if (modes.includes('in-batch')) checkpoints.push({ mode: 'in-batch', steps: opts.steps, seconds: Infinity });
    if (modes.includes('in-batch-time') && cacheSeconds !== null) checkpoints.push({ mode: 'in-batch-time', steps: Infinity, seconds: cacheSeconds });
    const secondsPerStep = warm.run.seconds / Math.max(warm.run.steps, 1);
    const curve = [];
    let done = 0, seconds = 0;
    // Train to the nearest checkpoint (N steps, or the cache recipe's training seconds), evaluate, go on.
    while (checkpoints.length > 0) {
      const stepTarget = Math.min(...checkpoints.map((c) => c.steps));
      const timeTarget = Math.min(...checkpoints.map((c) => c.seconds));
      if (done < stepTarget && seconds < timeTarget) {
        const total = Number.isFinite(stepTarget) ? stepTarget - done : Math.ceil((timeTarget - seconds) / secondsPerStep);
        const run = trainLoop(Number.isFinite(stepTarget) ? 'in-batch' : 'in-batch (timed)', model, optimizer, sampler, null,
          Number.isFinite(stepTarget) ? total : Number.MAX_SAFE_INTEGER,
          { stopAtSeconds: timeTarget - seconds, curve, stepOffset: warm.run.steps + done, barTotal: total });
        done += run.steps;
        seconds += run.seconds;
      }
      const reached = checkpoints.filter((c) => done >= c.steps || seconds >= c.seconds);
      const recall = evaluate(reached[0].mode, model);
      const run = { steps: warm.run.steps + done, seconds: warm.run.seconds + seconds };
      for (const c of reached) {
        emit(c.mode, run, recall, c.mode === 'in-batch-time'
          ? { warmupSteps: warm.run.steps, matchedSeconds: +(warm.run.seconds + cacheSeconds).toFixed(2) }
          : { warmupSteps: warm.run.steps });
        checkpoints.splice(checkpoints.indexOf(c), 1);
      }
    }
    curves['in-batch'] = curve;
    model.dispose();
  }

  // ---- the reference: k = 1, empty rows scored, no warm-up, warmup+steps from scratch
  if (modes.includes('reference')) {
    const model = newModel();
    const optimizer = tf.train.adam(opts.lr);
    const sampler = new PairSampler(trainRows, B, opts.seed);
    const handler = newHandler('reference', 0);
    const total = opts.warmup + opts.steps;   // as many steps as the other modes, all with the reference loss
    const run = trainLoop('reference cache', model, optimizer, sampler, handler, total);
    curves.reference = run.curve;
    emit('reference', run, evaluate('reference', model), { k: 1, scoreEmptyRows: true });
    handler.dispose();
    model.dispose();
  }

  // ---- outputs
  fs.mkdirSync(opts.out, { recursive: true });
  const config = { ...opts, queryWidth: QUERY_WIDTH, docWidth: DOC_WIDTH, synsets: synsets.length, train: train.length,
    heldOut: heldOut.length, corpus: corpusIds.length, totalSeconds: +((Date.now() - t0) / 1000).toFixed(1) };
  fs.writeFileSync(path.join(opts.out, 'results.json'), JSON.stringify({ config, results }, null, 2));
  fs.writeFileSync(path.join(opts.out, 'curves.json'), JSON.stringify(curves));
  const reportPath = writeReport(path.join(opts.out, 'report.html'), { config, results, curves });
  log(`total ${config.totalSeconds}s; report: ${reportPath}`);
  if (opts.json) for (const r of results) process.stdout.write(JSON.stringify(r) + '\n');
}

main().catch((e) => {
  process.stderr.write(`${e && e.stack ? e.stack : e}\n`);
  process.exit(1);
});
