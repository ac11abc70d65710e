/**
 * Continuous batching. On a CPU a decode step reads every weight once, and reading them once for eight sequences
 * costs little more than for one; so the `generate()` and `stream()` calls running on one model at the same time
 * decode together: each asks the batcher for its next logits, and the batcher runs one step for all the sequences
 * waiting (`decodeBatchStep`: the linear layers and the head over B rows, attention over each sequence's own
 * cache). A new sequence is admitted between steps (its prefill runs, interleaved with the others' steps at layer
 * granularity, then it joins); a finished or aborted one leaves at once and never disturbs the others. Prefills
 * are admitted one at a time, in order of arrival.
 *
 * Greedy results are those of the same calls made one after another: every row of a batched step is computed as
 * it would be alone (see test/batching.test.ts).
 * @module
 */
import { ConfigError } from '../errors.js';
import { decodeBatchStep, decodeStep, type BatchMember } from './forward.js';
import { rowsShareActivationScale } from '../graph/linear.js';
import type { KvCache } from './kv-cache.js';
import type { Model } from './model.js';

export interface BatchingOptions {
  /**
   * Most sequences admitted at once (prefilling or decoding); more wait for one to finish. Default 8. Prefills
   * run one at a time, in order of arrival, between the decode steps of the sequences already admitted.
   */
  maxBatch?: number;
  /**
   * Admission stops while the caches of the admitted sequences hold this many bytes or more (a cache may still
   * grow past it while decoding). Default: a quarter of the machine's memory.
   */
  maxKvBytes?: number;
}

export const DEFAULT_MAX_BATCH = 8;
/** Largest batch accepted: one step's attention graph has an input per sequence and cache head. */
export const MAX_BATCH = 64;

/** Checks batching options; `false` turns batching off (each sequence decodes alone, nothing waits). */
export function checkBatching(options: BatchingOptions | false | undefined, totalMemory: number): Required<BatchingOptions> | null {
  if (options === false) return null;
  if (options !== undefined && (options === null || typeof options !== 'object')) {
    throw new ConfigError(`batching must be an object { maxBatch, maxKvBytes } or false, got ${options === null ? 'null' : typeof options}`);
  }
  const maxBatch = options?.maxBatch ?? DEFAULT_MAX_BATCH;
  if (!Number.isSafeInteger(maxBatch) || maxBatch < 1 || maxBatch > MAX_BATCH) {
    throw new ConfigError(`batching.maxBatch must be an integer from 1 to ${MAX_BATCH}, got ${maxBatch}`);
  }
  const maxKvBytes = options?.maxKvBytes ?? Math.floor(totalMemory / 4);
  if (typeof maxKvBytes !== 'number' || !(maxKvBytes > 0) || !Number.isFinite(maxKvBytes)) {
    throw new ConfigError(`batching.maxKvBytes must be a positive number of bytes, got ${String(maxKvBytes)}`);
  }
  return { maxBatch, maxKvBytes };
}

interface Waiter {
  grant: () => void;
}

interface StepRequest {
  member: BatchMember;
  resolve: (logits: Float32Array) => void;
  reject: (error: unknown) => void;
}

/**
 * One sequence's place in the batcher, from admission to the end of its generation. `leave()` must be called
 * (in a `finally`) whatever happens.
 */
export interface BatchSeat {
  /** The sequence has been prefilled: from now on its steps may run together with the others'. */
  join(cache: KvCache, invFreq: Float32Array): void;
  /** Feeds `token` at `positionId` and resolves with the next logits. One step at a time per seat. */
  step(token: number, positionId: number): Promise<Float32Array>;
  leave(): void;
}

export class DecodeBatcher {
  private readonly seats = new Set<Seat>();
  private readonly admissionQueue: Waiter[] = [];
  private pending: StepRequest[] = [];
  private stepping = false;
  private flushScheduled = false;
  /** Steps run and rows decoded, for benchmarks and tests. */
  readonly stats = { steps: 0, rows: 0, largestBatch: 0 };

  /** `limits` null: batching off. */
  constructor(private readonly model: Model, readonly limits: Required<BatchingOptions> | null) {}

  /** Waits for room (batch size and KV bytes), then returns the sequence's seat; rejects if `signal` aborts first. */
  async admit(signal?: AbortSignal): Promise<BatchSeat> {
    signal?.throwIfAborted();
    if (!this.limits || (this.admissionQueue.length === 0 && this.hasRoom())) return this.seat();
    return new Promise<BatchSeat>((resolve, reject) => {
      const waiter: Waiter = {
        grant: () => { signal?.removeEventListener('abort', onAbort); resolve(this.seat()); },
      };
      const onAbort = () => {
        const i = this.admissionQueue.indexOf(waiter);
        if (i >= 0) this.admissionQueue.splice(i, 1);
        reject(signal!.reason);
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.admissionQueue.push(waiter);
    });
  }

  private seat(): Seat {
    const seat = new Seat(this);
    this.seats.add(seat);
    return seat;
  }

  /** Sequences admitted and not yet gone. */
  get size(): number {
    return this.seats.size;
  }

  /**
   * Room for one more: fewer than `maxBatch` seats, no sequence still prefilling (prefills run one after another,
   * first come first served, between the others' decode steps: ONNX Runtime runs one graph at a time on the main
   * thread anyway, and one prefill at a time brings each first token sooner than interleaved prefills), and the
   * caches held below `maxKvBytes`.
   */
  private hasRoom(): boolean {
    const limits = this.limits!;
    if (this.seats.size >= limits.maxBatch) return false;
    let bytes = 0;
    for (const seat of this.seats) {
      if (!seat.cache) return false;
      bytes += seat.cache.bytes;
    }
    return bytes < limits.maxKvBytes;
  }

  /** @internal */
  request(member: BatchMember): Promise<Float32Array> {
    if (!this.limits) return decodeStep(this.model, member.cache, member.token, member.positionId, member.invFreq);
    return new Promise<Float32Array>((resolve, reject) => {
      this.pending.push({ member, resolve, reject });
      this.schedule();
    });
  }

  /** @internal */
  release(seat: Seat): void {
    if (!this.seats.delete(seat)) return;
    this.admitWaiting();
    this.schedule();
  }

  /** @internal Admits waiting sequences in order while there is room (each takes its seat at once). */
  admitWaiting(): void {
    while (this.admissionQueue.length > 0 && this.hasRoom()) this.admissionQueue.shift()!.grant();
  }

  /**
   * Runs a step when every joined sequence is waiting for one; otherwise after the current turn of the event loop,
   * with those that are (a sequence busy elsewhere, e.g. with a slow stream consumer, joins the next step).
   */
  private schedule(): void {
    if (this.stepping || this.pending.length === 0) return;
    let joined = 0;
    for (const seat of this.seats) if (seat.cache) joined++;
    if (this.pending.length >= joined) {
      void this.runStep();
    } else if (!this.flushScheduled) {
      this.flushScheduled = true;
      setImmediate(() => {
        this.flushScheduled = false;
        if (!this.stepping && this.pending.length > 0) void this.runStep();
      });
    }
  }

  private async runStep(): Promise<void> {
    const batch = this.pending;
    this.pending = [];
    this.stepping = true;
    // Where a matmul's rows share one activation scale (int8), sequences step one at a time (see below).
    const stepRows = rowsShareActivationScale(this.model.dtype) ? 1 : batch.length;
    this.stats.steps += batch.length / stepRows;
    this.stats.rows += batch.length;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, stepRows);
    try {
      if (batch.length === 1) {
        // One sequence: the one-run-per-layer step is faster than the split one.
        const { member } = batch[0];
        batch[0].resolve(await decodeStep(this.model, member.cache, member.token, member.positionId, member.invFreq));
      } else if (stepRows === 1) {
        // Rows stepped together would shift each other's quantization, and a sequence's tokens would depend on
        // its batch mates. They take turns instead (still admitted and scheduled together); each error stays its own.
        for (const r of batch) {
          try {
            r.resolve(await decodeStep(this.model, r.member.cache, r.member.token, r.member.positionId, r.member.invFreq));
          } catch (error) {
            r.reject(error);
          }
        }
      } else {
        // Sequences whose caches repeat K/V per query head go last, so that few attention layouts occur.
        const ordered = [...batch].sort((a, b) => Number(a.member.cache.layer(0).group > 1) - Number(b.member.cache.layer(0).group > 1));
        const results = await decodeBatchStep(this.model, ordered.map((r) => r.member));
        ordered.forEach((r, i) => {
          const result = results[i];
          if (result instanceof Error) r.reject(result);
          else r.resolve(result);
        });
      }
    } catch (error) {
      for (const r of batch) r.reject(error);
    } finally {
      this.stepping = false;
      this.schedule();
    }
  }
}

class Seat implements BatchSeat {
  cache: KvCache | null = null;
  private invFreq: Float32Array | null = null;
  private busy = false;

  constructor(private readonly batcher: DecodeBatcher) {}

  join(cache: KvCache, invFreq: Float32Array): void {
    this.cache = cache;
    this.invFreq = invFreq;
    this.batcher.admitWaiting();
  }

  async step(token: number, positionId: number): Promise<Float32Array> {
    if (!this.cache || !this.invFreq) throw new Error('BatchSeat.step before join');
    if (this.busy) throw new Error('BatchSeat.step while a step of this sequence is running');
    this.busy = true;
    try {
      return await this.batcher.request({ cache: this.cache, token, positionId, invFreq: this.invFreq });
    } finally {
      this.busy = false;
    }
  }

  leave(): void {
    this.batcher.release(this);
  }
}
