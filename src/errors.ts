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
  | 'BACKEND';      // ONNX Runtime failed

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
