// Window sums end to end: a real orchestrator process, a real agent process started with --serve
// (1 s telemetry windows), a real bundle built and rolled out, requests sent to the agent's
// KServe endpoint without pause. Every request answered 200 is counted exactly once by the
// orchestrator's health API — through a kill -9 of the orchestrator in the middle (windows it
// had queued or committed without acking come again and are deduplicated) and a restart of the
// agent. Then the device's own credential publishes hostile telemetry through the real broker:
// refused with a notice and in the ack, nothing counted.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:net';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { DeviceTopic, deviceTopic, type TelemetryAck } from '@edgepack/protocol';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { deviceClientOptions } from '@edgepack/agent/device-session.js';
import { loadIdentity } from '@edgepack/agent/identity.js';
import { startAgent, startOrchestrator, startProcess, tempDir, until, type Orchestrator, type Proc, ONE_WAVE } from '../support/processes.js';
import { AGENT_CLI } from '../support/paths.js';
import { kserveJson, randomFloats } from '../support/serving-fixtures.js';
import { makeBatch, makeWindow } from '../support/telemetry-windows.js';

const SERVE_ENV = {
  EDGEPACK_AGENT_SERVE: '127.0.0.1:0', EDGEPACK_AGENT_TELEMETRY_WINDOW_SEC: '1', EDGEPACK_AGENT_TELEMETRY_JITTER_MS: '100',
  EDGEPACK_AGENT_TELEMETRY_RATE: '200',
};

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let agent: Proc;
let ports: string[];

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => resolve(p));
    });
  });
}

before(async () => {
  dir = await tempDir('telemetry-ingest');
  ports = ['--http-port', String(await freePort()), '--mqtt-port', String(await freePort())];
  orch = await startOrchestrator(join(dir.path, 'o'), ports);
});
after(async () => {
  await agent?.kill();
  await orch?.stop();
  await dir?.remove();
});

const body = kserveJson({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: randomFloats(784, 7) } });

async function infer(url: string): Promise<boolean> {
  try {
    const r = await fetch(`${url}/v2/models/fashion/infer`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    await r.arrayBuffer();
    return r.status === 200;
  } catch {
    return false;
  }
}

/** Sends requests one after another until stopped; counts the 200s. */
function sender(url: string): { ok: () => number; stop: () => Promise<number> } {
  let ok = 0;
  let stopped = false;
  const loop = (async () => { while (!stopped) if (await infer(url)) ok++; })();
  return { ok: () => ok, stop: async () => { stopped = true; await loop; return ok; } };
}

test('N requests served ⇒ exactly N counted by the orchestrator, through a kill -9 of the orchestrator and an agent restart; hostile telemetry refused', async () => {
  const started = Date.now();
  agent = await startAgent(orch, join(dir.path, 'a'), { name: 'serve-telemetry', profile: 'x86-64-gateway', env: SERVE_ENV });
  const deviceId = (await agent.event('started')).deviceId as string;
  let url = (await agent.event('serving')).url as string;

  const up = await orch.api('POST', '/v1/models?name=fashion&version=1', buildTinyMlpModel({ seed: 5 }));
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'] });
  const build = await until('build', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status !== 'queued' && r.body.build.status !== 'running' && r.body.build;
  }, 90_000);
  assert.equal(build.status, 'succeeded', JSON.stringify(build));
  const bundleId = build.artifacts[0].bundleId as string;
  const ro = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  assert.equal(ro.status, 201, JSON.stringify(ro.body));
  await until('rollout finished', async () => (await orch.api('GET', `/v1/rollouts/${ro.body.rollout.id}`)).body.rollout.status === 'succeeded', 60_000);
  await until('serving ready', async () => (await fetch(`${url}/v2/health/ready`)).status === 200, 20_000);

  const health = async () => {
    const q = `from=${new Date(started - 60_000).toISOString()}&to=${new Date(Date.now() + 120_000).toISOString()}&step=60`;
    const r = await orch.api('GET', `/v1/devices/${deviceId}/health?${q}`);
    assert.equal(r.status, 200, JSON.stringify(r.body));
    return r.body;
  };
  const counted = (n: number, what: string) => until(what, async () => {
    const h = await health();
    return h.summary.requests.ok === n && h;
  }, 45_000, 250);

  // Phase 1: requests while the orchestrator runs.
  let s = sender(url);
  await until('some requests', async () => s.ok() >= 40, 20_000, 20);
  // Phase 2: kill -9 in the middle, requests go on while it is down, then it comes back on the same ports.
  await orch.proc.kill('SIGKILL');
  await new Promise((r) => setTimeout(r, 2000));
  const whileDown = s.ok();
  orch = await startOrchestrator(join(dir.path, 'o'), ports);
  await until('more requests after the restart', async () => s.ok() >= whileDown + 40, 20_000, 20);
  let total = await s.stop();
  assert.ok(whileDown > 40, 'requests were served while the orchestrator was down');
  let h = await counted(total, `${total} requests counted after the orchestrator restart`);
  // Windows before the rollout were served by no bundle, and empty.
  assert.deepEqual(h.bundles.filter((x: any) => x.requests.total > 0).map((x: any) => x.bundleId), [bundleId]);
  assert.deepEqual(h.gaps, [], 'nothing was lost');
  assert.equal(h.summary.errorRate, 0);

  // Phase 3: the agent restarts (a clean stop flushes its open window) and serves again.
  assert.equal(await agent.kill('SIGTERM'), 0);
  agent = startProcess(AGENT_CLI(), ['--data-dir', join(dir.path, 'a'), '--log-level', 'debug'], SERVE_ENV);
  url = (await agent.event('serving')).url as string;
  await until('serving ready again', async () => (await fetch(`${url}/v2/health/ready`)).status === 200, 20_000);
  s = sender(url);
  await until('requests after the agent restart', async () => s.ok() >= 30, 20_000, 20);
  total += await s.stop();
  h = await counted(total, `${total} requests counted after the agent restart`);
  assert.deepEqual(h.gaps, []);
  assert.ok(h.summary.latencyMs.p50 > 0 && h.summary.latencyMs.p99 >= h.summary.latencyMs.p50);
  assert.ok(h.summary.system.rssBytes.max > 0);

  // /metrics counted the same requests (this process saw only those after its restart, so at most the total).
  const metrics = await orch.fetch(`${orch.url}/metrics`, { headers: { authorization: `Bearer ${orch.adminToken}` } });
  const text = await metrics.text();
  const ok = [...text.matchAll(/^edgepack_inference_requests_total\{outcome="ok",bundle="([^"]+)",profile="x86-64-gateway"\} (\d+)$/gm)];
  assert.equal(ok.length, 1);
  assert.equal(ok[0]![1], bundleId);
  assert.ok(Number(ok[0]![2]) > 0 && Number(ok[0]![2]) <= total);

  // Hostile telemetry with the device's own credential, through the real broker and ACL.
  assert.equal(await agent.kill('SIGTERM'), 0);
  const identity = (await loadIdentity(join(dir.path, 'a')))!;
  const client = await mqtt.connectAsync({ ...deviceClientOptions(identity, new Date(), { host: '127.0.0.1', port: orch.mqttPort, protocol: 'mqtts' }), clean: true, will: undefined, reconnectPeriod: 0 } as never);
  const notices: { code: string; message: string }[] = [];
  const acks: TelemetryAck[] = [];
  client.on('message', (topic, payload) => {
    if (topic.endsWith('/notice')) notices.push(JSON.parse(payload.toString()));
    if (topic.endsWith('/telemetry-ack')) acks.push(JSON.parse(payload.toString()));
  });
  await client.subscribeAsync([deviceTopic(deviceId, DeviceTopic.notice), deviceTopic(deviceId, DeviceTopic.telemetryAck)], { qos: 1 });
  const topic = deviceTopic(deviceId, DeviceTopic.telemetry);
  const second = Math.floor(Date.now() / 1000) * 1000;
  const bad = makeWindow(deviceId, 9_000_001, { startMs: second - 120_000, latencies: [1, 2] });
  bad.latencyMs = { ...bad.latencyMs, counts: [...bad.latencyMs.counts, 0] };
  const huge = makeWindow(deviceId, 9_000_002, { startMs: second - 60_000, failed: { error: 2 ** 50 } });
  await client.publishAsync(topic, JSON.stringify(makeBatch(deviceId, [bad, huge])), { qos: 1 });
  await client.publishAsync(topic, JSON.stringify(makeBatch('dev_someone_else', [])), { qos: 1 });
  await client.publishAsync(topic, 'not json at all', { qos: 1 });
  await until('the refusals answered', async () => acks.length >= 1 && notices.length >= 3, 10_000, 50);
  await client.endAsync();
  assert.deepEqual(acks[0]!.acked, []);
  assert.deepEqual(acks[0]!.refused.map((r) => [r.seq, r.code]), [[9_000_001, 'TELEMETRY_HISTOGRAM_INVALID'], [9_000_002, 'TELEMETRY_VALUE_INVALID']]);
  assert.deepEqual(notices.map((n) => n.code).sort(), ['MESSAGE_NOT_JSON', 'TELEMETRY_HISTOGRAM_INVALID', 'TELEMETRY_WRONG_DEVICE']);
  assert.equal((await health()).summary.requests.ok, total, 'nothing hostile was counted');
});
