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
  /** Enroll over plain http, and accept a plain MQTT broker (no TLS anywhere). */
  allowPlaintext?: boolean;
  /** Enroll over https with a token that pins no CA: trust the CA the server shows the first time. */
  insecureEnroll?: boolean;
}

interface OptionSpec {
  flag: string;
  env: string;
  arg: string;
  help: string;
  default?: string;
  key: keyof AgentConfig;
  /** `flag`: takes no value (`--allow-plaintext`); its variable is 1/true/yes or 0/false/no. */
  kind: 'string' | 'positive-int' | 'path' | 'level' | 'flag';
}

export const AGENT_OPTIONS: readonly OptionSpec[] = [
  { flag: 'server', env: 'EDGEPACK_AGENT_SERVER', arg: 'URL', key: 'server', kind: 'string', help: 'orchestrator address, e.g. https://orchestrator:8443' },
  { flag: 'enroll', env: 'EDGEPACK_AGENT_ENROLL', arg: 'TOKEN', key: 'enrollToken', kind: 'string', help: 'single-use enrollment token, enr_…#sha256:… (needed only the first time)' },
  { flag: 'data-dir', env: 'EDGEPACK_AGENT_DATA_DIR', arg: 'DIR', key: 'dataDir', kind: 'path', default: './agent-data', help: 'identity, state and installed bundles' },
  { flag: 'profile', env: 'EDGEPACK_AGENT_PROFILE', arg: 'ID', key: 'profile', kind: 'string', help: 'hardware profile, instead of matching detected facts' },
  { flag: 'name', env: 'EDGEPACK_AGENT_NAME', arg: 'NAME', key: 'name', kind: 'string', help: 'display name (default: the device id)' },
  { flag: 'bench-runs', env: 'EDGEPACK_AGENT_BENCH_RUNS', arg: 'N', key: 'benchRuns', kind: 'positive-int', help: 'override the number of timed benchmark runs' },
  { flag: 'log-level', env: 'EDGEPACK_AGENT_LOG_LEVEL', arg: 'LEVEL', key: 'logLevel', kind: 'level', default: 'info', help: 'fatal|error|warn|info|debug|trace' },
  // tls branch: the two ways to enroll without an authenticated server; see the README.
  { flag: 'insecure-enroll', env: 'EDGEPACK_AGENT_INSECURE_ENROLL', arg: '', key: 'insecureEnroll', kind: 'flag', help: 'https with a token that pins no CA: trust the server\'s CA on first use' },
  { flag: 'allow-plaintext', env: 'EDGEPACK_AGENT_ALLOW_PLAINTEXT', arg: '', key: 'allowPlaintext', kind: 'flag', help: 'allow enrolling over http:// and a plain MQTT broker' },
];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export class AgentConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
}

export function agentHelp(): string {
  const rows = AGENT_OPTIONS.map((o) => {
    const left = `  --${o.flag}${o.arg ? ` ${o.arg}` : ''}`.padEnd(24);
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
        ...Object.fromEntries(AGENT_OPTIONS.map((o) => [o.flag, { type: o.kind === 'flag' ? 'boolean' as const : 'string' as const }])),
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
    if (o.kind === 'flag') {
      const raw = env[o.env]?.trim().toLowerCase();
      if (values[o.flag] === true) config[o.key] = true;
      else if (raw !== undefined && raw !== '') {
        if (['1', 'true', 'yes', 'on'].includes(raw)) config[o.key] = true;
        else if (!['0', 'false', 'no', 'off'].includes(raw)) throw new AgentConfigError(`${o.env} must be 1 or 0 (true/false), got ${JSON.stringify(env[o.env])}`);
      }
      continue;
    }
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
