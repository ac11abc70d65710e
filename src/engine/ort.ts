/**
 * The only module that imports `onnxruntime-node`. It owns session options (threads), tensor creation and the
 * one `run` function everything else calls, and turns ONNX Runtime failures into `BackendError`s.
 * @module
 */
import ort from 'onnxruntime-node';
import os from 'node:os';
import { BackendError } from '../errors.js';

export type OrtTensor = ort.Tensor;
export type Feeds = Record<string, ort.Tensor>;

/** Number of intra-op threads when the user gives none: one per core. */
export function defaultThreads(): number {
  return Math.max(1, typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length);
}

/** A compiled ONNX graph, ready to run. Sessions are created once per model and reused with dynamic dims. */
export class Session {
  private constructor(readonly name: string, private readonly session: ort.InferenceSession) {}

  static async create(name: string, model: Uint8Array, threads: number): Promise<Session> {
    try {
      const session = await ort.InferenceSession.create(model, {
        executionProviders: ['cpu'],
        intraOpNumThreads: threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
        executionMode: 'sequential',
      });
      return new Session(name, session);
    } catch (cause) {
      throw new BackendError(`ONNX Runtime could not create the "${name}" graph: ${(cause as Error).message}`, { cause });
    }
  }

  /**
   * Runs the graph. `preallocated` names outputs that ONNX Runtime must write into the given tensors (the KV
   * cache buffers during decoding, so the new entry lands in place with no copy of the cache).
   */
  async run(feeds: Feeds, preallocated?: Feeds): Promise<Record<string, ort.Tensor>> {
    try {
      if (preallocated) {
        const fetches: Record<string, ort.Tensor | null> = {};
        for (const name of this.session.outputNames) fetches[name] = preallocated[name] ?? null;
        return (await this.session.run(feeds, fetches)) as Record<string, ort.Tensor>;
      }
      return (await this.session.run(feeds)) as Record<string, ort.Tensor>;
    } catch (cause) {
      throw new BackendError(`ONNX Runtime failed running the "${this.name}" graph: ${(cause as Error).message}`, { cause });
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
export function i32(data: Int32Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('int32', data, dims);
}
export function i64(data: BigInt64Array, dims: readonly number[]): ort.Tensor {
  return new ort.Tensor('int64', data, dims);
}
/** The float32 data of an output tensor. */
export function dataF32(t: ort.Tensor): Float32Array {
  return t.data as Float32Array;
}
