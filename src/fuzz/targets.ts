/**
 * The fuzz targets: each builds its fixtures once per worker process, then runs one seeded case at a time and says
 * whether the input ran correctly (an oracle checks the result), or returns a verdict of its own ('wrong', 'nan').
 * An exception is classified by the worker: a FastKVError is a clean, named error; anything else a crash.
 * @module
 */
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Model } from '../engine/model.js';
import { generate, stream, type GenerateOptions, type PromptInput } from '../engine/generate.js';
import { decodeStep, prefill } from '../engine/forward.js';
import { ropeFrequencies } from '../model/config.js';
import { SafetensorsStore, SafetensorsFile, writeSafetensors } from '../model/safetensors.js';
import { Tokenizer, TextStreamer } from '../model/tokenizer.js';
import { writeRandomCheckpoint } from '../bench/random-checkpoint.js';
import { Rng, hostileValue, randomBytes, randomText, INHERITED, EDGE_NUMBERS } from './values.js';

export type Verdict = { outcome: 'ok' } | { outcome: 'wrong' | 'nan'; detail: string };

export interface Target<T = unknown> {
  readonly name: string;
  setup(workDir: string): Promise<T>;
  run(fixture: T, r: Rng): Promise<Verdict>;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const STORIES = path.join(ROOT, 'models', 'stories260K');
const OK: Verdict = { outcome: 'ok' };
const wrong = (detail: string): Verdict => ({ outcome: 'wrong', detail });
const clone = <T>(v: T): T => structuredClone(v);

/** The tiny checkpoint every model-loading target uses: 2 layers, 64 wide, stories260K's tokenizer. */
const TINY = {
  architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: 64, intermediate_size: 96,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, head_dim: 16, vocab_size: 512,
  max_position_embeddings: 256, rms_norm_eps: 1e-5, rope_theta: 10000, tie_word_embeddings: true,
  bos_token_id: 1, eos_token_id: 2,
};

function tinyCheckpoint(dir: string): string {
  writeRandomCheckpoint(dir, TINY, 1);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) fs.copyFileSync(path.join(STORIES, f), path.join(dir, f));
  return dir;
}

// ---------------------------------------------------------------------------------------------------------------
// safetensors: mutated headers (bytes, length field, JSON fields) and data.

interface StFixture { file: string; bytes: Buffer; headerLength: number }

/** What the format allows: header a JSON object, tensors covering the data exactly once. Our oracle for accepted files. */
function layoutIsValid(bytes: Buffer): string | null {
  const n = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + n).toString('utf8')) as Record<string, { data_offsets: [number, number] }>;
  const spans = Object.entries(header).filter(([k]) => k !== '__metadata__').map(([, v]) => v.data_offsets).sort((a, b) => a[0] - b[0]);
  let at = 0;
  for (const [b, e] of spans) { if (b !== at || e < b) return `span [${b},${e}) after ${at}`; at = e; }
  return at === bytes.length - 8 - n ? null : `covered ${at} of ${bytes.length - 8 - n} data bytes`;
}

const DTYPES = ['F32', 'F16', 'BF16', 'I32', 'I64', 'U8', 'F64', 'BOOL', 'F8_E4M3', 'Q4', '', 'f32', 'toString', '__proto__'];

export const safetensorsTarget: Target<StFixture> = {
  name: 'safetensors',
  async setup(workDir) {
    const file = path.join(workDir, 'base.safetensors');
    writeSafetensors(file, [
      { name: 'a', dtype: 'F32', shape: [2, 3], data: Float32Array.of(1, 2, 3, 4, 5, 6) },
      { name: 'model.b', dtype: 'F16', shape: [4], data: Float32Array.of(0.5, -1, 2, 65504) },
      { name: 'c', dtype: 'BF16', shape: [1, 2, 2], data: Float32Array.of(1, -2, 3, 4) },
    ], { format: 'pt' });
    const bytes = fs.readFileSync(file);
    return { file: path.join(workDir, 'case.safetensors'), bytes, headerLength: Number(bytes.readBigUInt64LE(0)) };
  },
  async run(fx, r) {
    let bytes = Buffer.from(fx.bytes);
    const headerEnd = 8 + fx.headerLength;
    let dataOnly = false;
    switch (r.int(6)) {
      case 0: // flip bytes in the header
        for (let k = 1 + r.int(4); k > 0; k--) bytes[8 + r.int(fx.headerLength)] = r.pick([0, 0x20, 0x22, 0x2c, 0x5b, 0x7b, 0x7d, r.int(256)]);
        break;
      case 1: { // the length field
        const n = r.pick([fx.headerLength - 1 - r.int(8), fx.headerLength + 1 + r.int(8), 0, 1, r.int(1 << 30), 2 ** 53, 2 ** 62]);
        bytes.writeBigUInt64LE(BigInt(Math.max(0, n)) & ((1n << 64n) - 1n));
        break;
      }
      case 2: { // a JSON field
        const header = JSON.parse(bytes.subarray(8, headerEnd).toString()) as Record<string, Record<string, unknown>>;
        const names = Object.keys(header);
        const name = r.pick(names);
        const field = r.pick(['dtype', 'shape', 'data_offsets', 'extra']);
        const entry = header[name];
        if (name === '__metadata__' || r.chance(0.1)) header[r.pick([...INHERITED, 'new', ''])] = clone(header.a);
        else if (field === 'dtype') entry.dtype = r.pick(DTYPES);
        else if (field === 'shape') entry.shape = r.chance(0.5) ? [hostileValue(r, 2), 3] : (entry.shape as number[]).map((d) => (r.chance(0.5) ? d : hostileValue(r, d)));
        else if (field === 'data_offsets') entry.data_offsets = (entry.data_offsets as number[]).map((o) => (r.chance(0.5) ? o : hostileValue(r, o)));
        else if (r.chance(0.5)) delete entry[r.pick(['dtype', 'shape', 'data_offsets'])];
        else header[name] = hostileValue(r) as Record<string, unknown>;
        let json = JSON.stringify(header);
        if (r.chance(0.2)) json = json.replace(/^\{/, `{"${r.pick(names)}": {"dtype":"F32","shape":[1],"data_offsets":[0,4]},`); // duplicate key
        if (r.chance(0.5)) json += ' '.repeat(r.int(9));
        const head = Buffer.from(json);
        const len = Buffer.alloc(8);
        len.writeBigUInt64LE(BigInt(head.length));
        bytes = Buffer.concat([len, head, bytes.subarray(headerEnd)]);
        break;
      }
      case 3: // truncate, or append bytes
        bytes = r.chance(0.5) ? bytes.subarray(0, r.int(bytes.length)) : Buffer.concat([bytes, Buffer.from(randomBytes(r, 1 + r.int(16)))]);
        break;
      case 4: // garbage header of the declared length
        bytes = Buffer.concat([bytes.subarray(0, 8), Buffer.from(randomBytes(r, fx.headerLength)), bytes.subarray(headerEnd)]);
        break;
      default: // the data only: the file must still open, and read exactly these bytes
        dataOnly = true;
        for (let k = 1 + r.int(4); k > 0; k--) bytes[headerEnd + r.int(bytes.length - headerEnd)] = r.int(256);
    }
    fs.writeFileSync(fx.file, bytes);
    const opened = SafetensorsFile.open(fx.file);           // throws a ModelLoadError for what it refuses
    const invalid = layoutIsValid(bytes);
    if (invalid !== null) return wrong(`accepted a layout the format forbids: ${invalid}`);
    const store = SafetensorsStore.open(fx.file);
    for (const name of opened.names()) {
      const e = opened.entry(name)!;
      const raw = store.readRaw(name).bytes;
      if (!Buffer.from(raw).equals(bytes.subarray(e.start, e.start + e.byteLength))) return wrong(`tensor ${name} read other bytes`);
      if (['F32', 'F16', 'BF16'].includes(e.dtype)) store.readF32(name);
    }
    if (dataOnly && opened.names().length !== 3) return wrong('a data-only change lost tensors');
    return OK;
  },
};

// ---------------------------------------------------------------------------------------------------------------
// config.json: hostile values for its fields; what loads must run and give finite logits.

interface ConfigFixture { base: string; dir: string }

const CONFIG_KEYS = [...Object.keys(TINY), 'head_dim', 'rope_scaling', 'rope_parameters', 'sliding_window', 'use_sliding_window',
  'attention_bias', 'mlp_bias', 'hidden_act', 'partial_rotary_factor', 'torch_dtype', 'layer_types', 'original_max_position_embeddings'];
const ROPE_KEYS = ['rope_type', 'type', 'factor', 'rope_theta', 'original_max_position_embeddings', 'low_freq_factor', 'high_freq_factor',
  'attention_factor', 'beta_fast', 'beta_slow', 'mscale', 'mscale_all_dim', 'truncate'];

function ropeDict(r: Rng): Record<string, unknown> {
  const type = r.pick(['default', 'linear', 'dynamic', 'llama3', 'yarn', 'su', 'toString']);
  const d: Record<string, unknown> = { rope_type: type, factor: r.pick([2, 4, 8, 1]) };
  if (type === 'llama3') Object.assign(d, { low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 64 });
  if (type === 'yarn') d.original_max_position_embeddings = 64;
  for (let k = r.int(3); k > 0; k--) d[r.pick(ROPE_KEYS)] = hostileValue(r, 4);
  return d;
}

export const configTarget: Target<ConfigFixture> = {
  name: 'config',
  async setup(workDir) {
    const base = tinyCheckpoint(path.join(workDir, 'tiny'));
    const dir = path.join(workDir, 'config-case');
    fs.mkdirSync(dir, { recursive: true });
    for (const f of ['model.safetensors', 'tokenizer.json', 'tokenizer_config.json']) {
      fs.rmSync(path.join(dir, f), { force: true });
      fs.symlinkSync(path.join(base, f), path.join(dir, f));
    }
    return { base, dir };
  },
  async run(fx, r) {
    const config: Record<string, unknown> = clone(TINY);
    for (let k = 1 + r.int(3); k > 0; k--) {
      const key = r.pick(CONFIG_KEYS);
      if (key === 'rope_scaling' || key === 'rope_parameters') config[key] = r.chance(0.8) ? ropeDict(r) : hostileValue(r);
      else if (key === 'architectures') config[key] = r.pick([['LlamaForCausalLM'], ['Qwen2ForCausalLM'], ['MistralForCausalLM'], ['Qwen3ForCausalLM'], [r.pick(INHERITED)], hostileValue(r)]);
      else config[key] = hostileValue(r, typeof config[key] === 'number' ? (config[key] as number) : undefined);
    }
    fs.writeFileSync(path.join(fx.dir, 'config.json'), r.chance(0.05) ? JSON.stringify(config).slice(0, r.int(200)) : JSON.stringify(config));
    const model = await Model.load(fx.dir, { threads: 1, onWarning: () => {} });
    try {
      // Our own check of the logits, independent of the engine's: NaN that reaches here undetected is the finding.
      const ids = Int32Array.of(1, 5, 9, 13);
      const pre = await prefill(model, ids, { decodeCapacity: 2 });
      const bad = pre.logits.findIndex((v) => !Number.isFinite(v));
      if (bad >= 0) return { outcome: 'nan', detail: `prefill logits[${bad}] = ${pre.logits[bad]}` };
      const { invFreq } = ropeFrequencies(model.config, pre.nextPosition + 2);
      const step = await decodeStep(model, pre.cache, 7, pre.nextPosition, invFreq);
      const badStep = step.findIndex((v) => !Number.isFinite(v));
      if (badStep >= 0) return { outcome: 'nan', detail: `decode logits[${badStep}] = ${step[badStep]}` };
      const g = await generate(model, { ids: [1, 5, 9] }, { maxTokens: 3 });
      if (!g.outputIds.every((id) => Number.isInteger(id) && id >= 0 && id < model.config.vocabSize)) return wrong(`output ids ${g.outputIds}`);
      return OK;
    } finally {
      await model.dispose();
    }
  },
};

// ---------------------------------------------------------------------------------------------------------------
// tokenizer files: mutated tokenizer.json / tokenizer_config.json and chat templates; encode, decode, stream, render.

interface TokFixture { json: Record<string, unknown>; config: Record<string, unknown> }

const TEMPLATES = [
  '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<assistant>{% endif %}',
  '{{ bos_token }}{% for m in messages %}{{ m.content | trim }}{{ eos_token }}{% endfor %}',
  '{% for i in range(1000000000) %}x{% endfor %}',
  '{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}',
  "{% set s = 'ab' %}{% for i in range(60) %}{% set s = s ~ s %}{% endfor %}{{ s }}",
  '{{ raise_exception("no system messages") }}',
  '{{ messages[0].content * 1000000000 }}', '{{ "x" | indent(1000000000) }}', '{{ messages | tojson(indent=1000000) }}',
  '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}', '{{ strftime_now("%Y-%m-%d") }}', '{{ range(-5, 5, 0) }}',
  '{% for', '{{ undefined_var.x.y }}', '{{ messages[1000] }}', "{{ 'a' | replace('', 'bb') }}",
];

export const tokenizerTarget: Target<TokFixture> = {
  name: 'tokenizer',
  async setup() {
    const read = (f: string) => JSON.parse(fs.readFileSync(path.join(STORIES, f), 'utf8')) as Record<string, unknown>;
    return { json: read('tokenizer.json'), config: read('tokenizer_config.json') };
  },
  async run(fx, r) {
    const json = clone(fx.json) as Record<string, any>;
    const config = clone(fx.config) as Record<string, any>;
    for (let k = r.int(4); k > 0; k--) {
      switch (r.int(8)) {
        case 0: {
          if (!Array.isArray(json.added_tokens) || json.added_tokens.length === 0) break;
          const t = r.pick(json.added_tokens as unknown[]);
          if (t !== null && typeof t === 'object') (t as Record<string, unknown>)[r.pick(['id', 'content', 'special', 'normalized'])] = hostileValue(r, 3);
          break;
        }
        case 1: { const v = json.model?.vocab; if (v !== null && typeof v === 'object' && !Array.isArray(v)) v[r.pick(Object.keys(v).concat('x'))] = hostileValue(r, 10); break; }
        case 2: if (json.model !== null && typeof json.model === 'object') json.model[r.pick(['type', 'unk_token', 'byte_fallback', 'fuse_unk', 'merges', 'dropout'])] = hostileValue(r); break;
        case 3: json[r.pick(['normalizer', 'pre_tokenizer', 'decoder', 'post_processor', 'added_tokens', 'model'])] = hostileValue(r); break;
        case 4: config[r.pick(['bos_token', 'eos_token', 'unk_token', 'pad_token', 'add_bos_token', 'add_eos_token'])] = hostileValue(r); break;
        case 5: json.added_tokens = [...(Array.isArray(json.added_tokens) ? json.added_tokens : []), { id: r.pick([...EDGE_NUMBERS, 600, 511]), content: randomText(r, 8), special: r.chance(0.5) }]; break;
        case 6: if (Array.isArray(json.model?.merges) && json.model.merges.length > 0) json.model.merges[r.int(json.model.merges.length)] = hostileValue(r); break;
        default: config.chat_template = r.chance(0.8) ? r.pick(TEMPLATES) : hostileValue(r);
      }
    }
    const template = r.chance(0.3) ? r.pick(TEMPLATES) : undefined;
    const tok = Tokenizer.fromJSON(json, config, template === undefined ? {} : { chatTemplate: template });
    const text = randomText(r);
    const ids = tok.encode(text, { addSpecialTokens: r.chance(0.5) });
    if (!ids.every((id) => Number.isSafeInteger(id) && id >= 0)) return wrong(`encode gave ${ids.slice(0, 10)}`);
    const decoded = tok.decode([...ids, ...Array.from({ length: r.int(5) }, () => r.pick([-1, 1e9, 0.5, NaN, r.int(600)]))]);
    if (typeof decoded !== 'string') return wrong('decode gave no string');
    const streamer = new TextStreamer(tok, ids.slice(0, 3));
    for (const id of ids.slice(3, 20)) if (typeof streamer.push(id) !== 'string') return wrong('streamer gave no string');
    streamer.flush();
    if (tok.hasChatTemplate && r.chance(0.5)) {
      const messages = Array.from({ length: r.int(4) }, () => ({ role: r.pick(['user', 'assistant', 'system', 'toString']), content: randomText(r, 50) }));
      if (typeof tok.applyChatTemplate(messages, { addGenerationPrompt: r.chance(0.5) }) !== 'string') return wrong('template gave no string');
    }
    return OK;
  },
};

// ---------------------------------------------------------------------------------------------------------------
// The library API: generate and stream on the bundled model with hostile prompts and options.

interface ApiFixture { model: Model }

const OPTION_KEYS: (keyof GenerateOptions)[] = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repetitionPenalty', 'seed', 'stop',
  'chat', 'system', 'compression', 'maxContext', 'ignoreEos'];
const METHOD_NAMES = ['full', 'fastkv', 'snapkv', 'streamingllm', 'h2o', 'gemfilter', ...INHERITED, 'nope'];
const METHOD_OPTION_KEYS = ['budget', 'retainRate', 'compressionRatio', 'tspRate', 'tspLayer', 'tspLength', 'windowSize', 'kernelSize',
  'pooling', 'filterLayer', 'sinks', 'repeatKv', ...INHERITED];

function hostilePrompt(r: Rng): PromptInput {
  switch (r.int(6)) {
    case 0: return randomText(r, 300);
    case 1: return { ids: Array.from({ length: r.int(12) }, () => (r.chance(0.8) ? 1 + r.int(500) : hostileValue(r) as number)) };
    case 2: return { messages: [{ role: 'user', content: randomText(r, 50) }] };
    case 3: return hostileValue(r) as PromptInput;
    case 4: return { ids: hostileValue(r) as number[] };
    default: return 'Once upon a time';
  }
}

function hostileOptions(r: Rng): GenerateOptions {
  const o: Record<string, unknown> = { maxTokens: 1 + r.int(8) };
  for (let k = r.int(4); k > 0; k--) {
    const key = r.pick(OPTION_KEYS);
    if (key === 'compression') {
      const spec: Record<string, unknown> = { method: r.pick(METHOD_NAMES) };
      for (let j = r.int(3); j > 0; j--) spec[r.pick(METHOD_OPTION_KEYS)] = hostileValue(r, 8);
      o.compression = r.chance(0.9) ? spec : hostileValue(r);
    } else if (key === 'maxTokens') o.maxTokens = r.chance(0.7) ? r.int(40) : hostileValue(r);
    else if (key === 'maxContext') o.maxContext = r.chance(0.5) ? 8 + r.int(600) : hostileValue(r);  // the model has 512 positions
    else if (key === 'stop') o.stop = r.chance(0.7) ? [randomText(r, 4)] : hostileValue(r);
    else o[key] = hostileValue(r, 1);
  }
  return o as GenerateOptions;
}

export const apiTarget: Target<ApiFixture> = {
  name: 'api',
  async setup() {
    return { model: await Model.load(STORIES, { threads: 1 }) };
  },
  async run(fx, r) {
    const prompt = hostilePrompt(r);
    const options = hostileOptions(r);
    // maxContext past the KV cache sizing of issue 8 would allocate for it up front; keep to what the model has.
    if (typeof options.maxContext === 'number' && options.maxContext > 4096) options.maxContext = 4096;
    const mode = r.int(4);
    let result;
    if (mode === 0) result = await generate(fx.model, prompt, options);
    else {
      const s = stream(fx.model, prompt, options);
      let text = '';
      let n = 0;
      const stopAfter = mode === 1 ? Infinity : mode === 2 ? r.int(3) : -1;
      if (stopAfter >= 0) for await (const c of s) { text += c.text; if (++n > stopAfter) break; }
      result = await s.result;
      if (mode === 1 && text !== result.text) return wrong(`streamed text ${JSON.stringify(text)} != result ${JSON.stringify(result.text)}`);
    }
    const vocab = fx.model.config.vocabSize;
    if (!result.outputIds.every((id) => Number.isInteger(id) && id >= 0 && id < vocab)) return wrong(`output ids ${result.outputIds}`);
    if (!['stop', 'length', 'eos', 'abort'].includes(result.finishReason)) return wrong(`finish reason ${result.finishReason}`);
    if (typeof result.text !== 'string') return wrong('no text');
    for (const [k, v] of Object.entries(result.timings)) if (!Number.isFinite(v)) return wrong(`timings.${k} = ${v}`);
    return OK;
  },
};

// ---------------------------------------------------------------------------------------------------------------
// The command line, in-process: hostile flags and values for every command (sized so that a valid run is short).

interface CliFixture { tiny: string; tmp: string; run: (argv: string[]) => Promise<void> }

const PATHS = (tmp: string) => ['/dev/zero', '/dev/null', path.join(tmp, 'fifo'), path.join(tmp, 'missing', 'x'), tmp, path.join(tmp, 'text.txt'),
  path.join(tmp, 'out'), '', '-x', path.join(tmp, 'text.txt', 'sub')];

const COMMANDS: Record<string, { base: string[]; flags: string[] }> = {
  generate: { base: ['--max-tokens', '3', '--threads', '1'], flags: ['--prompt', '--prompt-file', '--chat', '--system', '--max-tokens',
    '--temperature', '--top-k', '--top-p', '--min-p', '--repetition-penalty', '--seed', '--stop', '--ignore-eos', '--threads', '--json',
    '--method', '--budget', '--retain-rate', '--tsp-rate', '--tsp-layer', '--window', '--kernel', '--pooling', '--sinks', '--model'] },
  'eval niah': { base: ['--lengths', '96', '--depths', '50', '--methods', 'full', '--max-tokens', '2', '--threads', '1'], flags: ['--lengths',
    '--depths', '--preset', '--needle', '--question', '--answer', '--template', '--max-tokens', '--methods', '--retain-rate',
    '--out', '--force', '--seed', '--haystack', '--question-after', '--chat'] },
  'eval ruler': { base: ['--length', '128', '--samples', '1', '--tasks', 'niah_single_1', '--methods', 'full', '--threads', '1'],
    flags: ['--length', '--tasks', '--format', '--max-tokens', '--methods', '--retain-rates', '--out', '--seed'] },
  'eval fidelity': { base: ['--context', '16', '--continuation', '2', '--methods', 'full', '--threads', '1'], flags: ['--text', '--context',
    '--continuation', '--methods', '--retain-rate', '--out', '--force', '--max-context'] },
  'eval longbench': { base: ['--limit', '1', '--methods', 'full', '--threads', '1'], flags: ['--data', '--tasks', '--limit', '--methods',
    '--out', '--force', '--question-after', '--method'] },
  bench: { base: ['--lengths', '8', '--decode-tokens', '1', '--threads', '1'], flags: ['--lengths', '--decode-tokens', '--seed', '--json',
    '--force', '--methods', '--budget', '--retain-rate', '--method', '--threads'] },
  help: { base: [], flags: ['--help', '-h', '--version'] },
};

export const cliTarget: Target<CliFixture> = {
  name: 'cli',
  async setup(workDir) {
    const tiny = tinyCheckpoint(path.join(workDir, 'tiny'));
    const tmp = path.join(workDir, 'cli');
    fs.mkdirSync(tmp, { recursive: true });
    fs.writeFileSync(path.join(tmp, 'text.txt'), fs.readFileSync(path.join(ROOT, 'data', 'stories-haystack.txt'), 'utf8').slice(0, 4000));
    if (!fs.existsSync(path.join(tmp, 'fifo'))) (await import('node:child_process')).execFileSync('mkfifo', [path.join(tmp, 'fifo')]);
    const { generateCommand } = await import('../cli/generate.js');
    const { evalCommand } = await import('../cli/eval.js');
    const { benchCommand } = await import('../cli/bench.js');
    const run = async (argv: string[]) => {
      const [cmd, ...rest] = argv;
      if (cmd === 'generate') return generateCommand(rest);
      if (cmd === 'eval') return evalCommand(rest);
      if (cmd === 'bench') return benchCommand(rest);
      return evalCommand(['help', ...rest]);
    };
    return { tiny, tmp, run };
  },
  async run(fx, r) {
    const name = r.pick(Object.keys(COMMANDS));
    const spec = COMMANDS[name];
    const argv = [...name.split(' '), ...spec.base];
    if (name === 'generate') argv.push(...(r.chance(0.5) ? ['--prompt', randomText(r, 40)] : []), '--model', r.chance(0.7) ? fx.tiny : STORIES);
    if (name === 'eval fidelity') argv.push('--text', path.join(fx.tmp, 'text.txt'));
    if (name === 'eval longbench') argv.push('--data', path.join(ROOT, 'test', 'fixtures', 'longbench'));
    if (name === 'bench') argv.push('--model', fx.tiny);
    if (name === 'eval niah' || name === 'eval ruler') argv.push('--model', path.join(ROOT, 'test', 'fixtures', 'retrieval-3M'));
    for (let k = r.int(4); k > 0; k--) {
      const flag = r.chance(0.9) ? r.pick(spec.flags) : r.pick(['--nope', '--constructor', '-z', '--__proto__']);
      const value = r.pick([
        () => String(r.pick(EDGE_NUMBERS)), () => String(r.int(20)), () => r.pick(INHERITED), () => r.pick(PATHS(fx.tmp)),
        () => randomText(r, 20), () => r.pick(['full', 'fastkv,snapkv', 'snapkv', 'niah_single_1', 'magic-number', 'max', '0.5', '-1', 'NaN']),
      ])();
      argv.push(flag);
      if (r.chance(0.85)) argv.push(value);
    }
    await fx.run(argv);
    return OK;
  },
};

export const TARGETS: readonly Target<any>[] = [safetensorsTarget, configTarget, tokenizerTarget, apiTarget, cliTarget];
