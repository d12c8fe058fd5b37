// Build selection against real data: each profile gets the first variant in its preference
// order that meets its budgets, and every decision is recorded with its figures.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { sharedModelsDir } from '../support/paths.js';
import { startOrchestrator, tempDir, until, type Orchestrator } from '../support/processes.js';

const shared = sharedModelsDir();
let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;

before(async () => {
  dir = await tempDir('select');
  orch = await startOrchestrator(join(dir.path, 'o'));
});
after(async () => {
  await orch?.stop();
  await dir?.remove();
});

test('fashion_cnn with calibration, evaluation data and labels: decisions follow each profile\'s preference and budgets', { skip: shared ? false : 'needs ../shared/models (fashion_cnn and Fashion-MNIST data)' }, async () => {
  const file = (n: string) => readFile(join(shared!, n)).then((b) => new Uint8Array(b));
  const up = await orch.api('POST', '/v1/models?name=fashion-cnn&version=1', await file('fashion_cnn.onnx'));
  const id = up.body.model.id;
  for (const [kind, name] of [['calibration', 'fashion_calib256.npy'], ['evaluation', 'fashion_test1k.npy'], ['labels', 'fashion_test1k.labels.npy']] as const) {
    const r = await orch.api('POST', `/v1/models/${id}/datasets?kind=${kind}`, await file(name));
    assert.equal(r.status, 201, JSON.stringify(r.body));
  }
  // Data that does not fit the model is refused with both shapes named.
  const bad = await orch.api('POST', `/v1/models/${id}/datasets?kind=calibration`, await file('fashion_test1k.labels.npy'));
  assert.equal(bad.status, 400);
  assert.equal(bad.body.error.code, 'DATASET_MISMATCH');
  assert.match(bad.body.error.message, /int64\[1000\].*float32\[batch,1,28,28\]/);

  const b = await orch.api('POST', '/v1/builds', { modelId: id, profiles: ['raspberry-pi-4', 'jetson-orin-nano', 'x86-64-gateway'] });
  const build = await until('build', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status === 'succeeded' && r.body.build;
  }, 120_000);
  const art = Object.fromEntries(build.artifacts.map((a: any) => [a.profile, a]));

  for (const a of build.artifacts) {
    assert.equal(a.status, 'built');
    // The chosen variant is the first accepted one; everything tried before it says why not.
    const firstAccepted = a.decisions.findIndex((d: any) => d.accepted);
    assert.equal(a.decisions.length, firstAccepted + 1);
    assert.equal(a.decisions[firstAccepted].precision, a.precision);
    for (const d of a.decisions.slice(0, firstAccepted)) assert.ok(d.reason.length > 10, JSON.stringify(d));
  }
  // A GPU profile is not judged by the build host's CPU latency: fp16 at no accuracy cost.
  const j = art['jetson-orin-nano'];
  assert.equal(j.precision, 'fp16');
  const jd = j.decisions[0].metrics;
  assert.equal(jd.data, 'evaluation');
  assert.equal(jd.samples, 1000);
  assert.ok(Math.abs(jd.referenceTop1 - 0.915) < 0.002, `fp32 top-1 ${jd.referenceTop1}`);
  assert.ok(jd.top1DropPoints <= 0.5);
  assert.ok(jd.sizeRatio < 0.55);
  assert.ok(jd.latencyRatio > 0, 'the latency ratio is recorded even where it does not decide');

  // The Pi prefers int8: static quantization is measured with labels; it is taken unless it is slower than fp32 here.
  const pi = art['raspberry-pi-4'];
  const s = pi.decisions[0];
  assert.equal(s.precision, 'int8-static');
  assert.ok(s.metrics.top1DropPoints <= 1.0, `int8 drop ${s.metrics.top1DropPoints}`);
  assert.ok(s.metrics.sizeRatio < 0.3);
  if (!s.accepted) assert.match(s.reason, /slower than fp32/);
  else assert.equal(pi.precision, 'int8-static');

  // The gateway tries int8 first too and falls back to the upload itself, never to something slower.
  const gw = art['x86-64-gateway'];
  assert.equal(gw.decisions[0].precision, 'int8-static');
  if (gw.precision === 'fp32') assert.equal(gw.sizeBytes, up.body.model.sizeBytes);
  else assert.ok(gw.decisions.find((d: any) => d.accepted).metrics.latencyRatio <= 1.05);
});
