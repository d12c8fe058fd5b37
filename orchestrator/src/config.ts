import { parseArgs } from 'node:util';
import { isIP } from 'node:net';
import { resolve } from 'node:path';
import { DEFAULT_LIMITS, type LimitOverrides } from './limits.js';
import { LOG_LEVELS } from './logger.js';
import { serverSans, type TlsSettings } from './tls-material.js';

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
  /** Seconds between rollout ticks (1-5): how soon timeouts, bakes and windows are acted on without a report. */
  rolloutTickSec: number;
  logLevel: string;
  /** Limits on the two doors over their defaults (limits.ts); the flags set the most asked-for ones. */
  limits?: LimitOverrides;
  /** HTTPS and MQTTS are always on: with a certificate given, or one the first start makes (tls-material.ts). */
  tls: TlsSettings;
  /** Also serve plain HTTP and MQTT, on their own ports (for a TLS-terminating proxy, or old agents). */
  allowPlaintext: boolean;
  plainHttpPort: number;
  plainMqttPort: number;
  /** The broker ends an MQTT session this long after the credential it was opened with was signed; 0 = never. */
  mqttSessionMaxAgeSec: number;
}

export const SERVE_HELP = `usage: edgepack serve [options]

  --data-dir DIR        where the database, blobs and keys live   (env EDGEPACK_DATA_DIR, default ./data)
  --http-host HOST      HTTPS API listen address                   (env EDGEPACK_HTTP_HOST, default 0.0.0.0)
  --http-port PORT      HTTPS API port, 0 = ephemeral              (env EDGEPACK_HTTP_PORT, default 8443)
  --mqtt-host HOST      MQTTS broker listen address                (env EDGEPACK_MQTT_HOST, default 0.0.0.0)
  --mqtt-port PORT      MQTTS broker port, 0 = ephemeral           (env EDGEPACK_MQTT_PORT, default 8883)
  --public-host HOST    host name given to devices for MQTT        (env EDGEPACK_PUBLIC_HOST, default 127.0.0.1)

  TLS is always on. Without --tls-cert/--tls-key the first start makes a private CA and a
  server certificate in DIR/tls/ (names: localhost, 127.0.0.1, ::1, --public-host, --tls-san).
  --tls-cert FILE       server certificate chain, PEM (leaf first) (env EDGEPACK_TLS_CERT)
  --tls-key FILE        its private key, PEM                       (env EDGEPACK_TLS_KEY)
  --tls-ca FILE         with --tls-cert: the CA devices pin        (env EDGEPACK_TLS_CA, default the chain's last certificate)
  --tls-san NAME        one more name for the self-made certificate, repeatable (env EDGEPACK_TLS_SAN, comma-separated)
  --allow-plaintext     also serve plain HTTP and MQTT (no TLS)    (env EDGEPACK_ALLOW_PLAINTEXT=1)
  --plain-http-port N   plain HTTP port with --allow-plaintext     (env EDGEPACK_PLAIN_HTTP_PORT, default 8080)
  --plain-mqtt-port N   plain MQTT port with --allow-plaintext     (env EDGEPACK_PLAIN_MQTT_PORT, default 1883)
  --mqtt-session-max-age-sec N  end an MQTT session N s after its credential was signed, so the
                        device reconnects with a fresh one; 0 = never (env EDGEPACK_MQTT_SESSION_MAX_AGE_SEC, default 3600)

  --max-model-mb N      upload size limit in MiB                   (env EDGEPACK_MAX_MODEL_MB, default 512)
  --heartbeat-sec N     device heartbeat interval                  (env EDGEPACK_HEARTBEAT_SEC, default 15)
  --offline-after-sec N silence before a device is marked offline  (env EDGEPACK_OFFLINE_AFTER_SEC, default 3 x heartbeat)
  --rollout-tick-sec N  seconds between rollout ticks, 1-5         (env EDGEPACK_ROLLOUT_TICK_SEC, default 1)
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

const FLAG_TRUE = ['1', 'true', 'yes', 'on'];
const FLAG_FALSE = ['', '0', 'false', 'no', 'off'];

function flag(name: string, value: string | undefined): boolean {
  if (value === undefined) return false;
  const v = value.trim().toLowerCase();
  if (FLAG_TRUE.includes(v)) return true;
  if (FLAG_FALSE.includes(v)) return false;
  throw new ConfigError(`${name} must be 1 or 0 (true/false), got ${JSON.stringify(value)}`);
}

function nonNegative(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 0) throw new ConfigError(`${name} must be a whole number of 0 or more, got ${JSON.stringify(value)}`);
  return n;
}

/** A DNS name (labels of letters, digits and hyphens) or an IP address. */
const HOST_NAME = /^(?=.{1,253}$)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?(?:\.[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?)*$/i;

function sanName(value: string): string {
  const v = value.trim();
  if (isIP(v) || HOST_NAME.test(v)) return v;
  throw new ConfigError(`--tls-san must be a host name or an IP address, got ${JSON.stringify(value)}`);
}

function tlsSettings(values: { cert?: string; key?: string; ca?: string; sans: string[] }, publicHost: string): TlsSettings {
  if ((values.cert === undefined) !== (values.key === undefined)) throw new ConfigError('--tls-cert and --tls-key go together: give both, or neither for the self-made certificate');
  if (values.cert !== undefined && values.key !== undefined) {
    if (values.sans.length) throw new ConfigError('--tls-san names hosts in the self-made certificate; with --tls-cert the certificate names its own');
    return { mode: 'provided', certFile: resolve(values.cert), keyFile: resolve(values.key), ...(values.ca ? { caFile: resolve(values.ca) } : {}) };
  }
  if (values.ca !== undefined) throw new ConfigError('--tls-ca goes with --tls-cert and --tls-key; the self-made CA is in the data dir');
  return { mode: 'self-made', sans: serverSans(publicHost, values.sans.map(sanName)) };
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
      'rollout-tick-sec': { type: 'string' },
      'log-level': { type: 'string' }, 'enroll-per-min': { type: 'string' }, 'api-per-min': { type: 'string' }, help: { type: 'boolean', short: 'h' },
      'telemetry-raw-hours': { type: 'string' }, 'telemetry-10m-days': { type: 'string' }, 'telemetry-1h-days': { type: 'string' },
      'tls-cert': { type: 'string' }, 'tls-key': { type: 'string' }, 'tls-ca': { type: 'string' }, 'tls-san': { type: 'string', multiple: true },
      'allow-plaintext': { type: 'boolean' }, 'plain-http-port': { type: 'string' }, 'plain-mqtt-port': { type: 'string' },
      'mqtt-session-max-age-sec': { type: 'string' },
    },
    strict: true,
  });
  if (values.help) return 'help';
  const pick = (flag: keyof typeof values, envName: string, dflt: string): string => (values[flag] as string | undefined) ?? env[envName] ?? dflt;
  const heartbeatSec = positive('--heartbeat-sec', pick('heartbeat-sec', 'EDGEPACK_HEARTBEAT_SEC', '15'));
  const publicHost = pick('public-host', 'EDGEPACK_PUBLIC_HOST', '127.0.0.1');
  const optional = (flagName: 'tls-cert' | 'tls-key' | 'tls-ca', envName: string) => (values[flagName] as string | undefined) ?? (env[envName] || undefined);
  const sans = values['tls-san'] ?? (env.EDGEPACK_TLS_SAN ? env.EDGEPACK_TLS_SAN.split(',').map((s) => s.trim()).filter(Boolean) : []);
  const tlsValues = {
    sans, ...(optional('tls-cert', 'EDGEPACK_TLS_CERT') ? { cert: optional('tls-cert', 'EDGEPACK_TLS_CERT')! } : {}),
    ...(optional('tls-key', 'EDGEPACK_TLS_KEY') ? { key: optional('tls-key', 'EDGEPACK_TLS_KEY')! } : {}),
    ...(optional('tls-ca', 'EDGEPACK_TLS_CA') ? { ca: optional('tls-ca', 'EDGEPACK_TLS_CA')! } : {}),
  };
  return {
    dataDir: resolve(pick('data-dir', 'EDGEPACK_DATA_DIR', './data')),
    httpHost: pick('http-host', 'EDGEPACK_HTTP_HOST', '0.0.0.0'),
    httpPort: port('--http-port', pick('http-port', 'EDGEPACK_HTTP_PORT', '8443')),
    mqttHost: pick('mqtt-host', 'EDGEPACK_MQTT_HOST', '0.0.0.0'),
    mqttPort: port('--mqtt-port', pick('mqtt-port', 'EDGEPACK_MQTT_PORT', '8883')),
    publicHost,
    maxModelBytes: Math.round(positive('--max-model-mb', pick('max-model-mb', 'EDGEPACK_MAX_MODEL_MB', '512')) * 1024 * 1024),
    heartbeatSec,
    offlineAfterSec: positive('--offline-after-sec', pick('offline-after-sec', 'EDGEPACK_OFFLINE_AFTER_SEC', String(heartbeatSec * 3))),
    bundleTtlDays: 30,
    enrollmentTokenTtlSec: 24 * 3600,
    rolloutTickSec: tickSec(pick('rollout-tick-sec', 'EDGEPACK_ROLLOUT_TICK_SEC', '1')),
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
    tls: tlsSettings(tlsValues, publicHost),
    allowPlaintext: values['allow-plaintext'] === true || flag('EDGEPACK_ALLOW_PLAINTEXT', env.EDGEPACK_ALLOW_PLAINTEXT),
    plainHttpPort: port('--plain-http-port', pick('plain-http-port', 'EDGEPACK_PLAIN_HTTP_PORT', '8080')),
    plainMqttPort: port('--plain-mqtt-port', pick('plain-mqtt-port', 'EDGEPACK_PLAIN_MQTT_PORT', '1883')),
    mqttSessionMaxAgeSec: nonNegative('--mqtt-session-max-age-sec', pick('mqtt-session-max-age-sec', 'EDGEPACK_MQTT_SESSION_MAX_AGE_SEC', '3600')),
  };
}
