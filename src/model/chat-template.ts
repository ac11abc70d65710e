/**
 * Chat templates rendered by `@huggingface/jinja` with bounded work. The library runs a template synchronously
 * and without limits, so a template with `range(1000000000)` builds a billion-element array and aborts V8, and
 * nested loops can run for hours. Here the interpreter counts the nodes it evaluates and checks the size of every
 * string and list it produces, and `range` refuses long ranges: a runaway template becomes a clean error.
 * @module
 */
import * as jinja from '@huggingface/jinja';

// The package's .d.ts files use extension-less relative imports that NodeNext resolution cannot follow, so its
// Interpreter and Environment come out untyped. These describe what is used here.
interface RuntimeValue { value: unknown }
interface JinjaEnvironment { set(name: string, value: unknown): unknown }
interface JinjaInterpreter {
  evaluate(statement: unknown, environment: JinjaEnvironment): RuntimeValue;
  run(program: unknown): RuntimeValue;
}
const { Environment, Interpreter, Template } = jinja as unknown as {
  Environment: new () => JinjaEnvironment;
  Interpreter: new (env: JinjaEnvironment) => JinjaInterpreter;
  Template: new (text: string) => { parsed: unknown };
};

/** Far above what any real chat template needs for a long conversation, far below what hurts. */
export const TEMPLATE_LIMITS = {
  /** Nodes (statements and expressions) evaluated per render. */
  steps: 250_000,
  /** Characters of any string a render produces, its output included. */
  chars: 64 * 1024 * 1024,
  /** Items of any list, `range()` included. */
  items: 1_000_000,
};

/** Thrown when a template goes past a limit; the message names it. */
export class TemplateLimitError extends Error {}

class BoundedInterpreter extends Interpreter {
  #steps = 0;
  override evaluate(statement: unknown, environment: JinjaEnvironment): RuntimeValue {
    if (++this.#steps > TEMPLATE_LIMITS.steps) {
      throw new TemplateLimitError(`the template evaluated more than ${TEMPLATE_LIMITS.steps} expressions (a runaway loop?)`);
    }
    const value = super.evaluate(statement, environment);
    const v = value.value;
    if (typeof v === 'string' && v.length > TEMPLATE_LIMITS.chars) {
      throw new TemplateLimitError(`the template built a string of ${v.length} characters, more than ${TEMPLATE_LIMITS.chars}`);
    }
    if (Array.isArray(v) && v.length > TEMPLATE_LIMITS.items) {
      throw new TemplateLimitError(`the template built a list of ${v.length} items, more than ${TEMPLATE_LIMITS.items}`);
    }
    return value;
  }
}

/** Python's range, refusing more than the item limit before building anything. */
function boundedRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) { stop = start; start = 0; }
  for (const [name, v] of [['start', start], ['stop', stop], ['step', step]] as const) {
    if (!Number.isSafeInteger(v)) throw new Error(`range() ${name} must be an integer, got ${String(v)}`);
  }
  if (step === 0) throw new Error('range() step must not be zero');
  const count = Math.max(0, Math.ceil((stop - start) / step));
  if (count > TEMPLATE_LIMITS.items) throw new TemplateLimitError(`range() of ${count} items, more than ${TEMPLATE_LIMITS.items}`);
  return Array.from({ length: count }, (_, i) => start + i * step);
}

/** `strftime_now(format)`: the date directives chat templates use (Llama 3.1 writes "%d %b %Y"). */
function strftimeNow(format: string): string {
  const d = new Date();
  const pad = (n: number) => String(n).padStart(2, '0');
  const month = (style: 'long' | 'short') => new Intl.DateTimeFormat('en-US', { month: style }).format(d);
  return String(format).replace(/%[YmdbBHM%]/g, (t) => ({
    '%Y': String(d.getFullYear()), '%m': pad(d.getMonth() + 1), '%d': pad(d.getDate()), '%b': month('short'),
    '%B': month('long'), '%H': pad(d.getHours()), '%M': pad(d.getMinutes()), '%%': '%',
  })[t] ?? t);
}

/** A parsed template; `render` is `Template.render` with the bounded interpreter and `range`. */
export class ChatTemplate {
  readonly #template: { parsed: unknown };
  constructor(text: string) {
    this.#template = new Template(text);
  }

  render(context: Readonly<Record<string, unknown>>): string {
    const env = new Environment();
    // The globals Template.render sets up (its setupGlobals is not exported), range and strftime_now bounded/ours.
    const globals: Record<string, unknown> = {
      false: false, true: true, none: null, False: false, True: true, None: null,
      raise_exception: (message: unknown) => { throw new Error(String(message)); },
      range: boundedRange, strftime_now: strftimeNow,
    };
    for (const [key, value] of Object.entries(globals)) env.set(key, value);
    for (const [key, value] of Object.entries(context)) env.set(key, value);   // a clash with a global throws, as in Template.render
    const result = new BoundedInterpreter(env).run(this.#template.parsed);
    return String(result.value);
  }
}
