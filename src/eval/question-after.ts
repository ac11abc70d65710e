/**
 * kvpress's evaluation protocol: the context alone is prefilled and compressed, then the question is fed after
 * compression, uncompressed, one token at a time with the positions continuing, and the answer is decoded
 * greedily. The question therefore cannot steer which context entries are kept (unlike the paper's protocol,
 * where the question is part of the compressed prompt and sits in the observation window).
 * @module
 */
import { RequestError } from '../errors.js';
import { resolvePolicy, type CompressionSpec } from '../compress/registry.js';
import type { CompressionPolicy } from '../compress/policy.js';
import { decodeStep, prefill } from '../engine/forward.js';
import type { Model } from '../engine/model.js';
import { argmax } from '../engine/sampling.js';
import { ropeFrequencies } from '../model/config.js';

export interface QuestionAfterResult {
  /** Generated ids, the final EOS included when generation ended on one (as `generate` reports them). */
  outputIds: number[];
  /** The generated text, special tokens (EOS included) left out. */
  text: string;
  /** 'eos' when an end-of-sequence id was produced, 'length' when maxTokens ran out. */
  finishReason: 'eos' | 'length';
}

/**
 * Prefills `contextIds` under `spec`'s compression, appends `questionIds` with uncompressed decode steps, then
 * decodes greedily (argmax, lowest id on ties) until one of `model.eosTokenIds` or `maxTokens` tokens.
 * The ids are used as given (add BOS / chat markup to `contextIds` yourself).
 * @throws RequestError when contextIds is empty or maxTokens is not an integer >= 0; ConfigError for a bad spec.
 */
export async function generateWithQuestionAfter(
  model: Model,
  contextIds: readonly number[],
  questionIds: readonly number[],
  spec: CompressionSpec | CompressionPolicy | undefined,
  maxTokens: number,
): Promise<QuestionAfterResult> {
  if (!Number.isSafeInteger(maxTokens) || maxTokens < 0) throw new RequestError(`maxTokens must be an integer >= 0, got ${maxTokens}`);
  if (contextIds.length === 0) throw new RequestError('question-after: the context has no tokens');
  const config = model.config;
  const policy = resolvePolicy(spec, config);
  if (maxTokens === 0) return { outputIds: [], text: '', finishReason: 'length' };

  const pre = await prefill(model, Int32Array.from(contextIds), { policy, decodeCapacity: questionIds.length + maxTokens });
  const { invFreq } = ropeFrequencies(config, pre.nextPosition + questionIds.length + maxTokens);
  let position = pre.nextPosition;
  let logits = pre.logits;
  for (const id of questionIds) logits = await decodeStep(model, pre.cache, id, position++, invFreq);

  const eos = new Set(model.eosTokenIds);
  const outputIds: number[] = [];
  let finishReason: 'eos' | 'length' = 'length';
  for (;;) {
    const id = argmax(logits);
    outputIds.push(id);
    if (eos.has(id)) { finishReason = 'eos'; break; }
    if (outputIds.length >= maxTokens) break;
    logits = await decodeStep(model, pre.cache, id, position++, invFreq);
  }
  const textIds = finishReason === 'eos' ? outputIds.slice(0, -1) : outputIds;
  const text = model.hasTokenizer ? model.tokenizer.decode(textIds, { skipSpecialTokens: true }) : '';
  return { outputIds, text, finishReason };
}
