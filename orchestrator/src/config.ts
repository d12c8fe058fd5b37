import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { DEFAULT_LIMITS, type LimitOverrides } from './limits.js';
import { LOG_LEVELS } from './logger.js';

export interface ServerConfig {
  dataDir: string;
  httpHost: string;
  httpPort: number;
  mqttHost: string;
  mqttPort: number;
  /** Host name devices are told to reach the broker at (defaults to the HTTP host or 127.0.0.1). */
  publicHost: string;
  maxModelBytes: number;
  heartbeatSec: number;
  /** A device silent for this long is marked offline by the cron sweep. */
  offlineAfterSec: number;
  bundleTtlDays: number;
  enrollmentTokenTtlSec: number;
  /** How long telemetry is kept: raw windows (hours), 10-minute and 1-hour roll-ups (days); absent: 48 h, 30 d, 400 d. */
  telemetryRetention?: { rawHours: number; tenMinDays: number; hourDays: number };
  logLevel: string;
  /** Limits on the two doors over their defaults (limits.ts); the flags set the most asked-for ones. */
  limits?: LimitOverrides;
}

export const SERVE_HELP = `usage: edgepack serve [options]

  --data-dir DIR        where the database, blobs and keys live   (env EDGEPACK_DATA_DIR, default ./data)
  --http-host HOST      HTTP API listen address                    (env EDGEPACK_HTTP_HOST, default 0.0.0.0)
  --http-port PORT      HTTP API port, 0 = ephemeral               (env EDGEPACK_HTTP_PORT, default 8080)
  --mqtt-host HOST      MQTT broker listen address                 (env EDGEPACK_MQTT_HOST, default 0.0.0.0)
  --mqtt-port PORT      MQTT broker port, 0 = ephemeral            (env EDGEPACK_MQTT_PORT, default 1883)
  --public-host HOST    host name given to devices for MQTT        (env EDGEPACK_PUBLIC_HOST, default 127.0.0.1)
  --max-model-mb N      upload size limit in MiB                   (env EDGEPACK_MAX_MODEL_MB, default 512)
  --heartbeat-sec N     device heartbeat interval                  (env EDGEPACK_HEARTBEAT_SEC, default 15)
  --offline-after-sec N silence before a device is marked offline  (env EDGEPACK_OFFLINE_AFTER_SEC, default 3 x heartbeat)
  --telemetry-raw-hours N  keep raw telemetry windows N hours      (env EDGEPACK_TELEMETRY_RAW_HOURS, default 48)
  --telemetry-10m-days N   keep 10-minute telemetry roll-ups N days (env EDGEPACK_TELEMETRY_10M_DAYS, default 30)
  --telemetry-1h-days N    keep 1-hour telemetry roll-ups N days    (env EDGEPACK_TELEMETRY_1H_DAYS, default 400)
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent   (env EDGEPACK_LOG_LEVEL, default info)
  --enroll-per-min N    enrollments per client IP per minute       (env EDGEPACK_ENROLL_PER_MIN, default 120)
  --api-per-min N       API requests per token per minute          (env EDGEPACK_API_PER_MIN, default 3000)
`;

export class ConfigError extends Error {
  readonly code = 'CONFIG_INVALID';
}

function port(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0 || n > 65535) throw new ConfigError(`${name} must be a port number 0-65535, got ${JSON.stringify(value)}`);
  return n;
}

function positive(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n <= 0) throw new ConfigError(`${name} must be a positive number, got ${JSON.stringify(value)}`);
  return n;
}

function level(name: string, value: string): string {
  if (!(LOG_LEVELS as readonly string[]).includes(value)) throw new ConfigError(`${name} must be one of ${LOG_LEVELS.join('|')}, got ${JSON.stringify(value)}`);
  return value;
}

/** Each coarser table must outlive the finer one, or a range would fall between them. */
function telemetryRetention(rawHours: number, tenMinDays: number, hourDays: number): NonNullable<ServerConfig['telemetryRetention']> {
  if (tenMinDays * 24 < rawHours) throw new ConfigError(`--telemetry-10m-days (${tenMinDays}) must keep roll-ups at least as long as --telemetry-raw-hours (${rawHours} h) keeps raw windows`);
  if (hourDays < tenMinDays) throw new ConfigError(`--telemetry-1h-days (${hourDays}) must be at least --telemetry-10m-days (${tenMinDays})`);
  return { rawHours, tenMinDays, hourDays };
}

/** Flags win over env, env over defaults. Pure: takes argv and env, returns config or throws. */
export function parseServeConfig(argv: string[], env: NodeJS.ProcessEnv): ServerConfig | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' }, 'http-host': { type: 'string' }, 'http-port': { type: 'string' },
      'mqtt-host': { type: 'string' }, 'mqtt-port': { type: 'string' }, 'public-host': { type: 'string' },
      'max-model-mb': { type: 'string' }, 'heartbeat-sec': { type: 'string' }, 'offline-after-sec': { type: 'string' },
      'log-level': { type: 'string' }, 'enroll-per-min': { type: 'string' }, 'api-per-min': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      'telemetry-raw-hours': { type: 'string' }, 'telemetry-10m-days': { type: 'string' }, 'telemetry-1h-days': { type: 'string' },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const pick = (flag: keyof typeof values, envName: string, dflt: string): string => (values[flag] as string | undefined) ?? env[envName] ?? dflt;
  const heartbeatSec = positive('--heartbeat-sec', pick('heartbeat-sec', 'EDGEPACK_HEARTBEAT_SEC', '15'));
  return {
    dataDir: resolve(pick('data-dir', 'EDGEPACK_DATA_DIR', './data')),
    httpHost: pick('http-host', 'EDGEPACK_HTTP_HOST', '0.0.0.0'),
    httpPort: port('--http-port', pick('http-port', 'EDGEPACK_HTTP_PORT', '8080')),
    mqttHost: pick('mqtt-host', 'EDGEPACK_MQTT_HOST', '0.0.0.0'),
    mqttPort: port('--mqtt-port', pick('mqtt-port', 'EDGEPACK_MQTT_PORT', '1883')),
    publicHost: pick('public-host', 'EDGEPACK_PUBLIC_HOST', '127.0.0.1'),
    maxModelBytes: Math.round(positive('--max-model-mb', pick('max-model-mb', 'EDGEPACK_MAX_MODEL_MB', '512')) * 1024 * 1024),
    heartbeatSec,
    offlineAfterSec: positive('--offline-after-sec', pick('offline-after-sec', 'EDGEPACK_OFFLINE_AFTER_SEC', String(heartbeatSec * 3))),
    bundleTtlDays: 30,
    enrollmentTokenTtlSec: 24 * 3600,
    telemetryRetention: telemetryRetention(
      positive('--telemetry-raw-hours', pick('telemetry-raw-hours', 'EDGEPACK_TELEMETRY_RAW_HOURS', '48')),
      positive('--telemetry-10m-days', pick('telemetry-10m-days', 'EDGEPACK_TELEMETRY_10M_DAYS', '30')),
      positive('--telemetry-1h-days', pick('telemetry-1h-days', 'EDGEPACK_TELEMETRY_1H_DAYS', '400')),
    ),
    logLevel: level('--log-level', pick('log-level', 'EDGEPACK_LOG_LEVEL', 'info')),
    limits: {
      http: {
        enrollPerMinute: Math.ceil(positive('--enroll-per-min', pick('enroll-per-min', 'EDGEPACK_ENROLL_PER_MIN', String(DEFAULT_LIMITS.http.enrollPerMinute)))),
        requestsPerMinutePerToken: Math.ceil(positive('--api-per-min', pick('api-per-min', 'EDGEPACK_API_PER_MIN', String(DEFAULT_LIMITS.http.requestsPerMinutePerToken)))),
      },
    },
  };
}
