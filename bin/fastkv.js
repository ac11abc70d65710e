#!/usr/bin/env node
// The `fastkv` command's entry point. It is committed with its execute bit (tsc writes dist/ without one), so
// the command starts after any build; all it does is load the compiled CLI.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/src/cli/main.js', import.meta.url);
if (existsSync(cli)) {
  await import(cli.href);
} else {
  process.stderr.write('fastkv: the compiled code (dist/src/cli/main.js) is missing; run `npm run build` first\n');
  process.exitCode = 1;
}
