// The trial-report topic at the MQTT door (issue 10), with a real orchestrator process: a device
// enrolled by hand (the test holds its key) is sent a signed trial desired state; trial reports
// that are unsigned, signed by another key, tampered after signing or malformed are refused on
// its notice topic and choose nothing; its own signed report is folded and the choice is made.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import mqtt from 'mqtt';
import {
  PROTOCOL_VERSION, createDeviceCredential, deviceTopic, generateKeyPair, signTrialReport, verifyDesiredSignature, type DesiredState, type TrialReport,
} from '@edgepack/protocol';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { startOrchestrator, tempDir, until, type Orchestrator } from '../support/processes.js';

const PROFILE = 'x86-64-gateway';
const FACTS = { arch: 'x86_64', platform: 'test', cpuModel: 'test', cores: 1, ramBytes: 4e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 'test' };
let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let client: mqtt.MqttClient | undefined;

before(async () => {
  dir = await tempDir('variant-gw');
  orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn']);
});
after(async () => {
  client?.end(true);
  await orch?.stop();
  await dir?.remove();
});

test('trial reports count only when the device signed them; hostile ones are refused with a code and choose nothing', async () => {
  const keys = generateKeyPair();
  const token = (await orch.api('POST', '/v1/enrollment-tokens', {})).body.token as string;
  const en = await orch.api('POST', '/v1/enroll', { v: PROTOCOL_VERSION, token, publicKey: keys.publicKey, facts: FACTS, profile: PROFILE });
  assert.equal(en.status, 201, JSON.stringify(en.body));
  const id = en.body.deviceId as string;
  await orch.api('PATCH', `/v1/devices/${id}`, { tags: ['gw'] });

  const up = await orch.api('POST', '/v1/models?name=gw&version=1', buildTinyMlpModel({ seed: 3, hidden: 8 }));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: [PROFILE], selection: 'device' });
  const build = await until('build', async () => {
    const x = (await orch.api('GET', `/v1/builds/${b.body.build.id}`)).body.build;
    return x.status !== 'queued' && x.status !== 'running' && x;
  }, 60_000);
  assert.equal(build.status, 'succeeded', JSON.stringify(build));
  const candidates = build.artifacts[0].candidates as any[];
  assert.ok(candidates.length >= 1);

  client = await new Promise<mqtt.MqttClient>((resolve, reject) => {
    const c = mqtt.connect({ ...orch.mqttOptions(), clientId: id, username: id, password: createDeviceCredential(id, keys.secretKey, new Date()), reconnectPeriod: 0, connectTimeout: 5000, clean: false });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
  const notices: any[] = [];
  const desired: DesiredState[] = [];
  client.on('message', (topic, p) => {
    if (topic.endsWith('/notice')) notices.push(JSON.parse(p.toString()));
    if (topic.endsWith('/desired') && p.length) desired.push(JSON.parse(p.toString()));
  });
  await client.subscribeAsync([deviceTopic(id, 'notice'), deviceTopic(id, 'desired')], { qos: 1 });
  await until('online', async () => (await orch.api('GET', `/v1/devices/${id}`)).body.device.status === 'online', 10_000);

  const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: { tags: ['gw'] }, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }], trial: { rounds: 1, timeoutSec: 60 } });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const rolloutId = r.body.rollout.id as string;
  const trial = await until('a trial desired state', async () => desired.find((d) => d.kind === 'trial'), 10_000);
  assert.equal(verifyDesiredSignature(trial, generateKeyPair().publicKey), false, 'signed, and not by just any key');
  assert.equal(typeof trial.signature, 'string');
  assert.deepEqual(trial.trial!.candidates.map((c) => c.manifest.bundleId), candidates.map((c) => c.bundleId));

  const report: Omit<TrialReport, 'signature'> = {
    v: PROTOCOL_VERSION, deviceId: id, rolloutId, seq: trial.seq, state: 'done', at: new Date().toISOString(),
    results: candidates.map((c) => ({
      bundleId: c.bundleId, precision: c.precision, agreement: { top1: 1, maxAbsError: 0, samples: 3 },
      result: { runtime: 'onnxruntime', providers: ['cpu'], loadMs: 1, warmupRuns: 1, runs: 1, latencyMs: { p50: 1, p90: 1, p95: c.reference ? 2 : 1, p99: 2 }, throughputPerSec: 1, peakRssBytes: 1, golden: { passed: true, maxAbsError: 0, samples: 3 } },
    })),
  };
  const intruder = generateKeyPair();
  const tampered = signTrialReport(report, keys.secretKey);
  tampered.results = tampered.results.map((x) => ({ ...x, result: { ...x.result!, latencyMs: { ...x.result!.latencyMs, p95: 0.001 } } }));
  for (const bad of [report, signTrialReport(report, intruder.secretKey), tampered]) await client.publishAsync(deviceTopic(id, 'trial-report'), JSON.stringify(bad), { qos: 1 });
  await client.publishAsync(deviceTopic(id, 'trial-report'), '{"v":1,"state":"done"', { qos: 1 });
  await client.publishAsync(deviceTopic(id, 'trial-report'), JSON.stringify({ ...report, state: 'exploded' }), { qos: 1 });
  const refused = await until('refusals', async () => notices.filter((n) => n.topic?.endsWith('/trial-report')).length >= 5 && notices, 10_000);
  const codes = refused.filter((n) => n.topic?.endsWith('/trial-report')).map((n) => n.code);
  assert.equal(codes.filter((c) => c === 'STATUS_SIGNATURE_INVALID').length, 3, JSON.stringify(refused));
  assert.equal(codes.length, 5);
  assert.ok(codes.every((c) => typeof c === 'string' && /^[A-Z_]+$/.test(c)));
  assert.deepEqual((await orch.api('GET', `/v1/rollouts/${rolloutId}`)).body.rollout.choices, [], 'nothing was chosen on forged figures');
  assert.equal((await orch.api('GET', '/v1/health')).status, 200, 'the orchestrator is still up');

  // kill -9 of the orchestrator in the middle of the trial: after the restart the trial desired
  // state comes back as it was (retained again), and the device's report still counts
  await orch.proc.kill('SIGKILL');
  client.end(true);
  orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn']);
  desired.length = 0;
  client = await new Promise<mqtt.MqttClient>((resolve, reject) => {
    const c = mqtt.connect({ ...orch.mqttOptions(), clientId: id, username: id, password: createDeviceCredential(id, keys.secretKey, new Date()), reconnectPeriod: 0, connectTimeout: 5000, clean: true });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
  client.on('message', (topic, p) => { if (topic.endsWith('/desired') && p.length) desired.push(JSON.parse(p.toString())); });
  await client.subscribeAsync([deviceTopic(id, 'desired')], { qos: 1 });
  const back = await until('the trial again after the restart', async () => desired[0], 10_000);
  assert.deepEqual([back.kind, back.seq, back.signature], ['trial', trial.seq, trial.signature], 'the same signed trial');
  assert.deepEqual((await orch.api('GET', `/v1/rollouts/${rolloutId}`)).body.rollout.choices, []);

  // the device's own signed report is folded, and the choice follows it
  await client.publishAsync(deviceTopic(id, 'trial-report'), JSON.stringify(signTrialReport(report, keys.secretKey)), { qos: 1 });
  const chosen = await until('the choice', async () => (await orch.api('GET', `/v1/rollouts/${rolloutId}`)).body.rollout.choices[0], 10_000);
  assert.equal(chosen.cause, 'measured');
  assert.equal(chosen.candidates.reduce((n: number, c: any) => n + c.devices.length, 0), candidates.length);
  const install = await until('the install desired state', async () => desired.find((d) => (d.kind ?? 'install') === 'install' && d.seq > trial.seq), 10_000);
  assert.equal(install.bundle.manifest.bundleId, chosen.bundleId);
});
