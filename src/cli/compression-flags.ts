/**
 * The compression flags shared by `generate`, `bench` and `eval`: `--method` and its options, turned into a
 * `CompressionSpec` for the registry (which checks the values).
 * @module
 */
import type { CompressionSpec } from '../compress/registry.js';
import { METHODS } from '../compress/registry.js';
import { numberFlag } from './args.js';

export const COMPRESSION_FLAGS = {
  method: { type: 'string' },
  budget: { type: 'string' }, 'retain-rate': { type: 'string' }, 'compression-ratio': { type: 'string' },
  'tsp-rate': { type: 'string' }, 'tsp-layer': { type: 'string' }, 'tsp-length': { type: 'string' },
  window: { type: 'string' }, kernel: { type: 'string' }, pooling: { type: 'string' },
  'filter-layer': { type: 'string' }, sinks: { type: 'string' },
} as const;

export const COMPRESSION_HELP = `KV-cache compression:
  --method NAME          One of: ${METHODS.join(', ')} (default full).
  --budget B             KV entries kept per layer per KV head, window included.
  --retain-rate R        Keep floor(N × R) entries per KV head, (0, 1].
  --compression-ratio C  kvpress form: fraction of entries removed, [0, 1).
  --tsp-rate R           fastkv: share of tokens propagated past the TSP layer, (0, 1] (default 0.2).
  --tsp-length T         fastkv: tokens propagated (constant mode, with --budget).
  --tsp-layer L          fastkv: 0-based TSP layer (default layers/2 − 1).
  --window W             Observation window (default 8).
  --kernel K             Pooling kernel (default 7).
  --pooling max|avg      Pooling (default max).
  --filter-layer F       gemfilter: filter layer (default 13 of 32, scaled to the depth).
  --sinks S              streamingllm: attention-sink tokens (default 4).
`;

type Values = Record<string, string | boolean | string[] | undefined>;

export function compressionFromFlags(values: Values): CompressionSpec | undefined {
  if (values.method === undefined) return undefined;
  const spec: Record<string, unknown> = { method: String(values.method) };
  const set = (key: string, flag: string, integer = false) => {
    const v = numberFlag(values, flag, { integer });
    if (v !== undefined) spec[key] = v;
  };
  set('budget', 'budget', true);
  set('retainRate', 'retain-rate');
  set('compressionRatio', 'compression-ratio');
  set('tspRate', 'tsp-rate');
  set('tspLength', 'tsp-length', true);
  set('tspLayer', 'tsp-layer', true);
  set('windowSize', 'window', true);
  set('kernelSize', 'kernel', true);
  set('filterLayer', 'filter-layer', true);
  set('sinks', 'sinks', true);
  if (values.pooling !== undefined) spec.pooling = String(values.pooling);
  return spec as CompressionSpec;
}
