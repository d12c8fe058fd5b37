// Finding 1 of the security issue: one slow device must not stall the broker for everyone.
// A real orchestrator in-process (Aedes, SQLite, blob store, Fastify on loopback). An enrolled
// device subscribes to its own chunk topic, stops reading its socket and asks for ~120 windows
// of chunks; meanwhile another device's heartbeats must still be recorded and POST /v1/rollouts
// must answer promptly. Before the fix every chunk publish waited for the slow socket to drain
// and held one of Aedes' 100 delivery slots, so the shared path stopped until that socket closed.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { MANIFEST_SCHEMA_ID, PROTOCOL_VERSION, createDeviceCredential, deviceTopic, generateKeyPair, type Manifest } from '@edgepack/protocol';
import { BlobStore } from '@edgepack/orchestrator/blob-store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { parseServeConfig } from '@edgepack/orchestrator/config.js';
import { startServer, type RunningServer } from '@edgepack/orchestrator/server.js';
import { tempDir, until } from '../support/processes.js';
import { connectPacket, rawMqtt, type RawMqtt } from '../support/raw-mqtt.js';

const PROFILE = 'x86-64-gateway';
const AT = '2026-01-01T00:00:00.000Z';
let dir: Awaited<ReturnType<typeof tempDir>>;
let server: RunningServer;
const logLines: Record<string, any>[] = [];
const keys = { slow: generateKeyPair(), good: generateKeyPair(), target: generateKeyPair(), acker: generateKeyPair(), reader: generateKeyPair() };
let fileSha = '';
let fileLength = 0;

const facts = { arch: 'x86_64', platform: 'linux', cpuModel: 'x', cores: 4, ramBytes: 8e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 'test' };

async function api(method: string, path: string, body?: unknown): Promise<{ status: number; body: any; ms: number }> {
  const t0 = Date.now();
  const res = await fetch(`http://127.0.0.1:${server.plainHttpPort}${path}`, {
    method, signal: AbortSignal.timeout(20_000),
    headers: { authorization: `Bearer ${server.adminToken}`, ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
  });
  return { status: res.status, body: await res.json().catch(() => null), ms: Date.now() - t0 };
}

before(async () => {
  dir = await tempDir('slow-device');
  const log = createLogger('info', { write: (l: string) => { logLines.push(JSON.parse(l)); } });
  // The raw clients below speak plain MQTT and HTTP: the plain listeners beside TLS (--allow-plaintext).
  const parsed = parseServeConfig(['--data-dir', join(dir.path, 'data'), '--http-host', '127.0.0.1', '--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', '0',
    '--allow-plaintext', '--plain-http-port', '0', '--plain-mqtt-port', '0', '--heartbeat-sec', '15', '--offline-after-sec', '3600', '--max-model-mb', '1'], {});
  if (parsed === 'help') throw new Error('unexpected help');
  server = await startServer({
    ...parsed,
    // A stalled queue is cut after 3 s instead of 10, to keep the test short.
    limits: { mqtt: { queueStallMs: 3000 } },
  }, { log });
  const { store } = server;
  for (const [name, kp] of Object.entries(keys)) store.insertDevice({ id: `dev_${name}`, name, profile: PROFILE, publicKey: kp.publicKey, tags: [], facts, createdAt: AT });
  // A bundle of one 16 MiB file (256 chunks, more than one device may have queued), assigned to the slow device by a rollout.
  const blobs = new BlobStore(join(dir.path, 'data', 'blobs'));
  const bytes = randomBytes(16 << 20);
  fileSha = (await blobs.putBytes(bytes)).sha256;
  fileLength = bytes.length;
  store.insertModel({ id: 'mdl_slow', name: 'slow', version: '1', sha256: fileSha, sizeBytes: fileLength, format: 'onnx', opset: 13, inputs: [], outputs: [], details: {}, createdAt: AT });
  store.insertBuild({ id: 'bld_slow', modelId: 'mdl_slow', profiles: [PROFILE], options: {}, createdAt: AT });
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId: 'bdl_slow', model: { name: 'slow', version: '1', sha256: fileSha }, profile: PROFILE, format: 'onnx', precision: 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: fileSha, length: fileLength }], io: { inputs: [], outputs: [] },
    golden: { file: 'model.onnx', count: 0, maxAbsError: 0 }, runtime: { name: 'onnxruntime', executionProviders: ['cpu'] }, acceptance: {},
    createdAt: AT, expiresAt: '2099-01-01T00:00:00.000Z', keyId: 'k',
  };
  store.insertBundle({ id: 'bdl_slow', buildId: 'bld_slow', profile: PROFILE, manifest, signature: 'x', createdAt: AT });
  store.updateArtifact('bld_slow', { profile: PROFILE, status: 'built', format: 'onnx', precision: 'fp32', bundleId: 'bdl_slow', sizeBytes: fileLength, reason: null, details: {} });
  store.setBuildStatus('bld_slow', 'succeeded', null, AT);
  store.insertRollout({ id: 'rol_slow', buildId: 'bld_slow', status: 'running', target: { deviceIds: ['dev_slow'] }, createdAt: AT, finishedAt: null },
    [{ rolloutId: 'rol_slow', deviceId: 'dev_slow', groupPosition: 0, bundleId: 'bdl_slow', state: 'downloading', code: null, reason: null, result: null, updatedAt: AT }], [0]);
  store.upsertAction({ rolloutId: 'rol_slow', deviceId: 'dev_acker', groupPosition: 0, bundleId: 'bdl_slow', state: 'downloading', code: null, reason: null, result: null, updatedAt: AT });
  // A bundle whose file the blob store has lost, assigned to dev_reader.
  const lost = 'f'.repeat(64);
  store.insertBundle({ id: 'bdl_lost', buildId: 'bld_slow', profile: PROFILE, manifest: { ...manifest, bundleId: 'bdl_lost', files: [{ path: 'model.onnx', role: 'model', sha256: lost, length: 1000 }] }, signature: 'x', createdAt: AT });
  store.upsertAction({ rolloutId: 'rol_slow', deviceId: 'dev_reader', groupPosition: 0, bundleId: 'bdl_lost', state: 'downloading', code: null, reason: null, result: null, updatedAt: AT });
});

after(async () => {
  await server?.close();
  await dir?.remove();
});

function goodDevice(id = 'dev_good', secretKey = keys.good.secretKey): Promise<mqtt.MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({
      host: '127.0.0.1', port: server.plainMqttPort, clientId: id, username: id, password: createDeviceCredential(id, secretKey, new Date()),
      reconnectPeriod: 0, connectTimeout: 5000,
    });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

const heartbeat = (uptimeSec: number) => JSON.stringify({ v: PROTOCOL_VERSION, deviceId: 'dev_good', uptimeSec, activeBundle: null, agentVersion: 'test', at: new Date().toISOString() });

test('a device that stops reading its socket and floods chunk requests stalls nobody else, and is cut off', async () => {
  const good = await goodDevice();
  let slow: RawMqtt | undefined;
  try {
    slow = await rawMqtt(server.plainMqttPort!);
    slow.send(connectPacket('dev_slow', createDeviceCredential('dev_slow', keys.slow.secretKey, new Date())));
    assert.equal((await slow.next('connack') as { returnCode: number }).returnCode, 0);
    slow.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: deviceTopic('dev_slow', 'chunk'), qos: 1 }, { topic: deviceTopic('dev_slow', 'notice'), qos: 1 }] });
    await slow.next('suback');
    // Stop reading: from here the broker's writes to this socket back up in the kernel and then in Node.
    slow.socket.pause();
    for (let i = 0; i < 120; i++) {
      slow.send({ cmd: 'publish', topic: deviceTopic('dev_slow', 'chunk-request'), qos: 0, retain: false, dup: false,
        payload: Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, bundleId: 'bdl_slow', sha256: fileSha, index: (i * 32) % 256, count: 64 })) });
    }
    // Let the flood reach the broker and the socket buffers fill.
    await new Promise((r) => setTimeout(r, 1500));

    // Another device's heartbeat is still processed, promptly.
    const t0 = Date.now();
    good.publish(deviceTopic('dev_good', 'heartbeat'), heartbeat(4242), { qos: 1 });
    await until('the other device\'s heartbeat is recorded', async () => server.store.getDevice('dev_good')?.lastHeartbeat?.uptimeSec === 4242, 5000, 20);
    assert.ok(Date.now() - t0 < 3000, `heartbeat took ${Date.now() - t0} ms`);

    // An API call that publishes to the broker answers promptly.
    const r = await api('POST', '/v1/rollouts', { buildId: 'bld_slow', target: { deviceIds: ['dev_target'] } });
    assert.equal(r.status, 201, JSON.stringify(r.body));
    assert.ok(r.ms < 3000, `POST /v1/rollouts took ${r.ms} ms`);

    // Beyond the per-device limit the requests were refused, and the device whose queue stayed full was disconnected.
    // (The slow socket is paused, so it would not even notice its own close: ask the orchestrator.)
    await until('the slow device is disconnected', async () => logLines.some((l) => /disconnected: its queue stayed full/.test(l.msg) && l.deviceId === 'dev_slow')
      && server.store.getDevice('dev_slow')?.status === 'offline', 20_000, 100);
    assert.ok(logLines.some((l) => /chunk requests refused/.test(l.msg) && l.deviceId === 'dev_slow'), 'the refusals are logged');
    // And the broker still serves: the good device's next heartbeat is recorded too.
    good.publish(deviceTopic('dev_good', 'heartbeat'), heartbeat(4343), { qos: 1 });
    await until('a later heartbeat is recorded', async () => server.store.getDevice('dev_good')?.lastHeartbeat?.uptimeSec === 4343, 5000, 20);
  } catch (err) {
    for (const l of logLines.filter((x) => x.level >= 40).slice(-20)) console.error(JSON.stringify(l));
    throw err;
  } finally {
    slow?.end();
    good.end(true);
  }
});

test('a device that reads but never acknowledges: at most the inflight cap is sent, requests past its queue get CHUNK_REQUESTS_LIMITED, and it is cut off', async () => {
  const c = await rawMqtt(server.plainMqttPort!);
  try {
    c.send(connectPacket('dev_acker', createDeviceCredential('dev_acker', keys.acker.secretKey, new Date())));
    assert.equal((await c.next('connack') as { returnCode: number }).returnCode, 0);
    c.send({ cmd: 'subscribe', messageId: 1, subscriptions: [{ topic: deviceTopic('dev_acker', 'chunk'), qos: 1 }, { topic: deviceTopic('dev_acker', 'notice'), qos: 1 }] });
    await c.next('suback');
    for (const index of [0, 64, 128]) {
      c.send({ cmd: 'publish', topic: deviceTopic('dev_acker', 'chunk-request'), qos: 0, retain: false, dup: false, payload: Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, bundleId: 'bdl_slow', sha256: fileSha, index, count: 64 })) });
    }
    const noticePacket = await until('a notice', async () => c.packets.find((p) => p.cmd === 'publish' && (p as { topic: string }).topic === deviceTopic('dev_acker', 'notice')), 5000, 20);
    const notice = JSON.parse((noticePacket as unknown as { payload: Buffer }).payload.toString());
    assert.equal(notice.code, 'CHUNK_REQUESTS_LIMITED');
    assert.equal(notice.bundleId, 'bdl_slow');
    await c.closed; // disconnected once its queue made no progress for the stall time
    const chunks = c.packets.filter((p) => p.cmd === 'publish' && (p as { topic: string }).topic === deviceTopic('dev_acker', 'chunk'));
    assert.equal(chunks.length, 64, 'exactly the inflight cap was sent without acknowledgements');
    assert.ok(logLines.some((l) => /disconnected: its queue stayed full/.test(l.msg) && l.deviceId === 'dev_acker' && l.unacked === 64));
  } finally {
    c.end();
  }
});

test('finding 6: a chunk notice never carries the server\'s blob path, only our code and words', async () => {
  const reader = await goodDevice('dev_reader', keys.reader.secretKey);
  try {
    await reader.subscribeAsync(deviceTopic('dev_reader', 'notice'), { qos: 1 });
    const notices: any[] = [];
    reader.on('message', (_t, p) => notices.push(JSON.parse(p.toString())));
    reader.publish(deviceTopic('dev_reader', 'chunk-request'), JSON.stringify({ v: PROTOCOL_VERSION, bundleId: 'bdl_lost', sha256: 'f'.repeat(64), index: 0, count: 1 }), { qos: 1 });
    const n = await until('the notice', async () => notices[0], 5000, 20);
    assert.equal(n.code, 'BLOB_MISSING');
    assert.equal(n.bundleId, 'bdl_lost');
    assert.ok(!n.message.includes(dir.path) && !/ENOENT|blobs\/|\/tmp/.test(n.message), n.message);
    assert.ok(logLines.some((l) => l.msg === 'serving chunks failed' && l.level === 50 && l.deviceId === 'dev_reader'), 'the details are in the log');
  } finally {
    reader.end(true);
  }
});
