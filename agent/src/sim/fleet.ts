import {
  DesiredStateSchema, EdgepackError, NoticeSchema, Validator, createChunkDecoder, TrustVerifier, errorCode, errorMessage,
} from '@edgepack/protocol';
import { enroll } from '../enroll.js';
import { Agent as HttpsAgent } from 'node:https';
import { requestText } from '../pinned-tls.js';
import { detectFacts } from '../facts.js';
import type { Logger } from '../logger.js';
import { FleetStore, emptyDeviceState, type StoredDevice } from './fleet-store.js';
import { SimDevice, type FleetContext } from './sim-device.js';
import { unitHash, type SpeedFactors } from './synthetic-benchmark.js';

export interface FleetOptions {
  /** Orchestrator HTTP address. */
  server: string;
  /** Needed only to enroll devices (and tag them); a fleet already enrolled starts without it. */
  adminToken?: string;
  devices: number;
  dataDir: string;
  profile?: string;
  tags?: string[];
  failRate?: number;
  failCode?: string;
  p95Factor?: number;
  offlineRate?: number;
  speed?: SpeedFactors;
  seed?: string;
  enrollConcurrency?: number;
  /** Connects awaiting CONNACK at once; Infinity (or ≥ devices) lets every device connect at once. */
  connectConcurrency?: number;
  /** Broker to use instead of the one enrollment named (e.g. mqtt://127.0.0.1:1883 or mqtts://…:8883, which trusts the enrolled CA). */
  mqttUrl?: string;
  stallMs?: number;
  maxStallAsks?: number;
  agentVersion?: string;
  log?: Logger;
  now?: () => Date;
  /** The orchestrator's CA certificate (PEM), trusted for the admin API over https (data/tls/ca-cert.pem). */
  caCertificate?: string;
  /** As the agent's flags: enroll over plain http / trust an unpinned CA on first use. */
  allowPlaintext?: boolean;
  insecureEnroll?: boolean;
  /** Offer the last TLS session on reconnect (default true). */
  tlsResume?: boolean;
}

export interface FleetStats {
  /** Devices this run knows (the first `devices` of the data dir). */
  devices: number;
  /** Devices enrolled by this run. */
  enrolled: number;
  /** Devices meant to be online this run, and those kept offline (--offline-rate). */
  online: number;
  offline: number;
  /** MQTT sessions up right now, and of those, subscribed. */
  connected: number;
  subscribed: number;
  /** Devices by the state of their action (the state they last reported), idle for none. */
  states: Record<string, number>;
  bytesReceived: number;
  chunks: number;
  reports: number;
  connects: number;
  connectFailures: number;
  uptimeMs: number;
}

export interface FleetReady {
  event: 'ready';
  devices: number;
  online: number;
  offline: number;
  enrolled: number;
  /** From the first enrollment to the last (0 when nobody needed enrolling). */
  enrollMs: number;
  /** From the first connect attempt to the last device meant to be online being connected and subscribed. */
  connectMs: number;
  /** From startFleet to ready. */
  readyMs: number;
  offlineDeviceIds: string[];
}

export interface Fleet {
  readonly devices: readonly SimDevice[];
  readonly offlineDeviceIds: readonly string[];
  /** Resolves once every device meant to be online is enrolled, connected and subscribed. */
  readonly ready: Promise<FleetReady>;
  stats(): FleetStats;
  /** Ends every MQTT session (a clean DISCONNECT), saves the state; the fleet can be started again from the data dir. */
  stop(): Promise<void>;
}

const silent: Logger = { error() {}, warn() {}, info() {}, debug() {} };

/** A counting semaphore: at most `limit` holders; `acquire` resolves with the release function. */
function semaphore(limit: number): () => Promise<() => void> {
  let free = limit;
  const waiting: (() => void)[] = [];
  const release = () => {
    const next = waiting.shift();
    if (next) next();
    else free++;
  };
  return () => new Promise((resolve) => {
    const grant = () => resolve(release);
    if (free > 0) { free--; grant(); } else waiting.push(grant);
  });
}

/** Runs `fn` over `items` with at most `limit` in flight; the first failure stops new starts and is thrown. */
async function pool<T>(items: readonly T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  let failed: unknown;
  const worker = async () => {
    while (failed === undefined && next < items.length) {
      const item = items[next++]!;
      try { await fn(item); } catch (err) { failed ??= err; }
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  if (failed !== undefined) throw failed;
}

/**
 * Which devices stay offline this run: the `round(rate × n)` whose seeded draw is lowest. By
 * index, not id, so the choice is known before enrollment; and a higher rate only adds devices.
 */
export function offlineIndexes(indexes: readonly number[], rate: number, seed: string): Set<number> {
  const k = Math.round(rate * indexes.length);
  const ranked = [...indexes].sort((a, b) => unitHash(seed, 'offline', String(a)) - unitHash(seed, 'offline', String(b)));
  return new Set(ranked.slice(0, k));
}

/**
 * The admin API is called once or twice per enrolled device: over https one kept-alive connection
 * per enrollment slot, trusting only the orchestrator's CA, saves a TLS handshake per call.
 */
function adminAgent(o: FleetOptions): HttpsAgent | undefined {
  return o.caCertificate ? new HttpsAgent({ keepAlive: true, ca: o.caCertificate, maxSockets: o.enrollConcurrency ?? 8 }) : undefined;
}

async function adminRequest(o: FleetOptions, method: string, path: string, body: unknown, agent?: HttpsAgent): Promise<unknown> {
  if (!o.adminToken) throw new EdgepackError('CONFIG_INVALID', `enrolling devices needs the admin token: pass --admin-token-file (or EDGEPACK_SIM_ADMIN_TOKEN_FILE) for ${method} ${path}`);
  const url = new URL(path, o.server);
  if (url.protocol === 'https:' && !o.caCertificate) {
    throw new EdgepackError('CONFIG_INVALID', `the admin API at ${url.origin} is https: pass --ca-file with the orchestrator's CA certificate (its data/tls/ca-cert.pem)`);
  }
  if (url.protocol === 'http:' && !o.allowPlaintext) throw new EdgepackError('ENROLL_INSECURE', `${url.origin} is plain http: the admin token would cross the network unprotected; use https, or pass --allow-plaintext`);
  for (let attempt = 1; ; attempt++) {
    let res;
    try {
      res = await requestText(url, {
        method, headers: { authorization: `Bearer ${o.adminToken}`, 'content-type': 'application/json' }, body: JSON.stringify(body), ...(o.caCertificate ? { ca: o.caCertificate } : {}),
        ...(agent && url.protocol === 'https:' ? { agent } : {}),
      });
    } catch (err) {
      if (attempt < 5) { await new Promise((r) => setTimeout(r, 200 * attempt)); continue; }
      throw new EdgepackError('ENROLL_UNREACHABLE', `cannot reach ${url.toString()}: ${errorMessage(err)}`);
    }
    const { text } = res;
    // A rate limit or a busy server: wait and ask again rather than abandon the fleet.
    if ((res.status === 429 || res.status === 503) && attempt < 8) {
      const after = Number(res.headers['retry-after']);
      await new Promise((r) => setTimeout(r, Number.isFinite(after) && after > 0 ? after * 1000 : 250 * attempt));
      continue;
    }
    if (res.status < 200 || res.status >= 300) throw new EdgepackError('ENROLL_REFUSED', `${method} ${path} answered ${res.status}: ${text.slice(0, 500)}`);
    return text ? JSON.parse(text) : null;
  }
}

const pad = (n: number) => String(n).padStart(4, '0');

/**
 * Starts a fleet of simulated devices: loads the data dir, enrolls what is missing (a token
 * each, through the admin API), and connects every device meant to be online, at most
 * `connectConcurrency` connects in flight. Resolves once enrollment is done; `ready` follows
 * when every device is connected.
 */
export async function startFleet(o: FleetOptions): Promise<Fleet> {
  const t0 = Date.now();
  const log = o.log ?? silent;
  const now = o.now ?? (() => new Date());
  const seed = o.seed ?? 'edgepack-sim';
  const agentVersion = o.agentVersion ?? 'edgepack-sim';
  const store = new FleetStore(o.dataDir, log);
  const all = await store.load();
  const stored = all.filter((d) => d.index <= o.devices);
  // Devices beyond a --devices that shrank: not run, but their state is kept for a later run.
  const resting = all.filter((d) => d.index > o.devices);
  const have = new Set(stored.map((d) => d.index));
  const missing = Array.from({ length: o.devices }, (_, i) => i + 1).filter((i) => !have.has(i));
  const offline = offlineIndexes(Array.from({ length: o.devices }, (_, i) => i + 1), o.offlineRate ?? 0, seed);
  const mqttOverride = o.mqttUrl ? (() => {
    const u = new URL(o.mqttUrl);
    const protocol = u.protocol === 'mqtts:' ? 'mqtts' as const : 'mqtt' as const;
    return { host: u.hostname, port: Number(u.port || (protocol === 'mqtts' ? 8883 : 1883)), protocol };
  })() : undefined;

  let dirty = false;
  let firstConnectMs: number | undefined;
  let lastSubscribedMs = 0;
  const subscribedOnce = new Set<string>();
  let resolveReady!: (r: FleetReady) => void;
  const ready = new Promise<FleetReady>((r) => { resolveReady = r; });
  const onlineTarget = o.devices - offline.size;
  let enrollMs = 0;
  let enrolling = true;
  const devices: SimDevice[] = [];
  const offlineIds: string[] = [];

  const checkReady = () => {
    if (enrolling || subscribedOnce.size < onlineTarget) return;
    resolveReady({
      event: 'ready', devices: devices.length, online: onlineTarget, offline: offline.size, enrolled: missing.length, enrollMs,
      connectMs: firstConnectMs === undefined ? 0 : lastSubscribedMs - firstConnectMs, readyMs: Date.now() - t0, offlineDeviceIds: [...offlineIds],
    });
  };

  const slot = semaphore(Math.max(1, Math.min(o.connectConcurrency ?? 64, o.devices)));
  const ctx: FleetContext = {
    log, now, agentVersion, startedAtMs: t0,
    desiredValidator: new Validator('desired state', DesiredStateSchema),
    noticeValidator: new Validator('notice', NoticeSchema),
    trustVerifier: new TrustVerifier(),
    decodeChunk: createChunkDecoder(),
    settings: {
      seed, failRate: o.failRate ?? 0, failCode: o.failCode ?? 'GOLDEN_MISMATCH', p95Factor: o.p95Factor ?? 1, speed: o.speed ?? {},
      stallMs: o.stallMs ?? 10_000, maxStallAsks: o.maxStallAsks ?? 6, ...(mqttOverride ? { mqtt: mqttOverride } : {}), tlsResume: o.tlsResume ?? true,
    },
    connectSlot: async () => {
      const release = await slot();
      firstConnectMs ??= Date.now();
      return release;
    },
    changed: () => { dirty = true; },
    counters: { bytesReceived: 0, chunks: 0, reports: 0, connects: 0, connectFailures: 0 },
    onSubscribed: (d) => {
      if (subscribedOnce.has(d.id)) return;
      subscribedOnce.add(d.id);
      lastSubscribedMs = Date.now();
      checkReady();
    },
  };

  const add = (rec: StoredDevice) => {
    const d = new SimDevice(rec, ctx);
    devices.push(d);
    if (offline.has(rec.index)) offlineIds.push(rec.identity.deviceId);
    else d.start();
  };
  for (const rec of stored) add(rec);

  // One timer for the whole fleet: heartbeats when due, stall checks, and saving the state.
  const tickMs = Math.min(1000, Math.max(50, Math.floor(ctx.settings.stallMs / 2)));
  let saving = false;
  const save = async () => {
    dirty = false;
    await store.save([...devices.map((d) => d.rec), ...resting]);
  };
  const timer = setInterval(() => {
    const t = Date.now();
    for (const d of devices) d.tick(t);
    if (dirty && !saving) {
      saving = true;
      save().catch((err) => log.error({ err: errorMessage(err) }, 'could not save the device state')).finally(() => { saving = false; });
    }
  }, tickMs);

  const stop = async () => {
    clearInterval(timer);
    await Promise.all(devices.map((d) => d.stop()));
    await save();
    await store.syncIdentities().catch(() => undefined);
  };

  if (missing.length) {
    const e0 = Date.now();
    log.info({ count: missing.length, concurrency: o.enrollConcurrency ?? 8 }, 'enrolling devices');
    const facts = detectFacts({ onnxruntimeVersion: null, executionProviders: [], agentVersion });
    const agent = adminAgent(o);
    try {
      await pool(missing, o.enrollConcurrency ?? 8, async (index) => {
        const { token } = await adminRequest(o, 'POST', '/v1/enrollment-tokens', {}, agent) as { token: string };
        let identity;
        for (let attempt = 1; ; attempt++) {
          try {
            identity = await enroll({
              server: o.server, token, facts, name: `sim-${pad(index)}`, ...(o.profile ? { profile: o.profile } : {}),
              allowPlaintext: o.allowPlaintext === true, insecureEnroll: o.insecureEnroll === true,
            });
            break;
          } catch (err) {
            if (errorCode(err) !== 'ENROLL_UNREACHABLE' || attempt >= 3) throw err;
            await new Promise((r) => setTimeout(r, 200 * attempt));
          }
        }
        if (o.tags?.length) await adminRequest(o, 'PATCH', `/v1/devices/${identity.deviceId}`, { tags: o.tags }, agent);
        await store.addIdentity(index, identity);
        add({ index, identity, state: emptyDeviceState() });
      });
    } catch (err) {
      await stop().catch(() => undefined);
      throw err;
    } finally {
      agent?.destroy();
    }
    await store.syncIdentities();
    enrollMs = Date.now() - e0;
    log.info({ count: missing.length, ms: enrollMs }, 'devices enrolled');
  }
  devices.sort((a, b) => a.rec.index - b.rec.index);
  enrolling = false;
  checkReady();

  return {
    devices,
    offlineDeviceIds: offlineIds,
    ready,
    stop,
    stats: () => {
      const states: Record<string, number> = {};
      let connected = 0;
      let subscribed = 0;
      for (const d of devices) {
        if (offline.has(d.rec.index)) continue;
        states[d.reportedState] = (states[d.reportedState] ?? 0) + 1;
        if (d.connected) connected++;
        if (d.subscribed) subscribed++;
      }
      return {
        devices: devices.length, enrolled: missing.length, online: onlineTarget, offline: offline.size, connected, subscribed, states,
        ...ctx.counters, uptimeMs: Date.now() - t0,
      };
    },
  };
}
