import { createServer, type Server, type Socket } from 'node:net';
import { createServer as createTlsServer, type Server as TlsServer } from 'node:tls';
import { guardSocket } from './packet-size-guard.js';
import { SessionExpiry } from './session-expiry.js';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { checkDeviceCredential, isValidDeviceId } from '@edgepack/protocol';
import { canPublish, canSubscribe } from '../core/mqtt-acl.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../logger.js';

export interface Broker {
  aedes: Aedes;
  /** The main listener: MQTTS when `tls` was given, plain MQTT otherwise. */
  server: Server;
  port: number;
  /** The plain MQTT listener next to MQTTS (--allow-plaintext), if any. */
  plainPort?: number;
  /** Swaps the MQTTS certificate for new connections (a renewed server certificate). */
  setSecureContext(tls: { key: string; cert: string }): void;
  close(): Promise<void>;
}

/** Where the broker listens. `tls` makes the main listener MQTTS; `plain` adds a plain MQTT one. */
export interface BrokerListen {
  host: string;
  port: number;
  tls?: { key: string; cert: string };
  plain?: { host: string; port: number };
  /** Session max age (core/session-policy.ts); 0 or absent: sessions last as long as their socket. */
  sessionMaxAgeMs?: number;
}

/** Devices send small JSON reports; nothing legitimate comes near this. */
const MAX_INBOUND_PACKET_BYTES = 4 * 1024 * 1024;
const MAX_CONNECTIONS = 10_000;
/** How long a TLS session ticket may be resumed (RFC 8446 §4.6.1 allows up to 7 days). */
const TLS_TICKET_LIFETIME_SEC = 86_400;

function authError(message: string, returnCode: number): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/**
 * The embedded Aedes broker. Each hook handles one packet kind; the rules themselves are pure
 * functions in core/mqtt-acl.ts.
 */
export async function startBroker(opts: { store: Store; log: Logger; now: () => Date } & BrokerListen): Promise<Broker> {
  const { store, log, now } = opts;
  const expiry = new SessionExpiry({ maxAgeMs: opts.sessionMaxAgeMs ?? 0, now, log });
  const aedes = await Aedes.createBroker({
    // CONNECT (MQTT 3.1.1 §3.1): username is the device id, password its signed credential.
    // The client id must equal the device id so persistent sessions (§3.1.2.4) belong to it.
    authenticate(client: Client, username, password, done) {
      const deviceId = username ?? '';
      let device;
      try {
        device = isValidDeviceId(deviceId) ? store.getDevice(deviceId) : undefined;
      } catch (err) {
        log.error({ deviceId, err }, 'mqtt connect: device lookup failed');
        return done(authError('server unavailable', 3), false);
      }
      if (!device || device.revokedAt) {
        log.warn({ clientId: client.id, username: deviceId }, 'mqtt connect refused: unknown or revoked device');
        return done(authError('unknown or revoked device', 4), false);
      }
      if (client.id !== deviceId) return done(authError(`client id must be the device id ${deviceId}`, 2), false);
      const check = checkDeviceCredential(deviceId, password?.toString('utf8') ?? '', device.publicKey, now(), 'mqtt');
      if (!check.ok) {
        log.warn({ deviceId, code: check.code }, `mqtt connect refused: ${check.reason}`);
        return done(authError(check.reason, 4), false);
      }
      expiry.track(client, check.issuedAtMs); // tls branch: the session ends a set time after its credential
      done(null, true);
    },
    // PUBLISH (§3.3): also covers the will message the broker publishes for the client.
    authorizePublish(client, packet, done) {
      if (!client) return done(null);
      const d = canPublish(client.id, packet.topic);
      if (!d.allow) {
        log.warn({ deviceId: client.id, topic: packet.topic }, `publish refused: ${d.reason}`);
        return done(new Error(d.reason));
      }
      done(null);
    },
    // SUBSCRIBE (§3.8): a refused filter gets return code 0x80 in the SUBACK (§3.9.3).
    authorizeSubscribe(client, sub, done) {
      const d = canSubscribe(client.id, sub.topic);
      if (!d.allow) {
        log.warn({ deviceId: client.id, topic: sub.topic }, `subscribe refused: ${d.reason}`);
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
    aedes.handle(guardSocket(socket, MAX_INBOUND_PACKET_BYTES, (reason) => {
      log.warn({ remote: socket.remoteAddress }, `mqtt connection dropped: ${reason}`);
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
    srv.maxConnections = MAX_CONNECTIONS;
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
    ...(plainPort !== undefined ? { plainPort } : {}),
    setSecureContext: (tls) => (server as TlsServer).setSecureContext({ key: tls.key, cert: tls.cert }),
    // Close the broker first so it disconnects clients; net.Server.close waits for open sockets.
    close: () => new Promise<void>((resolve) => {
      expiry.stop();
      aedes.close(() => { void Promise.all([closeServer(server), closeServer(plain)]).then(() => resolve()); });
    }),
  };
}
