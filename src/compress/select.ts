/**
 * Selection shared by the policies: per-head top-k with a deterministic tie-break (the lower index wins),
 * always keeping the observation window (and, for StreamingLLM, the sinks). Every result is ascending, so
 * index order is position order.
 * @module
 */
import type { ScoreMatrix } from './scoring.js';

/** [start, end) as indices. */
export function range(start: number, end: number): Int32Array {
  const out = new Int32Array(Math.max(0, end - start));
  for (let i = 0; i < out.length; i++) out[i] = start + i;
  return out;
}

/**
 * Indices of the k largest of `scores[0..length)`, ascending; among equal scores the lower index wins. O(n log n)
 * in a native typed-array sort to find the k-th value, then one pass.
 */
export function topK(scores: Float32Array, k: number): Int32Array {
  const n = scores.length;
  if (k >= n) return range(0, n);
  if (k <= 0) return new Int32Array(0);
  const sorted = Float32Array.from(scores).sort();
  const threshold = sorted[n - k];
  let above = 0;
  for (let i = 0; i < n; i++) if (scores[i] > threshold) above++;
  let ties = k - above; // how many entries equal to the threshold to take, lowest indices first
  const out = new Int32Array(k);
  let m = 0;
  for (let i = 0; i < n && m < k; i++) {
    const s = scores[i];
    if (s > threshold) out[m++] = i;
    else if (s === threshold && ties > 0) { out[m++] = i; ties--; }
  }
  return out;
}

/** Row `head` of a score matrix. */
export function row(m: ScoreMatrix, head: number): Float32Array {
  return m.data.subarray(head * m.length, (head + 1) * m.length);
}

/** Sums the rows of a [heads, length] matrix into groups of `heads / groups` consecutive rows: [groups, length]. */
export function sumGroups(m: ScoreMatrix, groups: number): ScoreMatrix {
  const size = m.heads / groups;
  const data = new Float32Array(groups * m.length);
  for (let h = 0; h < m.heads; h++) {
    const src = row(m, h);
    const dst = data.subarray(Math.floor(h / size) * m.length, (Math.floor(h / size) + 1) * m.length);
    for (let j = 0; j < m.length; j++) dst[j] += src[j];
  }
  return { data, heads: groups, length: m.length };
}

/** `first` followed by `second` (both ascending, all of `first` below all of `second`). */
export function concat(first: Int32Array, second: Int32Array): Int32Array {
  const out = new Int32Array(first.length + second.length);
  out.set(first);
  out.set(second, first.length);
  return out;
}

/**
 * Per head: the top `budget − window` of the prefix scores plus the last `window` rows of `n`
 * (scores cover the n − window prefix keys). SnapKV's and FastKV's per-KV-head selection.
 */
export function keepTopAndWindow(scores: ScoreMatrix, n: number, budget: number, window: number): Int32Array[] {
  const windowRows = range(n - window, n);
  const kept: Int32Array[] = [];
  for (let h = 0; h < scores.heads; h++) kept.push(concat(topK(row(scores, h), budget - window), windowRows));
  return kept;
}

/**
 * Per head h: the top `prefixCounts[h]` prefix scores plus the last `window` rows of `n`; heads may keep
 * different counts (AdaKV, HeadKV). A count is capped at the n − window prefix rows.
 */
export function keepTopAndWindowPerHead(scores: ScoreMatrix, n: number, prefixCounts: ArrayLike<number>, window: number): Int32Array[] {
  const windowRows = range(n - window, n);
  const kept: Int32Array[] = [];
  for (let h = 0; h < scores.heads; h++) kept.push(concat(topK(row(scores, h), Math.min(prefixCounts[h], scores.length)), windowRows));
  return kept;
}

/**
 * AdaKV's adaptive allocation: of all heads' scores together (a flattened top-k across the heads of a layer),
 * how many of the k largest fall in each head. Ties go to the lower head, then the lower index.
 */
export function flatTopKCounts(scores: ScoreMatrix, k: number): Int32Array {
  const counts = new Int32Array(scores.heads);
  const total = scores.heads * scores.length;
  if (k >= total) return counts.fill(scores.length);
  if (k <= 0) return counts;
  const threshold = Float32Array.from(scores.data).sort()[total - k];
  let ties = k;
  for (let i = 0; i < total; i++) if (scores.data[i] > threshold) { counts[Math.floor(i / scores.length)]++; ties--; }
  for (let i = 0; i < total && ties > 0; i++) if (scores.data[i] === threshold) { counts[Math.floor(i / scores.length)]++; ties--; }
  return counts;
}

/** Python's and torch's `round`: to the nearest integer, halves to the even one. */
export function roundHalfEven(x: number): number {
  const r = Math.round(x);
  return Math.abs(x % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
}
