import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { decodeModel, encodeModel, type ModelProto } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { GraphBuilder, buildTinyMlpModelProto, seededRandom, seededWeights } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType, readTensorAsFloat32, readTensorData } from '@edgepack/orchestrator/onnx/tensor.js';
import { inspectDecodedModel } from '@edgepack/orchestrator/onnx/inspect.js';
import { quantizeDynamic } from '@edgepack/orchestrator/optimizer/quantize-dynamic.js';
import { quantizeStatic } from '@edgepack/orchestrator/optimizer/quantize-static.js';
import { computeQParams } from '@edgepack/orchestrator/optimizer/quant-math.js';
import { runModel, seededInput } from './onnx-fixtures.js';

function ops(m: ModelProto): string[] {
  return m.graph.node.map((n) => n.opType);
}

function cosine(a: Float32Array, b: Float32Array): number {
  let d = 0, x = 0, y = 0;
  for (let i = 0; i < a.length; i++) { d += a[i]! * b[i]!; x += a[i]! ** 2; y += b[i]! ** 2; }
  return d / Math.sqrt(x * y);
}

/** Op types after onnxruntime's own graph optimisation (what actually runs). */
async function ortOptimizedOps(bytes: Uint8Array): Promise<string[]> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-opt-'));
  try {
    const file = path.join(dir, 'opt.onnx');
    const s = await ort.InferenceSession.create(bytes, { optimizedModelFilePath: file, logSeverityLevel: 3 });
    await s.release();
    return decodeModel(new Uint8Array(await readFile(file))).graph.node.map((n) => (n.domain ? `${n.domain}:${n.opType}` : n.opType));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function matmulModel(): ModelProto {
  const rand = seededRandom(3);
  const b = new GraphBuilder();
  b.input('x', DataType.FLOAT, ['batch', 16]);
  b.initializer('W', DataType.FLOAT, [16, 8], seededWeights(rand, 128, 16));
  b.initializer('bias', DataType.FLOAT, [8], seededWeights(rand, 8, 8));
  const [m] = b.node('MatMul', ['x', 'W'], ['mm']);
  const [s] = b.node('Softsign', [m!], ['soft']); // an op no quantizer handles
  b.node('Add', [s!, 'bias'], ['y']);
  b.output('y', DataType.FLOAT, ['batch', 8]);
  return b.build();
}

test('dynamic: MatMul becomes DynamicQuantizeLinear → MatMulInteger → Cast → Mul(scales); float weight dropped', async () => {
  const model = matmulModel();
  const { model: q, report } = quantizeDynamic(model);
  assert.deepEqual(ops(q), ['DynamicQuantizeLinear', 'MatMulInteger', 'Cast', 'Mul', 'Mul', 'Softsign', 'Add']);
  const mmi = q.graph.node[1]!;
  const inits = new Map(q.graph.initializer.map((t) => [t.name!, t]));
  assert.equal(inits.get(mmi.input[1]!)!.dataType, DataType.INT8);
  assert.equal(inits.get(mmi.input[3]!)!.dataType, DataType.INT8);
  assert.deepEqual(Array.from(readTensorData(inits.get(mmi.input[3]!)!) as Int8Array), [0]); // symmetric
  assert.ok(!inits.has('W'), 'float weight must not be kept next to the int8 copy');
  assert.deepEqual(q.graph.node[2]!.attribute[0], { name: 'to', type: 2, i: DataType.FLOAT });
  // Mul(x_scale, W_scale) feeds Mul(cast, ·).
  assert.deepEqual(q.graph.node[3]!.input, [q.graph.node[0]!.output[1], mmi.input[1]!.replace('_quantized', '_scale')]);
  assert.deepEqual(q.graph.node[4]!.input, [q.graph.node[2]!.output[0], q.graph.node[3]!.output[0]]);
  assert.equal(q.graph.node[4]!.output[0], 'mm');
  assert.equal(report.quantized.length, 1);
  const x = seededInput(4 * 16);
  const a = await runModel(encodeModel(model), { x: { data: x, dims: [4, 16] } });
  const r = await runModel(encodeModel(q), { x: { data: x, dims: [4, 16] } });
  assert.ok(cosine(a.y!, r.y!) > 0.999, `cosine ${cosine(a.y!, r.y!)}`);
});

test('dynamic: Gemm(transB) gets the same pattern plus the bias Add, per-channel optional', async () => {
  const model = buildTinyMlpModelProto();
  for (const perChannel of [false, true]) {
    const { model: q, report } = quantizeDynamic(model, { perChannel });
    assert.deepEqual(ops(q), [
      'Flatten', 'DynamicQuantizeLinear', 'MatMulInteger', 'Cast', 'Mul', 'Mul', 'Add', 'Relu',
      'DynamicQuantizeLinear', 'MatMulInteger', 'Cast', 'Mul', 'Mul', 'Add',
    ]);
    assert.deepEqual(report.quantized.map((d) => d.as), ['MatMulInteger', 'MatMulInteger']);
    const w = q.graph.initializer.find((t) => t.name?.startsWith('fc1.weight_T_quantized'))!;
    assert.deepEqual(w.dims, [784, 32]); // transposed to [K, N]
    const scale = q.graph.initializer.find((t) => t.name?.startsWith('fc1.weight_T_scale'))!;
    assert.deepEqual(scale.dims, perChannel ? [32] : []);
    assert.equal(q.graph.initializer.filter((t) => t.dataType === DataType.FLOAT && t.dims.length === 2).length, 0);
    const x = seededInput(3 * 784);
    const a = await runModel(encodeModel(model), { input: { data: x, dims: [3, 1, 28, 28] } });
    const r = await runModel(encodeModel(q), { input: { data: x, dims: [3, 1, 28, 28] } });
    assert.ok(cosine(a.output!, r.output!) > 0.995, `cosine ${cosine(a.output!, r.output!)}`);
  }
  // ORT fuses the pattern into its integer kernels.
  const fused = await ortOptimizedOps(encodeModel(quantizeDynamic(model).model));
  assert.ok(fused.some((o) => o.includes('DynamicQuantizeMatMul') || o.includes('MatMulIntegerToFloat')), fused.join(','));
});

test('dynamic: unsupported and custom-domain ops pass through untouched, with reasons', () => {
  const b = new GraphBuilder();
  b.opset('com.example', 1);
  b.input('x', DataType.FLOAT, [1, 4]);
  b.initializer('W', DataType.FLOAT, [4, 4], new Float32Array(16).fill(0.5));
  const [c] = b.node('Mystery', ['x'], ['c'], { alpha: { float: 0.5 }, mode: 'fast' }, { domain: 'com.example', name: 'mystery' });
  b.node('LSTM', [c!, 'W', 'W'], ['h'], { hidden_size: 4 }, { name: 'lstm' });
  b.node('MatMul', ['x', 'x'], ['mm'], {}, { name: 'act_matmul' });
  b.output('h', DataType.FLOAT);
  b.output('mm', DataType.FLOAT);
  const model = b.build();
  const { model: q, report } = quantizeDynamic(model);
  assert.deepEqual(q.graph.node.find((n) => n.name === 'mystery'), model.graph.node[0]);
  assert.deepEqual(report.skipped.map((s) => [s.node, /LSTM|constant/.test(s.reason ?? '')]), [['lstm', true], ['act_matmul', true]]);
  assert.ok(q.graph.initializer.some((t) => t.name === 'W' && t.dataType === DataType.FLOAT));
});

function convModel(): ModelProto {
  const rand = seededRandom(11);
  const b = new GraphBuilder();
  b.input('input', DataType.FLOAT, ['batch', 3, 8, 8]);
  b.initializer('w1', DataType.FLOAT, [8, 3, 3, 3], seededWeights(rand, 8 * 27, 27));
  b.initializer('b1', DataType.FLOAT, [8], seededWeights(rand, 8, 8).map((v) => v * 0.1));
  b.initializer('w2', DataType.FLOAT, [4, 8, 1, 1], seededWeights(rand, 32, 8));
  b.initializer('b2', DataType.FLOAT, [4], seededWeights(rand, 4, 4).map((v) => v * 0.1));
  b.node('Conv', ['input', 'w1', 'b1'], ['c1'], { kernel_shape: [3, 3], pads: [1, 1, 1, 1] }, { name: 'conv1' });
  b.node('Relu', ['c1'], ['r1'], {}, { name: 'relu1' });
  b.node('Conv', ['r1', 'w2', 'b2'], ['c2'], { kernel_shape: [1, 1] }, { name: 'conv2' });
  b.node('GlobalAveragePool', ['c2'], ['gap'], {}, { name: 'gap' });
  b.node('Flatten', ['gap'], ['output'], { axis: 1 }, { name: 'flatten' });
  b.output('output', DataType.FLOAT, ['batch', 4]);
  return b.build();
}

const convSig = { name: 'input', type: 'float32' as const, shape: ['batch', 3, 8, 8], hasShape: true };

test('static QDQ: int8 per-channel weights with DQ only, int32 bias = x_scale × w_scale, Relu folded, ORT fuses QLinearConv', async () => {
  const model = convModel();
  const calib = { source: 'calib', shape: [16, 3, 8, 8], data: seededInput(16 * 192, 5) };
  const { model: q, report } = await quantizeStatic(model, calib, convSig, { perChannel: true, reduceRange: false });
  assert.deepEqual(report.removedActivations, ['relu1']);
  assert.ok(!ops(q).includes('Relu'));
  const inits = new Map(q.graph.initializer.map((t) => [t.name!, t]));
  const conv1 = q.graph.node.find((n) => n.name === 'conv1')!;
  const wdq = q.graph.node.find((n) => n.output[0] === conv1.input[1])!;
  assert.equal(wdq.opType, 'DequantizeLinear');
  assert.deepEqual(wdq.attribute, [{ name: 'axis', type: 2, i: 0 }]);
  const wq = inits.get(wdq.input[0]!)!;
  assert.equal(wq.dataType, DataType.INT8);
  assert.deepEqual(wq.dims, [8, 3, 3, 3]);
  assert.ok(!q.graph.node.some((n) => n.opType === 'QuantizeLinear' && n.input[0] === 'w1'), 'weights get no QuantizeLinear');
  const wScale = readTensorAsFloat32(inits.get(wdq.input[1]!)!);
  assert.equal(wScale.length, 8);
  // Input activation parameters come from the input's calibrated range.
  const xdq = q.graph.node.find((n) => n.output[0] === conv1.input[0])!;
  const xScale = readTensorAsFloat32(inits.get(xdq.input[1]!)!)[0]!;
  let lo = Infinity, hi = -Infinity;
  for (const v of calib.data) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
  assert.equal(xScale, computeQParams(lo, hi, 'int8', false).scale);
  const bdq = q.graph.node.find((n) => n.output[0] === conv1.input[2])!;
  const bq = inits.get(bdq.input[0]!)!;
  assert.equal(bq.dataType, DataType.INT32);
  const bScale = readTensorAsFloat32(inits.get(bdq.input[1]!)!);
  for (let c = 0; c < 8; c++) assert.equal(bScale[c], Math.fround(xScale * wScale[c]!));
  // No float copy of any weight or bias survives.
  assert.deepEqual(q.graph.initializer.filter((t) => ['w1', 'w2', 'b1', 'b2'].includes(t.name!)), []);
  // GlobalAveragePool has its own output parameters; the graph output keeps its name.
  assert.ok(q.graph.node.some((n) => n.opType === 'QuantizeLinear' && n.input[0] === 'gap'));
  assert.equal(q.graph.node.find((n) => n.output.includes('output'))!.opType, 'Flatten');

  const fused = await ortOptimizedOps(encodeModel(q));
  assert.equal(fused.filter((o) => o === 'com.microsoft:QLinearConv').length, 2, fused.join(','));
  assert.ok(!fused.includes('Conv'));
  const x = seededInput(4 * 192, 77);
  const a = await runModel(encodeModel(model), { input: { data: x, dims: [4, 3, 8, 8] } });
  const r = await runModel(encodeModel(q), { input: { data: x, dims: [4, 3, 8, 8] } });
  assert.ok(cosine(a.output!, r.output!) > 0.995, `cosine ${cosine(a.output!, r.output!)}`);
});

test('static QDQ: uint8 activations (U8S8) and an unknown op passing through', async () => {
  const model = convModel();
  // Insert an op the quantizer does not know between the two convs.
  const relu = model.graph.node.find((n) => n.name === 'relu1')!;
  relu.output = ['r0'];
  model.graph.node.splice(2, 0, { input: ['r0'], output: ['r1'], name: 'softsign', opType: 'Softsign', attribute: [] });
  const calib = { source: 'calib', shape: [8, 3, 8, 8], data: seededInput(8 * 192, 5) };
  const { model: q } = await quantizeStatic(model, calib, convSig, { activationType: 'uint8' });
  const soft = q.graph.node.find((n) => n.name === 'softsign')!;
  assert.equal(soft.opType, 'Softsign');
  assert.ok(q.graph.initializer.filter((t) => t.name?.endsWith('_zp') && !t.name.startsWith('w')).every((t) => t.dataType === DataType.UINT8));
  const x = seededInput(2 * 192, 8);
  const a = await runModel(encodeModel(model), { input: { data: x, dims: [2, 3, 8, 8] } });
  const r = await runModel(encodeModel(q), { input: { data: x, dims: [2, 3, 8, 8] } });
  assert.ok(cosine(a.output!, r.output!) > 0.99);
});

test('static: calibration data of the wrong shape and an empty calibration set are rejected', async () => {
  const model = convModel();
  const wrong = { source: 'bad.npy', shape: [4, 1, 8, 8], data: new Float32Array(4 * 64) };
  await assert.rejects(quantizeStatic(model, wrong, convSig), (e: { code?: string; message: string }) =>
    e.code === 'DATASET_MISMATCH' && e.message.includes('bad.npy') && e.message.includes("'input'"));
  const empty = { source: 'empty.npy', shape: [0, 3, 8, 8], data: new Float32Array(0) };
  await assert.rejects(quantizeStatic(model, empty, convSig), (e: { code?: string }) => e.code === 'DATASET_EMPTY');
  assert.equal(inspectDecodedModel(model, new Uint8Array(0)).inputs[0]!.name, 'input');
});

test('a weight shared with an unquantized node is never stored twice in float', async () => {
  const rand = seededRandom(4);
  const b = new GraphBuilder();
  b.input('x', DataType.FLOAT, [2, 16]);
  b.initializer('W', DataType.FLOAT, [16, 8], seededWeights(rand, 128, 16));
  b.initializer('axes', DataType.INT64, [1], [0]);
  b.node('MatMul', ['x', 'W'], ['y'], {}, { name: 'mm' });
  b.node('ReduceSum', ['W', 'axes'], ['colsum'], { keepdims: 0 }, { name: 'tied_use' });
  b.output('y', DataType.FLOAT, [2, 8]);
  b.output('colsum', DataType.FLOAT, [8]);
  const model = b.build();
  const { model: q, report } = quantizeDynamic(model);
  assert.deepEqual(report.sharedWeightsDequantized, ['W']);
  assert.ok(!q.graph.initializer.some((t) => t.dataType === DataType.FLOAT && t.dims.length === 2), 'no 2-D float initializer left');
  const x = seededInput(32, 6);
  const a = await runModel(encodeModel(model), { x: { data: x, dims: [2, 16] } });
  const r = await runModel(encodeModel(q), { x: { data: x, dims: [2, 16] } });
  assert.ok(cosine(a.colsum!, r.colsum!) > 0.999);
  assert.ok(cosine(a.y!, r.y!) > 0.995);
});
