/**
 * The k-best list (twin of the native kernels' per-query list): per row, the
 * k entries of largest value in decreasing order, each with its column and
 * its score; an entry equal to one already listed goes after it, so ties
 * keep arrival (= column) order and the smaller column wins.
 */
export class TopKLists {
  /** Per row, k slots: value (the ranking key), column and score; unfilled slots: -Infinity, -1, NaN. */
  readonly values: Float64Array;
  readonly columns: Int32Array;
  readonly scores: Float32Array;
  /** Entries listed per row (at most k). */
  readonly counts: Int32Array;
  /** Per row, what a new entry must beat: -Infinity until k entries, then the k-th best value. */
  readonly threshold: Float64Array;

  constructor(rows: number, readonly k: number) {
    this.values = new Float64Array(rows * k).fill(-Infinity);
    this.columns = new Int32Array(rows * k).fill(-1);
    this.scores = new Float32Array(rows * k).fill(NaN);
    this.counts = new Int32Array(rows);
    this.threshold = new Float64Array(rows).fill(-Infinity);
  }

  /** Offers (value, column, score) to row b; kept when value beats the row's threshold. */
  offer(b: number, value: number, column: number, score: number): void {
    if (!(value > this.threshold[b])) return;
    const k = this.k, base = b * k;
    const vals = this.values, cols = this.columns, sc = this.scores;
    let n = this.counts[b];
    let p = n < k ? n : k - 1;
    // Shift worse entries down; equal values stay ahead.
    while (p > 0 && vals[base + p - 1] < value) {
      vals[base + p] = vals[base + p - 1];
      cols[base + p] = cols[base + p - 1];
      sc[base + p] = sc[base + p - 1];
      p--;
    }
    vals[base + p] = value;
    cols[base + p] = column;
    sc[base + p] = score;
    if (n < k) this.counts[b] = ++n;
    if (n === k) this.threshold[b] = vals[base + k - 1];
  }
}
