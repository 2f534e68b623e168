'use strict';
// Hashed features: every text becomes a fixed-length row of int32 ids in
// [1, buckets] (0 = padding). Words and character trigrams share one hashed
// space (namespaced before hashing), so the same word in a gloss and in a
// lemma lands on the same id.

const { fnv1a } = require('./data');

function tokenize(text) {
  return text.toLowerCase().match(/[a-z0-9]+(?:['-][a-z0-9]+)*/g) || [];
}

/**
 * Featurizer with `buckets` hashed ids. `words`: one id per word;
 * `trigrams`: one id per character trigram of each word, with '#' marking
 * the word's ends ("#do", "dog", "og#").
 */
class Featurizer {
  constructor({ buckets = 1 << 15 } = {}) {
    this.buckets = buckets;
    this.memo = new Map();
  }

  id(feature) {
    let v = this.memo.get(feature);
    if (v === undefined) {
      v = 1 + (fnv1a(feature) % this.buckets);
      this.memo.set(feature, v);
    }
    return v;
  }

  /** Ids of one text, at most `length`; words first, then trigrams. */
  ids(text, length, { words = true, trigrams = true } = {}) {
    const out = [];
    const tokens = tokenize(text);
    if (words) for (const t of tokens) out.push(this.id(`w|${t}`));
    if (trigrams) {
      for (const t of tokens) {
        const padded = `#${t}#`;
        for (let i = 0; i + 3 <= padded.length; i++) out.push(this.id(`t|${padded.slice(i, i + 3)}`));
      }
    }
    return out.length > length ? out.slice(0, length) : out;
  }

  /** Int32Array [texts.length, length], rows padded with 0. */
  matrix(texts, length, kinds) {
    const m = new Int32Array(texts.length * length);
    for (let r = 0; r < texts.length; r++) {
      const ids = this.ids(texts[r], length, kinds);
      m.set(ids, r * length);
    }
    return m;
  }
}

/** Rows `rows` of an [n, width] matrix as a new Int32Array [rows.length, width]. */
function gatherRows(matrix, width, rows) {
  const out = new Int32Array(rows.length * width);
  for (let i = 0; i < rows.length; i++) out.set(matrix.subarray(rows[i] * width, (rows[i] + 1) * width), i * width);
  return out;
}

module.exports = { Featurizer, tokenize, gatherRows };
