// TLS on both wires (issue 12), with real processes on loopback: an orchestrator serving HTTPS and
// MQTTS with its self-made CA, agents enrolling with pinned tokens (from the API and from
// `edgepack tokens create`), Debian's mosquitto_sub/mosquitto_pub as foreign MQTTS clients, and
// the findings this closes: forged status reports (finding 3), sessions outliving their
// credential (finding 3), an agent that must refuse any other certificate after enrollment.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { join } from 'node:path';
import mqtt from 'mqtt';
import {
  PROTOCOL_VERSION, createDeviceCredential, deviceTopic, generateKeyPair, parseEnrollmentToken, signStatusReport, type StatusReport,
} from '@edgepack/protocol';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { loadTlsMaterial } from '@edgepack/orchestrator/tls-material.js';
import { AGENT_CLI, ORCHESTRATOR_CLI } from '../support/paths.js';
import { startAgent, startOrchestrator, startProcess, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

const FACTS = { arch: 'x86_64', platform: 'test', cpuModel: 'test', cores: 1, ramBytes: 4e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 'test' };
const PROFILE = 'x86-64-gateway';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let agent: Proc | undefined;
let agentId: string;
/** The device, rollout and bundle of the forged-report test, used again by the interop and revocation tests. */
let forge: { id: string; secretKey: string; rolloutId: string; bundleId: string } | undefined;
const orchDir = () => join(dir.path, 'orchestrator');

before(async () => {
  dir = await tempDir('tls');
  orch = await startOrchestrator(orchDir(), ['--log-level', 'info']);
});

after(async () => {
  await agent?.kill('SIGKILL');
  await orch?.stop();
  await dir?.remove();
});

/** A device enrolled by hand through the API, with a keypair the test holds. */
async function enrollByHand(o: Orchestrator, via: 'https' | 'http' = 'https'): Promise<{ id: string; secretKey: string; answer: any }> {
  const keys = generateKeyPair();
  const token = (await o.api('POST', '/v1/enrollment-tokens', {})).body.token as string;
  const body = { v: PROTOCOL_VERSION, token, publicKey: keys.publicKey, facts: FACTS, profile: PROFILE };
  let answer: any;
  if (via === 'https') {
    answer = await o.api('POST', '/v1/enroll', body);
  } else {
    const res = await fetch(`${o.plainUrl}/v1/enroll`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
    answer = { status: res.status, body: await res.json() };
  }
  assert.equal(answer.status, 201, JSON.stringify(answer.body));
  return { id: answer.body.deviceId, secretKey: keys.secretKey, answer: answer.body };
}

function deviceClient(o: Orchestrator, id: string, password: string, plain = false): Promise<mqtt.MqttClient> {
  const opts = plain ? { host: '127.0.0.1', port: o.plainMqttPort! } : o.mqttOptions();
  return new Promise((resolve, reject) => {
    const c = mqtt.connect({ ...opts, clientId: id, username: id, password, reconnectPeriod: 0, connectTimeout: 5000, clean: false });
    c.once('connect', () => resolve(c));
    c.once('error', (err) => { c.end(true); reject(err); });
  });
}

const closed = (c: mqtt.MqttClient) => new Promise<number>((resolve) => { const t = Date.now(); c.once('close', () => resolve(Date.now() - t)); });

test('TLS only by default: no plain listener, and neither plain HTTP nor plain MQTT nor an untrusting client gets through', async () => {
  const listening = await orch.proc.event('listening');
  assert.equal(listening.plainHttpPort, undefined);
  assert.equal(listening.caFingerprint, orch.caFingerprint);
  assert.equal((await orch.api('GET', '/v1/health')).status, 200);
  // Plain HTTP to the HTTPS port: no HTTP answer at all.
  await assert.rejects(new Promise((resolve, reject) => {
    const req = httpRequest(`http://127.0.0.1:${orch.httpPort}/v1/health`, { timeout: 5000 }, resolve);
    req.on('error', reject).on('timeout', () => req.destroy(new Error('timeout'))).end();
  }));
  // Node's own trust store does not know the private CA.
  await assert.rejects(fetch(`${orch.url}/v1/health`));
  // Plain MQTT to the MQTTS port.
  await assert.rejects(new Promise((resolve, reject) => {
    // The CONNECT's first byte reads as a TLS handshake record, so the broker waits for more: the client gives up first.
    const c = mqtt.connect({ host: '127.0.0.1', port: orch.mqttPort, reconnectPeriod: 0, connectTimeout: 1000 });
    c.once('connect', () => { c.end(true); resolve(undefined); });
    c.once('error', (e) => { c.end(true); reject(e); });
    c.once('close', () => { c.end(true); reject(new Error('closed')); });
  }));
});

test('edgepack tokens create prints a token pinned to the CA; an agent enrolls with it over HTTPS and holds an MQTTS session', async () => {
  const out = spawnSync(process.execPath, [ORCHESTRATOR_CLI(), 'tokens', 'create', '--data-dir', orchDir()], { encoding: 'utf8' });
  assert.equal(out.status, 0, out.stderr);
  const token = out.stdout.trim();
  assert.match(token, /^enr_[A-Za-z0-9_-]+#sha256:[0-9a-f]{64}$/);
  assert.equal(parseEnrollmentToken(token).caFingerprint, orch.caFingerprint);
  const agentDir = join(dir.path, 'agent');
  agent = startProcess(AGENT_CLI(), ['--server', orch.url, '--enroll', token, '--data-dir', agentDir, '--profile', PROFILE, '--log-level', 'debug']);
  agentId = (await agent.event('started')).deviceId as string;
  const identity = JSON.parse(await readFile(join(agentDir, 'identity.json'), 'utf8'));
  assert.equal(identity.tls.caFingerprint, orch.caFingerprint);
  assert.equal(identity.mqtt.protocol, 'mqtts');
  await until('agent online over MQTTS', async () => (await orch.api('GET', `/v1/devices/${agentId}`)).body.device.status === 'online');
  // A used token is used, pinned or not.
  const again = await orch.api('POST', '/v1/enroll', { v: PROTOCOL_VERSION, token, publicKey: generateKeyPair().publicKey, facts: FACTS });
  assert.equal(again.status, 401);
});

test('a forged active report with made-up figures is refused, unsigned or badly signed, and marks nothing active; the device\'s own signed report does (finding 3)', async () => {
  const dev = await enrollByHand(orch);
  await orch.api('PATCH', `/v1/devices/${dev.id}`, { tags: ['forge'] });
  const up = await orch.api('POST', '/v1/models?name=forge&version=1', buildTinyMlpModel({ seed: 7, hidden: 8 }));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: [PROFILE] });
  const build = await until('build', async () => {
    const x = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return x.status !== 'queued' && x.status !== 'running' && x;
  }, 60_000);
  assert.equal(build.status, 'succeeded', JSON.stringify(build));
  const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: { tags: ['forge'] } });
  assert.ok(r.status === 201 || r.status === 202, JSON.stringify(r.body));
  const rolloutId = r.body.rollout.id as string;
  const bundleId = build.artifacts[0].bundleId as string;
  const state = async () => (await orch.api('GET', `/v1/rollouts/${rolloutId}`)).body.rollout.devices.find((d: any) => d.deviceId === dev.id);

  // Whoever holds a valid credential of this device (replayed, or the broker's own), but not its key.
  const c = await deviceClient(orch, dev.id, createDeviceCredential(dev.id, dev.secretKey, new Date()));
  const notices: any[] = [];
  c.on('message', (topic, p) => { if (topic.endsWith('/notice')) notices.push(JSON.parse(p.toString())); });
  await c.subscribeAsync(deviceTopic(dev.id, 'notice'), { qos: 1 });
  const forged: Omit<StatusReport, 'signature'> = {
    v: PROTOCOL_VERSION, deviceId: dev.id, rolloutId, bundleId, state: 'active', at: new Date().toISOString(),
    result: { runtime: 'onnxruntime', providers: ['cpu'], loadMs: 1, warmupRuns: 1, runs: 1, latencyMs: { p50: 0.01, p90: 0.01, p95: 0.01, p99: 0.01 }, throughputPerSec: 1e6, peakRssBytes: 1, golden: { passed: true, maxAbsError: 0, samples: 1 } },
  };
  const intruder = generateKeyPair();
  const attempts = [forged, signStatusReport(forged, intruder.secretKey), { ...signStatusReport({ ...forged, state: 'failed' }, dev.secretKey), state: 'active' }];
  for (const report of attempts) await c.publishAsync(deviceTopic(dev.id, 'status'), JSON.stringify(report), { qos: 1 });
  const refusals = await until('three refusals', async () => notices.filter((n) => n.code === 'STATUS_SIGNATURE_INVALID').length >= 3 && notices, 10_000);
  assert.match(refusals.map((n) => n.message).join('\n'), /not signed/);
  assert.match(refusals.map((n) => n.message).join('\n'), /does not verify/);
  const after = await state();
  assert.notEqual(after.state, 'active', JSON.stringify(after));
  assert.notEqual((await orch.api('GET', `/v1/devices/${dev.id}`)).body.device.activeBundle, bundleId);
  assert.equal((await orch.api('GET', `/v1/rollouts/${rolloutId}`)).body.rollout.status, 'running');

  // The device itself, with its key: accepted. (So the refusals above were about the signature.)
  await c.publishAsync(deviceTopic(dev.id, 'status'), JSON.stringify(signStatusReport({ ...forged, at: new Date().toISOString() }, dev.secretKey)), { qos: 1 });
  await until('the signed report counts', async () => (await state()).state === 'active', 10_000);
  await c.endAsync();
  forge = { id: dev.id, secretKey: dev.secretKey, rolloutId, bundleId };
});

test('mosquitto_sub/mosquitto_pub speak MQTTS to the broker with the CA file and a device credential, and are refused without the CA', async (t) => {
  if (spawnSync('mosquitto_sub', ['--help']).error) return t.skip('mosquitto-clients is not installed');
  assert.ok(forge, 'the device of the forged-report test');
  const { id, secretKey, rolloutId } = forge;
  const caFile = join(dir.path, 'ca.pem');
  await writeFile(caFile, orch.caCertificate);
  const common = () => ['-h', '127.0.0.1', '-p', String(orch.mqttPort), '-i', id, '-u', id, '-P', createDeviceCredential(id, secretKey, new Date()), '-q', '1'];
  // What the orchestrator keeps for the device: its retained, signed desired state.
  const sub = spawnSync('mosquitto_sub', [...common(), '--cafile', caFile, '-t', deviceTopic(id, 'desired'), '-C', '1', '-W', '15'], { encoding: 'utf8', timeout: 20_000 });
  assert.equal(sub.status, 0, sub.stderr);
  const desired = JSON.parse(sub.stdout.trim());
  assert.equal(desired.deviceId, id);
  assert.equal(desired.rolloutId, rolloutId);
  assert.ok(desired.signature);
  // What the device says: a heartbeat, recorded.
  const heartbeat = JSON.stringify({ v: PROTOCOL_VERSION, deviceId: id, uptimeSec: 5, activeBundle: null, agentVersion: 'mosquitto', at: new Date().toISOString() });
  const pub = spawnSync('mosquitto_pub', [...common(), '--cafile', caFile, '-t', deviceTopic(id, 'heartbeat'), '-m', heartbeat], { encoding: 'utf8', timeout: 15_000 });
  assert.equal(pub.status, 0, pub.stderr);
  await until('heartbeat from mosquitto_pub recorded', async () => (await orch.api('GET', `/v1/devices/${id}`)).body.device.lastHeartbeat?.agentVersion === 'mosquitto');
  // Without our CA: the system's CAs do not vouch for the broker; plain MQTT is not spoken on the MQTTS port.
  for (const args of [['--capath', '/etc/ssl/certs'], []]) {
    const refused = spawnSync('mosquitto_sub', [...common(), ...args, '-t', deviceTopic(id, 'desired'), '-C', '1', '-W', '10'], { encoding: 'utf8', timeout: 15_000 });
    assert.notEqual(refused.status, 0, `mosquitto_sub ${args.join(' ')} must be refused`);
    assert.equal(refused.stdout, '', 'and gets nothing');
  }
});

test('revoking a device ends its live MQTTS session at once, and it cannot come back', async () => {
  assert.ok(forge, 'the device of the forged-report test');
  const { id, secretKey } = forge;
  const c = await deviceClient(orch, id, createDeviceCredential(id, secretKey, new Date()));
  const gone = closed(c);
  assert.equal((await orch.api('DELETE', `/v1/devices/${id}`)).status, 204);
  assert.ok((await gone) < 5000);
  c.end(true);
  await assert.rejects(deviceClient(orch, id, createDeviceCredential(id, secretKey, new Date())), /Not authorized|Bad username/i);
});

test('after enrollment the agent refuses any other certificate: an orchestrator serving another CA\'s certificate gets no session until the pinned one is back', async () => {
  assert.ok(agent && agentId, 'the agent of the tokens test');
  const other = await loadTlsMaterial({ dataDir: join(dir.path, 'other-ca'), settings: { mode: 'self-made', sans: ['localhost', '127.0.0.1'] }, now: new Date(), log: createLogger('silent') });
  const certFile = join(dir.path, 'other-cert.pem');
  const keyFile = join(dir.path, 'other-key.pem');
  await writeFile(certFile, other.cert);
  await writeFile(keyFile, other.key, { mode: 0o600 });
  const port = String(orch.mqttPort);
  await orch.stop();
  const stderrBefore = agent.stderr().length;
  orch = await startOrchestrator(orchDir(), ['--log-level', 'info', '--mqtt-port', port, '--tls-cert', certFile, '--tls-key', keyFile], { caFile: certFile });
  assert.equal(orch.caFingerprint, other.caFingerprint);
  await until('the agent refuses the certificate', async () => /mqtt error[\s\S]*(self-signed|unable to verify|unable to get)/i.test(agent!.stderr().slice(stderrBefore)), 20_000);
  assert.notEqual((await orch.api('GET', `/v1/devices/${agentId}`)).body.device.status, 'online');
  assert.doesNotMatch(orch.proc.stderr(), new RegExp(`"deviceId":"${agentId}"[^\\n]*connect`), 'no CONNECT of the agent reached the broker');
  await orch.stop();
  orch = await startOrchestrator(orchDir(), ['--log-level', 'info', '--mqtt-port', port]);
  await until('the agent is back on the pinned CA', async () => (await orch.api('GET', `/v1/devices/${agentId}`)).body.device.status === 'online', 40_000);
});

test('--allow-plaintext: plain listeners beside TLS, plain enrollment gets plain MQTT; a session ends its max age after its credential, and the agent rides through', async () => {
  const o2 = await startOrchestrator(join(dir.path, 'plain'), ['--mqtt-session-max-age-sec', '2', '--log-level', 'info'], { plaintext: true });
  let plainAgent: Proc | undefined;
  try {
    assert.ok(o2.plainUrl && o2.plainMqttPort);
    assert.equal((await fetch(`${o2.plainUrl}/v1/health`)).status, 200);
    assert.equal((await o2.api('GET', '/v1/health')).status, 200);
    const overTls = await enrollByHand(o2, 'https');
    assert.deepEqual(overTls.answer.mqtt, { host: '127.0.0.1', port: o2.mqttPort, protocol: 'mqtts' });
    assert.equal(overTls.answer.tls.caFingerprint, o2.caFingerprint);
    const overPlain = await enrollByHand(o2, 'http');
    assert.deepEqual(overPlain.answer.mqtt, { host: '127.0.0.1', port: o2.plainMqttPort, protocol: 'mqtt' });

    // A credential opens a session that lasts until its max age, not as long as the socket.
    const cred = createDeviceCredential(overPlain.id, overPlain.secretKey, new Date());
    const c = await deviceClient(o2, overPlain.id, cred, true);
    const lived = await Promise.race([closed(c), new Promise<number>((r) => setTimeout(() => r(-1), 8000))]);
    c.end(true);
    assert.ok(lived > 0 && lived < 4000, `session closed after ${lived} ms (max age 2 s)`);
    // The same credential again: accepted at CONNECT (it is minutes-valid) but cut off at once.
    const again = await deviceClient(o2, overPlain.id, cred, true);
    const relived = await Promise.race([closed(again), new Promise<number>((r) => setTimeout(() => r(-1), 4000))]);
    again.end(true);
    assert.ok(relived >= 0 && relived < 1500, `a replayed credential held ${relived} ms`);
    assert.match(o2.proc.stderr(), /mqtt session ended/);

    // A real agent over plaintext (its --allow-plaintext) reconnects with fresh credentials and stays in service.
    plainAgent = await startAgent(o2, join(dir.path, 'plain-agent'), { profile: PROFILE, plaintext: true });
    const id = (await plainAgent.event('started')).deviceId as string;
    const identity = JSON.parse(await readFile(join(dir.path, 'plain-agent', 'identity.json'), 'utf8'));
    assert.equal(identity.mqtt.protocol, 'mqtt');
    await until('its session ended', async () => new RegExp(`"deviceId":"${id}"[^\\n]*mqtt session ended`).test(o2.proc.stderr()), 15_000);
    await until('still online', async () => (await o2.api('GET', `/v1/devices/${id}`)).body.device.status === 'online', 5000);
  } finally {
    await plainAgent?.kill('SIGTERM');
    await o2.stop();
  }
});
