// The limits on the MQTT door, against the real embedded broker (Aedes on an ephemeral loopback
// port, a real SQLite store) with raw TCP clients, so every packet and every close is the
// broker's own doing: the CONNACK code that no longer tells whether a device id exists
// (finding 6), failed authentication throttled per IP with backoff per device id, the connect
// timeout, the keepalive ceiling, caps on topics and on inbound QoS 2 inflight.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { PROTOCOL_VERSION, createDeviceCredential, deviceTopic, generateKeyPair, type DeviceFacts } from '@edgepack/protocol';
import { openDatabase, type Db } from '@edgepack/orchestrator/db/database.js';
import { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import type { MqttLimits } from '@edgepack/orchestrator/limits.js';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import { tempDir } from '../support/processes.js';
import { connectPacket, rawMqtt, type RawMqtt } from '../support/raw-mqtt.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let db: Db;
let store: Store;
const brokers: Broker[] = [];
const clients: RawMqtt[] = [];
const keys = { known: generateKeyPair(), revoked: generateKeyPair() };
const facts: DeviceFacts = { arch: 'x86_64', platform: 'linux', cpuModel: 'x', cores: 1, ramBytes: 1e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };

before(async () => {
  dir = await tempDir('mqtt-limits');
  db = openDatabase(join(dir.path, 'edgepack.db'));
  store = new Store(db);
  for (const [name, kp] of Object.entries(keys)) store.insertDevice({ id: `dev_${name}`, name, profile: 'x86-64-gateway', publicKey: kp.publicKey, tags: [], facts, createdAt: '2026-01-01T00:00:00.000Z' });
  store.revokeDevice('dev_revoked', '2026-01-02T00:00:00.000Z');
});

after(async () => {
  for (const c of clients) c.end();
  for (const b of brokers) await b.close();
  db?.close();
  await dir?.remove();
});

async function broker(limits: Partial<MqttLimits> = {}, lines: Record<string, any>[] = []): Promise<Broker> {
  const log = createLogger('info', { write: (l: string) => { lines.push(JSON.parse(l)); } });
  const b = await startBroker({ store, log, host: '127.0.0.1', port: 0, now: () => new Date(), limits });
  brokers.push(b);
  return b;
}

async function client(b: Broker, localAddress?: string): Promise<RawMqtt> {
  const c = await rawMqtt(b.port, '127.0.0.1', localAddress);
  clients.push(c);
  return c;
}

const cred = (id: string, secretKey: string) => createDeviceCredential(id, secretKey, new Date());

/** CONNECTs and returns the CONNACK's return code (§3.2.2.3). */
async function connackOf(b: Broker, packet: Record<string, unknown>, localAddress?: string): Promise<{ code: number; ms: number; c: RawMqtt }> {
  const c = await client(b, localAddress);
  const t0 = Date.now();
  c.send(packet);
  const ack = await c.next('connack') as { returnCode: number };
  return { code: ack.returnCode, ms: Date.now() - t0, c };
}

const closedWithin = (c: RawMqtt, ms: number) => Promise.race([c.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);

test('finding 6: the CONNACK code is the same for an unknown device id, a known one with a wrong client id, a bad credential and a revoked device', async () => {
  const b = await broker();
  const known = cred('dev_known', keys.known.secretKey);
  const cases: [string, Record<string, unknown>][] = [
    ['unknown device', connectPacket('dev_nobody', cred('dev_nobody', generateKeyPair().secretKey))],
    ['known device, client id not its own', { ...connectPacket('dev_known', known), clientId: 'someone-else' }],
    ['known device, bad credential', connectPacket('dev_known', cred('dev_known', generateKeyPair().secretKey))],
    ['known device, garbage password', connectPacket('dev_known', 'not-a-credential')],
    ['revoked device, its own key', connectPacket('dev_revoked', cred('dev_revoked', keys.revoked.secretKey))],
    ['not even a device id', connectPacket('../../etc', 'x')],
  ];
  for (const [what, packet] of cases) {
    const r = await connackOf(b, packet);
    assert.equal(r.code, 4, `${what}: MQTT 3.1.1 "bad user name or password"`);
    assert.ok(await closedWithin(r.c, 2000), `${what}: closed after the refusal`);
  }
  assert.equal((await connackOf(b, connectPacket('dev_known', known))).code, 0, 'the device itself connects');
});

test('failed CONNECTs are throttled per client IP: after the limit even a good credential from there is refused, until the block lifts', async () => {
  const lines: Record<string, any>[] = [];
  const b = await broker({ authFailures: { maxFailures: 5, windowMs: 60_000, blockMs: 400, maxBlockMs: 5000 }, logDigestMs: 200 }, lines);
  for (let i = 0; i < 5; i++) assert.equal((await connackOf(b, connectPacket('dev_known', cred('dev_known', generateKeyPair().secretKey)), '127.0.0.21')).code, 4);
  assert.equal((await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey)), '127.0.0.21')).code, 4, 'blocked: refused before checking');
  assert.equal((await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey)), '127.0.0.22')).code, 0, 'another address is not blocked');
  await new Promise((r) => setTimeout(r, 450));
  assert.equal((await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey)), '127.0.0.21')).code, 0, 'the block lifted');
  // Logged as a few lines, not one per attempt, and never with the credential.
  await new Promise((r) => setTimeout(r, 300));
  const refusals = lines.filter((l) => l.msg.startsWith('mqtt connect refused'));
  assert.ok(refusals.length >= 2 && refusals.length <= 4, JSON.stringify(refusals.map((l) => l.msg)));
  assert.ok(refusals.some((l) => l.repeated >= 3));
});

test('failed CONNECTs for one device id back off, from whatever address; the device\'s own good credential is never held back', async () => {
  const b = await broker({ authFailures: { maxFailures: 4, windowMs: 60_000, blockMs: 2000, maxBlockMs: 10_000 }, maxRefusalDelayMs: 600 });
  for (let i = 0; i < 4; i++) {
    const r = await connackOf(b, connectPacket('dev_known', cred('dev_known', generateKeyPair().secretKey)), `127.0.1.${i + 1}`);
    assert.equal(r.code, 4);
    assert.ok(r.ms < 400, `refusal ${i} came at once (${r.ms} ms)`);
  }
  const held = await connackOf(b, connectPacket('dev_known', cred('dev_known', generateKeyPair().secretKey)), '127.0.1.9');
  assert.equal(held.code, 4);
  assert.ok(held.ms >= 550, `the refusal was held back (${held.ms} ms)`);
  const good = await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey)), '127.0.1.10');
  assert.equal(good.code, 0);
  assert.ok(good.ms < 400, `the device connected at once (${good.ms} ms)`);
});

test('a socket that sends no CONNECT is closed after the connect timeout', async () => {
  const b = await broker({ connectTimeoutMs: 300 });
  const silent = await client(b);
  assert.equal(await closedWithin(silent, 2000), true);
});

test('keepalive 0 or over the ceiling is held to the ceiling (§3.1.2.10): a silent client is closed after 1.5 × the ceiling', async () => {
  const b = await broker({ maxKeepaliveSec: 1 });
  for (const keepalive of [0, 3600]) {
    const r = await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey), keepalive));
    assert.equal(r.code, 0, `keepalive ${keepalive} is accepted`);
    const t0 = Date.now();
    assert.equal(await closedWithin(r.c, 4000), true, `keepalive ${keepalive}: a silent client is closed`);
    assert.ok(Date.now() - t0 >= 1000, 'not before the ceiling');
  }
  // A client within the ceiling that pings stays.
  const r = await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey), 1));
  for (let i = 0; i < 4; i++) {
    await new Promise((res) => setTimeout(res, 500));
    r.c.send({ cmd: 'pingreq' });
  }
  assert.equal(r.c.socket.destroyed, false);
  assert.ok(r.c.packets.some((p) => p.cmd === 'pingresp'));
});

test('topics: a filter over the length cap gets 0x80; too many levels, in SUBSCRIBE or PUBLISH, or a topic over the cap, close the connection', async () => {
  const b = await broker({ maxTopicLevels: 8, maxTopicLength: 256 });
  const own = deviceTopic('dev_known', 'notice');
  const connected = async () => (await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey)))).c;
  let c = await connected();
  c.send({ cmd: 'subscribe', messageId: 7, subscriptions: [{ topic: own, qos: 1 }, { topic: `${own}${'z'.repeat(300)}`, qos: 1 }] });
  assert.deepEqual((await c.next('suback') as { granted: number[] }).granted, [1, 128]);
  c.end();
  c = await connected();
  c.send({ cmd: 'subscribe', messageId: 8, subscriptions: [{ topic: `${own}/a/b/c/d/e`, qos: 1 }] });
  assert.equal(await closedWithin(c, 2000), true, '10 levels in a filter');
  c = await connected();
  c.send({ cmd: 'publish', topic: `${deviceTopic('dev_known', 'heartbeat')}/a/b/c/d`, qos: 1, messageId: 9, payload: Buffer.from('{}'), retain: false, dup: false });
  assert.equal(await closedWithin(c, 2000), true, '9 levels in a topic');
  c = await connected();
  c.send({ cmd: 'publish', topic: `${deviceTopic('dev_known', 'heartbeat')}${'h'.repeat(300)}`, qos: 1, messageId: 10, payload: Buffer.from('{}'), retain: false, dup: false });
  assert.equal(await closedWithin(c, 2000), true, 'a 380-character topic');
});

test('inbound QoS 2 messages awaiting PUBREL are capped per client', async () => {
  const b = await broker({ maxInflightInbound: 4 });
  const r = await connackOf(b, connectPacket('dev_known', cred('dev_known', keys.known.secretKey)));
  const hb = JSON.stringify({ v: PROTOCOL_VERSION, deviceId: 'dev_known', uptimeSec: 1, activeBundle: null, agentVersion: 't', at: new Date().toISOString() });
  for (let i = 1; i <= 10; i++) r.c.send({ cmd: 'publish', topic: deviceTopic('dev_known', 'heartbeat'), qos: 2, messageId: i, payload: Buffer.from(hb), retain: false, dup: false });
  assert.equal(await closedWithin(r.c, 2000), true);
  assert.ok(r.c.packets.filter((p) => p.cmd === 'pubrec').length <= 4);
});
