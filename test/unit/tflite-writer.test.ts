// Hand-built TFLite graphs written by our flatbuffer writer and executed by real LiteRT.js,
// compared against values computed here in plain JavaScript.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { writeTflite } from '@edgepack/orchestrator/tflite/writer.js';
import { inspectTflite } from '@edgepack/orchestrator/tflite/reader.js';
import { openLiteRtSession } from '@edgepack/orchestrator/tflite/litert-runner.js';
import { Activation, BuiltinOperator, TensorType } from '@edgepack/orchestrator/tflite/schema.js';
import type { TfliteModel } from '@edgepack/orchestrator/tflite/model.js';
import { createLiteRtRunner } from '@edgepack/agent/runtime/litert-runner.js';

const f32 = (values: number[]) => new Uint8Array(new Float32Array(values).buffer);

/** y = relu(x · Wᵀ + b) + c, x: [2,3], W: [4,3]. */
function fcAddModel(): { model: TfliteModel; W: number[]; b: number[]; c: number[] } {
  const W = [1, -2, 0.5, 0, 1, 1, -1, -1, -1, 0.25, 0.5, 0.75];
  const b = [0.1, -0.2, 0.3, 0];
  const c = [10, 20, 30, 40];
  const model: TfliteModel = {
    tensors: [
      { name: 'x', type: TensorType.FLOAT32, shape: [2, 3] },
      { name: 'W', type: TensorType.FLOAT32, shape: [4, 3], data: f32(W) },
      { name: 'b', type: TensorType.FLOAT32, shape: [4], data: f32(b) },
      { name: 'h', type: TensorType.FLOAT32, shape: [2, 4] },
      { name: 'c', type: TensorType.FLOAT32, shape: [4], data: f32(c) },
      { name: 'y', type: TensorType.FLOAT32, shape: [2, 4] },
    ],
    operators: [
      { opcode: BuiltinOperator.FULLY_CONNECTED, version: 1, inputs: [0, 1, 2], outputs: [3], options: { type: 'FullyConnectedOptions', activation: Activation.RELU } },
      { opcode: BuiltinOperator.ADD, version: 1, inputs: [3, 4], outputs: [5], options: { type: 'AddOptions', activation: Activation.NONE } },
    ],
    inputs: [0],
    outputs: [5],
  };
  return { model, W, b, c };
}

function expected(x: number[], W: number[], b: number[], c: number[]): number[] {
  const out: number[] = [];
  for (let n = 0; n < 2; n++) {
    for (let o = 0; o < 4; o++) {
      let s = b[o];
      for (let i = 0; i < 3; i++) s += x[n * 3 + i] * W[o * 3 + i];
      out.push(Math.max(0, s) + c[o]);
    }
  }
  return out;
}

function assertClose(actual: ArrayLike<number>, want: number[], tol = 1e-5): void {
  assert.equal(actual.length, want.length);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(actual[i] - want[i]) <= tol, `index ${i}: ${actual[i]} vs ${want[i]}`);
}

test('FULLY_CONNECTED + ADD written by writeTflite runs in LiteRT (orchestrator session)', async () => {
  const { model, W, b, c } = fcAddModel();
  const bytes = writeTflite(model);
  const session = await openLiteRtSession(bytes);
  try {
    assert.deepEqual(session.inputs.map((i) => [i.name, i.dtype, i.shape]), [['x', 'float32', [2, 3]]]);
    const x = [1, 2, 3, -1, 0.5, 4];
    const out = await session.run({ x: { data: new Float32Array(x), dims: [2, 3] } });
    assert.deepEqual(out.y.dims, [2, 4]);
    assertClose(out.y.data, expected(x, W, b, c));
  } finally {
    session.close();
  }
});

test('agent LiteRT runner implements ModelRunner and frees tensors across many runs', async () => {
  const { model, W, b, c } = fcAddModel();
  const runner = await createLiteRtRunner(writeTflite(model));
  try {
    assert.equal(runner.runtime, 'litert');
    assert.deepEqual(runner.providers, ['wasm']);
    assert.deepEqual(runner.outputs, [{ name: 'y', dtype: 'float32', shape: [2, 4] }]);
    for (let k = 0; k < 50; k++) {
      const x = [k, 1, -k, 2, 0, 0.5];
      const out = await runner.run({ x: { dtype: 'float32', dims: [2, 3], data: new Float32Array(x) } });
      assert.equal(out.y.dtype, 'float32');
      assertClose(out.y.data as Float32Array, expected(x, W, b, c), 1e-4);
    }
    await assert.rejects(runner.run({}), (e: { code?: string }) => e.code === 'RUNNER_MISSING_INPUT');
    await assert.rejects(
      runner.run({ x: { dtype: 'int64', dims: [2, 3], data: new BigInt64Array(6) } }),
      (e: { code?: string }) => e.code === 'RUNNER_UNSUPPORTED_DTYPE',
    );
  } finally {
    await runner.close();
  }
  await assert.rejects(runner.run({}), (e: { code?: string }) => e.code === 'RUNNER_CLOSED');
});

test('inspectTflite reports version, IO, op histogram and sizes of a written model', () => {
  const bytes = writeTflite(fcAddModel().model);
  const info = inspectTflite(bytes);
  assert.equal(info.schemaVersion, 3);
  assert.equal(info.sizeBytes, bytes.byteLength);
  assert.deepEqual(info.inputs, [{ name: 'x', dtype: 'float32', shape: [2, 3] }]);
  assert.deepEqual(info.outputs, [{ name: 'y', dtype: 'float32', shape: [2, 4] }]);
  assert.deepEqual(info.operators, { FULLY_CONNECTED: 1, ADD: 1 });
  assert.equal(info.constantBytes, (12 + 4 + 4) * 4);
  assert.equal(Buffer.from(bytes.subarray(4, 8)).toString('latin1'), 'TFL3');
});

test('inspectTflite rejects files that are not TFLite', () => {
  assert.throws(() => inspectTflite(new Uint8Array(64)), (e: { code?: string }) => e.code === 'TFLITE_INVALID_FILE');
  assert.throws(() => inspectTflite(new Uint8Array(3)), (e: { code?: string }) => e.code === 'TFLITE_INVALID_FILE');
});

test('a truncated model fails to load with LITERT_LOAD_FAILED', async () => {
  const bytes = writeTflite(fcAddModel().model);
  await assert.rejects(openLiteRtSession(bytes.subarray(0, 40)), (e: { code?: string }) => e.code === 'LITERT_LOAD_FAILED');
});

test('writeTflite rejects dangling tensor indices and mis-sized constants', () => {
  const { model } = fcAddModel();
  assert.throws(() => writeTflite({ ...model, outputs: [99] }), (e: { code?: string }) => e.code === 'TFLITE_INVALID_MODEL');
  const tensors = model.tensors.map((t) => (t.name === 'b' ? { ...t, data: f32([1]) } : t));
  assert.throws(() => writeTflite({ ...model, tensors }), (e: { code?: string }) => e.code === 'TFLITE_INVALID_MODEL');
});
