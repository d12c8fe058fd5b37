import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeModel, type ModelProto } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { GraphBuilder, buildTinyMlpModelProto, makeAttribute, seededRandom, seededWeights } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType, makeTensor, readTensorAsFloat32 } from '@edgepack/orchestrator/onnx/tensor.js';
import { convertToFloat16 } from '@edgepack/orchestrator/optimizer/fp16.js';
import { cleanupModel } from '@edgepack/orchestrator/optimizer/cleanup.js';
import { runModel, seededInput } from './onnx-fixtures.js';

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

test('fp16: float32 IO kept with Casts at the boundary, initializers become float16, runs in ORT', async () => {
  const model = buildTinyMlpModelProto();
  const { model: h, report } = convertToFloat16(model);
  assert.equal(report.initializersConverted, 4);
  assert.ok(h.graph.initializer.every((t) => t.dataType === DataType.FLOAT16));
  assert.equal(h.graph.input[0]!.type!.tensorType!.elemType, DataType.FLOAT);
  assert.equal(h.graph.output[0]!.type!.tensorType!.elemType, DataType.FLOAT);
  const first = h.graph.node[0]!;
  const last = h.graph.node[h.graph.node.length - 1]!;
  assert.deepEqual([first.opType, first.input[0], first.attribute[0]!.i], ['Cast', 'input', DataType.FLOAT16]);
  assert.deepEqual([last.opType, last.output[0], last.attribute[0]!.i], ['Cast', 'output', DataType.FLOAT]);
  assert.equal(report.castsInserted, 2);
  const x = seededInput(2 * 784);
  const a = await runModel(encodeModel(model), { input: { data: x, dims: [2, 1, 28, 28] } });
  const b = await runModel(encodeModel(h), { input: { data: x, dims: [2, 1, 28, 28] } });
  assert.ok(maxAbsDiff(a.output!, b.output!) < 0.02, `max diff ${maxAbsDiff(a.output!, b.output!)}`);
  // keep_io_types=false: the model's own IO becomes float16.
  const { model: h2 } = convertToFloat16(model, { keepIoTypes: false });
  assert.equal(h2.graph.input[0]!.type!.tensorType!.elemType, DataType.FLOAT16);
  assert.ok(!h2.graph.node.some((n) => n.opType === 'Cast'));
});

test('fp16: block-listed ops stay float32 behind Casts; out-of-range values are clamped and counted', async () => {
  const b = new GraphBuilder();
  b.input('x', DataType.FLOAT, [1, 6]);
  b.initializer('big', DataType.FLOAT, [6], [1e6, -1e6, 1, 2, 3, 1e-9]);
  b.initializer('floor', DataType.FLOAT, [6], [0.5, 0.5, 0.5, 0.5, 0.5, 0.5]);
  const [m] = b.node('Mul', ['x', 'big'], ['m'], {}, { name: 'mul' });
  const [mx] = b.node('Max', [m!, 'floor'], ['mx'], {}, { name: 'max' });
  b.node('Relu', [mx!], ['y'], {}, { name: 'relu' });
  b.output('y', DataType.FLOAT, [1, 6]);
  const model = b.build();
  const { model: h, report } = convertToFloat16(model);
  assert.equal(report.clampedValues, 2);
  assert.equal(report.underflowedValues, 1);
  assert.deepEqual(report.keptFp32.map((k) => k.node), ['max']);
  const max = h.graph.node.find((n) => n.name === 'max')!;
  // Max reads a float32 Cast of the fp16 Mul output, and the float32 'floor' initializer directly.
  const castIn = h.graph.node.find((n) => n.output[0] === max.input[0])!;
  assert.deepEqual([castIn.opType, castIn.attribute[0]!.i], ['Cast', DataType.FLOAT]);
  assert.equal(h.graph.initializer.find((t) => t.name === 'floor')!.dataType, DataType.FLOAT);
  const relu = h.graph.node.find((n) => n.name === 'relu')!;
  const castOut = h.graph.node.find((n) => n.output[0] === relu.input[0])!;
  assert.deepEqual([castOut.opType, castOut.attribute[0]!.i], ['Cast', DataType.FLOAT16]);
  const out = await runModel(encodeModel(h), { x: { data: Float32Array.from([1, 1, 1, 1, 1, 1]), dims: [1, 6] } });
  assert.deepEqual(Array.from(out.y!), [65504, 0.5, 1, 2, 3, 0.5]);
});

test('clean-up folds Constant and Identity nodes (PyTorch bias routing) and keeps outputs identical', async () => {
  const rand = seededRandom(9);
  const b = new GraphBuilder();
  b.input('input', DataType.FLOAT, [1, 2, 6, 6]);
  b.initializer('w', DataType.FLOAT, [3, 2, 3, 3], seededWeights(rand, 54, 18));
  b.initializer('bias_shared', DataType.FLOAT, [3], [0.1, -0.2, 0.3]);
  b.node('Identity', ['bias_shared'], ['bias_via_identity'], {}, { name: 'id' });
  b.node('Conv', ['input', 'w', 'bias_via_identity'], ['c'], { pads: [1, 1, 1, 1] }, { name: 'conv' });
  b.node('Constant', [], ['six'], { value: makeTensor('', DataType.FLOAT, [], [6]) }, { name: 'const6' });
  b.node('Constant', [], ['zero'], { value_float: { float: 0 } }, { name: 'const0' });
  b.node('Clip', ['c', 'zero', 'six'], ['clip'], {}, { name: 'clip' });
  b.node('Identity', ['clip'], ['output'], {}, { name: 'id_out' });
  b.node('Relu', ['c'], ['unused'], {}, { name: 'dead' });
  b.output('output', DataType.FLOAT, [1, 3, 6, 6]);
  const model: ModelProto = b.build();
  const { model: c, report } = cleanupModel(model);
  assert.equal(report.constantsToInitializers, 2);
  assert.equal(report.identitiesRemoved, 1); // the one feeding a graph output is kept
  assert.equal(report.deadNodesRemoved, 1);
  assert.deepEqual(c.graph.node.map((n) => n.opType), ['Conv', 'Clip', 'Identity']);
  assert.equal(c.graph.node[0]!.input[2], 'bias_shared');
  assert.deepEqual(Array.from(readTensorAsFloat32(c.graph.initializer.find((t) => t.name === 'six')!)), [6]);
  assert.equal(model.graph.node.length, 7, 'input model is not modified');
  const x = seededInput(72, 4);
  const a = await runModel(encodeModel(model), { input: { data: x, dims: [1, 2, 6, 6] } });
  const r = await runModel(encodeModel(c), { input: { data: x, dims: [1, 2, 6, 6] } });
  assert.deepEqual(Array.from(r.output!), Array.from(a.output!));
  assert.ok(makeAttribute('x', 1).type === 2 && makeAttribute('x', 1.5).type === 1);
});

test('clean-up folds BatchNormalization into the preceding Conv', async () => {
  const rand = seededRandom(21);
  const b = new GraphBuilder();
  b.input('input', DataType.FLOAT, [1, 2, 5, 5]);
  b.initializer('w', DataType.FLOAT, [4, 2, 3, 3], seededWeights(rand, 72, 18));
  b.initializer('scale', DataType.FLOAT, [4], [1.5, 0.5, 2, 1]);
  b.initializer('bnb', DataType.FLOAT, [4], [0.1, 0.2, -0.3, 0]);
  b.initializer('mean', DataType.FLOAT, [4], [0.05, -0.1, 0.2, 0]);
  b.initializer('var', DataType.FLOAT, [4], [0.9, 1.1, 0.5, 2]);
  b.node('Conv', ['input', 'w'], ['c'], { pads: [1, 1, 1, 1] });
  b.node('BatchNormalization', ['c', 'scale', 'bnb', 'mean', 'var'], ['output'], { epsilon: { float: 1e-5 } });
  b.output('output', DataType.FLOAT, [1, 4, 5, 5]);
  const model = b.build();
  const { model: c, report } = cleanupModel(model);
  assert.equal(report.batchNormsFolded, 1);
  assert.deepEqual(c.graph.node.map((n) => n.opType), ['Conv']);
  const x = seededInput(50, 2);
  const a = await runModel(encodeModel(model), { input: { data: x, dims: [1, 2, 5, 5] } });
  const r = await runModel(encodeModel(c), { input: { data: x, dims: [1, 2, 5, 5] } });
  assert.ok(maxAbsDiff(a.output!, r.output!) < 1e-5);
});
