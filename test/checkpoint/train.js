'use strict';
// Child process of test/80-checkpoint.test.js: a small dual-encoder training
// run (two tf.LayersModel towers, SGD, a CacheLossHandler or a
// MultiCacheLossHandler with warm-up and dedupe) that logs, per step, the
// handler's metrics and the ids of the drawn negatives, and at the end a
// digest of the caches and the weights. The batches depend on the step
// number only, so a resumed run sees the same data.
//
//   node train.js '{"backend":"native","from":0,"to":9,"saveAt":4,"ckpt":"/tmp/x","restore":false,"multi":false}'
//
// saveAt: after that many steps, handler.save(ckpt) and the models' weights
// next to it (tf.io.withSaveHandler); restore: start by reading both back.
// Prints one JSON line {log: [...], digest}.
const fs = require('fs');
const tf = require('@tensorflow/tfjs');
const nc = require('../..');
const { mulberry32 } = require('../helpers/rng');

const cfg = JSON.parse(process.argv[2]);
const W = 6, D = 8, B = 5, POOL = 40;

function tower(seed) {
  const m = tf.sequential();
  m.add(tf.layers.dense({ units: D, inputShape: [W], useBias: false, kernelInitializer: tf.initializers.randomNormal({ stddev: 0.4, seed }) }));
  return m;
}
const queryTower = tower(1), docTower = tower(2);

// The document pool: features by id.
const rngPool = mulberry32(99);
const pool = Array.from({ length: POOL }, () => Array.from({ length: W }, () => rngPool() - 0.5));

function batchAt(step) {
  const r = mulberry32(1000 + step);
  const ids = Array.from({ length: B }, () => Math.floor(r() * POOL));
  const q = ids.map((id) => pool[id].map((v) => v + 0.1 * (r() - 0.5)));
  return { ids, q, x: ids.map((id) => pool[id]) };
}

const specs = { e: { shape: [D], dtype: 'float32', storage: 'float16' }, x: { shape: [W], dtype: 'float32' }, id: { shape: [1], dtype: 'int32' } };
// The resumed run gets no seed: restore() must bring back the saved one.
const lossOpts = { embeddingKey: 'e', dataKeys: ['x', 'id'], scoreTransform: 4, numNegatives: 2, ...(cfg.restore ? {} : { seed: 12345 }) };
const handlerOpts = { embeddingKey: 'e', dataKeys: ['x', 'id'], warmupSteps: 3, inBatchWeight: 0.25, dedupe: new nc.IsInCacheFilterFn(['id']) };
let handler;
if (cfg.multi) {
  const managers = { a: new nc.CacheManager(specs, 12, { backend: cfg.backend }), b: new nc.CacheManager(specs, 9, { backend: cfg.backend, useLru: false }) };
  handler = new nc.MultiCacheLossHandler(managers, new nc.CacheClassificationLoss(lossOpts), handlerOpts);
} else {
  handler = new nc.CacheLossHandler(new nc.CacheManager(specs, 16, { backend: cfg.backend }), new nc.CacheClassificationLoss(lossOpts), handlerOpts);
}
const variables = () => [...queryTower.trainableWeights, ...docTower.trainableWeights].map((w) => w.val);

async function saveWeights(model, file) {
  await model.save(tf.io.withSaveHandler(async (a) => {
    fs.writeFileSync(`${file}.json`, JSON.stringify({ modelTopology: a.modelTopology, weightSpecs: a.weightSpecs }));
    fs.writeFileSync(`${file}.bin`, Buffer.from(a.weightData));
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
}
async function loadWeightsInto(model, file) {
  const j = JSON.parse(fs.readFileSync(`${file}.json`, 'utf8'));
  const bin = fs.readFileSync(`${file}.bin`);
  const saved = await tf.loadLayersModel(tf.io.fromMemory({ ...j, weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.length) }));
  model.setWeights(saved.getWeights());
}

function digest() {
  const caches = cfg.multi ? handler.caches : { cache: handler.cache };
  const out = {};
  for (const [n, c] of Object.entries(caches)) {
    out[n] = { e: Array.from(c.read('e')), x: Array.from(c.read('x')), id: Array.from(c.read('id')), age: Array.from(c.readAge()), filled: Array.from(c.readFilled()) };
  }
  out.weights = variables().map((v) => Array.from(v.dataSync()));
  out.step = handler.step;
  return out;
}

async function main() {
  const opt = tf.train.sgd(0.05);
  if (cfg.restore) {
    handler.restore(cfg.ckpt);
    await loadWeightsInto(queryTower, `${cfg.ckpt}.query`);
    await loadWeightsInto(docTower, `${cfg.ckpt}.doc`);
  }
  const log = [];
  for (let s = cfg.from; s < cfg.to; s++) {
    if (handler.step !== s) throw new Error(`handler.step ${handler.step}, expected ${s}`);
    const { ids, q, x } = batchAt(s);
    const drawn = [];
    const itemNetwork = (d) => {
      drawn.push(Array.from(d.id.dataSync()));
      return docTower.apply(d.x);
    };
    const qx = tf.tensor2d(q), dx = tf.tensor2d(x);
    const features = { x, id: ids.map((i) => [i]) };
    opt.minimize(() => {
      const qe = queryTower.apply(qx), pe = docTower.apply(dx);
      if (cfg.multi) {
        const half = Math.ceil(B / 2);
        const pick = (arr, lo, hi) => arr.slice(lo, hi);
        return handler.updateCacheAndComputeLoss(itemNetwork, qe, pe,
          { a: tf.slice(pe, [0, 0], [half, D]), b: tf.slice(pe, [half, 0], [B - half, D]) },
          { a: { x: pick(x, 0, half), id: pick(features.id, 0, half) }, b: { x: pick(x, half, B), id: pick(features.id, half, B) } });
      }
      return handler.updateCacheAndComputeLoss(itemNetwork, qe, pe, features);
    }, false, variables());
    tf.dispose([qx, dx]);
    const m = handler.lastMetrics;
    log.push({ step: m.step, phase: m.phase, trainingLoss: m.trainingLoss, interpretableLoss: m.interpretableLoss,
      inserted: m.inserted, duplicates: m.duplicates, refreshed: m.refreshed, drawn });
    if (cfg.saveAt === s + 1) {
      handler.save(cfg.ckpt);
      await saveWeights(queryTower, `${cfg.ckpt}.query`);
      await saveWeights(docTower, `${cfg.ckpt}.doc`);
      break;
    }
  }
  process.stdout.write(JSON.stringify({ log, digest: digest() }) + '\n');
}

main().catch((e) => { console.error(e); process.exit(1); });
