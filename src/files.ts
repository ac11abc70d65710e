/**
 * Bounded reading and safe writing of the files fastkv is handed. Every read refuses what is not a regular file
 * (a FIFO would block forever, `/dev/zero` never ends) and stops at a size cap before holding more than it; every
 * write goes to a temporary file in the same folder that is renamed into place, so an interrupted run never leaves
 * a half-written result, and output paths are checked before the long work that produces them.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { FastKVError, RequestError, printable, quoted } from './errors.js';

/** Caps on what fastkv reads: JSON metadata files and user text. */
export const MAX_JSON_BYTES = 64 * 1024 * 1024;      // tokenizer.json of a 256k vocabulary is ~20 MB
export const MAX_TEXT_BYTES = 256 * 1024 * 1024;     // prompts and evaluation texts

type ErrorClass = new (message: string, options?: { cause?: unknown }) => FastKVError;

export interface ReadOptions {
  /** Largest size accepted, in bytes. */
  maxBytes: number;
  /** How the file is named in errors, e.g. `--prompt-file "a.txt"` or `config.json (/m/config.json)`. */
  what?: string;
  /** The error class to throw (default RequestError). */
  error?: ErrorClass;
}

/**
 * Reads a regular file as UTF-8, refusing anything else (FIFOs, devices, folders) and anything larger than
 * `maxBytes`, without reading more than `maxBytes + 1` bytes. Returns null when the file does not exist and
 * `missingOk` is set.
 */
export function readTextFile(file: string, options: ReadOptions & { missingOk: true }): string | null;
export function readTextFile(file: string, options: ReadOptions): string;
export function readTextFile(file: string, options: ReadOptions & { missingOk?: boolean }): string | null {
  const what = options.what ?? printable(file);
  const Err = options.error ?? RequestError;
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO for reading would otherwise wait for a writer; it changes nothing for a regular file.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (cause) {
    if (options.missingOk && (cause as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw new Err(`cannot read ${what}: ${(cause as Error).message}`, { cause });
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Err(`${what} is not a regular file (${kindOf(st)}); give a file`);
    if (st.size > options.maxBytes) throw new Err(`${what} is ${st.size} bytes, more than the limit of ${options.maxBytes}`);
    // The size may change while we read: read at most maxBytes + 1 and refuse if that much came.
    const buf = Buffer.allocUnsafe(Math.min(options.maxBytes + 1, st.size + 65536));
    let n = 0;
    for (;;) {
      if (n === buf.length) break;
      const got = fs.readSync(fd, buf, n, buf.length - n, n);
      if (got === 0) break;
      n += got;
    }
    if (n > options.maxBytes) throw new Err(`${what} is more than the limit of ${options.maxBytes} bytes`);
    return buf.toString('utf8', 0, n);
  } catch (cause) {
    if (cause instanceof FastKVError) throw cause;
    throw new Err(`cannot read ${what}: ${(cause as Error).message}`, { cause });
  } finally {
    fs.closeSync(fd);
  }
}

/** A JSON file's value; like {@link readTextFile}, with a parse error naming the file. */
export function readJsonFile(file: string, options: ReadOptions & { missingOk: true }): unknown;
export function readJsonFile(file: string, options: ReadOptions): unknown;
export function readJsonFile(file: string, options: ReadOptions & { missingOk?: boolean }): unknown {
  const text = readTextFile(file, options as ReadOptions & { missingOk: true });
  if (text === null) return undefined;
  try {
    return JSON.parse(text);
  } catch (cause) {
    const Err = options.error ?? RequestError;
    throw new Err(`${options.what ?? printable(file)} is not valid JSON: ${printable((cause as Error).message, 200)}`, { cause });
  }
}

/** Reads a stream (stdin) to its end as UTF-8, refusing it once more than `maxBytes` have come. */
export async function readStreamText(stream: NodeJS.ReadableStream, options: ReadOptions): Promise<string> {
  const Err = options.error ?? RequestError;
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    const b = typeof chunk === 'string' ? Buffer.from(chunk) : (chunk as Buffer);
    total += b.length;
    if (total > options.maxBytes) {
      (stream as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
      throw new Err(`${options.what ?? 'standard input'} is more than the limit of ${options.maxBytes} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function kindOf(st: fs.Stats): string {
  if (st.isDirectory()) return 'a folder';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  if (st.isSocket()) return 'a socket';
  return 'not a regular file';
}

// ---------------------------------------------------------------------------------------------------------------

/**
 * Checks, before any long work, that `file` can be written: its folder exists (or, with `createParents`, can be
 * made), it is not a folder, and it does not exist yet unless `force`. `flag` names the option in errors.
 * Returns the resolved path.
 */
export function checkOutputFile(file: string, o: { flag: string; force?: boolean; createParents?: boolean }): string {
  if (file === '') throw new RequestError(`${o.flag} needs a file name`);
  const target = path.resolve(file);
  const dir = path.dirname(target);
  let dirStat: fs.Stats | undefined;
  try { dirStat = fs.statSync(dir); } catch { dirStat = undefined; }
  if (dirStat === undefined) {
    if (!o.createParents) throw new RequestError(`${o.flag} ${printable(file)}: the folder ${printable(dir)} does not exist`);
    // It will be created: what exists of its path must be folders (not `results.txt/sub`).
    for (let up = path.dirname(dir); ; up = path.dirname(up)) {
      let st: fs.Stats | undefined;
      try { st = fs.statSync(up); } catch { st = undefined; }
      if (st !== undefined) {
        if (!st.isDirectory()) throw new RequestError(`${o.flag} ${printable(file)}: ${printable(up)} is not a folder`);
        break;
      }
      if (up === path.dirname(up)) break;
    }
  } else if (!dirStat.isDirectory()) {
    throw new RequestError(`${o.flag} ${printable(file)}: ${printable(dir)} is not a folder`);
  } else {
    try { fs.accessSync(dir, fs.constants.W_OK); } catch {
      throw new RequestError(`${o.flag} ${printable(file)}: the folder ${printable(dir)} is not writable`);
    }
  }
  let st: fs.Stats | undefined;
  try { st = fs.statSync(target); } catch { st = undefined; }
  if (st?.isDirectory()) throw new RequestError(`${o.flag} ${printable(file)} is a folder; give a file name`);
  if (st !== undefined && !st.isFile()) throw new RequestError(`${o.flag} ${printable(file)} is not a regular file (${kindOf(st)})`);
  if (st !== undefined && !o.force) {
    throw new RequestError(`${o.flag} ${printable(file)} already exists; pass --force to overwrite it`);
  }
  return target;
}

/** Checks an output folder: it is a folder if it exists, and none of `names` in it exists unless `force`. */
export function checkOutputDir(dir: string, names: readonly string[], o: { flag: string; force?: boolean }): string {
  if (dir === '') throw new RequestError(`${o.flag} needs a folder name`);
  const target = path.resolve(dir);
  let st: fs.Stats | undefined;
  try { st = fs.statSync(target); } catch { st = undefined; }
  if (st !== undefined && !st.isDirectory()) throw new RequestError(`${o.flag} ${printable(dir)} exists and is not a folder`);
  for (const name of names) checkOutputFile(path.join(target, name), { flag: o.flag, force: o.force, createParents: true });
  return target;
}

/**
 * Writes `data` to `file` through a temporary file in the same folder, renamed into place (a reader never sees half a
 * file, and an interrupted run leaves the old one); creates the folder.
 * @throws RequestError naming the file when it cannot be written.
 */
export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  try {
    fs.mkdirSync(path.dirname(file), { recursive: true });
  } catch (cause) {
    throw new RequestError(`cannot write ${quoted(file)}: ${(cause as Error).message}`, { cause });
  }
  const tmp = path.join(path.dirname(file), `.${path.basename(file)}.${process.pid}.${Date.now().toString(36)}.tmp`);
  try {
    fs.writeFileSync(tmp, data, { flag: 'wx' });
    fs.renameSync(tmp, file);
  } catch (cause) {
    try { fs.rmSync(tmp, { force: true }); } catch { /* already gone */ }
    throw new RequestError(`cannot write ${quoted(file)}: ${(cause as Error).message}`, { cause });
  }
}
