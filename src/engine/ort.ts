/**
 * The only module that imports `onnxruntime-node`. It owns session options (threads), tensor creation and the
 * one `run` function everything else calls, and turns ONNX Runtime failures into `BackendError`s.
 * @module
 */
import ort from 'onnxruntime-node';
import os from 'node:os';
import { BackendError } from '../errors.js';
import type { BuiltModel } from '../graph/builder.js';

export type OrtTensor = ort.Tensor;
export type Feeds = Record<string, ort.Tensor>;

/** Most intra-op threads a session may have: ONNX Runtime hangs creating a pool of 100000. */
export const MAX_THREADS = 256;

/** Logical cores this process may use. */
export function availableCores(): number {
  return Math.max(1, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
}

/**
 * Number of intra-op threads when the user gives none: one per core. Measured on 2 cores (README, "Threads and
 * memory"; `node dist/src/bench/threads.js`): 2 threads decode 1.1x faster than 1 at q8, idle or beside a busy
 * process, and prefill's GEMMs use every core.
 */
export function defaultThreads(): number {
  return availableCores();
}

/**
 * Session options every graph shares. `intra_op.allow_spinning` is off: each session owns a thread pool, and
 * with spinning on (ORT's default) the idle workers of the session that just ran keep spinning while the next
 * one runs, so a model made of several sessions run in turn steals its own cores (measured: decode 9.4 -> 13.4
 * tok/s, TTFT -13% with it off; a single session alone is unaffected). The Node binding flattens `extra` into
 * config keys, which must be strings.
 *
 * The memory arena is off. Each session owns its own arena, which keeps the largest activations it ever held,
 * and a model is one session per layer: after one 4096-token prefill of Qwen2.5-0.5B at q8 the process held
 * 8.6 GB (24 arenas) instead of 1.6 GB, and growing 24 arenas page-faults fresh memory (about 0.2 GB/s on this
 * VM), so that prefill took 84 s instead of 30 s. Without the arena, tensors up to glibc's mmap threshold
 * (32 MiB) are recycled through the process-wide heap; the engine keeps its large activations below that size
 * (prefill's projections and MLP run in row chunks, see `forward.ts`). The exception is the prefill attention
 * graph, one session for every layer, which keeps an arena sized by one block of query rows.
 */
function sessionOptions(threads: number, memArena: boolean, spinning: boolean): ort.InferenceSession.SessionOptions {
  return {
    executionProviders: ['cpu'],
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    extra: { session: { 'intra_op.allow_spinning': spinning ? '1' : '0' } },
    enableCpuMemArena: memArena,
  };
}

/** A compiled ONNX graph, ready to run. Sessions are created once per model and reused with dynamic dims. */
export class Session {
  /** Runs so far and their wall time: cheap, and what the benchmark's per-graph breakdown reads. */
  readonly stats = { runs: 0, ms: 0 };

  private constructor(readonly name: string, private readonly session: ort.InferenceSession) {}

  /**
   * Compiles `model`. A {@link BuiltModel}'s external initializers are handed over from memory; ONNX Runtime
   * copies (and prepacks) them, so the caller should drop its references once this resolves. `memArena` turns
   * ONNX Runtime's memory arena on for this session alone, `spinning` its thread pool's spinning (see
   * {@link sessionOptions} for why both are off by default).
   */
  static async create(name: string, model: Uint8Array | BuiltModel, threads: number, { memArena = false, spinning = false } = {}): Promise<Session> {
    try {
      const session = model instanceof Uint8Array
        ? await ort.InferenceSession.create(model, sessionOptions(threads, memArena, spinning))
        : await ort.InferenceSession.create(model.bytes, {
          ...sessionOptions(threads, memArena, spinning),
          externalData: model.external.map((e) => ({ path: e.path, data: e.data })),
        });
      return new Session(name, session);
    } catch (cause) {
      throw new BackendError(`ONNX Runtime could not create the "${name}" graph: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * Runs the graph and returns `fetches` (default: every output). onnxruntime-node copies each output fetched
   * into a new JavaScript buffer, and each costs time per run even when empty: fetch only what is read.
   */
  async run(feeds: Feeds, fetches?: readonly string[]): Promise<Record<string, ort.Tensor>> {
    const t0 = performance.now();
    try {
      return (await (fetches ? this.session.run(feeds, fetches as string[]) : this.session.run(feeds))) as Record<string, ort.Tensor>;
    } catch (cause) {
      throw new BackendError(`ONNX Runtime failed running the "${this.name}" graph: ${(cause as Error).message}`, { cause });
    } finally {
      this.stats.runs++;
      this.stats.ms += performance.now() - t0;
    }
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}

/** Wraps a typed array as a tensor without copying it. */
export function f32(data: Float32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('float32', data, dims);
}
export function i64(data: BigInt64Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('int64', data, dims);
}
/** The float32 data of an output tensor. */
export function dataF32(t: ort.Tensor): Float32Array {
  return t.data as Float32Array;
}
