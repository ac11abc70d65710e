import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { checkOutputDir, checkOutputFile, readJsonFile, readTextFile, writeFileAtomic } from './files.js';
import { ConfigError, RequestError } from './errors.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-files-'));
test.after(() => fs.rmSync(tmp, { recursive: true, force: true }));

test('the bounded reader refuses FIFOs, devices and folders at once, and files over the cap', () => {
  const fifo = path.join(tmp, 'fifo');
  execFileSync('mkfifo', [fifo]);
  const refused = (file: string, pattern: RegExp) => assert.throws(() => readTextFile(file, { maxBytes: 100 }),
    (e: unknown) => e instanceof RequestError && pattern.test(e.message), file);
  refused(fifo, /not a regular file \(a FIFO\)/);
  refused('/dev/zero', /not a regular file \(a character device\)/);
  refused(tmp, /not a regular file \(a folder\)/);
  const big = path.join(tmp, 'big.txt');
  fs.writeFileSync(big, 'x'.repeat(101));
  refused(big, /101 bytes, more than the limit of 100/);
  fs.writeFileSync(big, 'é'.repeat(50));
  assert.equal(readTextFile(big, { maxBytes: 100 }), 'é'.repeat(50));
  assert.equal(readTextFile(path.join(tmp, 'none'), { maxBytes: 100, missingOk: true }), null);
  fs.writeFileSync(big, '{"a": \u0007');
  assert.throws(() => readJsonFile(big, { maxBytes: 100, error: ConfigError }), (e: unknown) =>
    e instanceof ConfigError && /not valid JSON/.test(e.message) && !e.message.includes('\u0007'));
});

test('output paths are checked before the work: folders, missing parents, files in the way, existing results', () => {
  const file = path.join(tmp, 'out.json');
  assert.equal(checkOutputFile(file, { flag: '--json' }), file);
  fs.writeFileSync(file, 'kept');
  assert.throws(() => checkOutputFile(file, { flag: '--json' }), /already exists; pass --force/);
  assert.equal(checkOutputFile(file, { flag: '--json', force: true }), file);
  assert.throws(() => checkOutputFile(tmp, { flag: '--json' }), /is a folder/);
  assert.throws(() => checkOutputFile('/dev/null', { flag: '--json', force: true }), /not a regular file/);
  assert.throws(() => checkOutputFile(path.join(tmp, 'missing', 'x.json'), { flag: '--json' }), /does not exist/);
  assert.throws(() => checkOutputDir(path.join(file, 'sub'), ['r.json'], { flag: '--out' }), /out\.json is not a folder/);
  assert.throws(() => checkOutputDir(file, ['r.json'], { flag: '--out' }), /exists and is not a folder/);
  assert.equal(checkOutputDir(path.join(tmp, 'new', 'deeper'), ['r.json'], { flag: '--out' }), path.join(tmp, 'new', 'deeper'));
});

test('writeFileAtomic replaces the file whole and leaves no temporary file; failures are RequestErrors', () => {
  const file = path.join(tmp, 'a', 'b.json');
  writeFileAtomic(file, 'one');
  writeFileAtomic(file, 'two');
  assert.equal(fs.readFileSync(file, 'utf8'), 'two');
  assert.deepEqual(fs.readdirSync(path.dirname(file)), ['b.json']);
  assert.throws(() => writeFileAtomic(path.join(file, 'c.json'), 'x'), (e: unknown) => e instanceof RequestError && /cannot write/.test(e.message));
});
