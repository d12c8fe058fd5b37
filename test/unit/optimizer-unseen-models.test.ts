// Model shapes users bring that the shared set lacks, built in code: an attention block
// (MatMul of two activations, Softmax, Transpose), a ResNet-style residual block, an LSTM.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { encodeModel, type ModelProto } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { GraphBuilder, seededRandom, seededWeights } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType } from '@edgepack/orchestrator/onnx/tensor.js';
import { optimizeModel, type Precision } from '@edgepack/orchestrator/optimizer/optimize.js';
import { runModel, seededInput } from './onnx-fixtures.js';

function cosine(a: Float32Array, b: Float32Array): number {
  let d = 0, x = 0, y = 0;
  for (let i = 0; i < a.length; i++) { d += a[i]! * b[i]!; x += a[i]! ** 2; y += b[i]! ** 2; }
  return d / Math.sqrt(x * y);
}

function attentionModel(): ModelProto {
  const rand = seededRandom(5);
  const b = new GraphBuilder();
  b.input('input', DataType.FLOAT, ['batch', 6, 16]);
  for (const n of ['wq', 'wk', 'wv', 'wo']) b.initializer(n, DataType.FLOAT, [16, 16], seededWeights(rand, 256, 16));
  b.initializer('scale', DataType.FLOAT, [], [0.25]);
  b.node('MatMul', ['input', 'wq'], ['q'], {}, { name: 'q_proj' });
  b.node('MatMul', ['input', 'wk'], ['k'], {}, { name: 'k_proj' });
  b.node('MatMul', ['input', 'wv'], ['v'], {}, { name: 'v_proj' });
  b.node('Transpose', ['k'], ['kt'], { perm: [0, 2, 1] }, { name: 'k_t' });
  b.node('MatMul', ['q', 'kt'], ['scores'], {}, { name: 'qk' });
  b.node('Mul', ['scores', 'scale'], ['scaled'], {}, { name: 'scale' });
  b.node('Softmax', ['scaled'], ['attn'], { axis: -1 }, { name: 'softmax' });
  b.node('MatMul', ['attn', 'v'], ['ctx'], {}, { name: 'av' });
  b.node('MatMul', ['ctx', 'wo'], ['proj'], {}, { name: 'o_proj' });
  b.node('Add', ['proj', 'input'], ['output'], {}, { name: 'residual' });
  b.output('output', DataType.FLOAT, ['batch', 6, 16]);
  return b.build();
}

function residualModel(): ModelProto {
  const rand = seededRandom(8);
  const b = new GraphBuilder();
  b.input('input', DataType.FLOAT, ['batch', 4, 6, 6]);
  b.initializer('w1', DataType.FLOAT, [4, 4, 3, 3], seededWeights(rand, 144, 36));
  b.initializer('w2', DataType.FLOAT, [4, 4, 3, 3], seededWeights(rand, 144, 36));
  b.initializer('b1', DataType.FLOAT, [4], [0.1, 0, -0.1, 0.05]);
  b.initializer('bn_s', DataType.FLOAT, [4], [1, 0.8, 1.2, 1]);
  b.initializer('bn_b', DataType.FLOAT, [4], [0, 0.1, 0, -0.1]);
  b.initializer('bn_m', DataType.FLOAT, [4], [0, 0.05, 0, 0]);
  b.initializer('bn_v', DataType.FLOAT, [4], [1, 1, 0.9, 1.1]);
  b.node('Conv', ['input', 'w1', 'b1'], ['c1'], { pads: [1, 1, 1, 1] });
  b.node('Relu', ['c1'], ['r1']);
  b.node('Conv', ['r1', 'w2'], ['c2'], { pads: [1, 1, 1, 1] });
  b.node('BatchNormalization', ['c2', 'bn_s', 'bn_b', 'bn_m', 'bn_v'], ['bn']);
  b.node('Add', ['bn', 'input'], ['sum']);
  b.node('Relu', ['sum'], ['output']);
  b.output('output', DataType.FLOAT, ['batch', 4, 6, 6]);
  return b.build();
}

async function checkVariants(model: ModelProto, inputDims: number[], minCos: Record<Precision, number>): Promise<Record<string, { quantized: string[]; skipped: string[] }>> {
  const per = inputDims.slice(1).reduce((a, b) => a * b, 1);
  const calibration = { source: 'seeded', shape: [32, ...inputDims.slice(1)], data: seededInput(32 * per, 3) };
  const x = seededInput(2 * per, 4);
  const ref = await runModel(encodeModel(model), { input: { data: x, dims: [2, ...inputDims.slice(1)] } });
  const out: Record<string, { quantized: string[]; skipped: string[] }> = {};
  for (const precision of ['fp16', 'int8-dynamic', 'int8-static'] as Precision[]) {
    const { model: m, report } = await optimizeModel(model, { precision, calibration, activationType: 'uint8' });
    const r = await runModel(encodeModel(m), { input: { data: x, dims: [2, ...inputDims.slice(1)] } });
    const c = cosine(ref.output!, r.output!);
    assert.ok(c >= minCos[precision], `${precision}: cosine ${c}`);
    out[precision] = { quantized: report.quantized.map((q) => q.node), skipped: report.skipped.map((s) => `${s.node}: ${s.reason}`) };
  }
  return out;
}

test('attention block: weight MatMuls quantized, activation MatMuls static-only, Softmax untouched', async () => {
  const r = await checkVariants(attentionModel(), [1, 6, 16], { 'fp16': 0.9999, 'int8-dynamic': 0.995, 'int8-static': 0.99, 'fp32': 1 });
  assert.deepEqual(r['int8-dynamic']!.quantized, ['q_proj', 'k_proj', 'v_proj', 'o_proj']);
  assert.ok(r['int8-dynamic']!.skipped.some((s) => s.startsWith('qk:')));
  assert.ok(r['int8-static']!.quantized.includes('qk') && r['int8-static']!.quantized.includes('av'));
  assert.ok(!r['int8-static']!.quantized.includes('softmax'));
});

test('ResNet-style block: BN folded, residual Add quantized, every variant close to fp32', async () => {
  const r = await checkVariants(residualModel(), [1, 4, 6, 6], { 'fp16': 0.9999, 'int8-dynamic': 0.995, 'int8-static': 0.99, 'fp32': 1 });
  assert.equal(r['int8-static']!.quantized.length, 3); // Conv, Conv (BN folded), Add
});

test('LSTM becomes com.microsoft DynamicQuantizeLSTM (per direction or per gate row) and stays close to fp32', async () => {
  const rand = seededRandom(2);
  const b = new GraphBuilder();
  b.input('input', DataType.FLOAT, [5, 'batch', 8]);
  b.initializer('W', DataType.FLOAT, [1, 16, 8], seededWeights(rand, 128, 8));
  b.initializer('R', DataType.FLOAT, [1, 16, 4], seededWeights(rand, 64, 4));
  b.node('LSTM', ['input', 'W', 'R'], ['Y'], { hidden_size: 4 }, { name: 'lstm' });
  b.node('Squeeze', ['Y', 'axes'], ['output'], {}, { name: 'squeeze' });
  b.initializer('axes', DataType.INT64, [1], [1]);
  b.output('output', DataType.FLOAT, [5, 'batch', 4]);
  const model = b.build();
  const x = seededInput(5 * 2 * 8, 1);
  const a = await runModel(encodeModel(model), { input: { data: x, dims: [5, 2, 8] } });
  for (const perChannel of [false, true]) {
    const { model: q, report } = await optimizeModel(model, { precision: 'int8-dynamic', perChannel });
    assert.deepEqual(report.quantized.map((d) => d.as), ['com.microsoft:DynamicQuantizeLSTM']);
    const lstm = q.graph.node.find((n) => n.opType === 'DynamicQuantizeLSTM')!;
    assert.equal(lstm.domain, 'com.microsoft');
    const w = q.graph.initializer.find((t) => t.name === lstm.input[1])!;
    assert.deepEqual(w.dims, [1, 8, 16]);
    assert.deepEqual(q.graph.initializer.find((t) => t.name === lstm.input[8])!.dims, perChannel ? [1, 16] : [1]);
    assert.ok(!q.graph.initializer.some((t) => t.name === 'W' || t.name === 'R'));
    const c = await runModel(encodeModel(q), { input: { data: x, dims: [5, 2, 8] } });
    assert.ok(cosine(a.output!, c.output!) > 0.995, `cosine ${cosine(a.output!, c.output!)}`);
  }
});

test('embedding Gather becomes int8 table + DequantizeLinear; integer indices pass through', async () => {
  const rand = seededRandom(12);
  const b = new GraphBuilder();
  b.input('input', DataType.INT64, ['batch', 5]);
  b.initializer('emb', DataType.FLOAT, [50, 8], seededWeights(rand, 400, 8));
  b.initializer('proj', DataType.FLOAT, [8, 4], seededWeights(rand, 32, 8));
  b.node('Gather', ['emb', 'input'], ['e'], { axis: 0 }, { name: 'embed' });
  b.node('MatMul', ['e', 'proj'], ['output'], {}, { name: 'proj' });
  b.output('output', DataType.FLOAT, ['batch', 5, 4]);
  const model = b.build();
  const { model: q, report } = await optimizeModel(model, { precision: 'int8-dynamic' });
  assert.deepEqual(report.quantized.map((d) => `${d.node}:${d.as}`), ['embed:Gather+DequantizeLinear', 'proj:MatMulInteger']);
  assert.equal(q.graph.initializer.find((t) => t.name?.startsWith('emb_quantized'))!.dataType, DataType.INT8);
  const ids = BigInt64Array.from([0, 3, 7, 49, 12, 5, 5, 1, 2, 40], (v) => BigInt(v));
  const ort = await import('onnxruntime-node');
  const run = async (bytes: Uint8Array): Promise<Float32Array> => {
    const s = await ort.InferenceSession.create(bytes);
    const r = await s.run({ input: new ort.Tensor('int64', ids, [2, 5]) });
    await s.release();
    return r.output!.data as Float32Array;
  };
  const a = await run(encodeModel(model));
  const c = await run(encodeModel(q));
  assert.ok(cosine(a, c) > 0.995, `cosine ${cosine(a, c)}`);
});
