// What must be refused, with real parts: tampered bundles, bad signatures, foreign MQTT
// topics, hostile payloads, malformed uploads and a kill -9 in the middle of an install.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect as tlsConnect } from 'node:tls';
import Database from 'better-sqlite3';
import mqtt from 'mqtt';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { PROTOCOL_VERSION, createDeviceCredential, deviceTopic, generateKeyPair, signCanonical } from '@edgepack/protocol';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let agent: Proc;
let deviceId: string;
let firstBundle: string;
let version = 0;

before(async () => {
  dir = await tempDir('neg');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'));
  agent = await startAgent(orch, join(dir.path, 'agent'), { name: 'victim', profile: 'x86-64-gateway' });
  deviceId = (await agent.event('started')).deviceId as string;
  const first = await deploy(buildTinyMlpModel({ seed: 100 }));
  assert.equal(first.device.state, 'active', JSON.stringify(first.device));
  firstBundle = first.bundleId;
});

after(async () => {
  await agent?.kill();
  await orch?.stop();
  await dir?.remove();
});

/** Uploads and builds a model for the gateway profile; returns the bundle built for it. */
async function buildFor(bytes: Uint8Array, extra: object = {}): Promise<{ buildId: string; bundleId: string; modelSha: string }> {
  version++;
  const up = await orch.api('POST', `/v1/models?name=neg&version=${version}`, bytes);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'], ...extra });
  const build = await until('build done', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status === 'succeeded' && r.body.build;
  });
  // The bundle's model file: the upload itself for fp32, a new blob for a quantized variant.
  const manifest = (await orch.api('GET', `/v1/bundles/${build.artifacts[0].bundleId}`)).body.bundle.manifest;
  return { buildId: build.id, bundleId: build.artifacts[0].bundleId, modelSha: manifest.files.find((f: any) => f.role === 'model').sha256 };
}

async function rollOut(buildId: string): Promise<{ rolloutId: string; device: any }> {
  const r = await orch.api('POST', '/v1/rollouts', { buildId, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const done = await until('rollout finished', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
  return { rolloutId: done.id, device: done.devices[0] };
}

async function deploy(bytes: Uint8Array) {
  const b = await buildFor(bytes);
  return { ...(await rollOut(b.buildId)), bundleId: b.bundleId };
}

async function activeBundle(): Promise<string | null> {
  return (await orch.api('GET', `/v1/devices/${deviceId}`)).body.device.activeBundle;
}

test('a tampered bundle file is refused, the previous model stays active, and the API says why', async () => {
  const b = await buildFor(buildTinyMlpModel({ seed: 101 }));
  const blob = join(orch.dataDir, 'blobs', b.modelSha);
  const original = await readFile(blob);
  const evil = Buffer.from(original);
  evil[evil.length - 10] ^= 0xff; // a flipped weight byte: same length, different hash
  await writeFile(blob, evil);
  try {
    const { device } = await rollOut(b.buildId);
    assert.equal(device.state, 'failed');
    assert.equal(device.code, 'FILE_HASH_MISMATCH');
    assert.match(device.reason, /sha256/);
  } finally {
    await writeFile(blob, original);
  }
  assert.equal(await activeBundle(), firstBundle);
  const state = JSON.parse(await readFile(join(dir.path, 'agent', 'active.json'), 'utf8'));
  assert.equal(state.bundleId, firstBundle);
});

test('a bundle with a bad signature is refused before download; the previous model stays active', async () => {
  const b = await buildFor(buildTinyMlpModel({ seed: 102 }));
  // Re-sign the manifest with a key the device does not trust, straight in the orchestrator's database.
  const db = new Database(join(orch.dataDir, 'edgepack.db'));
  try {
    const row = db.prepare('SELECT manifest FROM bundles WHERE id = ?').get(b.bundleId) as { manifest: string };
    db.prepare('UPDATE bundles SET signature = ? WHERE id = ?').run(signCanonical(JSON.parse(row.manifest), generateKeyPair().secretKey), b.bundleId);
  } finally {
    db.close();
  }
  const { device } = await rollOut(b.buildId);
  assert.equal(device.state, 'failed');
  assert.equal(device.code, 'SIGNATURE_INVALID');
  assert.equal(await activeBundle(), firstBundle);
  // Nothing of it was fetched: the refusal came before any chunk was asked for.
  const downloads = await readdir(join(dir.path, 'agent', 'downloads')).catch(() => [] as string[]);
  assert.ok(!downloads.some((f) => f.startsWith(b.modelSha)), `downloads: ${downloads.join(', ')}`);
});

test('a bundle that misses its latency budget on the device is rolled back, with the figures that failed it', async () => {
  // A budget no real device can meet: the install, benchmark and rollback all run for real.
  const b = await buildFor(buildTinyMlpModel({ seed: 104 }), { acceptance: { p95LatencyMs: 0.000001 } });
  const { device } = await rollOut(b.buildId);
  assert.equal(device.state, 'rolled_back');
  assert.equal(device.code, 'LATENCY_BUDGET_EXCEEDED');
  assert.ok(device.result.latencyMs.p95 > 0.000001);
  assert.equal(device.result.golden.passed, true);
  assert.equal(await activeBundle(), firstBundle);
  const bundles = await readdir(join(dir.path, 'agent', 'bundles'));
  assert.ok(!bundles.includes(b.bundleId), 'the refused bundle is removed from disk');
});

test('a malformed upload gets 400 with a reason, and nothing is stored', async () => {
  const before = (await readdir(join(orch.dataDir, 'blobs'))).length;
  const r = await orch.api('POST', '/v1/models?name=junk&version=1', new TextEncoder().encode('this is not an onnx model at all'));
  assert.equal(r.status, 400);
  assert.equal(r.body.error.code, 'MODEL_INVALID');
  assert.ok(r.body.error.message.length > 10);
  const truncated = buildTinyMlpModel({ seed: 5 }).subarray(0, 2000);
  const t = await orch.api('POST', '/v1/models?name=junk&version=2', truncated);
  assert.equal(t.status, 400);
  assert.equal(t.body.error.code, 'MODEL_INVALID');
  assert.equal((await readdir(join(orch.dataDir, 'blobs'))).length, before);
  assert.equal((await orch.api('GET', '/v1/models')).body.models.filter((m: any) => m.name === 'junk').length, 0);
});

test('an upload abandoned half-way leaves no temp file behind', async () => {
  const { request } = await import('node:https');
  const req = request(`${orch.url}/v1/models?name=abandoned&version=1`, {
    method: 'POST', ca: orch.caCertificate,
    headers: { authorization: `Bearer ${orch.adminToken}`, 'content-type': 'application/octet-stream', 'content-length': String(4 << 20) },
  });
  req.on('error', () => undefined);
  req.write(Buffer.alloc(256 * 1024, 1));
  await until('part of the upload on disk', async () => (await readdir(join(orch.dataDir, 'blobs', 'tmp'))).length > 0, 5000);
  req.destroy();
  await until('temp file removed', async () => (await readdir(join(orch.dataDir, 'blobs', 'tmp'))).length === 0, 5000);
  assert.equal((await orch.api('GET', '/v1/health')).status, 200);
});

/** Enrolls a second device by hand, with a keypair this test holds, to act as the attacker. */
async function enrollIntruder(): Promise<{ id: string; secretKey: string }> {
  const keys = generateKeyPair();
  const token = (await orch.api('POST', '/v1/enrollment-tokens', {})).body.token;
  const facts = { arch: 'x86_64', platform: 'test', cpuModel: 'test', cores: 1, ramBytes: 4e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 'test' };
  const r = await orch.api('POST', '/v1/enroll', { v: PROTOCOL_VERSION, token, publicKey: keys.publicKey, facts, name: 'intruder' });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return { id: r.body.deviceId, secretKey: keys.secretKey };
}

function connect(id: string, password: string): Promise<mqtt.MqttClient> {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ ...orch.mqttOptions(), clientId: id, username: id, password, reconnectPeriod: 0, connectTimeout: 5000 });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => { c.end(true); reject(err); });
  });
}

test('MQTT: a device cannot subscribe to or publish on another device\'s topics, nor connect with a bad credential', async () => {
  const intruder = await enrollIntruder();
  await assert.rejects(connect(intruder.id, createDeviceCredential(intruder.id, generateKeyPair().secretKey, new Date())), /Bad username or password|Not authorized/i);
  await assert.rejects(connect(deviceId, createDeviceCredential(deviceId, intruder.secretKey, new Date())), /Bad username or password|Not authorized/i);

  const c = await connect(intruder.id, createDeviceCredential(intruder.id, intruder.secretKey, new Date()));
  try {
    const topics = [deviceTopic(deviceId, 'desired'), 'edgepack/v1/devices/+/desired', '#', deviceTopic(intruder.id, 'desired')];
    // mqtt.js rejects when any filter is refused; the SUBACK's return codes are on the error.
    const suback = await c.subscribeAsync(topics, { qos: 1 }).then(
      () => assert.fail('the SUBACK should refuse the foreign filters'),
      (err: { packet?: { granted: number[] } }) => err.packet!.granted,
    );
    const byTopic = Object.fromEntries(topics.map((t, i) => [t, suback[i]]));
    // MQTT 3.1.1 §3.9.3: 0x80 marks a refused subscription.
    assert.equal(byTopic[deviceTopic(deviceId, 'desired')], 128);
    assert.equal(byTopic['edgepack/v1/devices/+/desired'], 128);
    assert.equal(byTopic['#'], 128);
    assert.equal(byTopic[deviceTopic(intruder.id, 'desired')], 1);
  } finally {
    c.end(true);
  }

  // Publishing a forged "failed" report for the victim gets the intruder disconnected and changes nothing.
  const c2 = await connect(intruder.id, createDeviceCredential(intruder.id, intruder.secretKey, new Date()));
  const closed = new Promise<void>((resolve) => c2.once('close', () => resolve()));
  const latest = (await orch.api('GET', '/v1/rollouts')).body.rollouts.at(-1);
  c2.publish(deviceTopic(deviceId, 'status'), JSON.stringify({ v: 1, deviceId, rolloutId: latest.id, bundleId: 'x', state: 'failed', at: new Date().toISOString() }), { qos: 1 });
  await closed;
  c2.end(true);
  assert.equal(await activeBundle(), firstBundle);
  assert.equal((await orch.api('GET', `/v1/devices/${deviceId}`)).body.device.status, 'online');
});

test('MQTT: hostile payloads on a device\'s own topics get a notice with a reason and crash nothing', async () => {
  const intruder = await enrollIntruder();
  const c = await connect(intruder.id, createDeviceCredential(intruder.id, intruder.secretKey, new Date()));
  try {
    await c.subscribeAsync(deviceTopic(intruder.id, 'notice'), { qos: 1 });
    const notices: any[] = [];
    c.on('message', (_t, p) => notices.push(JSON.parse(p.toString())));
    c.publish(deviceTopic(intruder.id, 'status'), 'not json {{{', { qos: 1 });
    c.publish(deviceTopic(intruder.id, 'heartbeat'), JSON.stringify({ v: 1, deviceId: intruder.id }), { qos: 1 });
    c.publish(deviceTopic(intruder.id, 'chunk-request'), JSON.stringify({ v: 1, bundleId: firstBundle, sha256: 'a'.repeat(64), index: 0, count: 1 }), { qos: 1 });
    c.publish(deviceTopic(intruder.id, 'heartbeat'), Buffer.alloc(2 << 20, 0x7b), { qos: 1 });
    c.publish(deviceTopic(intruder.id, 'status'), JSON.stringify({ v: 99, deviceId: intruder.id }), { qos: 1 });
    const got = await until('five notices', async () => notices.length >= 5 && notices, 10_000);
    const codes = got.map((n) => n.code).sort();
    assert.deepEqual(codes, ['BUNDLE_NOT_ASSIGNED', 'MESSAGE_INVALID', 'MESSAGE_INVALID', 'MESSAGE_NOT_JSON', 'MESSAGE_TOO_LARGE']);
    for (const n of got) assert.ok(n.message.length > 0);
  } finally {
    c.end(true);
  }
  // An unauthenticated client announcing a 200 MB CONNECT is cut off at the fixed header.
  const raw = tlsConnect({ host: '127.0.0.1', port: orch.mqttPort, ca: orch.caCertificate });
  await new Promise<void>((resolve) => raw.once('secureConnect', () => resolve()));
  const cut = new Promise<void>((resolve) => raw.once('close', () => resolve()));
  raw.write(Buffer.from([0x10, 0x80, 0x80, 0x80, 0x64, 0x00, 0x04]));
  await cut;
  await until('refusal logged', async () => orch.proc.stderr().includes('mqtt connection dropped: packet of 209715200 bytes'), 5000);
  // Still serving.
  assert.equal((await orch.api('GET', '/v1/health')).status, 200);
  assert.equal(orch.proc.child.exitCode, null);
});

test('kill -9 during install: after restart the agent finishes the install cleanly', async () => {
  await agent.kill('SIGTERM');
  const faulty = await startAgent(orch, join(dir.path, 'agent'), { enroll: false, env: { EDGEPACK_AGENT_FAULTS: 'kill-during-install' } });
  const b = await buildFor(buildTinyMlpModel({ seed: 103 }));
  const r = await orch.api('POST', '/v1/rollouts', { buildId: b.buildId, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  assert.equal(r.status, 201);
  await faulty.exited;
  assert.equal(faulty.child.signalCode, 'SIGKILL');
  const state = JSON.parse(await readFile(join(dir.path, 'agent', 'state.json'), 'utf8'));
  assert.equal(state.action.phase, 'installing');
  assert.ok((await readdir(join(dir.path, 'agent', 'bundles'))).includes(`.staging-${b.bundleId}`), 'the crash left a half-staged bundle');
  assert.equal(JSON.parse(await readFile(join(dir.path, 'agent', 'active.json'), 'utf8')).bundleId, firstBundle);

  agent = await startAgent(orch, join(dir.path, 'agent'), { enroll: false });
  const done = await until('rollout finished after restart', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
  assert.equal(done.devices[0].state, 'active', JSON.stringify(done.devices[0]));
  assert.equal(await activeBundle(), b.bundleId);
  const left = await readdir(join(dir.path, 'agent', 'bundles'));
  assert.ok(!left.some((e) => e.startsWith('.staging-')), `left behind: ${left.join(', ')}`);
  assert.ok(left.includes(firstBundle) || left.length <= 2);
  const prev = JSON.parse(await readFile(join(dir.path, 'agent', 'previous.json'), 'utf8'));
  assert.ok(prev.bundleId, 'the replaced bundle is kept as previous');
});

// A power cut right after each phase is persisted, before it is reported or acted on.
for (const phase of ['verifying', 'benchmarking', 'committing', 'done']) {
  test(`kill -9 right after entering ${phase}: the restarted agent converges to active`, async () => {
    await agent.kill('SIGTERM');
    const faulty = await startAgent(orch, join(dir.path, 'agent'), { enroll: false, env: { EDGEPACK_AGENT_FAULTS: `kill-after-${phase}` } });
    const b = await buildFor(buildTinyMlpModel({ seed: 200 + version }));
    const r = await orch.api('POST', '/v1/rollouts', { buildId: b.buildId, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
    await faulty.exited;
    assert.equal(faulty.child.signalCode, 'SIGKILL');
    assert.equal(JSON.parse(await readFile(join(dir.path, 'agent', 'state.json'), 'utf8')).action.phase, phase);
    agent = await startAgent(orch, join(dir.path, 'agent'), { enroll: false });
    const done = await until('rollout finished after restart', async () => {
      const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
      return g.body.rollout.status !== 'running' && g.body.rollout;
    }, 60_000);
    assert.equal(done.devices[0].state, 'active', JSON.stringify(done.devices[0]));
    assert.equal(await activeBundle(), b.bundleId);
    assert.equal(JSON.parse(await readFile(join(dir.path, 'agent', 'active.json'), 'utf8')).bundleId, b.bundleId);
  });
}

test('a device cannot claim another device\'s bundle by reporting it as active', async () => {
  const intruder = await enrollIntruder();
  const c = await connect(intruder.id, createDeviceCredential(intruder.id, intruder.secretKey, new Date()));
  try {
    await c.subscribeAsync(deviceTopic(intruder.id, 'notice'), { qos: 1 });
    const notices: any[] = [];
    c.on('message', (_t, p) => notices.push(JSON.parse(p.toString())));
    c.publish(deviceTopic(intruder.id, 'heartbeat'), JSON.stringify({ v: 1, deviceId: intruder.id, uptimeSec: 1, activeBundle: firstBundle, agentVersion: 'x', at: new Date().toISOString() }), { qos: 1 });
    await until('heartbeat recorded', async () => (await orch.api('GET', `/v1/devices/${intruder.id}`)).body.device.lastHeartbeat);
    const auth = { authorization: `Device ${intruder.id}:${createDeviceCredential(intruder.id, intruder.secretKey, new Date(), 'http')}` };
    const http = await orch.fetch(`${orch.url}/v1/bundles/${firstBundle}`, { headers: auth });
    assert.equal(http.status, 403);
    const manifest = (await orch.api('GET', `/v1/bundles/${firstBundle}`)).body.bundle.manifest;
    c.publish(deviceTopic(intruder.id, 'chunk-request'), JSON.stringify({ v: 1, bundleId: firstBundle, sha256: manifest.files[0].sha256, index: 0, count: 1 }), { qos: 1 });
    const n = await until('refusal notice', async () => notices.find((x) => x.bundleId === firstBundle), 10_000);
    assert.equal(n.code, 'BUNDLE_NOT_ASSIGNED');
  } finally {
    c.end(true);
  }
});

test('one open rollout per device and stream: a second one is a 409 listing the device, and supersede: true takes over', async () => {
  await agent.kill('SIGTERM'); // offline: its member of the first rollout stays waiting
  const a = await buildFor(buildTinyMlpModel({ seed: 301 }));
  const b = await buildFor(buildTinyMlpModel({ seed: 302 }));
  const plan = { target: { deviceIds: [deviceId] }, stream: 'neg', ...ONE_WAVE };
  const r1 = await orch.api('POST', '/v1/rollouts', { buildId: a.buildId, ...plan });
  assert.equal(r1.status, 201, JSON.stringify(r1.body));
  const conflict = await orch.api('POST', '/v1/rollouts', { buildId: b.buildId, ...plan });
  assert.equal(conflict.status, 409, JSON.stringify(conflict.body));
  assert.equal(conflict.body.error.code, 'ROLLOUT_CONFLICT');
  assert.match(conflict.body.error.message, new RegExp(`${deviceId} \\(${r1.body.rollout.id}\\)`));
  const r2 = await orch.api('POST', '/v1/rollouts', { buildId: b.buildId, ...plan, supersede: true });
  assert.equal(r2.status, 201, JSON.stringify(r2.body));
  const first = (await orch.api('GET', `/v1/rollouts/${r1.body.rollout.id}`)).body.rollout;
  assert.equal(first.devices[0].outcome, 'cancelled');
  assert.equal(first.devices[0].code, 'SUPERSEDED');
  assert.match(first.devices[0].reason, new RegExp(r2.body.rollout.id));
  agent = await startAgent(orch, join(dir.path, 'agent'), { enroll: false });
  const done = await until('newer rollout finished', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r2.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
  assert.equal(done.devices[0].state, 'active');
  assert.equal(await activeBundle(), b.bundleId);
});

test('a revoked device is disconnected at once and cannot connect again', async () => {
  const intruder = await enrollIntruder();
  const c = await connect(intruder.id, createDeviceCredential(intruder.id, intruder.secretKey, new Date()));
  const closed = new Promise<void>((resolve) => c.once('close', () => resolve()));
  const before = (await orch.api('GET', '/v1/devices')).body.devices.length;
  assert.equal((await orch.api('DELETE', `/v1/devices/${intruder.id}`)).status, 204);
  await closed;
  c.end(true);
  assert.equal((await orch.api('GET', `/v1/devices/${intruder.id}`)).status, 404);
  assert.equal((await orch.api('GET', '/v1/devices')).body.devices.length, before - 1);
  await assert.rejects(connect(intruder.id, createDeviceCredential(intruder.id, intruder.secretKey, new Date())), /Bad username or password|Not authorized/i);
});

test('revoking a device closes its open actions, so no rollout waits on it forever', async () => {
  const b = await buildFor(buildTinyMlpModel({ seed: 303 }));
  await agent.kill('SIGTERM');
  const r = await orch.api('POST', '/v1/rollouts', { buildId: b.buildId, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  assert.equal(r.body.rollout.status, 'running');
  assert.equal((await orch.api('DELETE', `/v1/devices/${deviceId}`)).status, 204);
  const after = await until('the rollout let the device go', async () => {
    const g = (await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`)).body.rollout;
    return g.status !== 'running' && g;
  }, 10_000);
  assert.equal(after.devices[0].outcome, 'cancelled');
  assert.equal(after.devices[0].code, 'DEVICE_REVOKED');
});
