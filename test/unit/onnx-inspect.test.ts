import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { inspectModel } from '@edgepack/orchestrator/onnx/inspect.js';
import { GraphBuilder, buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType } from '@edgepack/orchestrator/onnx/tensor.js';
import { run } from '@edgepack/orchestrator/commands/inspect.js';
import { sharedModelsDir, SHARED_MISSING } from './onnx-fixtures.js';

test('inspect tiny MLP: signature, histogram, parameters, MACs', () => {
  const r = inspectModel(buildTinyMlpModel());
  assert.equal(r.format, 'onnx');
  assert.equal(r.irVersion, 7);
  assert.equal(r.opset, 13);
  assert.deepEqual(r.inputs, [{ name: 'input', type: 'float32', shape: ['batch', 1, 28, 28], hasShape: true }]);
  assert.deepEqual(r.outputs, [{ name: 'output', type: 'float32', shape: ['batch', 10], hasShape: true }]);
  assert.deepEqual(r.opHistogram, { Flatten: 1, Gemm: 2, Relu: 1 });
  assert.equal(r.parameterCount, 32 * 784 + 32 + 10 * 32 + 10);
  assert.equal(r.weightBytes.float32, r.parameterCount * 4);
  assert.equal(r.macs.total, 784 * 32 + 32 * 10);
  assert.match(r.sha256, /^[0-9a-f]{64}$/);
});

test('inspect Conv/MatMul MACs with strides, groups, padding; initializer inputs are not listed', () => {
  const b = new GraphBuilder();
  b.input('x', DataType.FLOAT, [1, 4, 8, 8]);
  b.input('w', DataType.FLOAT, [8, 2, 3, 3]); // initializer also listed as input (IR<4 style)
  b.initializer('w', DataType.FLOAT, [8, 2, 3, 3], new Float32Array(8 * 2 * 9));
  b.initializer('m', DataType.FLOAT, [16, 5], new Float32Array(80));
  b.initializer('shape', DataType.INT64, [3], [1, 8, 16]);
  const [c] = b.node('Conv', ['x', 'w'], 1, { group: 2, strides: [2, 2], pads: [1, 1, 1, 1], kernel_shape: [3, 3] });
  const [r] = b.node('Reshape', [c!, 'shape'], 1);
  const [y] = b.node('MatMul', [r!, 'm'], ['y']);
  b.output(y!, DataType.FLOAT, [1, 8, 5]);
  const res = inspectModel(b.encode());
  assert.deepEqual(res.inputs.map((i) => i.name), ['x']);
  // Conv out [1,8,4,4]: 128 outputs × (2×3×3); MatMul [1,8,16]×[16,5]: 40 outputs × 16.
  assert.equal(res.macs.byOp.Conv, 128 * 18);
  assert.equal(res.macs.byOp.MatMul, 40 * 16);
  assert.equal(res.parameterCount, 144 + 80);
  assert.equal(res.weightBytes.int64, 24);
});

test('inspect shared models: known figures', async (t) => {
  const dir = sharedModelsDir();
  if (!dir) return t.skip(SHARED_MISSING);
  const cnn = inspectModel(new Uint8Array(readFileSync(path.join(dir, 'fashion_cnn.onnx'))));
  assert.deepEqual(cnn.inputs[0]?.shape, ['batch', 1, 28, 28]);
  assert.equal(cnn.macs.unestimatedNodes.length, 0);
  assert.equal(cnn.opHistogram.Conv, 3);
  const mb = inspectModel(new Uint8Array(readFileSync(path.join(dir, 'mobilenet_v2.onnx'))));
  // MobileNetV2 at 224×224 is ~300 M MACs, 3.5 M parameters.
  assert.ok(mb.macs.total > 290e6 && mb.macs.total < 310e6, `macs ${mb.macs.total}`);
  assert.ok(mb.parameterCount > 3.4e6 && mb.parameterCount < 3.6e6);
});

test('inspect rejects non-ONNX bytes with a coded error; CLI returns usage error', async () => {
  assert.throws(() => inspectModel(new TextEncoder().encode('not a model at all')), (e: { code?: string }) => e.code === 'MODEL_NOT_ONNX');
  const errors: unknown[] = [];
  const orig = console.error;
  console.error = (...a: unknown[]) => { errors.push(a); };
  try {
    assert.equal(await run([]), 2);
  } finally {
    console.error = orig;
  }
  assert.equal(errors.length, 1);
});
