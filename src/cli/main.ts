#!/usr/bin/env node
/**
 * The `fastkv` command. Library code throws `FastKVError`s; this is the one place that turns them into
 * messages and exit codes (2: bad input or options; 1: anything else).
 * @module
 */
import { FastKVError, quoted } from '../errors.js';
import { own } from '../own.js';
import { GENERATE_HELP, generateCommand } from './generate.js';

const HELP = `fastkv: fast long-prompt LLM inference on Node.js, with FastKV and other KV-cache compression methods.

Usage: fastkv <command> [options]

Commands:
  generate   Generate text from a prompt (streams to stdout).
  compress   Prefill and compress a document once; save the context for generate --context and serve.
  serve      An OpenAI-compatible HTTP server with per-request compression, contexts and a playground page.
  bench      Time prefill and decoding on a benchmark-sized checkpoint with seeded random weights.
  eval       Measure accuracy under compression: niah, ruler, longbench, fidelity.
  report     Draw the pictures (SVG, PNG) and a Markdown report from bench and eval JSON files.
  profile-heads  Score attention heads for HeadKV (writes its head-score JSON).
  calibrate  Choose FastKV's TSP layer for a model (for --tsp-layer auto).
  help       Show help for a command: fastkv help generate

Run 'fastkv <command> --help' for a command's options.
`;

const COMMANDS: Record<string, { run: (argv: string[]) => Promise<void>; help: () => string }> = {
  generate: { run: generateCommand, help: () => GENERATE_HELP },
  compress: {
    run: async (argv) => (await import('./compress.js')).compressCommand(argv),
    help: () => 'Run fastkv compress --help\n',
  },
  serve: {
    run: async (argv) => (await import('./serve.js')).serveCommand(argv),
    help: () => 'Run fastkv serve --help\n',
  },
  eval: {
    run: async (argv) => (await import('./eval.js')).evalCommand(argv),
    help: () => 'Run fastkv eval --help\n',
  },
  'profile-heads': {
    run: async (argv) => (await import('./profile-heads.js')).profileHeadsCommand(argv),
    help: () => 'Run fastkv profile-heads --help\n',
  },
  calibrate: {
    run: async (argv) => (await import('./calibrate.js')).calibrateCommand(argv),
    help: () => 'Run fastkv calibrate --help\n',
  },
  bench: {
    run: async (argv) => (await import('./bench.js')).benchCommand(argv),
    help: () => 'Run fastkv bench --help\n',
  },
  report: {
    run: async (argv) => (await import('./report.js')).reportCommand(argv),
    help: () => 'Run fastkv report --help\n',
  },
};

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h') { process.stdout.write(HELP); return 0; }
  if (command === '--version' || command === '-v') { process.stdout.write('fastkv 0.1.0\n'); return 0; }
  if (command === 'help') {
    const entry = rest[0] ? own(COMMANDS, rest[0]) : undefined;
    if (['bench', 'eval', 'report', 'compress', 'serve', 'profile-heads', 'calibrate'].includes(rest[0])) return main([rest[0], '--help']);
    process.stdout.write(entry ? entry.help() : HELP);
    return 0;
  }
  const entry = own(COMMANDS, command);
  if (!entry) {
    process.stderr.write(`fastkv: unknown command ${quoted(command)}\n\n${HELP}`);
    return 2;
  }
  await entry.run(rest);
  return 0;
}

// Output piped into `head` closes early: stop quietly, as other command-line tools do, instead of an EPIPE stack.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (error: NodeJS.ErrnoException) => {
    if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw error;
  });
}

main(process.argv.slice(2)).then((code) => { process.exitCode = code; }, (error: unknown) => {
  if (error instanceof FastKVError) {
    process.stderr.write(`fastkv: ${error.message}\n`);
    process.exitCode = error.code === 'BACKEND' || error.code === 'MODEL_LOAD' ? 1 : 2;
  } else if (error instanceof TypeError && (error as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
    process.stderr.write(`fastkv: ${error.message}\n`);
    process.exitCode = 2;
  } else {
    process.stderr.write(`fastkv: unexpected error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = 1;
  }
});
