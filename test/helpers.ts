/** Shared by the cross-module tests: where the bundled checkpoints are, and small comparisons. */
import path from 'node:path';
import { fileURLToPath } from 'node:url';

/** Repository root (tests run from dist/test/). */
export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
export const STORIES = path.join(ROOT, 'models', 'stories260K');
export const FIXTURES = path.join(ROOT, 'test', 'fixtures');
export const TINY_MODELS = ['tiny-llama3', 'tiny-qwen2', 'tiny-qwen3', 'tiny-mistral'] as const;

/** Largest absolute difference between two arrays of the same length. */
export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Index of the largest value (lowest index on ties). */
export function argmax(a: ArrayLike<number>, start = 0, end = a.length): number {
  let best = start;
  for (let i = start + 1; i < end; i++) if (a[i] > a[best]) best = i;
  return best - start;
}
