// The on-device inference service in the whole loop: a real orchestrator builds and rolls out
// real bundles to real agent processes started with --serve; their answers are compared with
// the runtimes run directly on the same bundle files, and a client sending without pause
// through a rollout and a rollback sees no failed request.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { encodeNpy } from '@edgepack/orchestrator/optimizer/npy.js';
import { createLiteRtRunner } from '@edgepack/agent/runtime/litert-runner.js';
import { sharedModelsDir } from '../support/paths.js';
import { startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc, ONE_WAVE } from '../support/processes.js';
import { randomFloats } from '../support/serving-fixtures.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
const agents: Proc[] = [];

const SERVE_ENV = { EDGEPACK_AGENT_SERVE: '127.0.0.1:0', EDGEPACK_AGENT_TELEMETRY_WINDOW_SEC: '1', EDGEPACK_AGENT_TELEMETRY_JITTER_MS: '100', EDGEPACK_AGENT_SERVE_CONCURRENCY: '1' };

before(async () => {
  dir = await tempDir('serving');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'));
});

after(async () => {
  for (const a of agents) await a.kill();
  await orch?.stop();
  await dir?.remove();
});

async function models(): Promise<{ v1: Uint8Array; v2: Uint8Array; calibration: Uint8Array }> {
  const shared = sharedModelsDir();
  if (shared) {
    return {
      v1: new Uint8Array(await readFile(join(shared, 'fashion_cnn.onnx'))),
      v2: new Uint8Array(await readFile(join(shared, 'fashion_mlp.onnx'))),
      calibration: new Uint8Array(await readFile(join(shared, 'fashion_calib256.npy'))),
    };
  }
  return { v1: buildTinyMlpModel({ seed: 1 }), v2: buildTinyMlpModel({ seed: 2 }), calibration: encodeNpy({ dtype: 'float32', shape: [64, 1, 28, 28], data: randomFloats(64 * 784, 5) }) };
}

async function buildFor(model: Uint8Array, version: string, profiles: string[], calibration?: Uint8Array): Promise<{ buildId: string; bundleId: string }> {
  const up = await orch.api('POST', `/v1/models?name=fashion&version=${version}`, model);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  if (calibration) assert.equal((await orch.api('POST', `/v1/models/${up.body.model.id}/datasets?kind=calibration`, calibration)).status, 201);
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles });
  const build = await until('build finished', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status !== 'queued' && r.body.build.status !== 'running' && r.body.build;
  }, 120_000);
  assert.equal(build.status, 'succeeded', JSON.stringify(build));
  return { buildId: build.id, bundleId: build.artifacts[0].bundleId };
}

async function rollOut(buildId: string, deviceId: string): Promise<void> {
  const r = await orch.api('POST', '/v1/rollouts', { buildId, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  const done = await until('rollout finished', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 90_000);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.devices));
}

async function bundleModel(bundleId: string): Promise<Uint8Array> {
  const b = (await orch.api('GET', `/v1/bundles/${bundleId}`)).body.bundle;
  const f = b.manifest.files.find((x: any) => x.role === 'model');
  const res = await orch.fetch(`${orch.url}/v1/bundles/${bundleId}/files/${f.path}`, { headers: { authorization: `Bearer ${orch.adminToken}` } });
  return new Uint8Array(await res.arrayBuffer());
}

async function ortDirect(model: Uint8Array, x: Float32Array, dims: number[]): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], intraOpNumThreads: 0, graphOptimizationLevel: 'all' });
  try {
    return (await s.run({ [s.inputNames[0]!]: new ort.Tensor('float32', x, dims) }))[s.outputNames[0]!]!.data as Float32Array;
  } finally {
    await s.release();
  }
}

async function infer(url: string, x: Float32Array, dims: number[], inputName = 'input'): Promise<{ status: number; out?: Float32Array; text: string }> {
  const res = await fetch(`${url}/v2/models/fashion/infer`, {
    method: 'POST', headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ inputs: [{ name: inputName, shape: dims, datatype: 'FP32', data: Array.from(x) }] }),
  });
  const text = await res.text();
  return { status: res.status, text, ...(res.status === 200 ? { out: Float32Array.from(JSON.parse(text).outputs[0].data) } : {}) };
}

const near = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((v, i) => Math.abs(v - b[i]!) < 1e-4);

test('an ONNX bundle served by the agent answers exactly as onnxruntime does; rollout and rollback under load fail no request', async () => {
  const gw = await startAgent(orch, join(dir.path, 'gw'), { name: 'gw-serve', profile: 'x86-64-gateway', env: SERVE_ENV });
  agents.push(gw);
  const deviceId = (await gw.event('started')).deviceId as string;
  const url = (await gw.event('serving')).url as string;
  assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
  // Nothing active yet: live, not ready, and never a 200 from ready.
  assert.equal((await fetch(`${url}/v2/health/live`)).status, 200);
  assert.equal((await fetch(`${url}/v2/health/ready`)).status, 503);

  const { v1, v2 } = await models();
  const one = await buildFor(v1, '1', ['x86-64-gateway']);
  await rollOut(one.buildId, deviceId);
  // "active" is reported once the service has switched, so it is ready now.
  assert.equal((await fetch(`${url}/v2/health/ready`)).status, 200);
  const meta = await (await fetch(`${url}/v2/models/fashion`)).json() as any;
  assert.equal(meta.parameters.bundle_id, one.bundleId);
  assert.deepEqual(meta.versions, ['1']);
  assert.deepEqual(meta.inputs[0], { name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] });

  const x = randomFloats(4 * 784, 21);
  const dims = [4, 1, 28, 28];
  const m1 = await bundleModel(one.bundleId);
  const out1 = await ortDirect(m1, x, dims);
  const served = await infer(url, x, dims);
  assert.equal(served.status, 200, served.text);
  assert.deepEqual(served.out, out1, 'bit-identical to onnxruntime on the bundle file');

  const two = await buildFor(v2, '2', ['x86-64-gateway']);
  const out2 = await ortDirect(await bundleModel(two.bundleId), x, dims);
  assert.ok(!near(out1, out2));

  // A client sending without pause, two requests at a time, through a rollout and a rollback.
  let stop = false;
  const seen: { status: number; out?: Float32Array; text: string; at: number }[] = [];
  const loops = [0, 1].map(async () => {
    while (!stop) {
      const at = Date.now();
      seen.push({ ...(await infer(url, x, dims).catch((e: Error) => ({ status: 0, text: e.message }))), at });
    }
  });
  await until('requests flowing', async () => seen.length > 20, 10_000, 20);
  await rollOut(two.buildId, deviceId);
  const afterRollout = Date.now();
  await until('requests after the rollout', async () => seen.filter((s) => s.at > afterRollout).length > 20, 20_000, 20);
  const rollbackStart = Date.now();
  await rollOut(one.buildId, deviceId); // the rollback: the previous build again
  const afterRollback = Date.now();
  await until('requests after the rollback', async () => seen.filter((s) => s.at > afterRollback).length > 20, 20_000, 20);
  stop = true;
  await Promise.all(loops);

  const failed = seen.filter((s) => s.status !== 200);
  assert.deepEqual(failed.map((f) => `${f.status} ${f.text}`), [], `${failed.length} of ${seen.length} requests failed`);
  assert.ok(seen.every((s) => near(s.out!, out1) || near(s.out!, out2)));
  assert.ok(seen.some((s) => near(s.out!, out2)), 'the new model answered during the rollout');
  // "active" is reported only once the service has switched: nothing stale after either report.
  assert.ok(seen.filter((s) => s.at > afterRollout && s.at < rollbackStart).every((s) => near(s.out!, out2)), 'after the rollout, the new model answers');
  assert.ok(seen.filter((s) => s.at > afterRollback).every((s) => near(s.out!, out1)), 'after the rollback, the old model answers again');

  // The agent's own /metrics counted every one of them (plus the single request before).
  const text = await (await fetch(`${url}/metrics`)).text();
  const ok = [...text.matchAll(/^edgepack_agent_inference_requests_total\{[^}]*outcome="ok"\} (\d+)$/gm)].reduce((n, m) => n + Number(m[1]), 0);
  assert.equal(ok, seen.length + 1);
  assert.match(text, /edgepack_agent_model_swaps_total\{held="false"\} 3/);
});

test('a TFLite bundle served by the agent answers exactly as LiteRT does on the same file', async () => {
  const coral = await startAgent(orch, join(dir.path, 'coral'), { name: 'coral-serve', profile: 'coral-dev-board', env: SERVE_ENV });
  agents.push(coral);
  const deviceId = (await coral.event('started')).deviceId as string;
  const url = (await coral.event('serving')).url as string;
  const { v1, calibration } = await models();
  const built = await buildFor(v1, '3', ['coral-dev-board'], calibration);
  await rollOut(built.buildId, deviceId);
  const meta = await (await fetch(`${url}/v2/models/fashion`)).json() as any;
  assert.equal(meta.platform, 'tflite_litert');
  assert.equal(meta.parameters.bundle_id, built.bundleId);
  assert.equal(meta.parameters.format, 'tflite');
  const input = meta.inputs[0];
  assert.equal(input.datatype, 'FP32');
  assert.deepEqual(input.shape, [1, 28, 28, 1]);

  const runner = await createLiteRtRunner(await bundleModel(built.bundleId));
  try {
    for (const seed of [1, 2, 3]) {
      const x = randomFloats(784, seed);
      const direct = await runner.run({ [runner.inputs[0]!.name]: { dtype: 'float32', dims: [1, 28, 28, 1], data: x } });
      const served = await infer(url, x, [1, 28, 28, 1], input.name);
      assert.equal(served.status, 200, served.text);
      assert.deepEqual(served.out, Float32Array.from(direct[runner.outputs[0]!.name]!.data as Float32Array));
    }
  } finally {
    await runner.close();
  }
  // A batch of two does not fit the TFLite model's static batch of one: refused, naming the shape.
  const two = await infer(url, randomFloats(2 * 784, 9), [2, 28, 28, 1], input.name);
  assert.equal(two.status, 400);
  assert.match(two.text, /has shape \[2,28,28,1\]; the model takes FP32 \[1,28,28,1\]/);
});
