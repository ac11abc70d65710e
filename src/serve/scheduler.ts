/**
 * Admission control for the server: at most `parallel` jobs run at once, at most `maxQueue` more wait in
 * arrival order, and a job that would overflow the queue is refused at once (the server answers 429). A
 * waiting job whose client goes away leaves the queue.
 * @module
 */

/** The queue is full: the caller should answer 429. */
export class BusyError extends Error {
  constructor(readonly queued: number) {
    super(`the server is busy: ${queued} requests are already waiting; try again later`);
  }
}

interface Waiter {
  start: () => void;
}

export class Scheduler {
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(readonly parallel: number, readonly maxQueue: number) {}

  /** Jobs running and waiting now. */
  get stats(): { running: number; queued: number } {
    return { running: this.running, queued: this.waiting.length };
  }

  /**
   * Waits for a slot; resolves with the function that frees it (calling it again does nothing). Rejects with
   * BusyError when the queue is full, and with the signal's reason when `signal` aborts while waiting.
   */
  async acquire(signal?: AbortSignal): Promise<() => void> {
    await this.enter(signal);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.release();
    };
  }

  private enter(signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted();
    if (this.running < this.parallel) {
      this.running++;
      return Promise.resolve();
    }
    if (this.waiting.length >= this.maxQueue) return Promise.reject(new BusyError(this.waiting.length));
    return new Promise<void>((resolve, reject) => {
      const onAbort = () => {
        const i = this.waiting.indexOf(waiter);
        if (i >= 0) this.waiting.splice(i, 1);
        reject(signal!.reason);
      };
      const waiter: Waiter = {
        start: () => { signal?.removeEventListener('abort', onAbort); this.running++; resolve(); },
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.waiting.push(waiter);
    });
  }

  private release(): void {
    this.running--;
    const next = this.waiting.shift();
    if (next) next.start();
  }
}
