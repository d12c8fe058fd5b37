import { parseArgs } from 'node:util';

/**
 * Command-line options described by one table, shared by `edgepack-agent` and `edgepack-sim`:
 * each option is a flag and an environment variable (a systemd unit or a container sets
 * environment, not flags). A flag wins over its variable, a variable over the default, and an
 * empty variable counts as unset. The table drives parsing and --help, so no option can exist
 * without its variable and its help line; what a value must look like stays with each command.
 */
export interface TableOption<K extends string = string> {
  flag: string;
  env: string;
  arg: string;
  help: string;
  default?: string;
  required?: boolean;
  key: K;
  /** `flag`: takes no value; its variable is 1/true/yes/on or 0/false/no/off. Any other kind is the command's. */
  kind: string;
}

const TRUE = ['1', 'true', 'yes', 'on'];
const FALSE = ['0', 'false', 'no', 'off'];

/**
 * Pure: argv and env in, the options' values by key out (or 'help' / 'version'). `parse` turns
 * a raw value into the option's (throwing `fail`'s error); `source` names where the value came
 * from (`--flag` or the variable), so an error points at what the user wrote.
 */
export function readOptionTable<O extends TableOption>(
  options: readonly O[], argv: string[], env: NodeJS.ProcessEnv,
  o: { fail: (message: string) => Error; parse: (option: O, raw: string, source: string) => unknown },
): Record<string, unknown> | 'help' | 'version' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        ...Object.fromEntries(options.map((x) => [x.flag, { type: x.kind === 'flag' ? 'boolean' as const : 'string' as const }])),
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    throw o.fail((err as Error).message);
  }
  if (values.help) return 'help';
  if (values.version) return 'version';
  const out: Record<string, unknown> = {};
  for (const x of options) {
    if (x.kind === 'flag') {
      const raw = env[x.env]?.trim().toLowerCase();
      if (values[x.flag] === true) out[x.key] = true;
      else if (raw !== undefined && raw !== '') {
        if (TRUE.includes(raw)) out[x.key] = true;
        else if (!FALSE.includes(raw)) throw o.fail(`${x.env} must be 1 or 0 (true/false), got ${JSON.stringify(env[x.env])}`);
      }
      continue;
    }
    const fromFlag = values[x.flag] as string | undefined;
    const fromEnv = env[x.env] !== undefined && env[x.env] !== '' ? env[x.env] : undefined;
    const raw = fromFlag ?? fromEnv ?? x.default;
    if (raw === undefined) {
      if (x.required) throw o.fail(`--${x.flag} (or ${x.env}) is required`);
      continue;
    }
    const source = fromFlag === undefined && fromEnv !== undefined ? x.env : `--${x.flag}`;
    out[x.key] = o.parse(x, raw, source);
  }
  return out;
}

/** The --help rows: the flag and its argument, the help line with the default, the variable beneath. */
export function optionHelpRows(options: readonly TableOption[], width: number): string[] {
  return options.map((x) => {
    const left = `  --${x.flag}${x.arg ? ` ${x.arg}` : ''}`.padEnd(width);
    const right = `${x.help}${x.default ? ` (default ${x.default})` : ''}${x.required ? ' [required]' : ''}`;
    return `${left}${right}\n${' '.repeat(width)}env ${x.env}`;
  });
}
