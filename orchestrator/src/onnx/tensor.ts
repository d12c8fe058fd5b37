// Reading and creating TensorProto payloads, whichever field (raw_data or the typed *_data
// fields) the exporter chose.

import { ModelExternalDataError, TensorDataError } from './errors.js';
import type { TensorProto } from './onnx-model.js';
import { float16BitsToFloat32 } from '@edgepack/protocol';

export const DataType = {
  UNDEFINED: 0,
  FLOAT: 1,
  UINT8: 2,
  INT8: 3,
  UINT16: 4,
  INT16: 5,
  INT32: 6,
  INT64: 7,
  STRING: 8,
  BOOL: 9,
  FLOAT16: 10,
  DOUBLE: 11,
  UINT32: 12,
  UINT64: 13,
  COMPLEX64: 14,
  COMPLEX128: 15,
  BFLOAT16: 16,
} as const;
export type DataType = (typeof DataType)[keyof typeof DataType];

export type DTypeName =
  | 'float32' | 'uint8' | 'int8' | 'uint16' | 'int16' | 'int32' | 'int64' | 'string' | 'bool'
  | 'float16' | 'float64' | 'uint32' | 'uint64' | 'complex64' | 'complex128' | 'bfloat16' | 'unknown';

const NAMES: Record<number, DTypeName> = {
  1: 'float32', 2: 'uint8', 3: 'int8', 4: 'uint16', 5: 'int16', 6: 'int32', 7: 'int64', 8: 'string',
  9: 'bool', 10: 'float16', 11: 'float64', 12: 'uint32', 13: 'uint64', 14: 'complex64',
  15: 'complex128', 16: 'bfloat16',
};

export function dataTypeName(dt: number): DTypeName {
  return NAMES[dt] ?? 'unknown';
}

/** Bytes per element, or undefined for strings and unknown types. */
export function dataTypeSize(dt: number): number | undefined {
  switch (dt) {
    case DataType.UINT8: case DataType.INT8: case DataType.BOOL: return 1;
    case DataType.UINT16: case DataType.INT16: case DataType.FLOAT16: case DataType.BFLOAT16: return 2;
    case DataType.FLOAT: case DataType.INT32: case DataType.UINT32: return 4;
    case DataType.INT64: case DataType.DOUBLE: case DataType.UINT64: case DataType.COMPLEX64: return 8;
    case DataType.COMPLEX128: return 16;
    default: return undefined;
  }
}

export type TensorArray =
  | Float32Array | Float64Array | Int8Array | Uint8Array | Int16Array | Uint16Array
  | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

export function tensorElementCount(t: Pick<TensorProto, 'dims'>): number {
  let n = 1;
  for (const d of t.dims) n *= d;
  return n;
}

export function isExternal(t: TensorProto): boolean {
  return t.dataLocation === 1;
}

function externalError(t: TensorProto): ModelExternalDataError {
  const loc = t.externalData?.find((e) => e.key === 'location')?.value ?? '?';
  return new ModelExternalDataError(
    t.name ?? '',
    `tensor '${t.name ?? ''}' stores its data in external file '${loc}'; load the model with its external data directory (readModelFile) first`,
  );
}

function viewRaw(raw: Uint8Array, bytesPer: number, name: string, expectCount: number): ArrayBuffer {
  if (raw.length !== expectCount * bytesPer) {
    throw new TensorDataError(name, `tensor '${name}' raw_data has ${raw.length} bytes, expected ${expectCount * bytesPer} for its shape`);
  }
  // Copy to an aligned buffer: raw_data views into the file are rarely aligned. (Not slice():
  // on a Node Buffer that is a view, and .buffer would be the whole file.)
  const copy = new Uint8Array(raw.length);
  copy.set(raw);
  return copy.buffer;
}

/**
 * Tensor contents as the natural typed array for its data type. FLOAT16/BFLOAT16 come back as
 * Uint16Array bit patterns; BOOL as Uint8Array. The result never aliases the model's bytes.
 */
export function readTensorData(t: TensorProto): TensorArray {
  if (isExternal(t)) throw externalError(t);
  const name = t.name ?? '';
  const n = tensorElementCount(t);
  const raw = t.rawData;
  const dt = t.dataType;
  const check = (len: number): void => {
    if (len !== n) throw new TensorDataError(name, `tensor '${name}' holds ${len} values, expected ${n} for dims [${t.dims.join(',')}]`);
  };
  switch (dt) {
    case DataType.FLOAT:
      if (raw) return new Float32Array(viewRaw(raw, 4, name, n));
      check(t.floatData?.length ?? 0);
      return Float32Array.from(t.floatData ?? []);
    case DataType.DOUBLE:
      if (raw) return new Float64Array(viewRaw(raw, 8, name, n));
      check(t.doubleData?.length ?? 0);
      return Float64Array.from(t.doubleData ?? []);
    case DataType.INT64:
      if (raw) return new BigInt64Array(viewRaw(raw, 8, name, n));
      check(t.int64Data?.length ?? 0);
      return BigInt64Array.from(t.int64Data ?? []);
    case DataType.UINT64:
      if (raw) return new BigUint64Array(viewRaw(raw, 8, name, n));
      check(t.uint64Data?.length ?? 0);
      return BigUint64Array.from(t.uint64Data ?? []);
    case DataType.UINT32:
      if (raw) return new Uint32Array(viewRaw(raw, 4, name, n));
      check(t.uint64Data?.length ?? 0);
      return Uint32Array.from(t.uint64Data ?? [], (v) => Number(v));
    case DataType.INT32:
      if (raw) return new Int32Array(viewRaw(raw, 4, name, n));
      check(t.int32Data?.length ?? 0);
      return Int32Array.from(t.int32Data ?? []);
    case DataType.INT16:
      if (raw) return new Int16Array(viewRaw(raw, 2, name, n));
      check(t.int32Data?.length ?? 0);
      return Int16Array.from(t.int32Data ?? []);
    case DataType.UINT16: case DataType.FLOAT16: case DataType.BFLOAT16:
      if (raw) return new Uint16Array(viewRaw(raw, 2, name, n));
      check(t.int32Data?.length ?? 0);
      return Uint16Array.from(t.int32Data ?? []);
    case DataType.INT8:
      if (raw) return new Int8Array(viewRaw(raw, 1, name, n));
      check(t.int32Data?.length ?? 0);
      return Int8Array.from(t.int32Data ?? []);
    case DataType.UINT8: case DataType.BOOL:
      if (raw) return new Uint8Array(viewRaw(raw, 1, name, n));
      check(t.int32Data?.length ?? 0);
      return Uint8Array.from(t.int32Data ?? []);
    default:
      throw new TensorDataError(name, `tensor '${name}' has data type ${dataTypeName(dt)} (${dt}), which has no numeric reader`);
  }
}

/** Any numeric tensor as float32 (float16 decoded, int64 rounded). */
export function readTensorAsFloat32(t: TensorProto): Float32Array {
  const d = readTensorData(t);
  if (d instanceof Float32Array) return d;
  if (t.dataType === DataType.FLOAT16) return Float32Array.from(d as Uint16Array, float16BitsToFloat32);
  if (t.dataType === DataType.BFLOAT16) {
    const out = new Float32Array(d.length);
    const u32 = new Uint32Array(out.buffer);
    const src = d as Uint16Array;
    for (let i = 0; i < src.length; i++) u32[i] = src[i]! << 16;
    return out;
  }
  if (d instanceof BigInt64Array || d instanceof BigUint64Array) return Float32Array.from(d, (v) => Number(v));
  return Float32Array.from(d as ArrayLike<number>);
}

/** Integer tensor (shape/axes constants) as plain numbers. */
export function readTensorAsNumbers(t: TensorProto): number[] {
  const d = readTensorData(t);
  if (d instanceof BigInt64Array || d instanceof BigUint64Array) return Array.from(d, (v) => Number(v));
  return Array.from(d as ArrayLike<number>);
}

function rawBytesOf(data: TensorArray): Uint8Array {
  return new Uint8Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength) as ArrayBuffer);
}

/** Creates a tensor stored in raw_data (what onnx and PyTorch write for initializers). */
export function makeTensor(name: string, dataType: number, dims: readonly number[], data: TensorArray | readonly number[]): TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  let arr: TensorArray;
  if (Array.isArray(data)) arr = typedArrayFor(dataType, data as readonly number[]);
  else arr = data as TensorArray;
  if (arr.length !== n) {
    throw new TensorDataError(name, `tensor '${name}': ${arr.length} values given for dims [${dims.join(',')}] (${n} elements)`);
  }
  return { name, dataType, dims: [...dims], rawData: rawBytesOf(arr) };
}

export function typedArrayFor(dataType: number, values: readonly number[]): TensorArray {
  switch (dataType) {
    case DataType.FLOAT: return Float32Array.from(values);
    case DataType.DOUBLE: return Float64Array.from(values);
    case DataType.INT8: return Int8Array.from(values);
    case DataType.UINT8: case DataType.BOOL: return Uint8Array.from(values);
    case DataType.INT16: return Int16Array.from(values);
    case DataType.UINT16: case DataType.FLOAT16: case DataType.BFLOAT16: return Uint16Array.from(values);
    case DataType.INT32: return Int32Array.from(values);
    case DataType.UINT32: return Uint32Array.from(values);
    case DataType.INT64: return BigInt64Array.from(values, (v) => BigInt(v));
    case DataType.UINT64: return BigUint64Array.from(values, (v) => BigInt(v));
    default: throw new TensorDataError('', `cannot create a tensor of data type ${dataTypeName(dataType)}`);
  }
}

/** Bytes a tensor's payload occupies in the file (raw or typed fields), for size reports. */
export function tensorPayloadBytes(t: TensorProto): number {
  if (t.rawData) return t.rawData.length;
  return (t.floatData?.byteLength ?? 0) + (t.int32Data?.length ?? 0) * 4 + (t.int64Data?.byteLength ?? 0)
    + (t.doubleData?.byteLength ?? 0) + (t.uint64Data?.byteLength ?? 0)
    + (t.stringData?.reduce((a, s) => a + s.length, 0) ?? 0);
}
