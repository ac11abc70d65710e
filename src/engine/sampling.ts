/**
 * Next-token sampling from logits, in the order transformers applies its processors: repetition penalty, then
 * temperature, top-k, top-p, min-p, then softmax and a draw from a seeded PRNG (xoshiro128**, seeded through
 * splitmix32). Temperature 0 (the default) or top-k 1 is greedy argmax, lowest id on ties.
 *
 * Work is O(vocab) per token with no sort of the vocabulary: top-k keeps a k-element heap, and top-p first
 * drops every token with probability below (1 - topP) / n (together they weigh less than 1 - topP, so all of
 * them are cut whatever their order), then finds the cut-off with a quickselect. Buffers are allocated once
 * per vocabulary size and reused.
 * @module
 */

import { RequestError } from '../errors.js';
import { Xoshiro128 } from '../random.js';

export interface SamplingOptions {
  /** Softmax temperature; 0 (default) = greedy argmax. >= 0. */
  temperature?: number;
  /** Keep the k most likely tokens (all tokens tied with the k-th too, as transformers); 0 (default) = off. */
  topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches topP; 1 (default) = off. (0, 1]. */
  topP?: number;
  /** Drop tokens less likely than minP times the most likely one; 0 (default) = off. [0, 1). */
  minP?: number;
  /**
   * transformers' repetition penalty on every token in the history (prompt + generated):
   * logit > 0 ? logit / p : logit * p. 1 (default) = off. > 0.
   */
  repetitionPenalty?: number;
  /** PRNG seed, any safe integer; the same seed gives the same draws. Default: a random seed. */
  seed?: number;
}

/**
 * Checks sampling options and fills in defaults. The returned `seed` is the one actually used (random if none
 * was given), so a run can be repeated.
 * @throws RequestError naming the parameter, the value and the allowed range.
 */
export function validateSampling(opts: SamplingOptions): Required<SamplingOptions> {
  const temperature = numberParam('temperature', opts.temperature, 0, (v) => v >= 0, 'a finite number >= 0 (0 = greedy)');
  const topK = numberParam('topK', opts.topK, 0, (v) => Number.isSafeInteger(v) && v >= 0, 'an integer >= 0 (0 = off)');
  const topP = numberParam('topP', opts.topP, 1, (v) => v > 0 && v <= 1, 'a number in (0, 1] (1 = off)');
  const minP = numberParam('minP', opts.minP, 0, (v) => v >= 0 && v < 1, 'a number in [0, 1) (0 = off)');
  const repetitionPenalty = numberParam('repetitionPenalty', opts.repetitionPenalty, 1, (v) => v > 0,
    'a finite number > 0 (1 = off)');
  const seed = numberParam('seed', opts.seed, randomSeed(), (v) => Number.isSafeInteger(v), 'a safe integer');
  return { temperature, topK, topP, minP, repetitionPenalty, seed };
}

function numberParam(
  name: string, value: unknown, fallback: number, ok: (v: number) => boolean, range: string,
): number {
  if (value === undefined || value === null) return fallback;
  if (typeof value !== 'number' || !Number.isFinite(value) || !ok(value)) {
    throw new RequestError(`sampling parameter ${name} must be ${range}; got ${describe(value)}`);
  }
  return value;
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value);
  if (typeof value === 'number' || typeof value === 'boolean') return String(value);
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function randomSeed(): number {
  return Math.floor(Math.random() * 2 ** 32);
}

/** Samples one token at a time for one request. Not shared between requests: it holds the PRNG state. */
export class Sampler {
  readonly options: Readonly<Required<SamplingOptions>>;
  readonly #rng: Xoshiro128;
  #size = 0;
  /** Candidate token ids. [size] */
  #ids = new Int32Array(0);
  /** Unnormalized probabilities, indexed by token id. [size] */
  #weights = new Float64Array(0);
  /** Per-token stamp of the last call that penalized it, to penalize each history token once. [size] */
  #seen = new Uint32Array(0);
  #stamp = 0;
  /** Top-k heap: logits and ids of the k best so far, smallest logit at the root. */
  #heapValues = new Float32Array(0);

  /**
   * @param vocabSize length of the logits rows (buffers are sized for it and grow if a row is longer).
   * @throws RequestError on a bad option (see {@link validateSampling}).
   */
  constructor(opts: SamplingOptions, vocabSize: number) {
    this.options = Object.freeze(validateSampling(opts));
    // The 53-bit seed folds into the generator's 32-bit seed word.
    const seed = this.options.seed;
    this.#rng = new Xoshiro128(((seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) >>> 0, 0x9e3779b9)) >>> 0);
    this.#ensure(vocabSize);
  }

  /**
   * Picks the next token.
   * @param logits [vocab] scores for the next token; modified in place (penalty applied).
   * @param history every token id so far (prompt + generated); used by the repetition penalty.
   * @returns the token id. NaN logits are never picked; if every logit is NaN or -Infinity the result is 0.
   */
  sample(logits: Float32Array, history: readonly number[] | Int32Array): number {
    const { temperature, topK, topP, minP, repetitionPenalty } = this.options;
    const n = logits.length;
    this.#ensure(n);
    if (repetitionPenalty !== 1) this.#penalize(logits, history, repetitionPenalty);
    if (temperature === 0 || topK === 1) return argmax(logits);

    // Candidates: finite logits, or the top-k of them. Weights exp((l - max) / T).
    const count = topK > 0 && topK < n ? this.#topK(logits, topK) : this.#allFinite(logits);
    if (count === 0) return argmax(logits);
    const ids = this.#ids;
    const w = this.#weights;
    let max = -Infinity;
    for (let i = 0; i < count; i++) max = Math.max(max, logits[ids[i]]);
    const invT = 1 / temperature;
    let total = 0;
    for (let i = 0; i < count; i++) {
      const id = ids[i];
      // d = 0 for the top token: exp(0 · ∞) would be NaN when 1 / temperature overflows (temperature 1e-310).
      const d = logits[id] - max;
      const e = d === 0 ? 1 : Math.exp(d * invT);
      w[id] = e;
      total += e;
    }

    let kept = count;
    if (topP < 1) kept = this.#topP(count, total, topP);
    // min-p: p_i >= minP * p_max, and the largest weight is exp(0) = 1.
    if (minP > 0) {
      let j = 0;
      for (let i = 0; i < kept; i++) if (w[ids[i]] >= minP) ids[j++] = ids[i];
      kept = j;
    }

    let sum = 0;
    for (let i = 0; i < kept; i++) sum += w[ids[i]];
    let r = this.#rng.float53() * sum;
    for (let i = 0; i < kept; i++) {
      r -= w[ids[i]];
      if (r < 0) return ids[i];
    }
    return ids[kept - 1];
  }

  #ensure(n: number): void {
    if (n <= this.#size) return;
    this.#size = n;
    this.#ids = new Int32Array(n);
    this.#weights = new Float64Array(n);
    this.#seen = new Uint32Array(n);
    this.#stamp = 0;
  }

  #penalize(logits: Float32Array, history: readonly number[] | Int32Array, penalty: number): void {
    if (this.#stamp === 0xffffffff) {
      this.#seen.fill(0);
      this.#stamp = 0;
    }
    const stamp = ++this.#stamp;
    const seen = this.#seen;
    const n = logits.length;
    for (let i = 0; i < history.length; i++) {
      const id = history[i];
      if (!(id >= 0 && id < n) || seen[id] === stamp) continue;
      seen[id] = stamp;
      const l = logits[id];
      logits[id] = l > 0 ? l / penalty : l * penalty;
    }
  }

  /** Writes the ids of all finite logits into #ids; returns how many. */
  #allFinite(logits: Float32Array): number {
    const ids = this.#ids;
    let count = 0;
    for (let i = 0; i < logits.length; i++) {
      const l = logits[i];
      if (l > -Infinity && l < Infinity) ids[count++] = i;
    }
    return count;
  }

  /**
   * Writes into #ids (ascending) every finite token whose logit is >= the k-th largest, as transformers'
   * `scores < topk(scores, k)[-1]` mask does; returns how many.
   */
  #topK(logits: Float32Array, k: number): number {
    if (this.#heapValues.length < k) {
      this.#heapValues = new Float32Array(k);
    }
    const hv = this.#heapValues;
    let size = 0;
    for (let i = 0; i < logits.length; i++) {
      const l = logits[i];
      if (!(l > -Infinity && l < Infinity)) continue;
      if (size < k) {
        // sift up
        let c = size++;
        while (c > 0) {
          const p = (c - 1) >> 1;
          if (hv[p] <= l) break;
          hv[c] = hv[p];
          c = p;
        }
        hv[c] = l;
      } else if (l > hv[0]) {
        // replace the root, sift down
        let c = 0;
        for (;;) {
          const left = 2 * c + 1;
          if (left >= k) break;
          const right = left + 1;
          const m = right < k && hv[right] < hv[left] ? right : left;
          if (hv[m] >= l) break;
          hv[c] = hv[m];
          c = m;
        }
        hv[c] = l;
      }
    }
    if (size === 0) return 0;
    const threshold = size < k ? -Infinity : hv[0];
    const ids = this.#ids;
    let count = 0;
    for (let i = 0; i < logits.length; i++) {
      const l = logits[i];
      if (l >= threshold && l > -Infinity && l < Infinity) ids[count++] = i;
    }
    return count;
  }

  /**
   * Keeps the most likely candidates while the mass of those ranked above is below topP (transformers drops
   * tokens whose ascending cumulative probability is <= 1 - topP). Moves the kept ids to the front of #ids
   * (in no particular order) and returns how many there are. Expected O(count): a quickselect that only
   * descends into the part holding the cut-off, then a sort of at most a few dozen ids.
   */
  #topP(count: number, total: number, topP: number): number {
    const ids = this.#ids;
    const w = this.#weights;
    // Tokens lighter than (1 - topP) / count weigh less than 1 - topP in all, so all of them are cut.
    const floor = ((1 - topP) / count) * total;
    let hi = 0;
    for (let i = 0; i < count; i++) {
      const id = ids[i];
      if (w[id] >= floor) {
        ids[i] = ids[hi];
        ids[hi++] = id;
      }
    }
    const limit = topP * total;
    // ids[0, lo) are kept and weigh `above` together; the cut-off lies in ids[lo, hi).
    let lo = 0;
    let above = 0;
    while (hi - lo > 32) {
      if (above >= limit) return lo;
      const pivot = median3(w[ids[lo]], w[ids[(lo + hi) >> 1]], w[ids[hi - 1]]);
      // Three-way partition of [lo, hi): heavier than pivot | equal | lighter.
      let gt = lo;
      let lt = hi;
      let i = lo;
      let heavier = 0;
      while (i < lt) {
        const id = ids[i];
        const v = w[id];
        if (v > pivot) {
          heavier += v;
          ids[i++] = ids[gt];
          ids[gt++] = id;
        } else if (v < pivot) {
          ids[i] = ids[--lt];
          ids[lt] = id;
        } else {
          i++;
        }
      }
      if (above + heavier >= limit) {
        hi = gt; // the first token of weight `pivot` is already past the cut-off
        continue;
      }
      above += heavier;
      for (let j = gt; j < lt; j++) {
        if (above >= limit) return j;
        above += pivot;
      }
      lo = lt;
    }
    const rest = ids.subarray(lo, hi).sort((a, b) => w[b] - w[a] || a - b);
    let kept = 0;
    while (kept < rest.length && above < limit) above += w[rest[kept++]];
    return lo + kept;
  }
}

function median3(a: number, b: number, c: number): number {
  if (a > b) [a, b] = [b, a];
  if (b > c) b = c;
  return a > b ? a : b;
}

/** Index of the largest value, lowest index on ties; NaN never wins. 0 if nothing beats -Infinity. */
export function argmax(values: Float32Array): number {
  let best = 0;
  let bestValue = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v > bestValue) {
      bestValue = v;
      best = i;
    }
  }
  return best;
}
