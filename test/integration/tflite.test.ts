// The TFLite path end to end: an ONNX upload with calibration data becomes a full-integer
// int8 TFLite bundle for a Coral-profile agent, which benchmarks it with LiteRT; and a .tflite
// uploaded directly is packaged as is.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { encodeNpy } from '@edgepack/orchestrator/optimizer/npy.js';
import { sharedModelsDir } from '../support/paths.js';
import { ONE_WAVE, startAgent, startOrchestrator, tempDir, until, type Orchestrator, type Proc } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;
let coral: Proc;
let coralId: string;

before(async () => {
  dir = await tempDir('tflite');
  orch = await startOrchestrator(join(dir.path, 'orchestrator'));
  coral = await startAgent(orch, join(dir.path, 'coral'), { name: 'coral-1', profile: 'coral-dev-board' });
  coralId = (await coral.event('started')).deviceId as string;
});

after(async () => {
  await coral?.kill();
  await orch?.stop();
  await dir?.remove();
});

/** fashion_cnn and its calibration split when ../shared is here; otherwise a model and data made in code. */
async function modelAndCalibration(): Promise<{ model: Uint8Array; calibration: Uint8Array; name: string }> {
  const shared = sharedModelsDir();
  if (shared) {
    return { name: 'fashion-cnn', model: new Uint8Array(await readFile(join(shared, 'fashion_cnn.onnx'))), calibration: new Uint8Array(await readFile(join(shared, 'fashion_calib256.npy'))) };
  }
  let seed = 7;
  const data = Float32Array.from({ length: 64 * 784 }, () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1);
  return { name: 'tiny-mlp', model: buildTinyMlpModel({ seed: 3 }), calibration: encodeNpy({ dtype: 'float32', shape: [64, 1, 28, 28], data }) };
}

async function waitBuild(id: string): Promise<any> {
  return until('build finished', async () => {
    const r = await orch.api('GET', `/v1/builds/${id}`);
    return r.body.build.status !== 'queued' && r.body.build.status !== 'running' && r.body.build;
  }, 120_000);
}

async function rollOutTo(buildId: string): Promise<any> {
  const r = await orch.api('POST', '/v1/rollouts', { buildId, target: { deviceIds: [coralId] }, ...ONE_WAVE });
  assert.equal(r.status, 201, JSON.stringify(r.body));
  return until('rollout finished', async () => {
    const g = await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`);
    return g.body.rollout.status !== 'running' && g.body.rollout;
  }, 60_000);
}

test('an ONNX upload with calibration data reaches a Coral agent as int8 TFLite, benchmarked with LiteRT', async () => {
  const { model, calibration, name } = await modelAndCalibration();
  const up = await orch.api('POST', `/v1/models?name=${name}&version=1`, model);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  const ds = await orch.api('POST', `/v1/models/${up.body.model.id}/datasets?kind=calibration`, calibration);
  assert.equal(ds.status, 201, JSON.stringify(ds.body));

  // The Coral profile's p95 budget is its TPU's; here LiteRT runs in wasm on a shared 2-core CI
  // host, so the budget is widened: this test is about the TFLite path, and budget refusals are
  // tested on their own (negative.test.ts).
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['coral-dev-board', 'esp32-s3'], acceptance: { p95LatencyMs: 2000 } });
  // Quantization runs in a worker thread: the API answers while the build is still running.
  const health = await orch.api('GET', '/v1/health');
  const during = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
  assert.equal(health.status, 200);
  assert.ok(['queued', 'running'].includes(during.body.build.status), `build already ${during.body.build.status}`);
  const build = await waitBuild(b.body.build.id);
  assert.deepEqual(build.progress, { step: 'done', done: 2, total: 2 });
  assert.equal(build.status, 'succeeded', JSON.stringify(build));
  assert.equal(build.options.datasets.calibration, ds.body.dataset.id, 'the latest calibration upload is used by default');
  const coralArt = build.artifacts.find((a: any) => a.profile === 'coral-dev-board');
  assert.equal(coralArt.status, 'built', JSON.stringify(coralArt));
  assert.equal(coralArt.format, 'tflite');
  assert.equal(coralArt.precision, 'int8');
  assert.equal(coralArt.layout, 'NHWC');
  assert.ok(coralArt.sizeBytes < 0.3 * up.body.model.sizeBytes, `int8 TFLite is ${coralArt.sizeBytes} bytes vs ${up.body.model.sizeBytes}`);
  assert.equal(coralArt.decisions[0].accepted, true);

  const bundle = await orch.api('GET', `/v1/bundles/${coralArt.bundleId}`);
  assert.equal(bundle.body.bundle.manifest.layout, 'NHWC');
  assert.deepEqual(bundle.body.bundle.manifest.io.inputs[0].shape, [1, 28, 28, 1]);

  const done = await rollOutTo(build.id);
  assert.equal(done.status, 'succeeded', JSON.stringify(done.devices));
  const res = done.devices[0].result;
  assert.equal(res.runtime, 'litert');
  assert.deepEqual(res.providers, ['wasm']);
  assert.ok(res.latencyMs.p50 > 0 && res.throughputPerSec > 0);
  assert.equal(res.golden.passed, true);
});

test('a model too large for the ESP32 budget is refused with both sizes in the reason', async () => {
  // A wide MLP: about 3 MB of fp32 weights, over 512 KB even at int8.
  const model = buildTinyMlpModel({ seed: 9, hidden: 1024 });
  const up = await orch.api('POST', '/v1/models?name=wide&version=1', model);
  let seed = 1;
  const data = Float32Array.from({ length: 16 * 784 }, () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) - 0.5);
  await orch.api('POST', `/v1/models/${up.body.model.id}/datasets?kind=calibration`, encodeNpy({ dtype: 'float32', shape: [16, 1, 28, 28], data }));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['esp32-s3'] });
  const build = await waitBuild(b.body.build.id);
  const a = build.artifacts[0];
  assert.equal(a.status, 'skipped');
  const d = a.decisions[0];
  assert.equal(d.accepted, false);
  assert.match(d.reason, new RegExp(`${d.metrics.sizeBytes} bytes, over the profile's 524288-byte budget`));
});

test('a .tflite uploaded directly is inspected, packaged as is, and runs on the Coral agent', async () => {
  const previous = (await orch.api('GET', `/v1/devices/${coralId}`)).body.device.activeBundle;
  // Take the converter's own output from the first build as the "user's" .tflite.
  const bundle = (await orch.api('GET', `/v1/bundles/${previous}`)).body.bundle;
  const file = bundle.manifest.files.find((f: any) => f.role === 'model');
  const bytes = new Uint8Array(await (await orch.fetch(`${orch.url}/v1/bundles/${previous}/files/${file.path}`, { headers: { authorization: `Bearer ${orch.adminToken}` } })).arrayBuffer());
  const up = await orch.api('POST', '/v1/models?name=direct-tflite&version=1', bytes);
  assert.equal(up.status, 201, JSON.stringify(up.body));
  assert.equal(up.body.model.format, 'tflite');
  assert.equal(up.body.model.details.precision, 'int8');
  assert.deepEqual(up.body.model.inputs[0].shape, [1, 28, 28, 1]);

  // Budget widened for wasm on a shared CI host, as above.
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['coral-dev-board', 'x86-64-gateway'], acceptance: { p95LatencyMs: 2000 } });
  const build = await waitBuild(b.body.build.id);
  const byProfile = Object.fromEntries(build.artifacts.map((a: any) => [a.profile, a]));
  assert.equal(byProfile['coral-dev-board'].status, 'built');
  assert.equal(byProfile['x86-64-gateway'].status, 'skipped');
  const done = await rollOutTo(build.id);
  assert.equal(done.devices[0].state, 'active', JSON.stringify(done.devices[0]));
  assert.equal(done.devices[0].result.runtime, 'litert');
});
