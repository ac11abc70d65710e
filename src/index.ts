/**
 * fastkv: fast long-prompt LLM inference on Node.js, with FastKV token-selective propagation and KV-cache
 * compression, over ONNX Runtime.
 *
 * ```ts
 * import { Model, generate } from 'fastkv';
 * const model = await Model.load('path/to/checkpoint');
 * const r = await generate(model, prompt, { compression: { method: 'fastkv', retainRate: 0.1, tspRate: 0.2 } });
 * ```
 * @module
 */

/** Load a Hugging Face checkpoint folder. */
export { Model, type LoadOptions, type LoadProgress } from './engine/model.js';

/** Generate a completion (a promise) or stream it (an async iterable with a `result` promise). */
export {
  generate, stream, encodePrompt, GREEDY,
  type GenerateOptions, type GenerateResult, type PromptInput, type StreamChunk, type Timings, type TokenStream,
} from './engine/generate.js';
export type { SamplingOptions } from './engine/sampling.js';

/** Compressed contexts: prefill and compress a document once, continue it with many questions, save and load it. */
export { compressContext, CompressedContext, type ContextInput, type ContextOptions } from './engine/context.js';
export { loadContext, modelFingerprint } from './engine/context-file.js';
export type { FinishReason } from './engine/stop.js';

/** The lower-level passes: layer-major prefill under a policy, and one cached decode step. */
export { prefill, decodeStep, decodeBatchStep, type BatchMember, type PrefillOptions, type PrefillResult, type LayerStats } from './engine/forward.js';
export { DecodeBatcher, DEFAULT_MAX_BATCH, MAX_BATCH, type BatchingOptions, type BatchSeat } from './engine/batcher.js';
export { KvCache, LayerCache } from './engine/kv-cache.js';

/** Compression policies, their registry, and the interface a new policy implements. */
export { fastkv, type FastKVOptions } from './compress/fastkv.js';
export { snapkv, type SnapKVOptions } from './compress/snapkv.js';
export { pyramidkv, type PyramidKVOptions } from './compress/pyramidkv.js';
export { adakv, type AdaKVOptions } from './compress/adakv.js';
export { pyramidinfer, type PyramidInferOptions } from './compress/pyramidinfer.js';
export { headkv, readHeadScores, writeHeadScores, type HeadKVOptions } from './compress/headkv.js';
export { streamingllm, type StreamingLLMOptions } from './compress/streamingllm.js';
export { h2o, type H2OOptions } from './compress/h2o.js';
export { gemfilter, type GemFilterOptions } from './compress/gemfilter.js';
export { fullPolicy, type CompressionPolicy, type PolicyRun, type LayerInput, type LayerDecision } from './compress/policy.js';
export { METHODS, METHOD_OPTIONS, resolvePolicy, specsFor, type CompressionSpec } from './compress/registry.js';
export type { Scorer, ScoreMatrix, WindowScoreRequest } from './compress/scoring.js';
export type { BudgetOptions, WindowOptions } from './compress/budget.js';

/** Model pieces: config parsing, safetensors, tokenizer and chat template. */
export { loadConfig, parseConfig, ropeFrequencies, type ModelConfig, type RopeConfig, type Family } from './model/config.js';
export { SafetensorsStore, writeSafetensors } from './model/safetensors.js';
export { Tokenizer, TextStreamer, type ChatMessage } from './model/tokenizer.js';

/** Errors: one base class with a stable `code`, one subclass per party who must act. */
export { FastKVError, ConfigError, ModelLoadError, RequestError, BackendError, NumericError, type ErrorCode } from './errors.js';
