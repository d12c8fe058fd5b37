import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
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
  /** Seconds between rollout ticks (1-5): how soon timeouts, bakes and windows are acted on without a report. */
  rolloutTickSec: number;
  logLevel: string;
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
  --rollout-tick-sec N  seconds between rollout ticks, 1-5         (env EDGEPACK_ROLLOUT_TICK_SEC, default 1)
  --log-level LEVEL     fatal|error|warn|info|debug|trace|silent   (env EDGEPACK_LOG_LEVEL, default info)
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

function tickSec(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 5) throw new ConfigError(`--rollout-tick-sec must be an integer from 1 to 5, got ${JSON.stringify(value)}`);
  return n;
}

function level(name: string, value: string): string {
  if (!(LOG_LEVELS as readonly string[]).includes(value)) throw new ConfigError(`${name} must be one of ${LOG_LEVELS.join('|')}, got ${JSON.stringify(value)}`);
  return value;
}

/** Flags win over env, env over defaults. Pure: takes argv and env, returns config or throws. */
export function parseServeConfig(argv: string[], env: NodeJS.ProcessEnv): ServerConfig | 'help' {
  const { values } = parseArgs({
    args: argv,
    options: {
      'data-dir': { type: 'string' }, 'http-host': { type: 'string' }, 'http-port': { type: 'string' },
      'mqtt-host': { type: 'string' }, 'mqtt-port': { type: 'string' }, 'public-host': { type: 'string' },
      'max-model-mb': { type: 'string' }, 'heartbeat-sec': { type: 'string' }, 'offline-after-sec': { type: 'string' },
      'rollout-tick-sec': { type: 'string' }, 'log-level': { type: 'string' }, help: { type: 'boolean', short: 'h' },
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
    rolloutTickSec: tickSec(pick('rollout-tick-sec', 'EDGEPACK_ROLLOUT_TICK_SEC', '1')),
    logLevel: level('--log-level', pick('log-level', 'EDGEPACK_LOG_LEVEL', 'info')),
  };
}
