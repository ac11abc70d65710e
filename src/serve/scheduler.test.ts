import { test } from 'node:test';
import assert from 'node:assert/strict';
import { BusyError, Scheduler } from './scheduler.js';

test('the scheduler runs `parallel` jobs, queues up to maxQueue in order, refuses the rest, and drops aborted waiters', async () => {
  const s = new Scheduler(1, 3);
  const first = await s.acquire();
  const order: string[] = [];
  const a = s.acquire().then((release) => { order.push('a'); return release; });
  const controller = new AbortController();
  const b = s.acquire(controller.signal);
  const c = s.acquire().then((release) => { order.push('c'); return release; });
  assert.deepEqual(s.stats, { running: 1, queued: 3 });
  await assert.rejects(s.acquire(), (e: Error) => e instanceof BusyError && /3 requests are already waiting/.test(e.message));
  controller.abort(new Error('client left'));
  await assert.rejects(b, /client left/);
  assert.deepEqual(s.stats, { running: 1, queued: 2 });
  first();
  first(); // releasing twice frees one slot only
  const releaseA = await a;
  assert.deepEqual(s.stats, { running: 1, queued: 1 });
  releaseA();
  (await c)();
  assert.deepEqual(order, ['a', 'c']);
  assert.deepEqual(s.stats, { running: 0, queued: 0 });
});
