/**
 * Name lookups in fixed tables that user input picks from (`--method`, `architectures`, subcommands, dtypes).
 * A plain `table[name]` also finds what every object inherits (`constructor`, `toString`, `__proto__`), so
 * `--method constructor` would run `Object` as a policy factory; these look at the table's own entries only.
 * @module
 */

/** `table[key]` if `key` is one of the table's own entries, else undefined. */
export function own<T>(table: Readonly<Record<string, T>>, key: string): T | undefined {
  return Object.hasOwn(table, key) ? table[key] : undefined;
}

/** Whether `key` is one of the table's own entries. */
export function hasOwn(table: object, key: string): boolean {
  return Object.hasOwn(table, key);
}
