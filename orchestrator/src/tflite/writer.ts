// Serialises a TfliteModel to the TFLite flatbuffer format (schema.fbs, identifier TFL3).
// Field slots are the schema's field order; a union occupies two slots (type tag, value).
// Runtime pitfalls this writer guards against: buffer 0 must be the empty sentinel, operator
// codes need both the legacy and the extended builtin code, and options whose schema default
// is 0 (strides, Softmax beta) are always written explicitly.
import { Builder } from 'flatbuffers';
import { EdgepackError } from '@edgepack/protocol/errors.js';
import type { TfliteModel, TfliteOperator, TfliteOptions, TfliteQuantization, TfliteTensor } from './model.js';
import { BuiltinOptionsType, PLACEHOLDER_FOR_GREATER_OP_CODES, TENSOR_TYPE_BYTES, TFLITE_FILE_IDENTIFIER, TFLITE_SCHEMA_VERSION } from './schema.js';

type Offset = number;

/** Checks the structural invariants the runtime relies on but does not report clearly. */
export function validateTfliteModel(model: TfliteModel): void {
  const n = model.tensors.length;
  const bad = (msg: string): never => {
    throw new EdgepackError('TFLITE_INVALID_MODEL', msg);
  };
  const checkIndex = (i: number, where: string, optional: boolean) => {
    if (optional && i === -1) return;
    if (!Number.isInteger(i) || i < 0 || i >= n) bad(`${where} refers to tensor ${i}, but the model has ${n} tensors`);
  };
  model.inputs.forEach((i) => checkIndex(i, 'model input', false));
  model.outputs.forEach((i) => checkIndex(i, 'model output', false));
  model.operators.forEach((op, k) => {
    op.inputs.forEach((i) => checkIndex(i, `operator ${k} input`, true));
    op.outputs.forEach((i) => checkIndex(i, `operator ${k} output`, false));
  });
  for (const t of model.tensors) {
    if (!t.data) continue;
    const width = TENSOR_TYPE_BYTES[t.type];
    const count = t.shape.reduce((a, b) => a * b, 1);
    if (width !== undefined && t.data.byteLength !== width * count) {
      bad(`constant tensor '${t.name}' has ${t.data.byteLength} bytes, expected ${width * count} for shape [${t.shape.join(',')}]`);
    }
  }
}

export function writeTflite(model: TfliteModel): Uint8Array {
  validateTfliteModel(model);
  const constBytes = model.tensors.reduce((a, t) => a + (t.data?.byteLength ?? 0), 0);
  const b = new Builder(Math.max(1024, constBytes + 64 * 1024));

  // Operator codes: one per (opcode, version) pair, in first-use order.
  const codeIndex = new Map<string, number>();
  const codes: { opcode: number; version: number }[] = [];
  const opcodeIndexOf = (op: TfliteOperator): number => {
    const key = `${op.opcode}/${op.version}`;
    let idx = codeIndex.get(key);
    if (idx === undefined) {
      idx = codes.length;
      codes.push({ opcode: op.opcode, version: op.version });
      codeIndex.set(key, idx);
    }
    return idx;
  };
  const opcodeIndices = model.operators.map(opcodeIndexOf);

  // Buffers: 0 is the empty sentinel, then one per constant tensor.
  const bufferOfTensor: number[] = [];
  const bufferData: Uint8Array[] = [];
  for (const t of model.tensors) {
    if (t.data) {
      bufferData.push(t.data);
      bufferOfTensor.push(bufferData.length);
    } else {
      bufferOfTensor.push(0);
    }
  }

  // Large payloads first so they sit at the end of the file, away from the tables.
  const bufferOffsets: Offset[] = [emptyTable(b)];
  for (const data of bufferData) {
    const dataVec = alignedByteVector(b, data, 16);
    b.startObject(3);
    b.addFieldOffset(0, dataVec, 0);
    bufferOffsets.push(b.endObject());
  }

  const tensorOffsets = model.tensors.map((t, i) => writeTensor(b, t, bufferOfTensor[i]));
  const operatorOffsets = model.operators.map((op, i) => writeOperator(b, op, opcodeIndices[i]));

  const subgraphName = b.createString('main');
  const tensorsVec = offsetVector(b, tensorOffsets);
  const inputsVec = int32Vector(b, model.inputs);
  const outputsVec = int32Vector(b, model.outputs);
  const operatorsVec = offsetVector(b, operatorOffsets);
  b.startObject(5);
  b.addFieldOffset(0, tensorsVec, 0);
  b.addFieldOffset(1, inputsVec, 0);
  b.addFieldOffset(2, outputsVec, 0);
  b.addFieldOffset(3, operatorsVec, 0);
  b.addFieldOffset(4, subgraphName, 0);
  const subgraph = b.endObject();

  const codeOffsets = codes.map(({ opcode, version }) => {
    b.startObject(4);
    // Older readers only look at the int8 field; newer ones take the max of both.
    b.addFieldInt8(0, Math.min(opcode, PLACEHOLDER_FOR_GREATER_OP_CODES), null);
    b.addFieldInt32(2, version, null);
    b.addFieldInt32(3, opcode, null);
    return b.endObject();
  });

  const signature = writeSignature(b, model);

  const codesVec = offsetVector(b, codeOffsets);
  const subgraphsVec = offsetVector(b, [subgraph]);
  const description = b.createString(model.description ?? 'edgepack');
  const buffersVec = offsetVector(b, bufferOffsets);
  const signaturesVec = offsetVector(b, [signature]);
  b.startObject(8);
  b.addFieldInt32(0, TFLITE_SCHEMA_VERSION, null);
  b.addFieldOffset(1, codesVec, 0);
  b.addFieldOffset(2, subgraphsVec, 0);
  b.addFieldOffset(3, description, 0);
  b.addFieldOffset(4, buffersVec, 0);
  b.addFieldOffset(7, signaturesVec, 0);
  const root = b.endObject();
  b.finish(root, TFLITE_FILE_IDENTIFIER);
  return b.asUint8Array().slice();
}

function emptyTable(b: Builder): Offset {
  b.startObject(0);
  return b.endObject();
}

/** A [ubyte] vector whose first byte is aligned to `alignment` (schema: force_align 16). */
function alignedByteVector(b: Builder, data: Uint8Array, alignment: number): Offset {
  b.startVector(1, data.byteLength, alignment);
  b.pad(data.byteLength);
  const bytes = b.dataBuffer().bytes();
  bytes.set(data, bytes.length - b.offset());
  return b.endVector();
}

function int32Vector(b: Builder, values: readonly number[]): Offset {
  b.startVector(4, values.length, 4);
  for (let i = values.length - 1; i >= 0; i--) b.addInt32(values[i]);
  return b.endVector();
}

function float32Vector(b: Builder, values: readonly number[]): Offset {
  b.startVector(4, values.length, 4);
  for (let i = values.length - 1; i >= 0; i--) b.addFloat32(values[i]);
  return b.endVector();
}

function int64Vector(b: Builder, values: readonly number[]): Offset {
  b.startVector(8, values.length, 8);
  for (let i = values.length - 1; i >= 0; i--) b.addInt64(BigInt(values[i]));
  return b.endVector();
}

function offsetVector(b: Builder, offsets: readonly Offset[]): Offset {
  b.startVector(4, offsets.length, 4);
  for (let i = offsets.length - 1; i >= 0; i--) b.addOffset(offsets[i]);
  return b.endVector();
}

function writeQuantization(b: Builder, q: TfliteQuantization): Offset {
  const minVec = q.min ? float32Vector(b, q.min) : 0;
  const maxVec = q.max ? float32Vector(b, q.max) : 0;
  const scaleVec = float32Vector(b, q.scale);
  const zpVec = int64Vector(b, q.zeroPoint);
  b.startObject(7);
  if (minVec) b.addFieldOffset(0, minVec, 0);
  if (maxVec) b.addFieldOffset(1, maxVec, 0);
  b.addFieldOffset(2, scaleVec, 0);
  b.addFieldOffset(3, zpVec, 0);
  b.addFieldInt32(6, q.quantizedDimension ?? 0, 0);
  return b.endObject();
}

function writeTensor(b: Builder, t: TfliteTensor, buffer: number): Offset {
  const shape = int32Vector(b, t.shape);
  const name = b.createString(t.name);
  const quant = t.quantization ? writeQuantization(b, t.quantization) : 0;
  const signature = t.shapeSignature ? int32Vector(b, t.shapeSignature) : 0;
  b.startObject(10);
  b.addFieldOffset(0, shape, 0);
  b.addFieldInt8(1, t.type, 0);
  b.addFieldInt32(2, buffer, 0);
  b.addFieldOffset(3, name, 0);
  if (quant) b.addFieldOffset(4, quant, 0);
  if (signature) b.addFieldOffset(7, signature, 0);
  b.addFieldInt8(8, 1, 0); // has_rank: distinguishes scalars from unknown rank.
  return b.endObject();
}

function writeOperator(b: Builder, op: TfliteOperator, opcodeIndex: number): Offset {
  const inputs = int32Vector(b, op.inputs);
  const outputs = int32Vector(b, op.outputs);
  const options = op.options ? writeOptions(b, op.options) : 0;
  b.startObject(13);
  b.addFieldInt32(0, opcodeIndex, 0);
  b.addFieldOffset(1, inputs, 0);
  b.addFieldOffset(2, outputs, 0);
  if (op.options) {
    b.addFieldInt8(3, BuiltinOptionsType[op.options.type], 0);
    b.addFieldOffset(4, options, 0);
  }
  return b.endObject();
}

/** Writes one options table. `null` defaults force every field onto the wire. */
function writeOptions(b: Builder, o: TfliteOptions): Offset {
  switch (o.type) {
    case 'Conv2DOptions':
      b.startObject(7);
      b.addFieldInt8(0, o.padding, null);
      b.addFieldInt32(1, o.strideW, null);
      b.addFieldInt32(2, o.strideH, null);
      b.addFieldInt8(3, o.activation, null);
      b.addFieldInt32(4, o.dilationW ?? 1, null);
      b.addFieldInt32(5, o.dilationH ?? 1, null);
      return b.endObject();
    case 'DepthwiseConv2DOptions':
      b.startObject(7);
      b.addFieldInt8(0, o.padding, null);
      b.addFieldInt32(1, o.strideW, null);
      b.addFieldInt32(2, o.strideH, null);
      b.addFieldInt32(3, o.depthMultiplier, null);
      b.addFieldInt8(4, o.activation, null);
      b.addFieldInt32(5, o.dilationW ?? 1, null);
      b.addFieldInt32(6, o.dilationH ?? 1, null);
      return b.endObject();
    case 'Pool2DOptions':
      b.startObject(6);
      b.addFieldInt8(0, o.padding, null);
      b.addFieldInt32(1, o.strideW, null);
      b.addFieldInt32(2, o.strideH, null);
      b.addFieldInt32(3, o.filterW, null);
      b.addFieldInt32(4, o.filterH, null);
      b.addFieldInt8(5, o.activation, null);
      return b.endObject();
    case 'FullyConnectedOptions':
      b.startObject(5);
      b.addFieldInt8(0, o.activation, null);
      b.addFieldInt8(1, 0, null);
      b.addFieldInt8(2, o.keepNumDims ? 1 : 0, null);
      b.addFieldInt8(3, o.asymmetricQuantizeInputs ? 1 : 0, null);
      return b.endObject();
    case 'SoftmaxOptions':
      b.startObject(1);
      b.addFieldFloat32(0, o.beta, null);
      return b.endObject();
    case 'ConcatenationOptions':
      b.startObject(2);
      b.addFieldInt32(0, o.axis, null);
      b.addFieldInt8(1, o.activation, null);
      return b.endObject();
    case 'AddOptions':
    case 'SubOptions':
    case 'MulOptions':
    case 'DivOptions':
      b.startObject(1);
      b.addFieldInt8(0, o.activation, null);
      return b.endObject();
    case 'ReshapeOptions': {
      const shape = int32Vector(b, o.newShape);
      b.startObject(1);
      b.addFieldOffset(0, shape, 0);
      return b.endObject();
    }
    case 'ReducerOptions':
      b.startObject(1);
      b.addFieldInt8(0, o.keepDims ? 1 : 0, null);
      return b.endObject();
    case 'SqueezeOptions': {
      const dims = int32Vector(b, o.squeezeDims);
      b.startObject(1);
      b.addFieldOffset(0, dims, 0);
      return b.endObject();
    }
    case 'LeakyReluOptions':
      b.startObject(1);
      b.addFieldFloat32(0, o.alpha, null);
      return b.endObject();
    default:
      return emptyTable(b);
  }
}

function writeSignature(b: Builder, model: TfliteModel): Offset {
  const tensorMaps = (indices: number[]) =>
    indices.map((i) => {
      const name = b.createString(model.tensors[i].name);
      b.startObject(2);
      b.addFieldOffset(0, name, 0);
      b.addFieldInt32(1, i, null);
      return b.endObject();
    });
  const inputs = offsetVector(b, tensorMaps(model.inputs));
  const outputs = offsetVector(b, tensorMaps(model.outputs));
  const key = b.createString(model.signatureKey ?? 'serving_default');
  b.startObject(5);
  b.addFieldOffset(0, inputs, 0);
  b.addFieldOffset(1, outputs, 0);
  b.addFieldOffset(2, key, 0);
  b.addFieldInt32(4, 0, null);
  return b.endObject();
}
