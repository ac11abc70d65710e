/**
 * Method names → policy factories. A method has one name everywhere: file, registry key, CLI value, column.
 * @module
 */
import { ConfigError, quoted } from '../errors.js';
import { own } from '../own.js';
import type { ModelConfig } from '../model/config.js';
import { adakv } from './adakv.js';
import { fastkv } from './fastkv.js';
import { gemfilter } from './gemfilter.js';
import { h2o } from './h2o.js';
import { headkv } from './headkv.js';
import { fullPolicy, type CompressionPolicy } from './policy.js';
import { pyramidinfer } from './pyramidinfer.js';
import { pyramidkv } from './pyramidkv.js';
import { snapkv } from './snapkv.js';
import { streamingllm } from './streamingllm.js';

/** `{ method, ...options }`: a method by name with its options, as the API and the CLI take them. */
export interface CompressionSpec {
  readonly method: string;
  readonly [option: string]: unknown;
}

type Factory = (options: Record<string, unknown>, config: ModelConfig) => CompressionPolicy;

const FACTORIES: Record<string, Factory> = {
  full: () => fullPolicy,
  fastkv, snapkv, pyramidkv, adakv, headkv, pyramidinfer, streamingllm, h2o, gemfilter,
};

export const METHODS: readonly string[] = Object.keys(FACTORIES);

const WINDOW = ['windowSize', 'kernelSize', 'pooling'];
const BUDGET = ['budget', 'retainRate', 'compressionRatio'];
/** The options each method accepts (its factory rejects any other). */
export const METHOD_OPTIONS: Readonly<Record<string, readonly string[]>> = {
  full: [],
  fastkv: [...BUDGET, ...WINDOW, 'tspLayer', 'tspRate', 'tspLength', 'calibration'],
  snapkv: [...BUDGET, ...WINDOW, 'repeatKv'],
  pyramidkv: [...BUDGET, ...WINDOW, 'beta'],
  adakv: [...BUDGET, ...WINDOW, 'floorAlpha', 'groupReduce', 'normalize'],
  headkv: [...BUDGET, ...WINDOW, 'headScores', 'beta', 'temp'],
  pyramidinfer: ['retainRate', 'recentRatio', 'decayRatio'],
  streamingllm: [...BUDGET, 'sinks'],
  h2o: [...BUDGET, 'windowSize'],
  gemfilter: [...BUDGET, 'filterLayer', 'kernelSize'],
};

/**
 * One spec per method from a shared set of options, each method taking only the options it knows: how
 * `--methods full,fastkv,snapkv --retain-rate 0.1 --tsp-rate 0.2` becomes three specs.
 */
export function specsFor(methods: readonly string[], shared: Readonly<Record<string, unknown>>): CompressionSpec[] {
  return methods.map((method) => {
    const known = own(METHOD_OPTIONS, method);
    if (!known) throw new ConfigError(`unknown compression method ${quoted(method)}; known: ${METHODS.join(', ')}`);
    const spec: Record<string, unknown> = { method };
    for (const [key, value] of Object.entries(shared)) if (known.includes(key) && value !== undefined) spec[key] = value;
    return spec as CompressionSpec;
  });
}

/** Checks a spec's options against the model and returns the policy (full when none is given). */
export function resolvePolicy(spec: CompressionPolicy | CompressionSpec | undefined, config: ModelConfig): CompressionPolicy {
  if (spec === undefined) return fullPolicy;
  if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
    throw new ConfigError(`compression must be a policy or { method, ...options }, got ${spec === null ? 'null' : typeof spec}`);
  }
  if ('begin' in spec && typeof spec.begin === 'function') return spec as CompressionPolicy;
  const { method, ...options } = spec as CompressionSpec;
  if (typeof method !== 'string') throw new ConfigError(`compression.method must be a method name; known: ${METHODS.join(', ')}`);
  const factory = own(FACTORIES, method);
  const known = own(METHOD_OPTIONS, method);
  if (!factory || !known) throw new ConfigError(`unknown compression method ${quoted(method)}; known: ${METHODS.join(', ')}`);
  // A typo must not silently fall back to a default.
  for (const key of Object.keys(options)) {
    if (!known.includes(key)) {
      throw new ConfigError(`${method}: unknown option ${quoted(key)}; known: ${known.join(', ') || 'none'}`);
    }
  }
  return factory(options, config);
}
