/**
 * The compression flags shared by `generate`, `bench` and `eval`: `--method` and its options, turned into a
 * `CompressionSpec` for the registry (which checks the values).
 * @module
 */
import type { CompressionSpec } from '../compress/registry.js';
import { METHODS } from '../compress/registry.js';
import path from 'node:path';
import { RequestError } from '../errors.js';
import { DEFAULT_MODEL_DIR, numberFlag } from './args.js';

/** Where `fastkv calibrate` writes, and `--tsp-layer auto` looks, by default: beside the user's outputs. */
export function defaultCalibrationFile(modelDir: string): string {
  return path.resolve(`calibration-${path.basename(path.resolve(modelDir))}.json`);
}

export const COMPRESSION_FLAGS = {
  method: { type: 'string' },
  budget: { type: 'string' }, 'retain-rate': { type: 'string' }, 'compression-ratio': { type: 'string' },
  'tsp-rate': { type: 'string' }, 'tsp-layer': { type: 'string' }, 'tsp-length': { type: 'string' },
  window: { type: 'string' }, kernel: { type: 'string' }, pooling: { type: 'string' },
  'filter-layer': { type: 'string' }, sinks: { type: 'string' }, 'repeat-kv': { type: 'boolean' },
  beta: { type: 'string' }, 'floor-alpha': { type: 'string' }, 'head-scores': { type: 'string' },
  calibration: { type: 'string' }, 'recent-ratio': { type: 'string' }, 'decay-ratio': { type: 'string' },
} as const;

export const COMPRESSION_HELP = `KV-cache compression:
  --method NAME          One of: ${METHODS.join(', ')} (default full).
  --budget B             KV entries kept per layer per KV head, window included.
  --retain-rate R        Keep floor(N × R) entries per KV head, (0, 1].
  --compression-ratio C  kvpress form: fraction of entries removed, [0, 1).
  --tsp-rate R           fastkv: share of tokens propagated past the TSP layer, (0, 1] (default 0.2).
  --tsp-length T         fastkv: tokens propagated (constant mode, with --budget).
  --tsp-layer L|auto     fastkv: 0-based TSP layer (default layers/2 − 1); auto: the layer fastkv calibrate
                         chose, read from --calibration FILE (default ./calibration-<model folder name>.json).
  --calibration FILE     fastkv: calibration file for --tsp-layer auto.
  --window W             Observation window (default 8).
  --kernel K             Pooling kernel (default 7).
  --pooling max|avg      Pooling (default max).
  --filter-layer F       gemfilter: filter layer (default 13 of 32, scaled to the depth).
  --sinks S              streamingllm: attention-sink tokens (default 4).
  --repeat-kv            snapkv: select per query head with K/V repeated, as the original (G× the memory).
  --beta B               pyramidkv: last layer keeps (B−w)/β (default 20); headkv: B // β of each head's
                         budget goes to the shared pool (default 1.01).
  --floor-alpha A        adakv: share of the budget every head is guaranteed, [0, 1] (default 0.2).
  --recent-ratio R       pyramidinfer: recent block, share of the prompt (default 0.2; --retain-rate picks
  --decay-ratio D        the reference's 35/50/60% configuration instead); decay d of the cosine schedule (0.3).
  --head-scores FILE     headkv: head-importance JSON ("layer-head": [scores]), e.g. from fastkv profile-heads.
`;

type Values = Record<string, string | boolean | string[] | undefined>;

/** `--method NAME` and its options as a spec; undefined without `--method` (and then no option may be given). */
export function compressionFromFlags(values: Values): CompressionSpec | undefined {
  const options = compressionOptionsFromFlags(values);
  if (values.method === undefined) {
    const given = optionFlagNames(options);
    if (given.length > 0) throw new RequestError(`${given.join(', ')} ${given.length > 1 ? 'are options' : 'is an option'} of a compression method; give --method too (see --help)`);
    return undefined;
  }
  return { method: String(values.method), ...options };
}

/** Each method option and its flag; `true` marks integer options. */
export const OPTION_FLAGS: Readonly<Record<string, { flag: string; integer: boolean }>> = {
  budget: { flag: 'budget', integer: true },
  retainRate: { flag: 'retain-rate', integer: false },
  compressionRatio: { flag: 'compression-ratio', integer: false },
  tspRate: { flag: 'tsp-rate', integer: false },
  tspLength: { flag: 'tsp-length', integer: true },
  windowSize: { flag: 'window', integer: true },
  kernelSize: { flag: 'kernel', integer: true },
  filterLayer: { flag: 'filter-layer', integer: true },
  sinks: { flag: 'sinks', integer: true },
  beta: { flag: 'beta', integer: false },
  floorAlpha: { flag: 'floor-alpha', integer: false },
  recentRatio: { flag: 'recent-ratio', integer: false },
  decayRatio: { flag: 'decay-ratio', integer: false },
};

/** The flags that set these method options (`retainRate` -> `--retain-rate`), for messages. */
export function optionFlagNames(options: Record<string, unknown>): string[] {
  return Object.keys(options).map((o) => (o === 'pooling' ? '--pooling' : o === 'repeatKv' ? '--repeat-kv' : `--${OPTION_FLAGS[o]?.flag ?? o}`));
}

/**
 * The method options given on the command line (budget, rates, window, ...), without a method. `modelDir` names
 * the default calibration file for `--tsp-layer auto` (default: --model, or the bundled model).
 */
export function compressionOptionsFromFlags(values: Values, modelDir?: string): Record<string, unknown> {
  const options: Record<string, unknown> = {};
  if (values['tsp-layer'] === 'auto') {
    options.tspLayer = 'auto';
    options.calibration = values.calibration !== undefined ? String(values.calibration) : defaultCalibrationFile(modelDir ?? (typeof values.model === 'string' ? values.model : DEFAULT_MODEL_DIR));
  } else {
    const layer = numberFlag(values, 'tsp-layer', { integer: true });
    if (layer !== undefined) options.tspLayer = layer;
    if (values.calibration !== undefined) throw new RequestError('--calibration is read only with --tsp-layer auto');
  }
  for (const [option, { flag, integer }] of Object.entries(OPTION_FLAGS)) {
    const v = numberFlag(values, flag, { integer });
    if (v !== undefined) options[option] = v;
  }
  if (values.pooling !== undefined) options.pooling = String(values.pooling);
  if (values['repeat-kv'] === true) options.repeatKv = true;
  if (values['head-scores'] !== undefined) options.headScores = String(values['head-scores']);
  return options;
}
