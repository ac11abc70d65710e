/**
 * Quantization at load time, run in ONNX Runtime (the graph is `buildQuantizeGraph` in src/graph/linear.ts).
 * @module
 */
import { QUANTIZE, buildQuantizeGraph } from '../graph/linear.js';
import type { Quantizer } from '../model/weights.js';
import { Session, dataF32, f32 } from './ort.js';

/** Quantizes row chunks in ONNX Runtime, one small session per (row length, format), released after loading. */
export class QuantizerSessions {
  private readonly sessions = new Map<string, Promise<Session>>();
  constructor(private readonly threads: number) {}

  readonly quantize: Quantizer = async (rows, numRows, cols, format) => {
    const key = `${format}-${cols}`;
    let session = this.sessions.get(key);
    if (!session) {
      session = Session.create(`quantize ${key}`, buildQuantizeGraph(cols, format), this.threads);
      this.sessions.set(key, session);
    }
    const out = await (await session).run({ [QUANTIZE.weights]: f32(rows, [numRows, cols]) });
    const codes = out[QUANTIZE.codes].data as Uint8Array | Int8Array;   // Int8Array for int8
    return { codes: new Uint8Array(codes.buffer, codes.byteOffset, codes.byteLength), scales: dataF32(out[QUANTIZE.scales]) };
  };

  async release(): Promise<void> {
    const all = await Promise.allSettled(this.sessions.values());
    await Promise.all(all.map((s) => (s.status === 'fulfilled' ? s.value.release() : undefined)));
  }
}

