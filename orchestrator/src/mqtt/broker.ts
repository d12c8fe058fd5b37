import { createServer, type Server } from 'node:net';
import { guardSocket } from './packet-size-guard.js';
import { Aedes, type AuthenticateError, type Client } from 'aedes';
import { checkDeviceCredential, isValidDeviceId } from '@edgepack/protocol';
import { canPublish, canSubscribe } from '../core/mqtt-acl.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../logger.js';

export interface Broker {
  aedes: Aedes;
  server: Server;
  port: number;
  close(): Promise<void>;
}

/** Devices send small JSON reports; nothing legitimate comes near this. */
const MAX_INBOUND_PACKET_BYTES = 4 * 1024 * 1024;
const MAX_CONNECTIONS = 10_000;
const MAX_MESSAGES_IN_DELIVERY = 5000;

function authError(message: string, returnCode: number): AuthenticateError {
  return Object.assign(new Error(message), { returnCode }) as AuthenticateError;
}

/**
 * The embedded Aedes broker. Each hook handles one packet kind; the rules themselves are pure
 * functions in core/mqtt-acl.ts.
 */
/** The broker reads only a device's key and revocation (Store.getDeviceKey). */
export async function startBroker(opts: { store: Pick<Store, 'getDeviceKey'>; log: Logger; host: string; port: number; now: () => Date }): Promise<Broker> {
  const { store, log, now } = opts;
  const aedes = await Aedes.createBroker({
    // Messages Aedes has in delivery at once, across all clients (default 100). Each chunk frame
    // holds a slot until it is written to its device's socket: with 100, a hundred slow sockets
    // would hold up the frames of a whole fleet downloading at once.
    concurrency: MAX_MESSAGES_IN_DELIVERY,
    // CONNECT (MQTT 3.1.1 §3.1): username is the device id, password its signed credential.
    // The client id must equal the device id so persistent sessions (§3.1.2.4) belong to it.
    authenticate(client: Client, username, password, done) {
      const deviceId = username ?? '';
      let device;
      try {
        device = isValidDeviceId(deviceId) ? store.getDeviceKey(deviceId) : undefined;
      } catch (err) {
        log.error({ deviceId, err }, 'mqtt connect: device lookup failed');
        return done(authError('server unavailable', 3), false);
      }
      if (!device || device.revoked) {
        log.warn({ clientId: client.id, username: deviceId }, 'mqtt connect refused: unknown or revoked device');
        return done(authError('unknown or revoked device', 4), false);
      }
      if (client.id !== deviceId) return done(authError(`client id must be the device id ${deviceId}`, 2), false);
      const check = checkDeviceCredential(deviceId, password?.toString('utf8') ?? '', device.publicKey, now(), 'mqtt');
      if (!check.ok) {
        log.warn({ deviceId, code: check.code }, `mqtt connect refused: ${check.reason}`);
        return done(authError(check.reason, 4), false);
      }
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

  const server = createServer((socket) => {
    socket.setNoDelay(true);
    aedes.handle(guardSocket(socket, MAX_INBOUND_PACKET_BYTES, (reason) => {
      log.warn({ remote: socket.remoteAddress }, `mqtt connection dropped: ${reason}`);
    }));
  });
  // Bounds the sockets an unauthenticated crowd can hold open at once.
  server.maxConnections = MAX_CONNECTIONS;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => { server.off('error', reject); resolve(); });
  });
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : opts.port;
  return {
    aedes,
    server,
    port,
    // Close the broker first so it disconnects clients; net.Server.close waits for open sockets.
    close: () => new Promise<void>((resolve) => {
      aedes.close(() => server.close(() => resolve()));
    }),
  };
}
