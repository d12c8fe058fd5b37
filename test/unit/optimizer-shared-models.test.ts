// Accuracy targets from issue 3 on the shared Fashion-MNIST models, and every variant of every
// shared model loading and running in onnxruntime-node. Timing lives in test/bench, not here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { decodeModel, encodeModel } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { loadLabels, loadNpyDataset } from '@edgepack/orchestrator/optimizer/dataset.js';
import { evaluateModels } from '@edgepack/orchestrator/optimizer/evaluate.js';
import { optimizeModel, type Precision } from '@edgepack/orchestrator/optimizer/optimize.js';
import { seededInput, sharedModelsDir, SHARED_MISSING } from './onnx-fixtures.js';

const dir = sharedModelsDir();

test('fashion_cnn int8-static (per-channel, MinMax): top-1 drop ≤ 0.3 pt, size ≤ 0.27×', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const fp32 = new Uint8Array(readFileSync(path.join(dir, 'fashion_cnn.onnx')));
  const calibration = await loadNpyDataset(path.join(dir, 'fashion_calib256.npy'));
  const { model, report } = await optimizeModel(decodeModel(fp32), { precision: 'int8-static', calibration, method: 'minmax', perChannel: true });
  assert.equal(report.skipped.length, 0);
  const data = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const labels = await loadLabels(path.join(dir, 'fashion_test1k.labels.npy'));
  const r = await evaluateModels(fp32, encodeModel(model), data, { labels, latencyRuns: 0 });
  assert.equal(r.referenceTop1, 0.915);
  assert.ok(r.top1DropPoints! <= 0.3, `top-1 ${r.candidateTop1} vs ${r.referenceTop1}`);
  assert.ok(r.sizeRatio <= 0.27, `size ratio ${r.sizeRatio}`);
});

test('fashion_mlp int8-dynamic: top-1 drop ≤ 0.3 pt, size ≤ 0.27×', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const fp32 = new Uint8Array(readFileSync(path.join(dir, 'fashion_mlp.onnx')));
  const { model } = await optimizeModel(decodeModel(fp32), { precision: 'int8-dynamic' });
  const data = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const labels = await loadLabels(path.join(dir, 'fashion_test1k.labels.npy'));
  const r = await evaluateModels(fp32, encodeModel(model), data, { labels, latencyRuns: 0 });
  assert.equal(r.referenceTop1, 0.875);
  assert.ok(r.top1DropPoints! <= 0.3, `top-1 ${r.candidateTop1} vs ${r.referenceTop1}`);
  assert.ok(r.sizeRatio <= 0.27, `size ratio ${r.sizeRatio}`);
});

test('every variant of every shared model loads and runs in onnxruntime-node', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const fashionCalib = await loadNpyDataset(path.join(dir, 'fashion_calib256.npy'));
  for (const name of ['fashion_cnn', 'fashion_mlp', 'mobilenet_v2']) {
    const bytes = new Uint8Array(readFileSync(path.join(dir, `${name}.onnx`)));
    const dims = name === 'mobilenet_v2' ? [1, 3, 224, 224] : [1, 1, 28, 28];
    const per = dims.reduce((a, b) => a * b, 1);
    // mobilenet has random weights and no data set: two seeded samples are enough to load and run.
    const calibration = name === 'mobilenet_v2' ? { source: 'seeded', shape: [2, ...dims.slice(1)], data: seededInput(2 * per, 3) } : fashionCalib;
    // Inputs from the calibration distribution: int8 ranges are only valid there.
    const x = new ort.Tensor('float32', name === 'mobilenet_v2' ? seededInput(per, 9) : fashionCalib.data.slice(per * 7, per * 8), dims);
    const ref = await ort.InferenceSession.create(bytes, { intraOpNumThreads: 1, logSeverityLevel: 3 });
    const expected = (await ref.run({ input: x })).output!.data as Float32Array;
    await ref.release();
    for (const precision of ['fp16', 'int8-dynamic', 'int8-static'] as Precision[]) {
      const { model } = await optimizeModel(decodeModel(bytes), { precision, calibration, maxCalibrationSamples: 32 });
      const s = await ort.InferenceSession.create(encodeModel(model), { intraOpNumThreads: 1, logSeverityLevel: 3 });
      const out = (await s.run({ input: x })).output!;
      await s.release();
      assert.deepEqual(out.dims, [1, name === 'mobilenet_v2' ? 1000 : 10], `${name} ${precision}`);
      const y = out.data as Float32Array;
      assert.ok(y.every(Number.isFinite), `${name} ${precision} produced non-finite values`);
      let d = 0, a2 = 0, b2 = 0;
      for (let i = 0; i < y.length; i++) { d += y[i]! * expected[i]!; a2 += y[i]! ** 2; b2 += expected[i]! ** 2; }
      const cos = d / Math.sqrt(a2 * b2);
      assert.ok(cos > (precision === 'fp16' ? 0.9999 : 0.95), `${name} ${precision}: cosine ${cos}`);
    }
  }
});
