/**
 * The memory read bandwidth ONNX Runtime reaches on this machine, in this process: a streaming reduction
 * (`ReduceSum` over the rows of a 512 MiB float32 matrix fed as an input, which ONNX Runtime reads in place).
 * Decoding one token reads every weight once, so bandwidth / bytes per token bounds decode tokens/s; the
 * benchmark prints that bound next to the decode rate it measured.
 * @module
 */
import { GraphBuilder } from '../graph/builder.js';
import { Session, f32 } from '../engine/ort.js';
import { medianRunSeconds } from './matmul-rate.js';

/** Bytes streamed per run: large enough to be far beyond any cache. */
export const BANDWIDTH_BYTES = 512 * 1024 * 1024;
/**
 * Rows of the reduced matrix. Of the layouts tried on the 2-core machine (a flat ReduceSum/ReduceMax, rows of
 * 64 to 131072, a GEMV against the buffer), reducing 4096 rows along their length read fastest.
 */
const ROWS = 4096;

export interface Bandwidth {
  bytes: number;
  threads: number;
  repeats: number;
  medianSeconds: number;
  /** bytes / median seconds, in GB/s (10^9). */
  gbPerSecond: number;
}

/** Times the reduction with `threads` intra-op threads: one warm-up run, then `repeats` timed runs. */
export async function measureBandwidth(threads: number, repeats = 5): Promise<Bandwidth> {
  const numel = BANDWIDTH_BYTES / 4;
  const cols = numel / ROWS;
  const g = new GraphBuilder('bandwidth');
  const x = g.input('x', 'float', [ROWS, cols]);
  g.output(g.op('ReduceSum', [x, g.int64([1])], { keepdims: 0 }), 'sums', 'float', [ROWS]);
  const session = await Session.create('bandwidth', g.build(), threads);
  try {
    // Written once so that every page is resident before timing (first touches are slow on VMs).
    const data = new Float32Array(numel).fill(1);
    const feeds = { x: f32(data, [ROWS, cols]) };
    const medianSeconds = await medianRunSeconds(session, feeds, repeats);
    return { bytes: BANDWIDTH_BYTES, threads, repeats, medianSeconds, gbPerSecond: BANDWIDTH_BYTES / medianSeconds / 1e9 };
  } finally {
    await session.release();
  }
}
