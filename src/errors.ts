/**
 * Errors thrown by fastkv, grouped by who must act. Library code throws; only `src/cli/` turns them into exit
 * codes. Every error carries a stable `code` and a message that names the bad value (file, tensor, parameter)
 * and, where there is one, the allowed range.
 * @module
 */

export type ErrorCode =
  | 'CONFIG'        // options, config.json, rope parameters
  | 'MODEL_LOAD'    // files, safetensors, dtypes, shards, tensor shapes
  | 'REQUEST'       // prompt too long, bad generation parameters
  | 'BACKEND'       // ONNX Runtime failed
  | 'NUMERIC';      // the model produced NaN or infinite logits

export class FastKVError extends Error {
  readonly code: ErrorCode;
  constructor(code: ErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
    this.name = new.target.name;
  }
}

/** Bad options, `config.json` contents, or rope parameters. */
export class ConfigError extends FastKVError {
  constructor(message: string, options?: { cause?: unknown }) { super('CONFIG', message, options); }
}

/** Missing or unreadable files, malformed safetensors, tensors missing or of the wrong shape or dtype. */
export class ModelLoadError extends FastKVError {
  constructor(message: string, options?: { cause?: unknown }) { super('MODEL_LOAD', message, options); }
}

/** A request the loaded model cannot serve: prompt too long, sampling parameter out of range. */
export class RequestError extends FastKVError {
  constructor(message: string, options?: { cause?: unknown }) { super('REQUEST', message, options); }
}

/** ONNX Runtime reported an error; the original is in `cause`. */
export class BackendError extends FastKVError {
  constructor(message: string, options?: { cause?: unknown }) { super('BACKEND', message, options); }
}

/**
 * The model computed NaN or infinite logits: a NaN or huge weight in the checkpoint, or config values that overflow
 * float32. Raised instead of sampling from them, which would silently emit token 0 over and over.
 */
export class NumericError extends FastKVError {
  constructor(message: string, options?: { cause?: unknown }) { super('NUMERIC', message, options); }
}

/**
 * `text` made safe to print in an error message: control and other non-printing characters escaped as JSON
 * does (`\n`, `\u001b`), lone surrogates too, and cut to `max` characters with the full length noted.
 */
export function printable(text: string, max = 120): string {
  const cut = text.length > max ? text.slice(0, max) : text;
  const escaped = cut.replace(/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ud800-\udfff]/gu, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  return text.length > max ? `${escaped}... (${text.length} characters)` : escaped;
}

/** `text` quoted for an error message, escaped and cut as {@link printable} does. */
export function quoted(text: string, max = 120): string {
  return `"${printable(text, max)}"`;
}
