/**
 * The topK grouping (docs/design.md §3): the N candidates of a row are split
 * into K consecutive groups, group g = [floor(g·N/K), floor((g+1)·N/K)), and
 * each group keeps its best candidate (first on ties). The JS kernels use it
 * on streamed rows (scoreGroupMax), the loss on explicit matrices (a function
 * scoreTransform, approximateTopKWithIndices); native/ has its twin.
 */

/** First column of group g of `groups` over n columns: floor(g·n / groups) (exact while g·n < 2^53). */
export function groupStart(g: number, n: number, groups: number): number {
  return Math.floor((g * n) / groups);
}

/**
 * Per row of a batch x n matrix, the max of each group and its column, first
 * column on ties. With `skipMinusInf`, -Infinity entries are not candidates
 * (an all -Infinity group gives column -1 and score -Infinity); a NaN wins its
 * group so that callers can reject it.
 */
export function groupMaxOfMatrix(m: Float32Array, batch: number, n: number, groups: number,
                                 skipMinusInf: boolean): { scores: Float32Array; cols: Int32Array } {
  const scores = new Float32Array(batch * groups).fill(-Infinity);
  const cols = new Int32Array(batch * groups).fill(-1);
  for (let b = 0; b < batch; b++) {
    const off = b * n;
    for (let g = 0; g < groups; g++) {
      const lo = groupStart(g, n, groups), hi = groupStart(g + 1, n, groups);
      let best = -Infinity, col = -1;
      for (let j = lo; j < hi; j++) {
        const s = m[off + j];
        if (skipMinusInf && s === -Infinity) continue;
        if (s !== s) { best = NaN; col = j; break; }
        if (col < 0 || s > best) { best = s; col = j; }
      }
      scores[b * groups + g] = best;
      cols[b * groups + g] = col;
    }
  }
  return { scores, cols };
}
