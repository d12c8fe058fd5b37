import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, writeFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { decodeModel, encodeModel, type ModelProto } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { ProtoReader, ProtoWriter, WireType } from '@edgepack/orchestrator/onnx/protobuf-wire.js';
import { readModelFile } from '@edgepack/orchestrator/onnx/model-file.js';
import { DataType, makeTensor, readTensorData, readTensorAsFloat32 } from '@edgepack/orchestrator/onnx/tensor.js';
import { GraphBuilder, buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { float16BitsToFloat32, float32ToFloat16Bits } from '@edgepack/protocol';
import { runModel, seededInput, sharedModelsDir, SHARED_MISSING } from './onnx-fixtures.js';

function code(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

test('protobuf wire: varints, fixed, packed and negative int64 round-trip', () => {
  const w = new ProtoWriter();
  w.tag(1, WireType.Varint).varint(300);
  w.tag(2, WireType.Varint).int64(-5);
  w.tag(3, WireType.Varint).int64(9223372036854775807);
  w.tag(4, WireType.Fixed32).float(1.5);
  w.tag(5, WireType.Fixed64).double(-2.25);
  const packed = new ProtoWriter();
  for (const v of [1, 128, 16384]) packed.varint(v);
  w.messageField(6, packed);
  const bytes = w.finish();
  const r = new ProtoReader(bytes);
  assert.deepEqual(r.readTag(), [1, 0]);
  assert.equal(r.readVarint(), 300);
  r.readTag();
  assert.equal(r.readInt64(), -5);
  r.readTag();
  const pos = r.pos;
  assert.equal(r.readVarintBigInt(), 9223372036854775807n);
  r.pos = pos;
  assert.equal(r.readInt64(), 2 ** 63);
  r.readTag();
  assert.equal(r.readFloat(), 1.5);
  r.readTag();
  assert.equal(r.readDouble(), -2.25);
  const [f, wt] = r.readTag();
  const vals: number[] = [];
  r.readRepeated(wt, WireType.Varint, () => vals.push(r.readVarint()));
  assert.equal(f, 6);
  assert.deepEqual(vals, [1, 128, 16384]);
  assert.ok(r.done);
});

test('unknown fields at every level survive decode/encode', () => {
  const model = new GraphBuilder().build();
  const base = encodeModel(model);
  // Append field 99 (varint) at model level and field 50 (bytes) inside the graph.
  const extra = new ProtoWriter().tag(99, WireType.Varint).varint(12345).tag(98, WireType.Fixed32).fixed32(7).finish();
  const withUnknown = new Uint8Array(base.length + extra.length);
  withUnknown.set(base);
  withUnknown.set(extra, base.length);
  const m = decodeModel(withUnknown);
  assert.equal(m.unknownFields?.length, 2);
  m.graph.unknownFields = [{ fieldNumber: 50, wireType: 2, raw: new ProtoWriter().bytesField(50, new Uint8Array([1, 2, 3])).finish() }];
  const again = decodeModel(encodeModel(m));
  assert.deepEqual(again.unknownFields?.map((u) => u.fieldNumber), [99, 98]);
  assert.deepEqual(Array.from(again.graph.unknownFields?.[0]?.raw ?? []), [0x92, 0x03, 3, 1, 2, 3]);
});

test('shared models: parse → encode is byte-identical and onnxruntime outputs match', async (t) => {
  const dir = sharedModelsDir();
  if (!dir) return t.skip(SHARED_MISSING);
  for (const name of ['fashion_cnn', 'fashion_mlp', 'mobilenet_v2']) {
    const bytes: Uint8Array = new Uint8Array(readFileSync(path.join(dir, `${name}.onnx`)));
    const model = decodeModel(bytes);
    assert.deepEqual(model.opsetImport.map((o) => o.version), [13]);
    const again = encodeModel(model);
    assert.equal(Buffer.compare(Buffer.from(again), Buffer.from(bytes)), 0, `${name} round trip differs`);
    if (name === 'mobilenet_v2') continue; // byte-identical implies identical outputs; keep tests fast
    const input = seededInput(2 * 784);
    const a = await runModel(bytes, { input: { data: input, dims: [2, 1, 28, 28] } });
    const b = await runModel(again, { input: { data: input, dims: [2, 1, 28, 28] } });
    assert.deepEqual(Array.from(b.output!), Array.from(a.output!));
  }
});

test('edited model re-encodes to an equivalent model', async () => {
  const model = decodeModel(buildTinyMlpModel());
  model.docString = 'edited';
  model.metadataProps = [{ key: 'k', value: 'v' }];
  const re = decodeModel(encodeModel(model));
  assert.equal(re.docString, 'edited');
  assert.deepEqual(re.metadataProps?.map((e) => [e.key, e.value]), [['k', 'v']]);
  const input = seededInput(784);
  const a = await runModel(buildTinyMlpModel(), { input: { data: input, dims: [1, 1, 28, 28] } });
  const b = await runModel(encodeModel(re), { input: { data: input, dims: [1, 1, 28, 28] } });
  assert.deepEqual(Array.from(b.output!), Array.from(a.output!));
});

test('bad inputs: non-ONNX, truncated, too large, empty, missing essentials', () => {
  const good = buildTinyMlpModel();
  assert.equal(code(() => decodeModel(new Uint8Array(0))), 'MODEL_NOT_ONNX');
  assert.equal(code(() => decodeModel(new TextEncoder().encode('{"hello": "this is json, not onnx"}'))), 'MODEL_NOT_ONNX');
  const random = seededInput(4096, 7);
  assert.equal(code(() => decodeModel(new Uint8Array(random.buffer))), 'MODEL_NOT_ONNX');
  for (const cut of [10, 200, good.length >> 1, good.length - 3]) {
    assert.equal(code(() => decodeModel(good.subarray(0, cut))), 'MODEL_TRUNCATED', `cut at ${cut}`);
  }
  assert.equal(code(() => decodeModel(good, { maxBytes: 1000 })), 'MODEL_TOO_LARGE');
  // A valid protobuf with ir_version only: not a usable model.
  assert.equal(code(() => decodeModel(new ProtoWriter().tag(1, 0).varint(7).finish())), 'MODEL_INVALID');
  const noOpset: ModelProto = { ...decodeModel(good), opsetImport: [] };
  assert.equal(code(() => decodeModel(encodeModel(noOpset))), 'MODEL_INVALID');
  try {
    decodeModel(good.subarray(0, 500));
    assert.fail('expected an error');
  } catch (err) {
    assert.match((err as Error).message, /truncated/);
  }
});

test('tensor helpers read raw_data and typed fields alike', () => {
  const raw = makeTensor('w', DataType.FLOAT, [2, 2], [1, 2, 3, 4]);
  assert.deepEqual(Array.from(readTensorData(raw) as Float32Array), [1, 2, 3, 4]);
  const typed = { name: 'w', dataType: DataType.FLOAT, dims: [2, 2], floatData: Float32Array.from([1, 2, 3, 4]) };
  assert.deepEqual(Array.from(readTensorData(typed) as Float32Array), [1, 2, 3, 4]);
  const i64 = { name: 's', dataType: DataType.INT64, dims: [2], int64Data: BigInt64Array.from([-1n, 9223372036854775807n]) };
  const re = decodeModel(encodeModel({ ...decodeModel(buildTinyMlpModel()), graph: { ...decodeModel(buildTinyMlpModel()).graph, initializer: [typed, i64] } }));
  assert.deepEqual(Array.from(readTensorData(re.graph.initializer[1]!) as BigInt64Array), [-1n, 9223372036854775807n]);
  assert.deepEqual(Array.from(readTensorData(re.graph.initializer[0]!) as Float32Array), [1, 2, 3, 4]);
  const i8 = { name: 'q', dataType: DataType.INT8, dims: [3], int32Data: Int32Array.from([-127, 0, 127]) };
  assert.deepEqual(Array.from(readTensorData(i8) as Int8Array), [-127, 0, 127]);
  const h = makeTensor('h', DataType.FLOAT16, [3], Uint16Array.from([1, -2, 65504].map(float32ToFloat16Bits)));
  assert.deepEqual(Array.from(readTensorAsFloat32(h)), [1, -2, 65504]);
  assert.equal(code(() => readTensorData({ name: 'bad', dataType: DataType.FLOAT, dims: [3], rawData: new Uint8Array(8) })), 'TENSOR_DATA_INVALID');
});

test('float16 conversion rounds half to even and saturates to Inf', () => {
  assert.equal(float32ToFloat16Bits(1), 0x3c00);
  assert.equal(float32ToFloat16Bits(65504), 0x7bff);
  assert.equal(float32ToFloat16Bits(70000), 0x7c00);
  assert.equal(float32ToFloat16Bits(-0), 0x8000);
  assert.equal(float16BitsToFloat32(float32ToFloat16Bits(1 + 2 ** -11)), 1); // tie → even
  assert.equal(float16BitsToFloat32(float32ToFloat16Bits(1 + 3 * 2 ** -11)), 1 + 2 ** -9);
  assert.equal(float16BitsToFloat32(float32ToFloat16Bits(2 ** -24)), 2 ** -24);
  assert.equal(float16BitsToFloat32(float32ToFloat16Bits(6.1e-5)), 6.097555160522461e-5);
});

test('external data: loaded from the model directory, or rejected naming the tensor', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-ext-'));
  try {
    const model = decodeModel(buildTinyMlpModel());
    const w = model.graph.initializer.find((x) => x.name === 'fc2.weight')!;
    const payload = w.rawData!;
    await writeFile(path.join(dir, 'weights.bin'), Buffer.concat([Buffer.alloc(16), Buffer.from(payload)]));
    delete w.rawData;
    w.dataLocation = 1;
    w.externalData = [{ key: 'location', value: 'weights.bin' }, { key: 'offset', value: '16' }, { key: 'length', value: String(payload.length) }];
    const file = path.join(dir, 'model.onnx');
    await writeFile(file, encodeModel(model));

    const unresolved = await readModelFile(file, { externalDataDir: false });
    const ext = unresolved.graph.initializer.find((x) => x.name === 'fc2.weight')!;
    try {
      readTensorData(ext);
      assert.fail('expected MODEL_EXTERNAL_DATA');
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'MODEL_EXTERNAL_DATA');
      assert.match((err as Error).message, /fc2\.weight/);
    }
    const loaded = await readModelFile(file);
    const input = seededInput(784);
    const a = await runModel(buildTinyMlpModel(), { input: { data: input, dims: [1, 1, 28, 28] } });
    const b = await runModel(encodeModel(loaded), { input: { data: input, dims: [1, 1, 28, 28] } });
    assert.deepEqual(Array.from(b.output!), Array.from(a.output!));

    w.externalData = [{ key: 'location', value: '../../etc/passwd' }];
    await writeFile(file, encodeModel(model));
    await assert.rejects(readModelFile(file), (err: { code?: string }) => err.code === 'MODEL_EXTERNAL_DATA');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('buildTinyMlpModel is deterministic and runs', async () => {
  const a = buildTinyMlpModel();
  assert.equal(Buffer.compare(Buffer.from(a), Buffer.from(buildTinyMlpModel())), 0);
  const out = await runModel(a, { input: { data: seededInput(3 * 784), dims: [3, 1, 28, 28] } });
  assert.equal(out.output!.length, 30);
  assert.ok(out.output!.every(Number.isFinite));
});

test('a Node Buffer decodes to the same tensors as a plain Uint8Array (Buffer.slice is a view, not a copy)', async () => {
  const { buildTinyMlpModel } = await import('@edgepack/orchestrator/onnx/graph-builder.js');
  const { convertOnnxToTflite } = await import('@edgepack/orchestrator/tflite/convert.js');
  const bytes = buildTinyMlpModel({ seed: 11 });
  // An odd offset inside a larger buffer, as readFile and network reads can hand out.
  const big = Buffer.alloc(bytes.length + 3);
  big.set(bytes, 3);
  const asBuffer = big.subarray(3);
  const a = await convertOnnxToTflite(new Uint8Array(bytes), { precision: 'fp32' });
  const b = await convertOnnxToTflite(asBuffer, { precision: 'fp32' });
  assert.deepEqual(Buffer.from(b.tflite), Buffer.from(a.tflite));
});
