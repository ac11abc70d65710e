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

import fs from 'node:fs';
import type { CompressionPolicy, LayerDecision, LayerInput } from '../src/compress/policy.js';

export const HAYSTACK = path.join(ROOT, 'data', 'stories-haystack.txt');

/** The first `chars` characters of the bundled story haystack, cut at a sentence end. */
export function storyText(chars: number): string {
  const text = fs.readFileSync(HAYSTACK, 'utf8').slice(0, chars);
  return text.slice(0, text.lastIndexOf('.') + 1);
}

export interface RecordedLayer {
  input: LayerInput;
  decision: LayerDecision;
}

/** Wraps a policy so that every layer's input and decision are kept for inspection. */
export function recording(policy: CompressionPolicy): { policy: CompressionPolicy; layers: RecordedLayer[] } {
  const layers: RecordedLayer[] = [];
  return {
    layers,
    policy: {
      name: policy.name,
      queryWindow: policy.queryWindow,
      begin(config, promptLength) {
        const run = policy.begin(config, promptLength);
        return {
          async layer(input) {
            const decision = await run.layer(input);
            layers.push({ input, decision });
            return decision;
          },
        };
      },
    },
  };
}
