// A bare MQTT 3.1.1 client over a raw TCP socket, for tests that must control the socket itself:
// stop reading it (a slow device), never send CONNECT, or look at the exact CONNACK return code.
// Packets are encoded and parsed with mqtt-packet (the codec mqtt.js and Aedes use).
import { connect, type Socket } from 'node:net';
import mqttPacket from 'mqtt-packet';

export interface RawMqtt {
  socket: Socket;
  /** Every packet the broker sent, in order (while the socket is read). */
  packets: mqttPacket.Packet[];
  /** Resolves with the next packet of `cmd` (one already received counts). */
  next: (cmd: string, timeoutMs?: number) => Promise<mqttPacket.Packet>;
  send: (packet: Record<string, unknown>) => boolean;
  closed: Promise<void>;
  end: () => void;
}

/** `localAddress` (another 127.x address) makes the client look like a different host to the broker. */
export async function rawMqtt(port: number, host = '127.0.0.1', localAddress?: string): Promise<RawMqtt> {
  const socket = connect({ port, host, ...(localAddress ? { localAddress } : {}) });
  await new Promise<void>((resolve, reject) => { socket.once('connect', () => resolve()); socket.once('error', reject); });
  socket.on('error', () => undefined);
  const parser = mqttPacket.parser({ protocolVersion: 4 });
  const packets: mqttPacket.Packet[] = [];
  const waiters: { cmd: string; resolve: (p: mqttPacket.Packet) => void; from: number }[] = [];
  parser.on('packet', (p: mqttPacket.Packet) => {
    packets.push(p);
    for (const w of [...waiters]) {
      if (w.cmd === p.cmd) { waiters.splice(waiters.indexOf(w), 1); w.resolve(p); }
    }
  });
  socket.on('data', (d) => parser.parse(d));
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  let taken = 0;
  return {
    socket,
    packets,
    closed,
    next: (cmd, timeoutMs = 5000) => {
      const i = packets.findIndex((p, k) => k >= taken && p.cmd === cmd);
      if (i >= 0) { taken = i + 1; return Promise.resolve(packets[i]!); }
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no ${cmd} within ${timeoutMs} ms`)), timeoutMs);
        const w = { cmd, from: packets.length, resolve: (p: mqttPacket.Packet) => { clearTimeout(t); taken = packets.indexOf(p) + 1; resolve(p); } };
        waiters.push(w);
        void closed.then(() => { clearTimeout(t); reject(new Error(`socket closed before ${cmd}`)); });
      });
    },
    send: (packet) => socket.write(mqttPacket.generate(packet as unknown as mqttPacket.Packet)),
    end: () => socket.destroy(),
  };
}

/** CONNECT as a device: client id and username are the device id, the password its credential. */
export function connectPacket(deviceId: string, password: string, keepalive = 60): Record<string, unknown> {
  return { cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: deviceId, keepalive, username: deviceId, password: Buffer.from(password) };
}
