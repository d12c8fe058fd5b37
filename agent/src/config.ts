import { resolve } from 'node:path';
import { optionHelpRows, readOptionTable } from './option-table.js';

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
  /** The inference service's TCP address (KServe v2 over HTTP); absent: no TCP listener. */
  serve?: { host: string; port: number };
  /** The inference service's Unix socket (mode 0660); absent: none. */
  serveSocket?: string;
  serveConcurrency: number;
  serveQueue: number;
  serveTimeoutMs: number;
  serveMemoryFactor: number;
  serveThreads: number;
  telemetryWindowSec: number;
  telemetrySpoolBytes: number;
  telemetryJitterMs: number;
  telemetryRate: number;
  /** A bundle download averaging fewer bytes/s than this over a minute fails (TUF's slow retrieval); 0: no floor. */
  minDownloadRate: number;
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
  kind: 'string' | 'positive-int' | 'non-negative-int' | 'positive-number' | 'path' | 'level' | 'host-port' | 'window-sec' | 'flag';
}

export const AGENT_OPTIONS: readonly OptionSpec[] = [
  { flag: 'server', env: 'EDGEPACK_AGENT_SERVER', arg: 'URL', key: 'server', kind: 'string', help: 'orchestrator address, e.g. https://orchestrator:8443' },
  { flag: 'enroll', env: 'EDGEPACK_AGENT_ENROLL', arg: 'TOKEN', key: 'enrollToken', kind: 'string', help: 'single-use enrollment token, enr_…#sha256:… (needed only the first time)' },
  { flag: 'data-dir', env: 'EDGEPACK_AGENT_DATA_DIR', arg: 'DIR', key: 'dataDir', kind: 'path', default: './agent-data', help: 'identity, state and installed bundles' },
  { flag: 'profile', env: 'EDGEPACK_AGENT_PROFILE', arg: 'ID', key: 'profile', kind: 'string', help: 'hardware profile, instead of matching detected facts' },
  { flag: 'name', env: 'EDGEPACK_AGENT_NAME', arg: 'NAME', key: 'name', kind: 'string', help: 'display name (default: the device id)' },
  { flag: 'bench-runs', env: 'EDGEPACK_AGENT_BENCH_RUNS', arg: 'N', key: 'benchRuns', kind: 'positive-int', help: 'override the number of timed benchmark runs' },
  { flag: 'log-level', env: 'EDGEPACK_AGENT_LOG_LEVEL', arg: 'LEVEL', key: 'logLevel', kind: 'level', default: 'info', help: 'fatal|error|warn|info|debug|trace' },
  { flag: 'serve', env: 'EDGEPACK_AGENT_SERVE', arg: 'HOST:PORT', key: 'serve', kind: 'host-port', help: 'serve the active model over HTTP (KServe v2), e.g. 127.0.0.1:8090' },
  { flag: 'serve-socket', env: 'EDGEPACK_AGENT_SERVE_SOCKET', arg: 'PATH', key: 'serveSocket', kind: 'path', help: 'serve it on a Unix socket as well (mode 0660)' },
  { flag: 'serve-concurrency', env: 'EDGEPACK_AGENT_SERVE_CONCURRENCY', arg: 'N', key: 'serveConcurrency', kind: 'positive-int', default: '1', help: 'inference runs at once per model' },
  { flag: 'serve-queue', env: 'EDGEPACK_AGENT_SERVE_QUEUE', arg: 'N', key: 'serveQueue', kind: 'non-negative-int', default: '32', help: 'requests waiting per model before 503 + Retry-After' },
  { flag: 'serve-timeout-ms', env: 'EDGEPACK_AGENT_SERVE_TIMEOUT_MS', arg: 'MS', key: 'serveTimeoutMs', kind: 'positive-int', default: '30000', help: 'a request\'s timeout unless it sets timeout_ms (then 504)' },
  { flag: 'serve-memory-factor', env: 'EDGEPACK_AGENT_SERVE_MEMORY_FACTOR', arg: 'X', key: 'serveMemoryFactor', kind: 'positive-number', default: '3', help: 'a swap loads the new model beside the old one only with model size × X available, else holds requests' },
  { flag: 'serve-threads', env: 'EDGEPACK_AGENT_SERVE_THREADS', arg: 'N', key: 'serveThreads', kind: 'non-negative-int', default: '0', help: 'onnxruntime intra-op threads per served model (0: one per core)' },
  { flag: 'telemetry-window-sec', env: 'EDGEPACK_AGENT_TELEMETRY_WINDOW_SEC', arg: 'N', key: 'telemetryWindowSec', kind: 'window-sec', default: '60', help: 'telemetry window length, aligned; divides 3600' },
  { flag: 'telemetry-spool-bytes', env: 'EDGEPACK_AGENT_TELEMETRY_SPOOL_BYTES', arg: 'N', key: 'telemetrySpoolBytes', kind: 'positive-int', default: '4194304', help: 'cap of the on-disk telemetry spool (at least 16384)' },
  { flag: 'telemetry-jitter-ms', env: 'EDGEPACK_AGENT_TELEMETRY_JITTER_MS', arg: 'MS', key: 'telemetryJitterMs', kind: 'non-negative-int', default: '5000', help: 'random delay before draining telemetry after a reconnect' },
  { flag: 'telemetry-rate', env: 'EDGEPACK_AGENT_TELEMETRY_RATE', arg: 'N', key: 'telemetryRate', kind: 'positive-int', default: '50', help: 'telemetry windows sent per second at most while draining' },
  { flag: 'min-download-rate', env: 'EDGEPACK_AGENT_MIN_DOWNLOAD_RATE', arg: 'B/S', key: 'minDownloadRate', kind: 'non-negative-int', default: '1024', help: 'a download slower than this over a minute fails (DOWNLOAD_TOO_SLOW); 0: no floor' },
  // tls branch: the two ways to enroll without an authenticated server; see the README.
  { flag: 'insecure-enroll', env: 'EDGEPACK_AGENT_INSECURE_ENROLL', arg: '', key: 'insecureEnroll', kind: 'flag', help: 'https with a token that pins no CA: trust the server\'s CA on first use' },
  { flag: 'allow-plaintext', env: 'EDGEPACK_AGENT_ALLOW_PLAINTEXT', arg: '', key: 'allowPlaintext', kind: 'flag', help: 'allow enrolling over http:// and a plain MQTT broker' },
];

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace'] as const;

export class AgentConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
}

export function agentHelp(): string {
  const width = Math.max(24, ...AGENT_OPTIONS.map((o) => `  --${o.flag} ${o.arg}`.length + 2));
  const rows = optionHelpRows(AGENT_OPTIONS, width);
  return `usage: edgepack-agent --server URL --enroll TOKEN --data-dir DIR [options]

${rows.join('\n')}
${'  --version'.padEnd(width)}print the agent's version and exit
${'  -h, --help'.padEnd(width)}print this help and exit

Flags win over their EDGEPACK_AGENT_* variables. Once enrolled, the agent restarts from
DIR without --enroll.`;
}

/** One value of the table, checked for its kind; `source` names the flag or variable it came from. */
function parseValue(o: OptionSpec, raw: string, source: string): unknown {
  switch (o.kind) {
    case 'positive-int': {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1) throw new AgentConfigError(`${source} must be a positive integer, got ${JSON.stringify(raw)}`);
      return n;
    }
    case 'non-negative-int': {
      const n = Number(raw);
      if (!/^\d+$/.test(raw) || !Number.isSafeInteger(n)) throw new AgentConfigError(`${source} must be a non-negative integer, got ${JSON.stringify(raw)}`);
      return n;
    }
    case 'positive-number': {
      const n = Number(raw);
      if (!Number.isFinite(n) || n <= 0 || raw.trim() === '') throw new AgentConfigError(`${source} must be a positive number, got ${JSON.stringify(raw)}`);
      return n;
    }
    case 'window-sec': {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1 || n > 3600 || 3600 % n !== 0) throw new AgentConfigError(`${source} must be a whole number of seconds that divides 3600 (1, 2, …, 60, …, 3600), got ${JSON.stringify(raw)}`);
      return n;
    }
    case 'host-port':
      return parseHostPort(raw, source);
    case 'level':
      if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw new AgentConfigError(`${source} must be one of ${LOG_LEVELS.join('|')}, got ${JSON.stringify(raw)}`);
      return raw;
    case 'path':
      return resolve(raw);
    default:
      return raw;
  }
}

/** Pure: argv and env in, config (or 'help' / 'version') out; throws AgentConfigError naming the option. */
export function parseAgentConfig(argv: string[], env: NodeJS.ProcessEnv): AgentConfig | 'help' | 'version' {
  const config = readOptionTable(AGENT_OPTIONS, argv, env, { fail: (m) => new AgentConfigError(m), parse: parseValue });
  if (typeof config === 'string') return config;
  const c = config as unknown as AgentConfig;
  if (c.telemetrySpoolBytes < 16384) throw new AgentConfigError(`--telemetry-spool-bytes must be at least 16384, got ${c.telemetrySpoolBytes}`);
  return c;
}

/** "127.0.0.1:8090", "[::1]:8090", ":8090" (loopback) → host and port; port 0 picks a free one. */
export function parseHostPort(raw: string, source = 'address'): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:\[\]]*)):(\d{1,5})$/.exec(raw.trim());
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new AgentConfigError(`${source} must be HOST:PORT (e.g. 127.0.0.1:8090), got ${JSON.stringify(raw)}`);
  return { host: m[1] ?? (m[2] || '127.0.0.1'), port };
}
