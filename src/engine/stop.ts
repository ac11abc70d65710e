/**
 * When generation stops, and which text may be shown so far: EOS ids, stop strings (matched on decoded text, so
 * one may span several tokens) and a token limit.
 *
 * A streaming loop feeds every generated token with the text it added (from a `TextStreamer`):
 *
 * ```ts
 * const stop = new StopCondition({ eosTokenIds, stopStrings: ['\n\n'], maxTokens: 256 });
 * while (stop.finishReason === null) {
 *   const id = sampler.sample(await step(), history);
 *   const { text, finishReason } = stop.push(id, streamer.push(id));
 *   emit(text);                             // never contains a stop string or the start of one that may follow
 *   if (finishReason !== null && finishReason !== 'stop') emit(stop.flush(streamer.flush()));
 * }
 * ```
 *
 * Text that could be the start of a stop string is held back until the next tokens show whether it is one.
 * A matched stop string and everything after it are dropped. The EOS token's own text is never part of the output.
 * @module
 */

import { RequestError } from '../errors.js';

/** 'abort': the caller's signal ended the run (or the consumer of a stream stopped reading). */
export type FinishReason = 'stop' | 'length' | 'eos' | 'abort';

/** What one {@link StopCondition.push} decided. */
export interface StopStep {
  /** Text that can be shown now: ends before any stop string and before text that may still become one. */
  readonly text: string;
  /** Null to go on; otherwise why generation is over (then `text` holds everything that remains to show). */
  readonly finishReason: FinishReason | null;
}

export interface StopOptions {
  /** Token ids that end generation (`'eos'`). */
  eosTokenIds: readonly number[];
  /** Strings that end generation (`'stop'`) when they appear in the generated text; must be non-empty. */
  stopStrings?: readonly string[];
  /** At most this many generated tokens, EOS included (`'length'`). An integer >= 0; 0 means done at once. */
  maxTokens: number;
}

export class StopCondition {
  readonly #eos: ReadonlySet<number>;
  readonly #stops: readonly string[];
  readonly #maxTokens: number;
  /** Text received but not yet released: the longest tail that is a proper prefix of a stop string. */
  #pending = '';
  #generated = 0;
  #finish: FinishReason | null;

  /** @throws RequestError if maxTokens is not an integer >= 0 or a stop string is empty. */
  constructor(opts: StopOptions) {
    if (!Number.isSafeInteger(opts.maxTokens) || opts.maxTokens < 0) {
      throw new RequestError(`maxTokens must be an integer >= 0; got ${String(opts.maxTokens)}`);
    }
    const stops = opts.stopStrings ?? [];
    if (!Array.isArray(stops)) throw new RequestError(`stop must be a list of strings; got ${typeof stops}`);
    for (const s of stops) {
      if (typeof s !== 'string' || s.length === 0) {
        throw new RequestError(`stop strings must be non-empty strings; got ${JSON.stringify(s)}`);
      }
    }
    this.#eos = new Set(opts.eosTokenIds);
    this.#stops = [...stops];
    this.#maxTokens = opts.maxTokens;
    this.#finish = opts.maxTokens === 0 ? 'length' : null;
  }

  /** Null while generation goes on; the reason once it has stopped. */
  get finishReason(): FinishReason | null {
    return this.#finish;
  }

  /** Tokens pushed so far. */
  get generatedTokens(): number {
    return this.#generated;
  }

  /**
   * Feeds one generated token and the text it added. EOS wins over a stop string completed by the same token,
   * and both win over the token limit.
   * @throws RequestError if generation has already finished.
   */
  push(tokenId: number, text: string): StopStep {
    if (this.#finish !== null) {
      throw new RequestError(`generation already finished (${this.#finish}); no more tokens can be pushed`);
    }
    this.#generated++;
    if (this.#eos.has(tokenId)) return this.#end('eos', this.#takePending());

    const pending = this.#pending + text;
    const at = this.#firstStop(pending);
    if (at >= 0) {
      this.#pending = '';
      return this.#end('stop', pending.slice(0, at));
    }
    const hold = this.#heldTail(pending);
    this.#pending = pending.slice(pending.length - hold);
    const released = pending.slice(0, pending.length - hold);
    if (this.#generated >= this.#maxTokens) return this.#end('length', released + this.#takePending());
    return { text: released, finishReason: null };
  }

  /**
   * Releases held-back text when generation ends for a reason of the caller's (or, after 'length'/'eos', to
   * add the streamer's final text). `text` is checked for stop strings too; the result stops before one.
   */
  flush(text = ''): string {
    const pending = this.#pending + text;
    this.#pending = '';
    const at = this.#firstStop(pending);
    if (at >= 0) {
      this.#finish ??= 'stop';
      return pending.slice(0, at);
    }
    return pending;
  }

  #end(reason: FinishReason, text: string): StopStep {
    this.#finish = reason;
    return { text, finishReason: reason };
  }

  #takePending(): string {
    const p = this.#pending;
    this.#pending = '';
    return p;
  }

  /** Start of the earliest stop string in text; -1 if none. */
  #firstStop(text: string): number {
    let first = -1;
    for (const s of this.#stops) {
      const i = text.indexOf(s);
      if (i >= 0 && (first < 0 || i < first)) first = i;
    }
    return first;
  }

  /** Length of the longest tail of text that is a proper prefix of some stop string. */
  #heldTail(text: string): number {
    let best = 0;
    for (const s of this.#stops) {
      for (let len = Math.min(s.length - 1, text.length); len > best; len--) {
        if (text.endsWith(s.slice(0, len))) {
          best = len;
          break;
        }
      }
    }
    return best;
  }
}
