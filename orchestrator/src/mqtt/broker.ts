import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { SessionExpiry } from './session-expiry.js';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { checkDeviceCredential, generateKeyPair, isValidDeviceId } from '@edgepack/protocol';
import { FailureThrottle } from '../core/failure-throttle.js';
import { canPublish, canSubscribe } from '../core/mqtt-acl.js';
import type { Store } from '../db/store.js';
import { resolveLimits, type MqttLimits } from '../limits.js';
import { LogDigest } from '../log-digest.js';
import type { Logger } from '../logger.js';
import { GuardedConnection } from './packet-size-guard.js';

export interface Broker {
  aedes: Aedes;
  /** The main listener: MQTTS when `tls` was given, plain MQTT otherwise. */
  server: Server;
  port: number;
  limits: MqttLimits;
  /** The plain MQTT listener next to MQTTS (--allow-plaintext), if any. */
  plainPort?: number;
  /** Swaps the MQTTS certificate for new connections (a renewed server certificate). */
  setSecureContext(tls: { key: string; cert: string }): void;
  close(): Promise<void>;
}

/**
 * MQTT 3.1.1 §3.2.2.3: 4 is "bad user name or password". Every refused credential answers it —
 * an unknown device id, a revoked one, a client id that is not the device id, a bad or stale
 * signature, a client blocked after failing too often — so the answer never tells whether a
 * device id exists (it used to: 2 for a known id with a wrong client id, 4 for an unknown one).
 * The log keeps the real reason.
 */
const REFUSED = 4;
/** §3.2.2.3: 3 is "server unavailable": our fault, not the client's. */
const UNAVAILABLE = 3;

/** Where the broker listens. `tls` makes the main listener MQTTS; `plain` adds a plain MQTT one. */
export interface BrokerListen {
  host: string;
  port: number;
  tls?: { key: string; cert: string };
  plain?: { host: string; port: number };
  /** Session max age (core/session-policy.ts); 0 or absent: sessions last as long as their socket. */
  sessionMaxAgeMs?: number;
}

/** How long a TLS session ticket may be resumed (RFC 8446 §4.6.1 allows up to 7 days). */
const TLS_TICKET_LIFETIME_SEC = 86_400;

/**
 * Messages Aedes has in delivery at once, across all clients (default 100). Each chunk frame
 * holds a slot until it is handed to its device's connection: with 100, a fleet downloading at
 * once would queue behind itself.
 */
const MAX_MESSAGES_IN_DELIVERY = 5000;

function authError(message: string, returnCode: number): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/** The client's IP, as the guarded connection saw it. */
function remoteOf(client: Client): string {
  const conn = (client as unknown as { conn?: unknown }).conn;
  return (conn instanceof GuardedConnection ? conn.remoteAddress : undefined) ?? 'unknown';
}

/**
 * The embedded Aedes broker. Each hook handles one packet kind; the rules themselves are pure
 * functions in core/mqtt-acl.ts, the limits are in limits.ts.
 */
/** The broker reads only a device's key and revocation (Store.getDeviceKey). */
export async function startBroker(opts: { store: Pick<Store, 'getDeviceKey'>; log: Logger; now: () => Date; limits?: Partial<MqttLimits> } & BrokerListen): Promise<Broker> {
  const { store, log, now } = opts;
  const limits = resolveLimits({ mqtt: opts.limits ?? {} }).mqtt;
  const expiry = new SessionExpiry({ maxAgeMs: opts.sessionMaxAgeMs ?? 0, now, log });
  const digest = new LogDigest(log, limits.logDigestMs);
  const failures = new FailureThrottle(limits.authFailures);
  // An unknown device id is checked against this key, so it costs what a known one costs and its
  // refusal comes no sooner: timing tells nothing about which ids exist either.
  const decoy = generateKeyPair().publicKey;

  const aedes = await Aedes.createBroker({
    // Messages in delivery at once (MAX_MESSAGES_IN_DELIVERY).
    concurrency: MAX_MESSAGES_IN_DELIVERY,
    // §3.1.4: a connection that sends no CONNECT in time is closed.
    connectTimeout: limits.connectTimeoutMs,
    maxTopicLevels: limits.maxTopicLevels,
    // QoS 2 messages a client has sent and not yet released (PUBREL): bounded per client.
    maxInflightInbound: limits.maxInflightInbound,
    // A client that stops reading: its writes never wait (GuardedConnection), so this stays a backstop.
    drainTimeout: limits.queueStallMs,
    // CONNECT (§3.1.2.10): Keep Alive is the client's longest silence. 0 ("no keepalive") or
    // more than the ceiling would let a dead or silent client hold its socket indefinitely, so
    // the broker holds every client to the ceiling instead: it closes a connection silent for
    // 1.5 × the ceiling, as §3.1.2.10 has it for the client's own value. Clamped, not refused:
    // MQTT 3.1.1 has no CONNACK code for it, and a conforming client loses nothing.
    preConnect(_client, packet, done) {
      if (!packet.keepalive || packet.keepalive > limits.maxKeepaliveSec) packet.keepalive = limits.maxKeepaliveSec;
      done(null, true);
    },
    // CONNECT (§3.1): username is the device id, password its signed credential. The client id
    // must equal the device id so persistent sessions (§3.1.2.4) belong to it.
    authenticate(client: Client, username, password, done) {
      const deviceId = username ?? '';
      const ip = remoteOf(client);
      const at = now().getTime();
      const refuse = (reason: string, kind: string) => {
        digest.note(`mqtt-auth:${kind}`, `mqtt connect refused: ${reason}`, { kind }, ip);
        failures.fail(`ip:${ip}`, at);
        // Backoff per device id: a refusal for an id that keeps failing (from anywhere) is held
        // back, so guessing at one device is slow even from many addresses. A good credential
        // is never held back: the device itself connects at once.
        const dev = failures.check(`dev:${deviceId}`, at);
        failures.fail(`dev:${deviceId}`, at);
        const delay = dev.blocked ? Math.min(dev.retryAfterMs, limits.maxRefusalDelayMs) : 0;
        if (delay > 0) setTimeout(() => done(authError('not authorized', REFUSED), false), delay).unref();
        else done(authError('not authorized', REFUSED), false);
      };
      // A client IP that failed too often is refused before anything is checked.
      const blocked = failures.check(`ip:${ip}`, at);
      if (blocked.blocked) {
        digest.note('mqtt-auth:blocked', 'mqtt connect refused: client blocked after repeated failed authentication', { retryAfterMs: blocked.retryAfterMs }, ip);
        return done(authError('not authorized', REFUSED), false);
      }
      let device;
      try {
        device = isValidDeviceId(deviceId) ? store.getDeviceKey(deviceId) : undefined;
      } catch (err) {
        log.error({ deviceId, err }, 'mqtt connect: device lookup failed');
        return done(authError('server unavailable', UNAVAILABLE), false);
      }
      const check = checkDeviceCredential(deviceId, password?.toString('utf8') ?? '', device?.publicKey ?? decoy, now(), 'mqtt');
      if (!device) return refuse('unknown device', 'unknown-device');
      if (device.revoked) return refuse('revoked device', 'revoked-device');
      if (!check.ok) return refuse(check.reason, 'bad-credential');
      if (client.id !== deviceId) return refuse('client id is not the device id', 'client-id-mismatch');
      failures.succeed(`dev:${deviceId}`);
      // The session ends a set time after the credential it was opened with was signed (session-expiry.ts).
      expiry.track(client, check.issuedAtMs);
      done(null, true);
    },
    // PUBLISH (§3.3): also covers the will message the broker publishes for the client.
    authorizePublish(client, packet, done) {
      if (!client) return done(null);
      if (packet.topic.length > limits.maxTopicLength) {
        digest.note('mqtt-topic-long', 'publish refused: topic over the length limit', { length: packet.topic.length, limit: limits.maxTopicLength }, client.id);
        return done(new Error(`topic over ${limits.maxTopicLength} characters`));
      }
      const d = canPublish(client.id, packet.topic);
      if (!d.allow) {
        log.warn({ deviceId: client.id, topic: packet.topic.slice(0, 200) }, `publish refused: ${d.reason}`);
        return done(new Error(d.reason));
      }
      done(null);
    },
    // SUBSCRIBE (§3.8): a refused filter gets return code 0x80 in the SUBACK (§3.9.3).
    authorizeSubscribe(client, sub, done) {
      if (sub.topic.length > limits.maxTopicLength) {
        digest.note('mqtt-filter-long', 'subscribe refused: filter over the length limit', { length: sub.topic.length, limit: limits.maxTopicLength }, client.id);
        return done(null, null);
      }
      const d = canSubscribe(client.id, sub.topic);
      if (!d.allow) {
        log.warn({ deviceId: client.id, topic: sub.topic.slice(0, 200) }, `subscribe refused: ${d.reason}`);
        return done(null, null);
      }
      done(null, sub);
    },
  });
  aedes.on('clientError', (client, err) => log.debug({ clientId: client?.id, err: err.message }, 'mqtt client error'));
  aedes.on('connectionError', (client, err) => log.debug({ clientId: client?.id, err: err.message }, 'mqtt connection error'));
  aedes.on('clientDisconnect', (client) => expiry.forget(client));

  const handle = (socket: Socket) => {
    socket.setNoDelay(true);
    aedes.handle(new GuardedConnection(socket, {
      maxPacketBytes: limits.maxPacketBytes,
      maxQueuedBytes: limits.maxQueuedBytes,
      onRefused: (reason) => log.warn({ remote: socket.remoteAddress }, `mqtt connection dropped: ${reason}`),
    }));
  };
  // MQTTS: Aedes reads the decrypted stream, exactly as it reads a plain socket. A session ticket
  // lets a device that reconnects skip the certificate exchange and its signature (a resumed TLS
  // 1.3 handshake still does a fresh key exchange); Node keeps tickets 5 minutes by default,
  // shorter than a session lives (--mqtt-session-max-age-sec), so they are kept a day here.
  const server: Server = opts.tls
    ? createTlsServer({ key: opts.tls.key, cert: opts.tls.cert, handshakeTimeout: 10_000, sessionTimeout: TLS_TICKET_LIFETIME_SEC }, handle)
    : createServer(handle);
  if (opts.tls) {
    // A failed handshake (a client that does not trust us, a port scanner) is the client's problem, not ours.
    server.on('tlsClientError', (err, socket) => log.debug({ remote: socket.remoteAddress, err: err.message }, 'mqtts handshake failed'));
  }
  const plain = opts.tls && opts.plain ? createServer(handle) : undefined;
  const listen = async (srv: Server, port: number, host: string): Promise<number> => {
    // Bounds the sockets an unauthenticated crowd can hold open at once.
    srv.maxConnections = limits.maxConnections;
    await new Promise<void>((resolve, reject) => {
      srv.once('error', reject);
      srv.listen(port, host, () => { srv.off('error', reject); resolve(); });
    });
    const address = srv.address();
    return typeof address === 'object' && address ? address.port : port;
  };
  const port = await listen(server, opts.port, opts.host);
  let plainPort: number | undefined;
  try {
    if (plain) plainPort = await listen(plain, opts.plain!.port, opts.plain!.host);
  } catch (err) {
    await new Promise<void>((resolve) => aedes.close(() => server.close(() => resolve())));
    throw err;
  }
  expiry.start();
  const closeServer = (srv: Server | undefined) => new Promise<void>((resolve) => (srv?.listening ? srv.close(() => resolve()) : resolve()));
  return {
    aedes,
    server,
    port,
    limits,
    ...(plainPort !== undefined ? { plainPort } : {}),
    setSecureContext: (tls) => (server as TlsServer).setSecureContext({ key: tls.key, cert: tls.cert }),
    // Close the broker first so it disconnects clients; net.Server.close waits for open sockets.
    close: () => new Promise<void>((resolve) => {
      expiry.stop();
      digest.close();
      aedes.close(() => { void Promise.all([closeServer(server), closeServer(plain)]).then(() => resolve()); });
    }),
  };
}
