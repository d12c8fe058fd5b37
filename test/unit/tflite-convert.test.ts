// Whole-model conversion targets from issue 4 on the shared Fashion-MNIST models, plus int8
// quantization checks on graphs built in code. All inference is real: LiteRT vs onnxruntime.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { GraphBuilder, seededRandom, seededWeights } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType } from '@edgepack/orchestrator/onnx/tensor.js';
import { loadLabels, loadNpyDataset } from '@edgepack/orchestrator/optimizer/dataset.js';
import { convertOnnxToTflite } from '@edgepack/orchestrator/tflite/convert.js';
import { openLiteRtSession } from '@edgepack/orchestrator/tflite/litert-runner.js';
import { inspectTflite } from '@edgepack/orchestrator/tflite/reader.js';
import { SHARED_MISSING, argmax, compareWithOnnx, cosine, maxAbsDiff, ortRun, randomData, runConverted, sharedModelsDir } from './tflite-fixtures.js';

const dir = sharedModelsDir();

test('fashion_cnn fp32: TFLite matches ONNX within 1e-4 on 200 test images', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const onnx = new Uint8Array(await readFile(path.join(dir, 'fashion_cnn.onnx')));
  const ds = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const conv = await convertOnnxToTflite(onnx, { precision: 'fp32' });
  assert.equal(conv.inputLayout, 'NHWC');
  const session = await openLiteRtSession(conv.tflite);
  try {
    const n = 200;
    const expected = await ortRun(onnx, { input: { data: ds.data.subarray(0, n * 784), dims: [n, 1, 28, 28] } });
    let maxErr = 0;
    for (let i = 0; i < n; i++) {
      const [out] = await runConverted(session, conv, ds.data.slice(i * 784, (i + 1) * 784), [1, 1, 28, 28]);
      maxErr = Math.max(maxErr, maxAbsDiff(out, expected.output.data.subarray(i * 10, (i + 1) * 10)));
    }
    assert.ok(maxErr <= 1e-4, `max abs error ${maxErr}`);
  } finally {
    session.close();
  }
});

test('fashion_cnn full-integer int8: top-1 drop ≤ 1 point on fashion_test1k, file ≤ 0.30× ONNX', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const onnx = new Uint8Array(await readFile(path.join(dir, 'fashion_cnn.onnx')));
  const calibration = await loadNpyDataset(path.join(dir, 'fashion_calib256.npy'));
  const test1k = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const labels = await loadLabels(path.join(dir, 'fashion_test1k.labels.npy'));
  const conv = await convertOnnxToTflite(onnx, { precision: 'int8', calibration });
  const info = inspectTflite(conv.tflite);
  assert.equal(info.inputs[0].dtype, 'float32');
  assert.ok(info.operators.QUANTIZE === 1 && info.operators.DEQUANTIZE === 1);
  assert.ok(conv.tflite.byteLength <= 0.3 * onnx.byteLength, `int8 ${conv.tflite.byteLength} B vs onnx ${onnx.byteLength} B`);
  const n = labels.length;
  const ref = await ortRun(onnx, { input: { data: test1k.data, dims: test1k.shape } });
  let ortCorrect = 0;
  for (let i = 0; i < n; i++) if (argmax(ref.output.data.subarray(i * 10, (i + 1) * 10)) === labels[i]) ortCorrect++;
  const session = await openLiteRtSession(conv.tflite);
  let tflCorrect = 0;
  try {
    for (let i = 0; i < n; i++) {
      const [out] = await runConverted(session, conv, test1k.data.slice(i * 784, (i + 1) * 784), [1, 1, 28, 28]);
      if (argmax(out) === labels[i]) tflCorrect++;
    }
  } finally {
    session.close();
  }
  const drop = ((ortCorrect - tflCorrect) / n) * 100;
  assert.ok(drop <= 1.0, `top-1 ${tflCorrect / n} vs onnx ${ortCorrect / n} (drop ${drop.toFixed(2)} points)`);
});

test('fashion_mlp int8-dynamic: int8 weights, float IO, logits close to ONNX', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const onnx = new Uint8Array(await readFile(path.join(dir, 'fashion_mlp.onnx')));
  const ds = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const conv = await convertOnnxToTflite(onnx, { precision: 'int8-dynamic' });
  assert.ok(conv.tflite.byteLength < 0.3 * onnx.byteLength);
  const session = await openLiteRtSession(conv.tflite);
  try {
    const x = ds.data.slice(0, 784);
    const [out] = await runConverted(session, conv, x, [1, 1, 28, 28]);
    const ref = (await ortRun(onnx, { input: { data: x, dims: [1, 1, 28, 28] } })).output.data;
    assert.ok(cosine(out, ref) > 0.999, `cosine ${cosine(out, ref)}`);
    assert.equal(argmax(out), argmax(ref));
  } finally {
    session.close();
  }
});

/** A small CNN exercising the int8 paths: conv+relu6, depthwise, add, pools, concat, FC, softmax. */
function smallCnn(): Uint8Array {
  const F = DataType.FLOAT;
  const g = new GraphBuilder();
  const rand = seededRandom(5);
  const w = (name: string, dims: number[]) => g.initializer(name, F, dims, seededWeights(rand, dims.reduce((a, b) => a * b, 1), dims.slice(1).reduce((a, b) => a * b, 1)));
  const b = (name: string, n: number) => g.initializer(name, F, [n], Array.from({ length: n }, () => rand() * 0.2 - 0.1));
  const x = g.input('x', F, ['batch', 3, 16, 16]);
  const six = g.initializer('six', F, [], [6]);
  const zero = g.initializer('zero', F, [], [0]);
  const c1 = g.node('Conv', [x, w('w1', [8, 3, 3, 3]), b('b1', 8)], 1, { kernel_shape: [3, 3], pads: [1, 1, 1, 1], strides: [2, 2] })[0];
  const r1 = g.node('Clip', [c1, zero, six])[0];
  const dw = g.node('Conv', [r1, w('w2', [8, 1, 3, 3]), b('b2', 8)], 1, { kernel_shape: [3, 3], pads: [1, 1, 1, 1], group: 8 })[0];
  const r2 = g.node('Relu', [dw])[0];
  const sum = g.node('Add', [r1, r2])[0];
  const mp = g.node('MaxPool', [sum], 1, { kernel_shape: [2, 2], strides: [2, 2] })[0];
  const ap = g.node('AveragePool', [sum], 1, { kernel_shape: [2, 2], strides: [2, 2] })[0];
  const cat = g.node('Concat', [mp, ap], 1, { axis: 1 })[0];
  const gap = g.node('GlobalAveragePool', [cat])[0];
  const flat = g.node('Flatten', [gap], 1, { axis: 1 })[0];
  const fc = g.node('Gemm', [flat, w('w3', [10, 16]), b('b3', 10)], 1, { transB: 1 })[0];
  g.node('Softmax', [fc], ['y'], { axis: 1 });
  g.output('y', F);
  return g.encode();
}

test('full-integer int8 of a small CNN stays close to float; int8 IO option gives int8 tensors', async () => {
  const onnx = smallCnn();
  const calibration = { data: randomData(32 * 3 * 16 * 16, 3), shape: [32, 3, 16, 16] };
  const { conversion, ortOut, tflOut } = await compareWithOnnx(onnx, [1, 3, 16, 16], { precision: 'int8', calibration }, 9);
  assert.ok(cosine(tflOut[0], ortOut[0]) > 0.99, `cosine ${cosine(tflOut[0], ortOut[0])}`);
  assert.ok(maxAbsDiff(tflOut[0], ortOut[0]) < 0.05);
  for (const op of ['CONV_2D', 'DEPTHWISE_CONV_2D', 'ADD', 'MAX_POOL_2D', 'AVERAGE_POOL_2D', 'CONCATENATION', 'MEAN', 'FULLY_CONNECTED', 'SOFTMAX']) {
    assert.ok((conversion.operators[op] ?? 0) >= 1, `${op} in ${JSON.stringify(conversion.operators)}`);
  }
  const int8Io = await convertOnnxToTflite(onnx, { precision: 'int8', calibration, int8Io: true });
  const info = inspectTflite(int8Io.tflite);
  assert.equal(info.inputs[0].dtype, 'int8');
  assert.equal(info.outputs[0].dtype, 'int8');
  assert.deepEqual(info.outputs[0].quantization, { scale: [1 / 256], zeroPoint: [-128], quantizedDimension: 0 });
  assert.equal(info.operators.QUANTIZE ?? 0, 0);
});

test('int8 without calibration data is refused with TFLITE_CALIBRATION_REQUIRED', async () => {
  await assert.rejects(convertOnnxToTflite(smallCnn(), { precision: 'int8' }), (e: { code?: string }) => e.code === 'TFLITE_CALIBRATION_REQUIRED');
});

test('mobilenet_v2 fp32: output cosine vs ONNX ≥ 0.999 (pads, depthwise, residual adds, GAP)', async (t) => {
  if (!dir) return t.skip(SHARED_MISSING);
  const onnx = new Uint8Array(await readFile(path.join(dir, 'mobilenet_v2.onnx')));
  const { ortOut, tflOut, conversion } = await compareWithOnnx(onnx, [1, 3, 224, 224], { precision: 'fp32' }, 21);
  assert.ok(cosine(tflOut[0], ortOut[0]) >= 0.999, `cosine ${cosine(tflOut[0], ortOut[0])}`);
  assert.equal(conversion.operators.DEPTHWISE_CONV_2D, 17);
  assert.equal(conversion.operators.TRANSPOSE ?? 0, 0);
});
