/**
 * `fastkv report`: pictures (SVG and PNG) and a Markdown report from the JSON of `fastkv bench` and `fastkv eval`.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { RequestError } from '../errors.js';
import { parseBench, parseEval } from '../plot/inputs.js';
import { planReport, writeReport } from '../plot/report.js';
import { numberFlag } from './args.js';

const DEFAULT_OUT = 'report';

export const REPORT_HELP = `Usage: fastkv report [--bench FILE.json ...] [--eval FILE.json ...] [--out DIR] [--length N]

Draws the pictures of a KV-compression comparison from this project's own results, as SVG and PNG, and writes
report.md beside them with the pictures and their tables (ready to paste into an issue or a paper draft):
  accuracy-vs-speed-KIND  accuracy against time to first token and against decode tokens/s, one point per
                          method and budget (the FastKV paper's main figure), for each eval kind given
  ttft-vs-length          time to first token against prompt length per method, the arithmetic bounds dashed
  decode-vs-length        decode tokens/s against prompt length per method, the arithmetic bounds dashed
  niah-word-recall, niah-string-match
                          NIAH heatmaps (length x depth), one panel per method and budget

Inputs (each flag may be given several times):
  --bench FILE     JSON of fastkv bench --json FILE (with --methods for the comparison and bounds, or without:
                   the full cache alone). Run bench once per budget (--retain-rate 0.1, then 0.2, ...); all
                   files must come from one model, machine and thread count.
  --eval FILE      niah.json, ruler.json or fidelity.json of fastkv eval ... --out DIR, or results.json of
                   fastkv eval longbench --out DIR; all from one model. A method and budget is matched to the
                   bench results by its options (eval --retain-rates 0.1 matches bench --retain-rate 0.1).

Options:
  --out DIR        Where the files go (default ./${DEFAULT_OUT}; created if missing; files of the same name are
                   replaced).
  --length N       Prompt length (tokens) of the speed axis of accuracy-vs-speed (default: the longest length
                   every matched method and budget was benchmarked at).
  -h, --help       Show this help.

Example:
  fastkv bench --model M --methods full,fastkv,snapkv --lengths 1024,2048 --retain-rate 0.1 --json b01.json
  fastkv bench --model M --methods full,fastkv,snapkv --lengths 1024,2048 --retain-rate 0.2 --json b02.json
  fastkv eval niah --model M --methods full,fastkv,snapkv --retain-rates 0.1,0.2 --out niah
  fastkv report --bench b01.json --bench b02.json --eval niah/niah.json --out report
`;

export async function reportCommand(argv: string[]): Promise<void> {
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        bench: { type: 'string', multiple: true },
        eval: { type: 'string', multiple: true },
        out: { type: 'string' },
        length: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
      allowPositionals: false,
    }));
  } catch (e) {
    throw new RequestError(`${(e as Error).message} (see fastkv report --help)`, { cause: e });
  }
  if (values.help) { process.stdout.write(REPORT_HELP); return; }
  const benchFiles = values.bench ?? [];
  const evalFiles = values.eval ?? [];
  if (benchFiles.length === 0 && evalFiles.length === 0) throw new RequestError('give at least one --bench or --eval file (see fastkv report --help)');
  const length = numberFlag(values, 'length', { integer: true, min: 1 });
  const out = values.out ?? DEFAULT_OUT;
  if (out === '') throw new RequestError('--out needs a folder name');

  // Everything is read and checked before anything is written.
  const plan = planReport({ bench: benchFiles.map(parseBench), evals: evalFiles.map(parseEval), tokens: length });
  try {
    fs.mkdirSync(out, { recursive: true });
  } catch (cause) {
    throw new RequestError(`--out "${out}" cannot be created: ${(cause as Error).message}`, { cause });
  }
  if (!fs.statSync(out).isDirectory()) throw new RequestError(`--out "${out}" is not a folder`);
  const files = await writeReport(out, plan);
  process.stdout.write(`${files.map((f) => path.relative(process.cwd(), f) || f).join('\n')}\n`);
}
