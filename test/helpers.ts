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


import fs from 'node:fs';
import os from 'node:os';
import { Model, type LoadOptions } from '../src/engine/model.js';
import { writeRandomCheckpoint } from '../src/bench/random-checkpoint.js';
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
      ...policy,
      begin(config, promptLength) {
        const run = policy.begin(config, promptLength);
        return {
          queryWindow: run.queryWindow,
          decode: run.decode?.bind(run),
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

/**
 * Loads a small checkpoint with seeded random weights: a 64-wide Llama unless `config` overrides fields of its
 * config.json (layers, heads, architecture, sliding window...); stories260K's tokenizer. `prepare` may change the
 * folder before it is loaded (a NaN weight, another config.json).
 */
export async function randomModel(config: Record<string, unknown>, seed: number, prepare?: (dir: string) => void,
  options: LoadOptions = { threads: 1 }): Promise<Model> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-random-'));
  writeRandomCheckpoint(dir, {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 96,
    num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 512,
    max_position_embeddings: 4096, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true,
    bos_token_id: 1, eos_token_id: 2, ...config,
  }, seed);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(STORIES, f), path.join(dir, f));
  prepare?.(dir);
  return Model.load(dir, options);
}

/**
 * A head-score file (HeadKV's `"layer-head": [scores]` format) for a model of `layers` × `heads` query heads,
 * with deterministic uneven scores; returns its path.
 */
export function headScoresFile(layers: number, heads: number): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-heads-'));
  const scores: Record<string, number[]> = {};
  for (let l = 0; l < layers; l++) for (let h = 0; h < heads; h++) scores[`${l}-${h}`] = [((l * 7 + h * 13) % 11) / 10, ((l + h) % 3) / 10];
  const file = path.join(dir, 'head-scores.json');
  fs.writeFileSync(file, JSON.stringify(scores));
  return file;
}
