// One ONNX graph per supported op, built in code, converted to TFLite and run through LiteRT,
// compared with onnxruntime-node on the same input.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { GraphBuilder, seededRandom, seededWeights } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType } from '@edgepack/orchestrator/onnx/tensor.js';
import { convertOnnxToTflite } from '@edgepack/orchestrator/tflite/convert.js';
import { inspectTflite } from '@edgepack/orchestrator/tflite/reader.js';
import { compareWithOnnx } from './tflite-fixtures.js';

const F = DataType.FLOAT;
const TOL = 1e-4;

type Build = (g: GraphBuilder, x: string, rand: () => number) => string;

/** A graph `x` [inputDims] → build → `y`, encoded as ONNX bytes. */
function graph(inputDims: number[], build: Build, opset = 13): Uint8Array {
  const g = new GraphBuilder({ opset });
  const x = g.input('x', F, ['batch', ...inputDims.slice(1)]);
  const rand = seededRandom(11);
  const y = build(g, x, rand);
  g.node('Identity', [y], ['y']);
  g.output('y', F);
  return g.encode();
}

function weights(g: GraphBuilder, name: string, dims: number[], rand: () => number): string {
  const n = dims.reduce((a, b) => a * b, 1);
  return g.initializer(name, F, dims, seededWeights(rand, n, Math.max(1, n / dims[0])));
}

function conv(g: GraphBuilder, x: string, rand: () => number, cin: number, cout: number, attrs: Record<string, number | number[]>, group = 1): string {
  const k = (attrs.kernel_shape as number[]) ?? [3, 3];
  const w = weights(g, `w${cout}_${cin}_${group}_${Math.floor(rand() * 1e6)}`, [cout, cin / group, k[0], k[1]], rand);
  const b = g.initializer(`b_${w}`, F, [cout], Array.from({ length: cout }, () => rand() - 0.5));
  return g.node('Conv', [x, w, b], 1, { kernel_shape: k, group, ...attrs })[0];
}

async function expectMatch(onnx: Uint8Array, dims: number[], ops?: Record<string, number>, tol = TOL): Promise<void> {
  const { maxErr, conversion } = await compareWithOnnx(onnx, dims);
  assert.ok(maxErr <= tol, `max abs error ${maxErr} > ${tol}`);
  if (ops) for (const [op, n] of Object.entries(ops)) assert.equal(conversion.operators[op] ?? 0, n, `${op} count in ${JSON.stringify(conversion.operators)}`);
}

const IMG = [1, 3, 8, 8];

test('Conv with SAME-equivalent padding, stride and fused Relu', async () => {
  await expectMatch(graph(IMG, (g, x, r) => g.node('Relu', [conv(g, x, r, 3, 4, { pads: [1, 1, 1, 1] })])[0]), IMG, { CONV_2D: 1, RELU: 0, PAD: 0 });
});

test('Conv stride 2 with symmetric padding inserts an explicit PAD', async () => {
  await expectMatch(graph(IMG, (g, x, r) => conv(g, x, r, 3, 5, { pads: [1, 1, 1, 1], strides: [2, 2] })), IMG, { CONV_2D: 1, PAD: 1 });
});

test('depthwise Conv (group = channels) with BatchNormalization folded in', async () => {
  await expectMatch(
    graph(IMG, (g, x, r) => {
      const c = conv(g, x, r, 3, 3, { pads: [1, 1, 1, 1] }, 3);
      const p = (name: string, vals: number[]) => g.initializer(name, F, [3], vals);
      return g.node('BatchNormalization', [c, p('s', [1.5, 0.5, 2]), p('bb', [0.1, -0.2, 0.3]), p('m', [0.2, -0.1, 0.05]), p('v', [0.9, 1.2, 0.3])], 1, { epsilon: { float: 1e-5 } })[0];
    }),
    IMG,
    { DEPTHWISE_CONV_2D: 1, MUL: 0, ADD: 0 },
  );
});

test('standalone BatchNormalization becomes MUL + ADD per channel', async () => {
  await expectMatch(
    graph(IMG, (g, x) => {
      const p = (name: string, vals: number[]) => g.initializer(name, F, [3], vals);
      return g.node('BatchNormalization', [x, p('s', [1.5, 0.5, 2]), p('bb', [0.1, -0.2, 0.3]), p('m', [0.2, -0.1, 0.05]), p('v', [0.9, 1.2, 0.3])])[0];
    }),
    IMG,
    { MUL: 1, ADD: 1 },
  );
});

test('Gemm (transB, alpha, beta) and MatMul with constant weights → FULLY_CONNECTED', async () => {
  await expectMatch(
    graph([1, 6], (g, x, r) => {
      const h = g.node('Gemm', [x, weights(g, 'W1', [5, 6], r), g.initializer('c1', F, [5], [1, 2, 3, 4, 5])], 1, { transB: 1, alpha: { float: 0.5 }, beta: { float: 2 } })[0];
      return g.node('MatMul', [h, weights(g, 'W2', [5, 4], r)])[0];
    }),
    [1, 6],
    { FULLY_CONNECTED: 2 },
  );
});

for (const [name, op, opset, attrs, tflOp] of [
  ['Relu', 'Relu', 13, {}, 'RELU'],
  ['LeakyRelu', 'LeakyRelu', 13, { alpha: { float: 0.2 } }, 'LEAKY_RELU'],
  ['Sigmoid', 'Sigmoid', 13, {}, 'LOGISTIC'],
  ['Tanh', 'Tanh', 13, {}, 'TANH'],
  ['HardSwish', 'HardSwish', 14, {}, 'HARD_SWISH'],
] as const) {
  test(`${name} → ${tflOp}`, async () => {
    await expectMatch(graph(IMG, (g, x) => g.node(op, [x], 1, attrs)[0], opset), IMG, { [tflOp]: 1 });
  });
}

test('Clip(0,6) fuses into the producer or becomes RELU6; Clip(-1,0.5) → MAXIMUM/MINIMUM', async () => {
  await expectMatch(
    graph(IMG, (g, x) => {
      const lo = g.node('Constant', [], 1, { value: { tensor: { name: 'lo', dataType: F, dims: [], floatData: Float32Array.of(0) } } })[0];
      const hi = g.initializer('hi', F, [], [6]);
      const a = g.node('Mul', [x, g.initializer('four', F, [], [4])])[0];
      return g.node('Clip', [a, lo, hi])[0];
    }),
    IMG,
    { MUL: 1, RELU6: 0, MAXIMUM: 0 },
  );
  await expectMatch(graph(IMG, (g, x) => g.node('Clip', [x, g.initializer('lo', F, [], [0]), g.initializer('hi', F, [], [6])])[0]), IMG, { RELU6: 1 });
  await expectMatch(
    graph(IMG, (g, x) => g.node('Clip', [x, g.initializer('lo', F, [], [-1]), g.initializer('hi', F, [], [0.5])])[0]),
    IMG,
    { MAXIMUM: 1, MINIMUM: 1 },
  );
});

test('Add, Sub, Mul, Div with channel broadcasting on NHWC tensors', async () => {
  await expectMatch(
    graph(IMG, (g, x) => {
      const c = g.initializer('c', F, [3, 1, 1], [0.5, -1, 2]);
      const row = g.initializer('row', F, [8], [1, 2, 3, 4, 5, 6, 7, 8]);
      const a = g.node('Add', [x, c])[0];
      const s = g.node('Sub', [row, a])[0];
      const m = g.node('Mul', [s, x])[0];
      return g.node('Div', [m, g.initializer('d', F, [1, 3, 1, 1], [2, 4, 8])])[0];
    }),
    IMG,
    { ADD: 1, SUB: 1, MUL: 2, DIV: 0 },
  );
});

test('MaxPool (VALID, SAME and asymmetric pads), AveragePool', async () => {
  await expectMatch(graph(IMG, (g, x) => g.node('MaxPool', [x], 1, { kernel_shape: [2, 2], strides: [2, 2] })[0]), IMG, { MAX_POOL_2D: 1 });
  await expectMatch(graph(IMG, (g, x) => g.node('MaxPool', [x], 1, { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] })[0]), IMG, { MAX_POOL_2D: 1, PADV2: 0 });
  await expectMatch(graph(IMG, (g, x) => g.node('MaxPool', [x], 1, { kernel_shape: [3, 3], strides: [2, 2], pads: [1, 1, 1, 1] })[0]), IMG, { MAX_POOL_2D: 1, PADV2: 1 });
  await expectMatch(graph(IMG, (g, x) => g.node('AveragePool', [x], 1, { kernel_shape: [3, 3], strides: [1, 1], pads: [1, 1, 1, 1] })[0]), IMG, { AVERAGE_POOL_2D: 1 });
});

test('GlobalAveragePool + Flatten → MEAN + RESHAPE without transposes', async () => {
  await expectMatch(
    graph(IMG, (g, x) => g.node('Flatten', [g.node('GlobalAveragePool', [x])[0]], 1, { axis: 1 })[0]),
    IMG,
    { MEAN: 1, RESHAPE: 1, TRANSPOSE: 0 },
  );
});

test('ReduceMean over H,W with keepdims=0 and over channels', async () => {
  await expectMatch(graph(IMG, (g, x) => g.node('ReduceMean', [x], 1, { axes: [2, 3], keepdims: 0 })[0]), IMG, { MEAN: 1 });
  await expectMatch(graph(IMG, (g, x) => g.node('ReduceMean', [x], 1, { axes: [1], keepdims: 1 })[0]), IMG, { MEAN: 1 });
});

test('Flatten of a spatial tensor and Reshape via a folded Shape/Gather/Concat subgraph', async () => {
  await expectMatch(graph(IMG, (g, x) => g.node('Flatten', [x], 1, { axis: 1 })[0]), IMG, { RESHAPE: 1 });
  // Feeding a dense layer, the flatten order change moves into the weights instead of a TRANSPOSE.
  await expectMatch(
    graph(IMG, (g, x, r) => g.node('Gemm', [g.node('Flatten', [g.node('Relu', [x])[0]], 1, { axis: 1 })[0], weights(g, 'Wf', [5, 192], r)], 1, { transB: 1 })[0]),
    IMG,
    { RESHAPE: 1, TRANSPOSE: 0, FULLY_CONNECTED: 1 },
  );
  await expectMatch(
    graph(IMG, (g, x) => {
      const shape = g.node('Shape', [x])[0];
      const n = g.node('Gather', [shape, g.initializer('i0', DataType.INT64, [], [0])], 1, { axis: 0 })[0];
      const n1 = g.node('Unsqueeze', [n, g.initializer('ax', DataType.INT64, [1], [0])])[0];
      const target = g.node('Concat', [n1, g.initializer('rest', DataType.INT64, [2], [12, -1])], 1, { axis: 0 })[0];
      return g.node('Reshape', [x, target])[0];
    }),
    IMG,
    { RESHAPE: 1, GATHER: 0 },
  );
});

test('Transpose composes with the layout permutation', async () => {
  await expectMatch(
    graph(IMG, (g, x) => g.node('Flatten', [g.node('Transpose', [g.node('Relu', [x])[0]], 1, { perm: [0, 2, 1, 3] })[0]], 1, { axis: 2 })[0]),
    IMG,
    { TRANSPOSE: 1, RESHAPE: 1 },
  );
});

test('Concat on channels remaps the axis; Pad remaps pads', async () => {
  await expectMatch(
    graph(IMG, (g, x, r) => {
      const a = conv(g, x, r, 3, 2, { pads: [1, 1, 1, 1] });
      return g.node('Concat', [x, a], 1, { axis: 1 })[0];
    }),
    IMG,
    { CONCATENATION: 1, TRANSPOSE: 0 },
  );
  await expectMatch(graph(IMG, (g, x) => g.node('Pad', [x, g.initializer('p', DataType.INT64, [8], [0, 1, 2, 0, 0, 0, 1, 3])])[0]), IMG, { PAD: 1 });
});

test('Softmax over the last axis and over channels, with beta 1', async () => {
  await expectMatch(graph([1, 10], (g, x) => g.node('Softmax', [x], 1, { axis: -1 })[0]), [1, 10], { SOFTMAX: 1 });
  await expectMatch(graph(IMG, (g, x) => g.node('Softmax', [x], 1, { axis: 1 })[0]), IMG, { SOFTMAX: 1 });
});

test('Identity and Constant are folded away', async () => {
  await expectMatch(
    graph(IMG, (g, x) => {
      const c = g.node('Constant', [], 1, { value: { tensor: { name: 'k', dataType: F, dims: [1], floatData: Float32Array.of(3) } } })[0];
      return g.node('Identity', [g.node('Mul', [g.node('Identity', [x])[0], g.node('Identity', [c])[0]])[0]])[0];
    }),
    IMG,
    { MUL: 1 },
  );
});

test('--keep-nchw-io puts transposes at the boundary and keeps NCHW shapes', async () => {
  const onnx = graph(IMG, (g, x, r) => conv(g, x, r, 3, 4, { pads: [1, 1, 1, 1] }));
  const { maxErr, conversion } = await compareWithOnnx(onnx, IMG, { keepNchwIo: true });
  assert.ok(maxErr <= TOL);
  assert.equal(conversion.inputLayout, 'NCHW');
  const info = inspectTflite(conversion.tflite);
  assert.deepEqual(info.inputs[0].shape, [1, 3, 8, 8]);
  assert.deepEqual(info.outputs[0].shape, [1, 4, 8, 8]);
  assert.equal(info.operators.TRANSPOSE, 2);
  const nhwc = await convertOnnxToTflite(onnx);
  assert.equal(nhwc.inputLayout, 'NHWC');
  assert.deepEqual(inspectTflite(nhwc.tflite).inputs[0].shape, [1, 8, 8, 3]);
});

test('unsupported ops are all listed with node names before anything is produced', async () => {
  const g = new GraphBuilder();
  const x = g.input('x', F, [1, 3, 8, 8]);
  const a = g.node('Erf', [x], 1, {}, { name: 'erf_1' })[0];
  const b = g.node('Erf', [a], 1, {}, { name: 'erf_2' })[0];
  const c = g.node('LSTMish', [b], 1, {}, { name: 'custom_thing' })[0];
  const d = g.node('Conv', [c, g.initializer('w', F, [6, 1, 3, 3], new Float32Array(54)), g.initializer('b', F, [6], new Float32Array(6))], 1, { kernel_shape: [3, 3], group: 3, ceil_mode: 0 }, { name: 'ok_conv' })[0];
  const e = g.node('MaxPool', [d], 1, { kernel_shape: [2, 2], ceil_mode: 1 }, { name: 'ceil_pool' })[0];
  g.node('Identity', [e], ['y']);
  g.output('y', F);
  await assert.rejects(convertOnnxToTflite(g.encode()), (err: { code?: string; message?: string; details?: { unsupported: { opType: string; nodes: string[] }[] } }) => {
    assert.equal(err.code, 'TFLITE_UNSUPPORTED_OPS');
    const list = err.details!.unsupported;
    assert.deepEqual(list.find((u) => u.opType === 'Erf')?.nodes, ['erf_1', 'erf_2']);
    assert.deepEqual(list.find((u) => u.opType === 'LSTMish')?.nodes, ['custom_thing']);
    assert.deepEqual(list.find((u) => u.opType === 'MaxPool')?.nodes, ['ceil_pool']);
    for (const n of ['erf_1', 'erf_2', 'custom_thing', 'ceil_pool']) assert.ok(err.message!.includes(n), `message names ${n}`);
    return true;
  });
});

test('grouped (non-depthwise) convolution is rejected with TFLITE_UNSUPPORTED_OPS', async () => {
  const onnx = graph([1, 4, 8, 8], (g, x, r) => conv(g, x, r, 4, 4, { pads: [1, 1, 1, 1] }, 2));
  await assert.rejects(convertOnnxToTflite(onnx), (e: { code?: string }) => e.code === 'TFLITE_UNSUPPORTED_OPS');
});
