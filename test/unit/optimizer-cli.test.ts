import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { decodeModel } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { encodeNpy } from '@edgepack/orchestrator/optimizer/npy.js';
import { evaluateModels } from '@edgepack/orchestrator/optimizer/evaluate.js';
import { run as optimize } from '@edgepack/orchestrator/commands/optimize.js';
import { run as evaluate } from '@edgepack/orchestrator/commands/evaluate.js';
import { seededInput } from './onnx-fixtures.js';

async function quiet<T>(fn: () => Promise<T>): Promise<{ value: T; out: string; err: string }> {
  const log = console.log, error = console.error;
  let out = '', err = '';
  console.log = (...a: unknown[]) => { out += `${a.join(' ')}\n`; };
  console.error = (...a: unknown[]) => { err += `${a.join(' ')}\n`; };
  try {
    return { value: await fn(), out, err };
  } finally {
    console.log = log;
    console.error = error;
  }
}

test('evaluateModels: identical models agree fully; labels count is checked', async () => {
  const m = buildTinyMlpModel();
  const data = { source: 'x', shape: [8, 1, 28, 28], data: seededInput(8 * 784) };
  const r = await evaluateModels(m, m, data, { latencyRuns: 3, warmupRuns: 1 });
  assert.equal(r.top1Agreement, 1);
  assert.equal(r.maxAbsError, 0);
  assert.ok(Math.abs(r.cosineMin - 1) < 1e-6);
  assert.equal(r.sizeRatio, 1);
  assert.equal(r.latency?.runs, 3);
  await assert.rejects(evaluateModels(m, m, data, { labels: [1, 2, 3], latencyRuns: 0 }), (e: { code?: string }) => e.code === 'DATASET_MISMATCH');
});

test('optimize and evaluate commands write a model, a JSON report and a comparison', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-cli-'));
  try {
    const fp32 = path.join(dir, 'mlp.onnx');
    await writeFile(fp32, buildTinyMlpModel());
    const xs = path.join(dir, 'x.npy');
    await writeFile(xs, encodeNpy({ dtype: 'float32', shape: [16, 1, 28, 28], data: seededInput(16 * 784) }));
    const ys = path.join(dir, 'y.npy');
    await writeFile(ys, encodeNpy({ dtype: 'int64', shape: [16], data: BigInt64Array.from({ length: 16 }, (_, i) => BigInt(i % 10)) }));

    const out = path.join(dir, 'mlp.s8.onnx');
    const r1 = await quiet(() => optimize([fp32, '-o', out, '--precision', 'int8-static', '--calibration', xs, '--method', 'percentile']));
    assert.equal(r1.value, 0, r1.err);
    const report = JSON.parse(await readFile(`${out}.report.json`, 'utf8')) as { precision: string; quantized: unknown[]; calibration: { method: string; samples: number } };
    assert.equal(report.precision, 'int8-static');
    assert.equal(report.calibration.method, 'percentile');
    assert.equal(report.calibration.samples, 16);
    assert.equal(report.quantized.length, 2); // the two Gemms; Flatten reads the float graph input
    assert.ok(decodeModel(new Uint8Array(await readFile(out))).graph.node.some((n) => n.opType === 'QuantizeLinear'));

    const r2 = await quiet(() => evaluate([out, '--reference', fp32, '--data', xs, '--labels', ys, '--runs', '3', '--json']));
    assert.equal(r2.value, 0, r2.err);
    const ev = JSON.parse(r2.out) as { results: Record<string, { sizeRatio: number; candidateTop1: number }> };
    assert.ok(ev.results[out]!.sizeRatio < 0.3);
    assert.equal(typeof ev.results[out]!.candidateTop1, 'number');

    // Missing calibration for static, and a wrong-shape dataset, fail with coded errors.
    await assert.rejects(quiet(() => optimize([fp32, '-o', out, '--precision', 'int8-static'])), (e: { code?: string }) => e.code === 'CALIBRATION_REQUIRED');
    const bad = path.join(dir, 'bad.npy');
    await writeFile(bad, encodeNpy({ dtype: 'float32', shape: [4, 28, 28], data: new Float32Array(4 * 784) }));
    await assert.rejects(quiet(() => optimize([fp32, '-o', out, '--precision', 'int8-static', '--calibration', bad])), (e: { code?: string }) => e.code === 'DATASET_MISMATCH');
    assert.equal((await quiet(() => optimize([fp32, '--precision', 'int4']))).value, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('models with a fixed batch size are calibrated and evaluated in batches of that size', async () => {
  const { buildTinyMlpModelProto } = await import('@edgepack/orchestrator/onnx/graph-builder.js');
  const { encodeModel } = await import('@edgepack/orchestrator/onnx/onnx-model.js');
  const { optimizeModel } = await import('@edgepack/orchestrator/optimizer/optimize.js');
  const model = buildTinyMlpModelProto();
  model.graph.input[0]!.type!.tensorType!.shape!.dims[0] = { value: 1 };
  model.graph.output[0]!.type!.tensorType!.shape!.dims[0] = { value: 1 };
  const data = { source: 'x', shape: [6, 1, 28, 28], data: seededInput(6 * 784) };
  const { model: q } = await optimizeModel(model, { precision: 'int8-static', calibration: data });
  const r = await evaluateModels(encodeModel(model), encodeModel(q), data, { latencyRuns: 2, warmupRuns: 1 });
  assert.equal(r.samples, 6);
  assert.ok(r.cosineMin > 0.99);
});
