import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Tokenizer, TextStreamer } from './tokenizer.js';
import { ConfigError, ModelLoadError, RequestError } from '../errors.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
const STORIES = path.join(ROOT, 'models/stories260K');

interface Reference {
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
  greedy_text: string;
  empty_prompt_greedy_257_ids: number[];
  empty_prompt_greedy_257_text: string;
}
const ref = JSON.parse(fs.readFileSync(path.join(STORIES, 'reference_greedy.json'), 'utf8')) as Reference;
const readJson = (file: string) => JSON.parse(fs.readFileSync(path.join(STORIES, file), 'utf8')) as Record<string, unknown>;
const tok = Tokenizer.load(STORIES);

/** Streams ids one by one; returns the pieces. */
function stream(ids: readonly number[], promptIds?: readonly number[]): string[] {
  const streamer = new TextStreamer(tok, promptIds);
  const pieces = ids.map((id) => streamer.push(id));
  pieces.push(streamer.flush());
  return pieces;
}

test('special tokens and sizes come from tokenizer_config.json', () => {
  assert.equal(tok.bosTokenId, 1);
  assert.deepEqual(tok.eosTokenIds, [2]);
  assert.equal(tok.vocabSize, 512);
  assert.equal(tok.hasChatTemplate, true);
  assert.equal(tok.tokenToText(1), '<s>');
  assert.equal(tok.tokenToText(13), '<0x0A>');
  assert.equal(tok.tokenToId('▁Once'), 403);
});

test('the prompt encodes to the reference ids: BOS, then the text with a dummy-prefix space', () => {
  assert.deepEqual(tok.encode(ref.prompt), ref.prompt_ids);
  assert.deepEqual(ref.prompt_ids, [1, 403, 407, 261, 378]); // as models/README.md states
  assert.deepEqual(tok.encode(ref.prompt, { addSpecialTokens: false }), ref.prompt_ids.slice(1));
  assert.deepEqual(tok.encode(''), [1]);
});

test('greedy_text is the decode of greedy_ids, prompt included, special tokens skipped', () => {
  // The reference run's ids start with the prompt's, and its text starts with the prompt.
  assert.deepEqual(ref.greedy_ids.slice(0, ref.prompt_ids.length), ref.prompt_ids);
  assert.ok(ref.greedy_text.startsWith(ref.prompt));
  assert.equal(tok.decode(ref.greedy_ids, { skipSpecialTokens: true }), ref.greedy_text);
  // Without skipping, BOS shows and the dummy-prefix space after it stays, as in transformers.
  assert.equal(tok.decode(ref.prompt_ids), '<s> Once upon a time');
  assert.equal(tok.decode([]), '');
});

test('the empty-prompt run (BOS alone) decodes to its reference text', () => {
  const ids = ref.empty_prompt_greedy_257_ids;
  assert.equal(ids[0], tok.bosTokenId);
  assert.equal(tok.decode(ids, { skipSpecialTokens: true }), ref.empty_prompt_greedy_257_text);
  assert.equal(tok.decode(Int32Array.from(ids), { skipSpecialTokens: true }), ref.empty_prompt_greedy_257_text);
});

test('encode and decode round-trip text with byte-fallback characters and repeated spaces', () => {
  for (const text of ['héllo ☃ 日本', 'Hello  world   x', 'a\n\nb', ' leading space', 'emoji 😀!']) {
    const ids = tok.encode(text);
    assert.equal(tok.decode(ids, { skipSpecialTokens: true }), text, JSON.stringify(text));
  }
  const snowman = tok.encode('☃', { addSpecialTokens: false });
  assert.deepEqual(snowman.map((id) => tok.tokenToText(id)), ['▁', '<0xE2>', '<0x98>', '<0x83>']);
});

test('an invalid byte run decodes as transformers does: one U+FFFD per byte', () => {
  const byte = (b: number) => tok.tokenToId(`<0x${b.toString(16).toUpperCase()}>`)!;
  const ri = [0xe6, 0x97, 0xa5].map(byte); // 日
  const hon = [0xe6, 0x9c, 0xac].map(byte); // 本
  assert.equal(tok.decode([...ri, ...hon]), '日本');
  assert.equal(tok.decode(ri.slice(0, 2)), '\uFFFD\uFFFD');
  assert.equal(tok.decode([...ri, hon[0]]), '\uFFFD'.repeat(4));
  assert.equal(tok.decode([...ri.slice(0, 2), 403]), '\uFFFD\uFFFD Once');
  // <0x0A> is a byte token too, so the newline belongs to the broken run and is replaced with it.
  assert.equal(tok.decode([...ri.slice(0, 2), 13]), '\uFFFD'.repeat(3));
});

test('ids outside the vocabulary are dropped by decode', () => {
  assert.equal(tok.decode([403, 100_000, 407]), 'Once upon');
});

test('the streamer emits each multi-byte character once its last byte arrives', () => {
  const text = 'héllo ☃ 日本';
  const ids = tok.encode(text);
  assert.ok(ids.some((id) => /^<0x[0-9A-F]{2}>$/.test(tok.tokenToText(id)!)), 'uses byte-fallback tokens');
  const pieces = stream(ids);
  assert.equal(pieces.join(''), tok.decode(ids, { skipSpecialTokens: true }));
  assert.ok(pieces.every((p) => !p.includes('\uFFFD')));
  // ☃ is <0xE2> <0x98> <0x83>: nothing for the first two bytes, the whole character on the third.
  const start = ids.indexOf(tok.tokenToId('<0xE2>')!);
  assert.deepEqual(pieces.slice(start, start + 3), ['', '', '☃']);
});

test('streamed text equals the full decode for spaces, newlines and the reference run', () => {
  for (const text of ['Hello  world   x', 'a\n\nb', ' leading space', 'emoji 😀!']) {
    const ids = tok.encode(text);
    assert.equal(stream(ids).join(''), tok.decode(ids, { skipSpecialTokens: true }), JSON.stringify(text));
  }
  assert.equal(stream(ref.empty_prompt_greedy_257_ids).join(''), ref.empty_prompt_greedy_257_text);
});

test('with the prompt as context, the streamer yields exactly the text the generated ids add', () => {
  const prompt = ref.prompt_ids;
  const generated = ref.greedy_ids.slice(prompt.length);
  const pieces = stream(generated, prompt);
  const promptText = tok.decode(prompt, { skipSpecialTokens: true });
  assert.equal(pieces.join(''), ref.greedy_text.slice(promptText.length));
  assert.equal(promptText + pieces.join(''), ref.greedy_text);
  assert.equal(pieces[1], ' there'); // leading space kept: the prompt is the context
});

test('the streamer releases an unfinished character on flush', () => {
  const streamer = new TextStreamer(tok, ref.prompt_ids);
  assert.equal(streamer.push(tok.tokenToId('<0xE6>')!), '');
  assert.equal(streamer.push(tok.tokenToId('<0x97>')!), '');
  assert.equal(streamer.flush(), '\uFFFD');
  assert.equal(streamer.flush(), '');
});

test('the chat template renders as its definition says', () => {
  // {{ bos_token }} + 'User: ' + content + '\n' per user turn, 'Assistant: ' + content + eos_token + '\n' per
  // assistant turn, other roles' content + '\n', and 'Assistant:' for the generation prompt.
  const messages = [
    { role: 'system', content: 'Be kind.' },
    { role: 'user', content: 'Tell me a story.' },
    { role: 'assistant', content: 'Once upon a time.' },
    { role: 'user', content: 'Another!' },
  ];
  assert.equal(
    tok.applyChatTemplate(messages, { addGenerationPrompt: true }),
    '<s>Be kind.\nUser: Tell me a story.\nAssistant: Once upon a time.</s>\nUser: Another!\nAssistant:',
  );
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'Hi' }]), '<s>User: Hi\n');
  const ids = tok.encodeChat([{ role: 'user', content: 'Hi' }], { addGenerationPrompt: true });
  assert.equal(ids[0], 1);
  assert.notEqual(ids[1], 1, 'BOS only once');
  assert.equal(tok.decode(ids), '<s> User: Hi\nAssistant:');
});

test('chat_template.jinja wins over tokenizer_config.json; template errors are typed', () => {
  const json = readJson('tokenizer.json');
  const config = readJson('tokenizer_config.json');
  const jinja = Tokenizer.fromJSON(json, config, { chatTemplate: '{{ messages[0].content }}!' });
  assert.equal(jinja.applyChatTemplate([{ role: 'user', content: 'x' }]), 'x!');

  const { chat_template: _unused, ...noTemplate } = config;
  const none = Tokenizer.fromJSON(json, noTemplate);
  assert.equal(none.hasChatTemplate, false);
  assert.throws(() => none.applyChatTemplate([]), (e: unknown) => e instanceof ConfigError && /chat template/.test(e.message));

  const bad = Tokenizer.fromJSON(json, { ...config, chat_template: '{% for m in messages %}' });
  assert.throws(() => bad.applyChatTemplate([]), ConfigError);

  const strict = Tokenizer.fromJSON(json, { ...config, chat_template: "{{ raise_exception('roles must alternate') }}" });
  assert.throws(() => strict.applyChatTemplate([]), (e: unknown) => e instanceof RequestError && /roles must alternate/.test(e.message));
});

test('add_bos_token / add_eos_token in tokenizer_config.json override the post-processor', () => {
  const json = readJson('tokenizer.json');
  const config = readJson('tokenizer_config.json');
  const noBos = Tokenizer.fromJSON(json, { ...config, add_bos_token: false });
  assert.deepEqual(noBos.encode(ref.prompt), ref.prompt_ids.slice(1));
  const withEos = Tokenizer.fromJSON(json, { ...config, add_eos_token: true });
  assert.deepEqual(withEos.encode(ref.prompt), [...ref.prompt_ids, 2]);
});

test('the fixtures share the stories260K tokenizer', () => {
  for (const name of ['tiny-llama3', 'tiny-qwen2', 'tiny-qwen3', 'tiny-mistral', 'retrieval-3M']) {
    const t = Tokenizer.load(path.join(ROOT, 'test/fixtures', name));
    assert.deepEqual(t.encode(ref.prompt), ref.prompt_ids, name);
  }
});

test('a missing tokenizer.json is a ModelLoadError naming the path; so is malformed JSON', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-tok-'));
  try {
    const file = path.join(dir, 'tokenizer.json');
    assert.throws(() => Tokenizer.load(dir), (e: unknown) => e instanceof ModelLoadError && e.message.includes(file));
    fs.writeFileSync(file, '{"model": ');
    assert.throws(() => Tokenizer.load(dir), (e: unknown) => e instanceof ModelLoadError && e.message.includes(file) && /JSON/.test(e.message));
    fs.copyFileSync(path.join(STORIES, 'tokenizer.json'), file);
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), 'not json');
    assert.throws(() => Tokenizer.load(dir), (e: unknown) => e instanceof ModelLoadError && e.message.includes('tokenizer_config.json'));
    fs.rmSync(path.join(dir, 'tokenizer_config.json'));
    const bare = Tokenizer.load(dir); // no tokenizer_config.json: no special-token names, post-processor still adds BOS
    assert.deepEqual(bare.encode(ref.prompt), ref.prompt_ids);
    assert.equal(bare.bosTokenId, null);
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), 'J:{{ messages | length }}');
    assert.equal(Tokenizer.load(dir).applyChatTemplate([{ role: 'user', content: 'a' }]), 'J:1');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('a runaway chat template is a RequestError naming the limit, not a V8 abort or a hang', () => {
  const cases: [string, RegExp][] = [
    ['{% for i in range(1000000000) %}x{% endfor %}', /range\(\) of 1000000000 items/],
    ['{% for i in range(100000) %}{% for j in range(100000) %}x{% endfor %}{% endfor %}', /more than \d+ expressions/],
    ["{% set s = 'x' %}{% for i in range(40) %}{% set s = s ~ s %}{% endfor %}{{ s }}", /string of \d+ characters/],
    ['{% set a = [1] %}{% for i in range(40) %}{% set a = a + a %}{% endfor %}{{ a|length }}', /list of \d+ items/],
  ];
  for (const [template, pattern] of cases) {
    const t = Tokenizer.fromJSON(readJson('tokenizer.json'), {}, { chatTemplate: template });
    assert.throws(() => t.applyChatTemplate([{ role: 'user', content: 'hi' }]), (e: unknown) =>
      e instanceof RequestError && pattern.test(e.message), template);
  }
  // The bounded interpreter renders what the library does.
  const t = Tokenizer.fromJSON(readJson('tokenizer.json'), {},
    { chatTemplate: "{% for m in messages %}<{{ m.role }}>{{ m.content | trim }}{% endfor %}{{ range(3) | join(',') }}{{ range(9, 0, -4) | join(',') }}" });
  assert.equal(t.applyChatTemplate([{ role: 'user', content: ' a ' }, { role: 'assistant', content: 'b' }]), '<user>a<assistant>b0,1,29,5,1');
});

test('token ids in tokenizer.json must be non-negative integers (an added token with id 1.5 is refused at load)', () => {
  for (const id of [1.5, -1, '7', null, 2 ** 53, 1e9]) {   // 1e9: the library would walk every id up to it
    const json = readJson('tokenizer.json');
    json.added_tokens = [...(json.added_tokens as object[]), { id, content: '<x>', special: true }];
    assert.throws(() => Tokenizer.fromJSON(json, {}), (e: unknown) => e instanceof ModelLoadError && /added_tokens\[\d+\]/.test(e.message), String(id));
  }
  const json = readJson('tokenizer.json');
  (json.model as { vocab: Record<string, unknown> }).vocab['▁Once'] = 0.5;
  assert.throws(() => Tokenizer.fromJSON(json, {}), (e: unknown) => e instanceof ModelLoadError && /model\.vocab/.test(e.message));
});

test('encodeWithin refuses a 50 MB text after tokenizing only the start of it, naming both numbers', () => {
  const text = 'Once upon a time there was a little girl. '.repeat(1_250_000);   // ~53 MB
  const t0 = performance.now();
  assert.throws(() => tok.encodeWithin(text, 512, { what: 'the prompt' }), (e: unknown) =>
    e instanceof RequestError && /the prompt has more than 512 tokens/.test(e.message) && new RegExp(`of ${text.length} characters`).test(e.message));
  assert.ok(performance.now() - t0 < 10_000, 'stops early');
  // Within the limit (or short): exactly encode.
  assert.deepEqual(tok.encodeWithin(ref.prompt, 512), ref.prompt_ids);
  const long = 'Lily liked to play outside. '.repeat(3000);
  assert.deepEqual(tok.encodeWithin(long, 100_000), tok.encode(long));
  // A prefix holds the same leading tokens as the whole text.
  const prefix = tok.encodePrefix(long, 200);
  assert.ok(prefix.length >= 200);
  assert.deepEqual(prefix.slice(0, 200), tok.encode(long, { addSpecialTokens: false }).slice(0, 200));
});

test('tokenizer files that are FIFOs or devices are refused at once, not read forever', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fastkv-tok-'));
  try {
    const { execFileSync } = await import('node:child_process');
    execFileSync('mkfifo', [path.join(dir, 'tokenizer.json')]);
    assert.throws(() => Tokenizer.load(dir), (e: unknown) => e instanceof ModelLoadError && /not a regular file \(a FIFO\)/.test(e.message));
    fs.rmSync(path.join(dir, 'tokenizer.json'));
    fs.symlinkSync('/dev/zero', path.join(dir, 'tokenizer.json'));
    assert.throws(() => Tokenizer.load(dir), (e: unknown) => e instanceof ModelLoadError && /not a regular file \(a character device\)/.test(e.message));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
