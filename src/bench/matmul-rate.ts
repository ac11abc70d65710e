/**
 * The matmul throughput ONNX Runtime reaches on this machine, in this process: the yardstick the benchmark
 * compares prefill against. One graph with one node, built like the engine's projections (`linear` in
 * src/graph/ops.ts): y = x · Wᵀ as a float32 `Gemm` with transB = 1, x [m, k] and an HF-layout weight W [n, k],
 * both graph inputs. (The engine's weights are prepacked initializers; at thousands of rows packing W per call
 * is amortised and both forms run at the same rate, docs/ort-performance.md §4.) The output kept is one row of
 * the product, so that the copy of a large output into JavaScript is not timed.
 * @module
 */

import { GraphBuilder } from '../graph/builder.js';
import { linear } from '../graph/ops.js';
import { Session, f32, type Feeds } from '../engine/ort.js';

export interface MatmulRate {
  m: number;
  k: number;
  n: number;
  threads: number;
  repeats: number;
  /** Median seconds per run. */
  medianSeconds: number;
  /** 2·m·k·n / median seconds, in GFLOP/s. */
  gflops: number;
}

/** Deterministic small values (timing does not depend on them; denormals and NaN are avoided). */
function filled(size: number, seed: number): Float32Array {
  const a = new Float32Array(size);
  let s = seed >>> 0;
  for (let i = 0; i < size; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    a[i] = ((s >>> 8) / 16777216 - 0.5) * 0.1;
  }
  return a;
}

export function median(values: readonly number[]): number {
  const s = [...values].sort((a, b) => a - b);
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/** One warm-up run of `session` on `feeds`, then `repeats` timed runs: the median seconds per run. */
export async function medianRunSeconds(session: Session, feeds: Feeds, repeats: number): Promise<number> {
  await session.run(feeds);
  const times: number[] = [];
  for (let r = 0; r < repeats; r++) {
    const t0 = performance.now();
    await session.run(feeds);
    times.push((performance.now() - t0) / 1000);
  }
  return median(times);
}

/**
 * Times x [m, k] · Wᵀ (W [n, k]) in ONNX Runtime with `threads` intra-op threads: one warm-up run, then `repeats`
 * timed runs. Returns GFLOP/s of the median run (2·m·k·n floating-point operations per run).
 */
export async function measureMatmulRate(m: number, k: number, n: number, threads: number, repeats: number): Promise<number> {
  return (await measureMatmul(m, k, n, threads, repeats)).gflops;
}

/** {@link measureMatmulRate} with the details. */
export async function measureMatmul(m: number, k: number, n: number, threads: number, repeats: number): Promise<MatmulRate> {
  for (const [name, v] of Object.entries({ m, k, n, threads, repeats })) {
    if (!Number.isSafeInteger(v) || v < 1) throw new RangeError(`measureMatmulRate: ${name} must be a positive integer, got ${v}`);
  }
  const g = new GraphBuilder('matmul-rate');
  const x = g.input('x', 'float', ['m', k]);
  const w = g.input('w', 'float', [n, k]);
  // Only the first row leaves the graph: onnxruntime-node copies every output into a fresh JS buffer, and an
  // [m, n] copy would be charged to the matmul (the engine's projections feed other nodes, not JS).
  const y = linear(g, x, w);
  g.output(g.op('Slice', [y, g.int64([0]), g.int64([1]), g.int64([0])]), 'y0', 'float', [1, n]);
  // With its memory arena: the [m, n] product (160 MiB at the bench's size) is then allocated once. Without
  // it every run maps fresh memory and pays first-touch page faults (about 0.2 GB/s on the VM this was measured
  // on), which halved the yardstick; the engine itself keeps activations below glibc's 32 MiB mmap threshold.
  const session = await Session.create('matmul-rate', g.build(), threads, { memArena: true });
  try {
    const feeds = { x: f32(filled(m * k, 1), [m, k]), w: f32(filled(n * k, 2), [n, k]) };
    const medianSeconds = await medianRunSeconds(session, feeds, repeats);
    return { m, k, n, threads, repeats, medianSeconds, gflops: (2 * m * k * n) / medianSeconds / 1e9 };
  } finally {
    await session.release();
  }
}
