/**
 * Small helpers over `node:util` parseArgs: numeric options with range checks that name the flag, and the
 * location of the bundled default model.
 * @module
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { RequestError, printable, quoted } from '../errors.js';
import { MAX_THREADS } from '../engine/ort.js';
import { WEIGHT_DTYPES, type WeightDtype } from '../graph/linear.js';

/** The bundled stories260K checkpoint (MIT, Andrej Karpathy / llama2.c), used when no --model is given. */
export const DEFAULT_MODEL_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'models', 'stories260K');

type Values = Record<string, string | boolean | string[] | undefined>;

/** Parses `--flag` as a number if present; `integer` and `min`/`max` are checked, naming the flag. */
export function numberFlag(values: Values, flag: string, opts: { integer?: boolean; min?: number; max?: number } = {}): number | undefined {
  const raw = values[flag];
  if (raw === undefined) return undefined;
  const text = String(raw);
  const n = Number(text);
  if (text.trim() === '' || !Number.isFinite(n)) throw new RequestError(`--${flag} must be a number, got "${text}"`);
  if (opts.integer && !Number.isInteger(n)) throw new RequestError(`--${flag} must be an integer, got ${text}`);
  if (opts.min !== undefined && n < opts.min) throw new RequestError(`--${flag} must be >= ${opts.min}, got ${text}`);
  if (opts.max !== undefined && n > opts.max) throw new RequestError(`--${flag} must be <= ${opts.max}, got ${text}`);
  return n;
}

/** `--threads N`: 1 to MAX_THREADS (ONNX Runtime hangs creating a pool of 100000). */
export function threadsFlag(values: Values): number | undefined {
  return numberFlag(values, 'threads', { integer: true, min: 1, max: MAX_THREADS });
}

/** Model.load's `onWarning` for the commands: one line on stderr. */
export function warnOnStderr(message: string): void {
  process.stderr.write(`fastkv: warning: ${printable(message, 2000)}\n`);
}

/** Writes a progress line to stderr (only when stderr is a terminal, so pipes and CI logs stay clean). */
export function progressLine(text: string): void {
  if (process.stderr.isTTY) process.stderr.write(`\r\x1b[K${text}`);
}
export function progressDone(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
}

/** Help line of `--dtype`, shared by every command that loads a model. */
export const DTYPE_HELP = `  --dtype fp32|q8|q4|int8
                         Weight format of the linear layers (default fp32): q8 / q4 quantize them at load
                         to 8 / 4 bits (ONNX Runtime MatMulNBits, block 32); faster decoding, smaller RSS.
                         int8: 8-bit weights, one scale per output channel, int8 x int8 matmuls with the
                         activations quantized per tensor (DynamicQuantizeMatMul): prefill 1.3-1.9x fp32,
                         1.2-2x q8, decode like q8 (opt-in: see README, "Weight formats").`;

/** Parses `--dtype` (one of fp32, q8, q4, int8) if present. */
export function dtypeFlag(values: Values): WeightDtype | undefined {
  return dtypeList(values, false)?.[0];
}

/** Parses `--dtype` as a comma-separated list of distinct weight formats when `list`, else as one. */
export function dtypeList(values: Values, list = true): WeightDtype[] | undefined {
  const raw = values.dtype;
  if (raw === undefined) return undefined;
  const parts = String(raw).split(',').map((s) => s.trim());
  for (const p of parts) {
    if (!(WEIGHT_DTYPES as readonly string[]).includes(p)) {
      throw new RequestError(`--dtype must be ${list ? 'a comma-separated list of ' : 'one of '}${WEIGHT_DTYPES.join(', ')}, got "${raw}"`);
    }
  }
  if (!list && parts.length !== 1) throw new RequestError(`--dtype takes one of ${WEIGHT_DTYPES.join(', ')}, got "${raw}"`);
  if (new Set(parts).size !== parts.length) throw new RequestError(`--dtype lists a format twice: "${raw}"`);
  return parts as WeightDtype[];
}

/** A comma-separated list of integers from 1 to `max` (--lengths, --concurrency); `what` names one item. */
export function parseIntegerList(flag: string, text: string, what: string, max = Number.MAX_SAFE_INTEGER): number[] {
  const parts = text.split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (parts.length === 0) throw new RequestError(`${flag} must list at least one ${what}, got ${quoted(text)}`);
  return parts.map((p) => {
    const n = Number(p);
    if (!Number.isSafeInteger(n) || n < 1 || n > max) {
      throw new RequestError(`${flag}: ${quoted(p)} is not ${max === Number.MAX_SAFE_INTEGER ? 'a positive integer' : `an integer from 1 to ${max}`}`);
    }
    return n;
  });
}
