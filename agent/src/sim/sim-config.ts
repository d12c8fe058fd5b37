import { resolve } from 'node:path';
import { LOG_LEVELS } from '../config.js';
import { optionHelpRows, readOptionTable } from '../option-table.js';
import { PRECISIONS, type SpeedFactors } from './synthetic-benchmark.js';

/**
 * The fleet simulator's settings. Like the agent's (config.ts), every flag also comes from an
 * `EDGEPACK_SIM_*` variable, a flag wins over its variable and a variable over the default,
 * and one table drives parsing, validation and --help.
 */
export interface SimConfig {
  server: string;
  adminTokenFile?: string;
  devices: number;
  profile?: string;
  tags: string[];
  failRate: number;
  failCode: string;
  p95Factor: number;
  offlineRate: number;
  dataDir: string;
  speed: SpeedFactors;
  seed: string;
  enrollConcurrency: number;
  connectConcurrency: number;
  mqttUrl?: string;
  stallMs: number;
  logLevel: string;
  caFile?: string;
  allowPlaintext?: boolean;
  insecureEnroll?: boolean;
  noTlsResume?: boolean;
}

type Kind = 'url' | 'path' | 'string' | 'positive-int' | 'ratio' | 'positive-number' | 'list' | 'code' | 'speed' | 'level' | 'flag';

interface OptionSpec {
  flag: string;
  env: string;
  arg: string;
  help: string;
  default?: string;
  required?: boolean;
  key: keyof SimConfig;
  kind: Kind;
}

export const SIM_OPTIONS: readonly OptionSpec[] = [
  { flag: 'server', env: 'EDGEPACK_SIM_SERVER', arg: 'URL', key: 'server', kind: 'url', required: true, help: 'orchestrator HTTP address, e.g. http://127.0.0.1:8080' },
  { flag: 'admin-token-file', env: 'EDGEPACK_SIM_ADMIN_TOKEN_FILE', arg: 'FILE', key: 'adminTokenFile', kind: 'path', help: 'file holding the admin token (needed to enroll devices and set tags)' },
  { flag: 'devices', env: 'EDGEPACK_SIM_DEVICES', arg: 'N', key: 'devices', kind: 'positive-int', required: true, help: 'number of virtual devices; more than last time enrolls the difference' },
  { flag: 'profile', env: 'EDGEPACK_SIM_PROFILE', arg: 'ID', key: 'profile', kind: 'string', help: 'hardware profile of newly enrolled devices (default: matched from this host\'s facts)' },
  { flag: 'tags', env: 'EDGEPACK_SIM_TAGS', arg: 'a,b', key: 'tags', kind: 'list', default: '', help: 'tags given to newly enrolled devices' },
  { flag: 'fail-rate', env: 'EDGEPACK_SIM_FAIL_RATE', arg: 'R', key: 'failRate', kind: 'ratio', default: '0', help: 'share of (device, new bundle) pairs that fail, chosen by the seed' },
  { flag: 'fail-code', env: 'EDGEPACK_SIM_FAIL_CODE', arg: 'CODE', key: 'failCode', kind: 'code', default: 'GOLDEN_MISMATCH', help: 'error code of an injected failure' },
  { flag: 'p95-factor', env: 'EDGEPACK_SIM_P95_FACTOR', arg: 'X', key: 'p95Factor', kind: 'positive-number', default: '1', help: 'latency on a new bundle = latency on the previous one times X' },
  { flag: 'offline-rate', env: 'EDGEPACK_SIM_OFFLINE_RATE', arg: 'R', key: 'offlineRate', kind: 'ratio', default: '0', help: 'share of the devices, chosen by the seed, that stay offline this run' },
  { flag: 'data-dir', env: 'EDGEPACK_SIM_DATA_DIR', arg: 'DIR', key: 'dataDir', kind: 'path', default: './sim-data', help: 'identities and device state; a restart brings the same devices back' },
  { flag: 'speed', env: 'EDGEPACK_SIM_SPEED', arg: 'PREC=F,..', key: 'speed', kind: 'speed', default: '', help: 'latency (p50..p99) per precision as a factor of the device\'s fp32 figure, in trials and installs; precisions of the manifest (fp32, fp16, int8-dynamic, int8-static, int8), unnamed ones 1; e.g. int8-static=0.6,fp16=1.1' },
  { flag: 'seed', env: 'EDGEPACK_SIM_SEED', arg: 'S', key: 'seed', kind: 'string', default: 'edgepack-sim', help: 'seed of every random choice (failures, offline devices, baselines)' },
  { flag: 'enroll-concurrency', env: 'EDGEPACK_SIM_ENROLL_CONCURRENCY', arg: 'N', key: 'enrollConcurrency', kind: 'positive-int', default: '8', help: 'enrollments in flight at once' },
  { flag: 'connect-concurrency', env: 'EDGEPACK_SIM_CONNECT_CONCURRENCY', arg: 'N', key: 'connectConcurrency', kind: 'positive-int', default: '64', help: 'MQTT connects awaiting CONNACK at once (set N = --devices for a reconnect storm)' },
  { flag: 'mqtt-url', env: 'EDGEPACK_SIM_MQTT_URL', arg: 'URL', key: 'mqttUrl', kind: 'url', help: 'broker to use instead of the one enrollment named, e.g. mqtt://127.0.0.1:1883 or mqtts://127.0.0.1:8883 (benchmarks)' },
  { flag: 'stall-ms', env: 'EDGEPACK_SIM_STALL_MS', arg: 'MS', key: 'stallMs', kind: 'positive-int', default: '10000', help: 'a transfer with no chunk for this long is asked again' },
  { flag: 'log-level', env: 'EDGEPACK_SIM_LOG_LEVEL', arg: 'LEVEL', key: 'logLevel', kind: 'level', default: 'info', help: 'fatal|error|warn|info|debug|trace (logs go to stderr)' },
  { flag: 'ca-file', env: 'EDGEPACK_SIM_CA_FILE', arg: 'FILE', key: 'caFile', kind: 'path', help: 'the orchestrator\'s CA certificate, trusted for the admin API over https (its data/tls/ca-cert.pem)' },
  { flag: 'allow-plaintext', env: 'EDGEPACK_SIM_ALLOW_PLAINTEXT', arg: '', key: 'allowPlaintext', kind: 'flag', help: 'allow http:// and plain MQTT, as the agent\'s flag' },
  { flag: 'insecure-enroll', env: 'EDGEPACK_SIM_INSECURE_ENROLL', arg: '', key: 'insecureEnroll', kind: 'flag', help: 'trust an unpinned CA on first use, as the agent\'s flag' },
  { flag: 'no-tls-resume', env: 'EDGEPACK_SIM_NO_TLS_RESUME', arg: '', key: 'noTlsResume', kind: 'flag', help: 'never resume a TLS session on reconnect (to measure full handshakes)' },
];


export class SimConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
}

export function simHelp(): string {
  const rows = optionHelpRows(SIM_OPTIONS, 30);
  return `usage: edgepack-sim --server URL --admin-token-file FILE --devices N [options]

Runs N virtual devices in one process against a real orchestrator: each enrolls with its own
key and token, holds its own MQTT session, downloads and checks every bundle it is sent, and
reports status and a made-up benchmark. One summary line per second on stdout, and one JSON
line {"event":"ready",...} once every device that is meant to be online is connected.

${rows.join('\n')}
  --version                   print the version and exit
  -h, --help                  print this help and exit

Flags win over their EDGEPACK_SIM_* variables. Started again on the same --data-dir the same
devices come back, with their bundles and figures, under the new failure settings.`;
}

function parseValue(o: OptionSpec, raw: string, source: string): unknown {
  const fail = (what: string) => new SimConfigError(`${source} must be ${what}, got ${JSON.stringify(raw)}`);
  switch (o.kind) {
    case 'positive-int': {
      const n = Number(raw);
      if (!Number.isInteger(n) || n < 1) throw fail('a positive integer');
      return n;
    }
    case 'ratio': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n) || n < 0 || n > 1) throw fail('a number from 0 to 1');
      return n;
    }
    case 'positive-number': {
      const n = Number(raw);
      if (raw.trim() === '' || !Number.isFinite(n) || n <= 0) throw fail('a number above 0');
      return n;
    }
    case 'url': {
      try {
        return new URL(raw).toString().replace(/\/$/, '');
      } catch {
        throw fail('a URL');
      }
    }
    case 'path':
      return resolve(raw);
    case 'list':
      return raw.split(',').map((t) => t.trim()).filter(Boolean);
    case 'code':
      if (!/^[A-Z][A-Z0-9_]{1,63}$/.test(raw)) throw fail('an error code in capitals, e.g. GOLDEN_MISMATCH');
      return raw;
    case 'speed':
      return parseSpeed(raw, source);
    case 'level':
      if (!(LOG_LEVELS as readonly string[]).includes(raw)) throw fail(`one of ${LOG_LEVELS.join('|')}`);
      return raw;
    default:
      return raw;
  }
}

/** `int8-static=0.6,fp16=1.1` → { 'int8-static': 0.6, fp16: 1.1 }; names are the manifest's precisions. */
export function parseSpeed(raw: string, source = '--speed'): SpeedFactors {
  const out: SpeedFactors = {};
  for (const part of raw.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    const name = eq > 0 ? part.slice(0, eq).trim() : '';
    const f = Number(eq > 0 ? part.slice(eq + 1) : NaN);
    if (!(PRECISIONS as readonly string[]).includes(name)) throw new SimConfigError(`${source}: ${JSON.stringify(part)} does not name a precision (${PRECISIONS.join(', ')})`);
    if (!Number.isFinite(f) || f <= 0) throw new SimConfigError(`${source}: the factor of ${name} must be a number above 0, got ${JSON.stringify(part.slice(eq + 1))}`);
    out[name as keyof SpeedFactors] = f;
  }
  return out;
}

/** Pure: argv and env in, config (or 'help' / 'version') out; throws SimConfigError naming the option. */
export function parseSimConfig(argv: string[], env: NodeJS.ProcessEnv): SimConfig | 'help' | 'version' {
  const config = readOptionTable(SIM_OPTIONS, argv, env, { fail: (m) => new SimConfigError(m), parse: parseValue });
  if (typeof config === 'string') return config;
  return config as unknown as SimConfig;
}
