/**
 * The server's compressed contexts: kept in memory by id, at most `maxContexts` of them, and with a folder
 * saved there as `<id>.kv` (written through a temporary file renamed into place) and loaded again at start.
 * @module
 */
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import type { CompressedContext } from '../engine/context.js';
import { loadContext } from '../engine/context-file.js';
import type { Model } from '../engine/model.js';

export interface StoredContext {
  readonly id: string;
  /** Unix seconds. */
  readonly created: number;
  readonly context: CompressedContext;
}

const ID = /^ctx_[0-9a-f]{24}$/;

/** Too many contexts are kept: the caller should delete one first. */
export class ContextLimitError extends Error {}

export class ContextStore {
  private readonly contexts = new Map<string, StoredContext>();

  private constructor(private readonly dir: string | null, readonly maxContexts: number) {}

  /**
   * Opens the store; with `dir`, loads every `<id>.kv` in it (a file that cannot be loaded is reported through
   * `warn` and left alone) and removes temporary files that an interrupted save left behind.
   */
  static async open(model: Model, dir: string | null, maxContexts: number, warn: (line: string) => void): Promise<ContextStore> {
    const store = new ContextStore(dir, maxContexts);
    if (dir === null) return store;
    fs.mkdirSync(dir, { recursive: true });
    for (const name of fs.readdirSync(dir).sort()) {
      const file = path.join(dir, name);
      if (/^\.ctx_[0-9a-f]{24}\.kv\.[0-9a-f]+\.tmp$/.test(name)) { fs.rmSync(file, { force: true }); continue; }
      const id = name.endsWith('.kv') ? name.slice(0, -3) : '';
      if (!ID.test(id)) continue;
      if (store.contexts.size >= maxContexts) { warn(`context ${id} not loaded: --max-contexts ${maxContexts} reached`); continue; }
      try {
        const context = await loadContext(model, file);
        store.contexts.set(id, { id, created: Math.floor(fs.statSync(file).mtimeMs / 1000), context });
      } catch (error) {
        warn(`context ${file} not loaded: ${(error as Error).message}`);
      }
    }
    return store;
  }

  /** Throws ContextLimitError when full: checked before a context is built, and again when it is added. */
  checkRoom(): void {
    if (this.contexts.size >= this.maxContexts) {
      throw new ContextLimitError(`the server keeps at most ${this.maxContexts} contexts (--max-contexts); delete one first`);
    }
  }

  async add(context: CompressedContext): Promise<StoredContext> {
    this.checkRoom();
    const id = `ctx_${randomBytes(12).toString('hex')}`;
    if (this.dir !== null) {
      // The folder is the server's: failing to write there is the server's fault (a 500), not the request's.
      try { await context.save(path.join(this.dir, `${id}.kv`)); } catch (e) {
        throw new Error(`cannot save context ${id} in ${this.dir}: ${(e as Error).message}`, { cause: e });
      }
    }
    const stored = { id, created: Math.floor(Date.now() / 1000), context };
    this.contexts.set(id, stored);
    return stored;
  }

  get(id: string): StoredContext | undefined {
    return this.contexts.get(id);
  }

  list(): StoredContext[] {
    return [...this.contexts.values()];
  }

  get size(): number {
    return this.contexts.size;
  }

  /** Forgets the context and removes its file; false when there is none by that id. */
  async delete(id: string): Promise<boolean> {
    if (!this.contexts.delete(id)) return false;
    if (this.dir !== null) await fs.promises.rm(path.join(this.dir, `${id}.kv`), { force: true });
    return true;
  }
}
