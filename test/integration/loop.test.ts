// The whole loop with real parts: an orchestrator process (Aedes, SQLite, Fastify) and two
// agent processes on loopback, each with its own data dir and onnxruntime-node benchmark.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { verifyCanonical } from '@edgepack/protocol';
import { sharedModelsDir } from '../support/paths.js';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
const agents: Proc[] = [];
const byRole: Record<string, Proc> = {};

before(async () => {
  dir = await tempDir('loop');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'));
});

after(async () => {
  for (const a of agents) await a.kill();
  await orch?.stop();
  await dir?.remove();
});

async function modelBytes(): Promise<{ bytes: Uint8Array; name: string }> {
  const shared = sharedModelsDir();
  // Without ../shared the loop still runs, on a model built in code.
  if (!shared) return { bytes: buildTinyMlpModel({ seed: 1 }), name: 'tiny-mlp' };
  return { bytes: new Uint8Array(await readFile(join(shared, 'fashion_cnn.onnx'))), name: 'fashion-cnn' };
}

test('enroll → upload → build → roll out: both devices report active with benchmark figures', async () => {
  const gateway = await startAgent(orch, join(dir.path, 'agent-gw'), { name: 'gw-1' });
  const pi = await startAgent(orch, join(dir.path, 'agent-pi'), { name: 'pi-1', profile: 'raspberry-pi-4' });
  agents.push(gateway, pi);
  byRole.gateway = gateway;
  byRole.pi = pi;

  const devices = await until('both devices online', async () => {
    const r = await orch.api('GET', '/v1/devices?status=online');
    return r.body.devices.length === 2 && r.body.devices;
  });
  const byName = Object.fromEntries(devices.map((d: any) => [d.name, d]));
  // No --profile: the x86_64 box is matched from its detected facts.
  assert.equal(byName['gw-1'].profile, 'x86-64-gateway');
  assert.equal(byName['gw-1'].facts.arch, 'x86_64');
  assert.ok(byName['gw-1'].facts.cores >= 1);
  assert.equal(byName['pi-1'].profile, 'raspberry-pi-4');

  const { bytes, name } = await modelBytes();
  const up = await orch.api('POST', `/v1/models?name=${name}&version=1.0.0`, bytes);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal(up.body.model.sha256, createHash('sha256').update(bytes).digest('hex'));
  assert.equal(up.body.model.format, 'onnx');
  assert.equal(up.body.model.inputs[0].name, 'input');

  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id });
  assert.equal(b.status, 202);
  assert.equal(b.headers.location, `/v1/builds/${b.body.build.id}`);
  const build = await until('build finished', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status !== 'queued' && r.body.build.status !== 'running' && r.body.build;
  });
  assert.equal(build.status, 'succeeded');
  const art = Object.fromEntries(build.artifacts.map((a: any) => [a.profile, a]));
  assert.equal(art['x86-64-gateway'].status, 'built');
  assert.equal(art['raspberry-pi-4'].status, 'built');
  assert.equal(art['coral-dev-board'].status, 'skipped');
  assert.match(art['coral-dev-board'].reason, /tflite/i);

  const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: { deviceIds: devices.map((d: any) => d.id) }, ...ONE_WAVE });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const done = await until('rollout finished', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.devices));
  for (const d of done.devices) {
    assert.equal(d.state, 'active');
    assert.equal(d.outcome, 'succeeded');
    const res = d.result;
    assert.ok(res.loadMs > 0);
    assert.ok(res.latencyMs.p50 > 0 && res.latencyMs.p50 <= res.latencyMs.p90 && res.latencyMs.p90 <= res.latencyMs.p99);
    assert.ok(res.throughputPerSec > 0);
    assert.ok(res.peakRssBytes > 10 * 1024 * 1024, `peak RSS ${res.peakRssBytes}`);
    assert.equal(res.golden.passed, true);
    assert.ok(res.golden.maxAbsError <= 1e-3);
    assert.equal(res.runtime, 'onnxruntime');
  }

  // The device record follows the report, and the heartbeat carries the last benchmark.
  for (const d of devices) {
    const g = await until('heartbeat with the new bundle', async () => {
      const x = await orch.api('GET', `/v1/devices/${d.id}`);
      return x.body.device.lastHeartbeat?.activeBundle === x.body.device.activeBundle && x.body.device.activeBundle && x.body.device;
    });
    assert.equal(g.activeBundle, art[g.profile].bundleId);
    assert.ok(g.lastHeartbeat.lastBenchmark.latencyMs.p50 > 0);
  }

  // The same bundle over HTTP: signed manifest and a Range request on the model file.
  const bundle = await orch.api('GET', `/v1/bundles/${art['x86-64-gateway'].bundleId}`);
  assert.equal(bundle.status, 200);
  const signingKey = JSON.parse(await readFile(join(orch.dataDir, 'signing-key.json'), 'utf8')).publicKey;
  assert.ok(verifyCanonical(bundle.body.bundle.manifest, bundle.body.bundle.signature, signingKey));
  const modelFile = bundle.body.bundle.manifest.files.find((f: any) => f.role === 'model');
  const res = await orch.fetch(`${orch.url}/v1/bundles/${bundle.body.bundle.id}/files/${modelFile.path}`, {
    headers: { authorization: `Bearer ${orch.adminToken}`, range: 'bytes=100-1123' },
  });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get('content-range'), `bytes 100-1123/${bytes.length}`);
  assert.deepEqual(new Uint8Array(await res.arrayBuffer()), bytes.subarray(100, 1124));
});

test('a restarted agent keeps its identity and converges without re-enrolling', async () => {
  const before = (await orch.api('GET', '/v1/devices')).body.devices.length;
  await byRole.gateway!.kill('SIGTERM');
  const identity = JSON.parse(await readFile(join(dir.path, 'agent-gw', 'identity.json'), 'utf8'));
  const again = await startAgent(orch, join(dir.path, 'agent-gw'), { enroll: false });
  agents.push(again);
  const ev = await again.event('started');
  assert.equal(ev.deviceId, identity.deviceId);
  const d = await until('device back online', async () => {
    const x = await orch.api('GET', `/v1/devices/${identity.deviceId}`);
    return x.body.device.status === 'online' && x.body.device;
  });
  assert.ok(d.activeBundle);
  assert.equal((await orch.api('GET', '/v1/devices')).body.devices.length, before);
});

test('a device that was offline when a rollout started is dispatched when it returns', async () => {
  const pi = byRole.pi!;
  const piId = (await pi.event('started')).deviceId as string;
  await pi.kill('SIGKILL');
  // The broker publishes the last will when the socket dies; the device goes offline at once.
  await until('device offline after kill -9', async () => (await orch.api('GET', `/v1/devices/${piId}`)).body.device.status === 'offline', 10_000);

  const up = await orch.api('POST', '/v1/models?name=late&version=1', buildTinyMlpModel({ seed: 77 }));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['raspberry-pi-4'] });
  const build = await until('build', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status === 'succeeded' && r.body.build;
  });
  const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: { profiles: ['raspberry-pi-4'] }, ...ONE_WAVE });
  assert.equal(r.status, 201);
  await new Promise((res) => setTimeout(res, 500));
  // Offline: waiting, never dispatched while so (and never a failure).
  const waiting = (await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`)).body.rollout;
  assert.equal(waiting.devices[0].outcome, 'waiting_offline');
  assert.equal(waiting.status, 'running');

  const back = await startAgent(orch, join(dir.path, 'agent-pi'), { enroll: false });
  agents.push(back);
  const done = await until('rollout finished', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.devices));
  assert.equal((await orch.api('GET', `/v1/devices/${piId}`)).body.device.activeBundle, build.artifacts[0].bundleId);
});
