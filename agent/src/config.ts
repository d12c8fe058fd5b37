import { parseArgs } from 'node:util';
import { resolve } from 'node:path';

/**
 * The agent's settings. Every flag also comes from an `EDGEPACK_AGENT_*` variable (a systemd
 * unit or a container sets environment, not flags); a flag wins over its variable, a variable
 * over the default. One table drives parsing, validation and --help, so no option can be
 * added without its variable and its help line.
 */
export interface AgentConfig {
  server?: string;
  enrollToken?: string;
  dataDir: string;
  profile?: string;
  name?: string;
  benchRuns?: number;
  logLevel: string;
}

interface OptionSpec {
  flag: string;
  env: string;
  arg: string;
  help: string;
  default?: string;
  key: keyof AgentConfig;
  kind: 'string' | 'positive-int' | 'path' | 'level';
}

export const AGENT_OPTIONS: readonly OptionSpec[] = [
  { flag: 'server', env: 'EDGEPACK_AGENT_SERVER', arg: 'URL', key: 'server', kind: 'string', help: 'orchestrator HTTP address, e.g. http://127.0.0.1:8080' },
  { flag: 'enroll', env: 'EDGEPACK_AGENT_ENROLL', arg: 'TOKEN', key: 'enrollToken', kind: 'string', help: 'single-use enrollment token (needed only the first time)' },
  { flag: 'data-dir', env: 'EDGEPACK_AGENT_DATA_DIR', arg: 'DIR', key: 'dataDir', kind: 'path', default: './agent-data', help: 'identity, state and installed bundles' },
  { flag: 'profile', env: 'EDGEPACK_AGENT_PROFILE', arg: 'ID', key: 'profile', kind: 'string', help: 'hardware profile, instead of matching detected facts' },
  { flag: 'name', env: 'EDGEPACK_AGENT_NAME', arg: 'NAME', key: 'name', kind: 'string', help: 'display name (default: the device id)' },
  { flag: 'bench-runs', env: 'EDGEPACK_AGENT_BENCH_RUNS', arg: 'N', key: 'benchRuns', kind: 'positive-int', help: 'override the number of timed benchmark runs' },
  { flag: 'log-level', env: 'EDGEPACK_AGENT_LOG_LEVEL', arg: 'LEVEL', key: 'logLevel', kind: 'level', default: 'info', help: 'fatal|error|warn|info|debug|trace' },
];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export class AgentConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
}

export function agentHelp(): string {
  const rows = AGENT_OPTIONS.map((o) => {
    const left = `  --${o.flag} ${o.arg}`.padEnd(24);
    const right = `${o.help}${o.default ? ` (default ${o.default})` : ''}`;
    return `${left}${right}\n${' '.repeat(24)}env ${o.env}`;
  });
  return `usage: edgepack-agent --server URL --enroll TOKEN --data-dir DIR [options]

${rows.join('\n')}
  --version             print the agent's version and exit
  -h, --help            print this help and exit

Flags win over their EDGEPACK_AGENT_* variables. Once enrolled, the agent restarts from
DIR without --enroll.`;
}

/** Pure: argv and env in, config (or 'help' / 'version') out; throws AgentConfigError naming the option. */
export function parseAgentConfig(argv: string[], env: NodeJS.ProcessEnv): AgentConfig | 'help' | 'version' {
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        ...Object.fromEntries(AGENT_OPTIONS.map((o) => [o.flag, { type: 'string' as const }])),
        help: { type: 'boolean', short: 'h' },
        version: { type: 'boolean' },
      },
      strict: true,
    }));
  } catch (err) {
    throw new AgentConfigError((err as Error).message);
  }
  if (values.help) return 'help';
  if (values.version) return 'version';
  const config: Record<string, unknown> = {};
  for (const o of AGENT_OPTIONS) {
    const fromFlag = values[o.flag] as string | undefined;
    const raw = fromFlag ?? (env[o.env] !== undefined && env[o.env] !== '' ? env[o.env] : undefined) ?? o.default;
    if (raw === undefined) continue;
    const source = fromFlag !== undefined ? `--${o.flag}` : env[o.env] ? o.env : `--${o.flag}`;
    switch (o.kind) {
      case 'positive-int': {
        const n = Number(raw);
        if (!Number.isInteger(n) || n < 1) throw new AgentConfigError(`${source} must be a positive integer, got ${JSON.stringify(raw)}`);
        config[o.key] = n;
        break;
      }
      case 'level':
        if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new AgentConfigError(`${source} must be one of ${LOG_LEVELS.join('|')}, got ${JSON.stringify(raw)}`);
        config[o.key] = raw;
        break;
      case 'path':
        config[o.key] = resolve(raw);
        break;
      default:
        config[o.key] = raw;
    }
  }
  return config as unknown as AgentConfig;
}
