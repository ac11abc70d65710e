/**
 * Method names → policy factories. A method has one name everywhere: file, registry key, CLI value, column.
 * @module
 */
import { ConfigError } from '../errors.js';
import type { ModelConfig } from '../model/config.js';
import { fastkv } from './fastkv.js';
import { gemfilter } from './gemfilter.js';
import { h2o } from './h2o.js';
import { fullPolicy, type CompressionPolicy } from './policy.js';
import { snapkv } from './snapkv.js';
import { streamingllm } from './streamingllm.js';

/** `{ method, ...options }`: a method by name with its options, as the API and the CLI take them. */
export interface CompressionSpec {
  readonly method: string;
  readonly [option: string]: unknown;
}

type Factory = (options: Record<string, unknown>, config: ModelConfig) => CompressionPolicy;

const FACTORIES: Record<string, Factory> = {
  full: (options) => {
    if (Object.keys(options).length > 0) throw new ConfigError(`full: takes no options, got ${Object.keys(options).join(', ')}`);
    return fullPolicy;
  },
  fastkv, snapkv, streamingllm, h2o, gemfilter,
};

export const METHODS: readonly string[] = Object.keys(FACTORIES);

/** Checks a spec's options against the model and returns the policy (full when none is given). */
export function resolvePolicy(spec: CompressionPolicy | CompressionSpec | undefined, config: ModelConfig): CompressionPolicy {
  if (spec === undefined) return fullPolicy;
  if ('begin' in spec && typeof spec.begin === 'function') return spec as CompressionPolicy;
  const { method, ...options } = spec as CompressionSpec;
  const factory = FACTORIES[method];
  if (!factory) throw new ConfigError(`unknown compression method "${method}"; known: ${METHODS.join(', ')}`);
  return factory(options, config);
}
