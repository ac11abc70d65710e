/**
 * The request bodies the server accepts, as zod schemas: OpenAI's chat completions and completions (the fields
 * fastkv can honour; any other field is refused by name, as OpenAI refuses unknown arguments), plus fastkv's
 * extensions `kv_compression`, `context_id`, `top_k`, `min_p`, `repetition_penalty`, and the contexts API.
 * @module
 */
import { z } from 'zod';

/** Per-request compression: the API's options in snake_case. */
export const KvCompression = z.strictObject({
  method: z.string().min(1),
  budget: z.int().min(1).optional(),
  retain_rate: z.number().optional(),
  compression_ratio: z.number().optional(),
  tsp_rate: z.number().optional(),
  tsp_length: z.int().min(1).optional(),
  tsp_layer: z.int().min(0).optional(),
  window_size: z.int().min(1).optional(),
  kernel_size: z.int().min(1).optional(),
  pooling: z.enum(['max', 'avg']).optional(),
  filter_layer: z.int().min(0).optional(),
  sinks: z.int().min(0).optional(),
  repeat_kv: z.boolean().optional(),
  beta: z.number().optional(),
  floor_alpha: z.number().optional(),
  recent_ratio: z.number().optional(),
  decay_ratio: z.number().optional(),
});
export type KvCompression = z.infer<typeof KvCompression>;

const TextPart = z.strictObject({ type: z.literal('text'), text: z.string() });
const Message = z.strictObject({
  role: z.enum(['system', 'developer', 'user', 'assistant']),
  content: z.union([z.string(), z.array(TextPart)]),
  name: z.string().optional(),
});

/** Fields both endpoints share. */
const common = {
  model: z.string().optional(),
  max_tokens: z.int().min(0).nullish(),
  temperature: z.number().min(0).max(2).nullish(),
  top_p: z.number().gt(0).max(1).nullish(),
  seed: z.int().nullish(),
  stop: z.union([z.string(), z.array(z.string()).max(4)]).nullish(),
  n: z.literal(1, { message: 'only n = 1 is supported' }).nullish(),
  stream: z.boolean().nullish(),
  stream_options: z.strictObject({ include_usage: z.boolean().optional() }).nullish(),
  user: z.string().optional(),
  frequency_penalty: z.literal(0, { message: 'frequency_penalty is not supported (use repetition_penalty)' }).nullish(),
  presence_penalty: z.literal(0, { message: 'presence_penalty is not supported (use repetition_penalty)' }).nullish(),
  // fastkv extensions
  kv_compression: KvCompression.optional(),
  context_id: z.string().optional(),
  top_k: z.int().min(0).optional(),
  min_p: z.number().min(0).lt(1).optional(),
  repetition_penalty: z.number().gt(0).optional(),
};

export const ChatCompletionRequest = z.strictObject({
  ...common,
  messages: z.array(Message).min(1),
  max_completion_tokens: z.int().min(0).nullish(),
  logprobs: z.literal(false, { message: 'logprobs are not supported' }).nullish(),
});
export type ChatCompletionRequest = z.infer<typeof ChatCompletionRequest>;

export const CompletionRequest = z.strictObject({
  ...common,
  prompt: z.union([z.string(), z.array(z.string()).length(1, { message: 'only one prompt per request is supported' }),
    z.array(z.int().min(0)).min(1)]),
  echo: z.literal(false, { message: 'echo is not supported' }).nullish(),
  best_of: z.literal(1, { message: 'only best_of = 1 is supported' }).nullish(),
  logprobs: z.null({ message: 'logprobs are not supported' }).optional(),
  suffix: z.null({ message: 'suffix is not supported' }).optional(),
});
export type CompletionRequest = z.infer<typeof CompletionRequest>;

export const ContextRequest = z.strictObject({
  model: z.string().optional(),
  text: z.string().min(1).optional(),
  messages: z.array(Message).min(1).optional(),
  kv_compression: KvCompression.optional(),
}).refine((r) => (r.text === undefined) !== (r.messages === undefined), { message: 'give exactly one of "text" or "messages"', path: ['text'] });
export type ContextRequest = z.infer<typeof ContextRequest>;

/** The message's text: a string, or its text parts joined. */
export function messageText(content: string | readonly { text: string }[]): string {
  return typeof content === 'string' ? content : content.map((p) => p.text).join('');
}

/** snake_case request option → the API's camelCase option. */
const OPTION_NAMES: Readonly<Record<string, string>> = {
  budget: 'budget', retain_rate: 'retainRate', compression_ratio: 'compressionRatio', tsp_rate: 'tspRate',
  tsp_length: 'tspLength', tsp_layer: 'tspLayer', window_size: 'windowSize', kernel_size: 'kernelSize',
  pooling: 'pooling', filter_layer: 'filterLayer', sinks: 'sinks', repeat_kv: 'repeatKv',
  beta: 'beta', floor_alpha: 'floorAlpha', recent_ratio: 'recentRatio', decay_ratio: 'decayRatio',
};

/** `kv_compression` as a CompressionSpec for the registry. */
export function compressionSpec(k: KvCompression): { method: string; [option: string]: unknown } {
  const spec: { method: string; [option: string]: unknown } = { method: k.method };
  for (const [key, value] of Object.entries(k)) {
    if (key !== 'method' && value !== undefined) spec[OPTION_NAMES[key]] = value;
  }
  return spec;
}

/** A CompressionSpec's options in snake_case, for responses. */
export function snakeOptions(options: Readonly<Record<string, unknown>>): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [snake, camel] of Object.entries(OPTION_NAMES)) if (Object.hasOwn(options, camel)) out[snake] = options[camel];
  return out;
}
