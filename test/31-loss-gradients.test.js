'use strict';
// Gradients of CacheClassificationLoss: they flow through s_pos and the
// re-embedded negatives only (p_pos is a constant), match finite differences,
// average to the full softmax cross-entropy gradient, and training steps leak
// no tensors.
const assert = require('assert');
const tf = require('@tensorflow/tfjs');
const nc = require('..');
const { mulberry32: mulberry } = require('./helpers/rng');

const { CacheManager, CacheClassificationLoss, MaxScoreRetrievalFn } = nc;

const B = 3, D = 4, F = 5, N = 6;   // batch, embedding dim, feature dim, cache rows

function problem(seed) {
  const rng = mulberry(seed);
  const rand = (n) => Array.from({ length: n }, () => rng() * 2 - 1);
  return { q: rand(B * D), p: rand(B * D), W: rand(F * D), X: rand(N * F), E: rand(N * D) };
}

// float64 reference of the surrogate: mean_b (1 - pBar_b) (mean_d t(q_b . X[j_bd] W) - t(q_b . p_b))
function surrogate({ q, p, W, X }, draws, k, pBar, scale) {
  let total = 0;
  for (let b = 0; b < B; b++) {
    let sPos = 0;
    for (let i = 0; i < D; i++) sPos += q[b * D + i] * p[b * D + i];
    let sNeg = 0;
    for (let d = 0; d < k; d++) {
      const j = draws[b * k + d];
      for (let i = 0; i < D; i++) {
        let neg = 0;
        for (let f = 0; f < F; f++) neg += X[j * F + f] * W[f * D + i];
        sNeg += q[b * D + i] * neg;
      }
    }
    total += (1 - pBar[b]) * (scale * sNeg / k - scale * sPos);
  }
  return total / B;
}

for (const backend of nc.availableBackends()) {
  describe(`CacheClassificationLoss gradients (${backend})`, () => {
    const specs = { emb: { shape: [D], dtype: 'float32' }, x: { shape: [F], dtype: 'float32' } };

    for (const [k, scale] of [[1, 1], [2, 2.5]]) {
      it(`match finite differences of the surrogate with p_pos held fixed (k=${k}, scale=${scale})`, () => {
        const pr = problem(10 + k);
        const cache = new CacheManager(specs, N, { backend }).initCache({ data: { emb: pr.E, x: pr.X } });
        const draws = Array.from({ length: B * k }, (_, i) => (i * 5 + 1) % N);
        const loss = new CacheClassificationLoss({
          embeddingKey: 'emb', dataKeys: ['x'], scoreTransform: scale, numNegatives: k, retrievalFn: () => draws,
        });
        const q = tf.variable(tf.tensor2d(pr.q, [B, D]));
        const p = tf.variable(tf.tensor2d(pr.p, [B, D]));
        const W = tf.variable(tf.tensor2d(pr.W, [F, D]));
        const docNetwork = (d) => tf.matMul(d.x, W);
        const { value, grads } = tf.variableGrads(() => loss.compute(docNetwork, q, p, cache).trainingLoss, [q, p, W]);
        // p_pos from a separate reducer 'none' call (same draws, same scores)
        const perRow = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['x'], scoreTransform: scale, reducer: 'none', numNegatives: k, retrievalFn: () => draws })
          .compute(docNetwork, q, p, cache);
        const pBar = Array.from(perRow.interpretableLoss.dataSync()).map((x) => Math.exp(-x));
        const f0 = surrogate(pr, draws, k, pBar, scale);
        assert.ok(Math.abs(value.dataSync()[0] - f0) < 1e-5 * Math.max(1, Math.abs(f0)), `loss ${value.dataSync()[0]} vs ${f0}`);
        const h = 1e-6;
        for (const [name, v] of [['q', q], ['p', p], ['W', W]]) {
          const g = grads[v.name].dataSync();
          for (let i = 0; i < pr[name].length; i++) {
            const plus = { ...pr, [name]: pr[name].slice() }, minus = { ...pr, [name]: pr[name].slice() };
            plus[name][i] += h;
            minus[name][i] -= h;
            const fd = (surrogate(plus, draws, k, pBar, scale) - surrogate(minus, draws, k, pBar, scale)) / (2 * h);
            assert.ok(Math.abs(g[i] - fd) <= 1e-4 + 1e-3 * Math.abs(fd), `d/d${name}[${i}]: ${g[i]} vs ${fd}`);
          }
        }
        cache.dispose();
        tf.dispose([q, p, W, value, grads, perRow]);
      });
    }

    it('draws that do not exist (fewer candidates than k) drop out of the gradient', () => {
      const pr = problem(31);
      const cache = new CacheManager(specs, N, { backend }).initCache();
      new CacheManager(specs, N, { backend }).updateCache(cache, { newItems: { emb: pr.E.slice(0, 2 * D), x: pr.X.slice(0, 2 * F) } });
      const q = tf.variable(tf.tensor2d(pr.q, [B, D]));
      const W = tf.variable(tf.tensor2d(pr.W, [F, D]));
      const p = tf.tensor2d(pr.p, [B, D]);
      const grad = (k) => tf.variableGrads(() => new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['x'], numNegatives: k, seed: 3 })
        .compute((d) => tf.matMul(d.x, W), q, p, cache).trainingLoss, [q, W]);
      // 2 candidates: k = 3 draws both plus one missing draw, k = 2 draws both.
      const a = grad(3), b = grad(2);
      for (const v of [q, W]) {
        const x = a.grads[v.name].dataSync(), y = b.grads[v.name].dataSync();
        for (let i = 0; i < x.length; i++) assert.ok(Math.abs(x[i] - y[i]) < 1e-6, `${v.name}[${i}]: ${x[i]} vs ${y[i]}`);
      }
      assert.ok(Math.abs(a.value.dataSync()[0] - b.value.dataSync()[0]) < 1e-6);
      cache.dispose();
      tf.dispose([q, W, p, a.value, a.grads, b.value, b.grads]);
    });

    it('averaged over the softmax of the cache, equals the full cross-entropy gradient (fresh cache)', () => {
      const pr = problem(77);
      const W = tf.variable(tf.tensor2d(pr.W, [F, D]));
      const q = tf.variable(tf.tensor2d(pr.q, [B, D]));
      const p = tf.tensor2d(pr.p, [B, D]);
      const docNetwork = (d) => tf.matMul(d.x, W);
      // Fresh cache: stored embeddings = the current document network's output.
      const E = tf.tidy(() => tf.matMul(tf.tensor2d(pr.X, [N, F]), W).dataSync());
      const cache = new CacheManager(specs, N, { backend }).initCache({ data: { emb: Array.from(E), x: pr.X } });
      // Full softmax cross-entropy of the positive against [pos, cache].
      const full = tf.variableGrads(() => {
        const sPos = tf.sum(tf.mul(q, p), 1, true);
        const sAll = tf.matMul(q, tf.matMul(tf.tensor2d(pr.X, [N, F]), W), false, true);
        const logits = tf.concat([sPos, sAll], 1);
        return tf.mean(tf.neg(tf.squeeze(tf.slice(tf.logSoftmax(logits), [0, 0], [B, 1]), [1])));
      }, [q, W]);
      // Sum over every fixed draw j of softmax_j(S) * grad(trainingLoss | j).
      const Sv = tf.tidy(() => tf.matMul(q, tf.tensor2d(Array.from(E), [N, D]), false, true).arraySync());
      const acc = { [q.name]: new Float64Array(B * D), [W.name]: new Float64Array(F * D) };
      for (let j = 0; j < N; j++) {
        // per-row weights: grad of the mean is a sum of per-row terms, so weight per row
        const loss = new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['x'], reducer: 'none', retrievalFn: () => Array(B).fill(j) });
        const weights = Sv.map((row) => { const m = Math.max(...row); const z = row.reduce((s, x) => s + Math.exp(x - m), 0); return Math.exp(row[j] - m) / z; });
        const { value, grads } = tf.variableGrads(() => {
          const out = loss.compute(docNetwork, q, p, cache);
          return tf.mean(tf.mul(out.trainingLoss, tf.tensor1d(weights)));
        }, [q, W]);
        for (const v of [q, W]) { const g = grads[v.name].dataSync(); for (let i = 0; i < g.length; i++) acc[v.name][i] += g[i]; }
        tf.dispose([value, grads]);
      }
      for (const v of [q, W]) {
        const want = full.grads[v.name].dataSync();
        for (let i = 0; i < want.length; i++) {
          assert.ok(Math.abs(acc[v.name][i] - want[i]) < 1e-5 + 1e-4 * Math.abs(want[i]), `${v.name}[${i}]: ${acc[v.name][i]} vs ${want[i]}`);
        }
      }
      cache.dispose();
      tf.dispose([W, q, p, full.value, full.grads]);
    });

    it('optimizer.minimize steps leak no tensors (Gumbel, topK, k=4, function transform) and errors leak none', () => {
      const rng = mulberry(5);
      const rand = (n) => Array.from({ length: n }, () => rng() * 2 - 1);
      const cache = new CacheManager(specs, 64, { backend }).initCache({ data: { emb: rand(64 * D), x: rand(64 * F) } });
      const Wq = tf.variable(tf.randomNormal([F, D], 0, 0.3, 'float32', 1));
      const Wd = tf.variable(tf.randomNormal([F, D], 0, 0.3, 'float32', 2));
      const opt = tf.train.adam(0.01);
      const losses = [
        new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['x'], scoreTransform: 5, seed: 1 }),
        new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['x'], topK: 8, numNegatives: 4, seed: 2 }),
        new CacheClassificationLoss({ embeddingKey: 'emb', dataKeys: ['x'], scoreTransform: (s) => tf.mul(tf.tanh(s), 4), retrievalFn: new MaxScoreRetrievalFn() }),
      ];
      const qx = tf.tensor2d(rand(8 * F), [8, F]), px = tf.tensor2d(rand(8 * F), [8, F]);
      const step = (loss) => opt.minimize(() => {
        const q = tf.matMul(qx, Wq), d = tf.matMul(px, Wd);
        return loss.compute((data) => tf.matMul(data.x, Wd), q, d, cache).trainingLoss;
      });
      for (const loss of losses) step(loss);   // the optimizer creates its slots on the first step
      const before = tf.memory().numTensors;
      for (let i = 0; i < 10; i++) for (const loss of losses) step(loss);
      assert.strictEqual(tf.memory().numTensors, before);
      // A failing call (docNetwork returns the wrong shape) leaks nothing either. (Outside a
      // gradient tape: inside one, tfjs itself keeps the tensors saved for backprop when f throws.)
      const q = tf.matMul(qx, Wq), d = tf.matMul(px, Wd), wrong = tf.zeros([F, 2]);
      const held = tf.memory().numTensors;
      assert.throws(() => losses[0].compute((data) => tf.matMul(data.x, wrong), q, d, cache), RangeError);
      assert.throws(() => losses[2].compute((data) => tf.matMul(data.x, wrong), q, d, cache), RangeError);
      assert.strictEqual(tf.memory().numTensors, held);
      tf.dispose([q, d, wrong]);
      assert.strictEqual(tf.memory().numTensors, before);
      cache.dispose();
      tf.dispose([Wq, Wd, qx, px]);
      opt.dispose();
    });
  });
}
