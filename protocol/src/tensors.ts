import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError } from './errors.js';

export const TensorDTypeSchema = Type.Union([
  Type.Literal('float32'), Type.Literal('float16'), Type.Literal('int8'), Type.Literal('uint8'),
  Type.Literal('int32'), Type.Literal('int64'), Type.Literal('bool'), Type.Literal('string'),
]);
export type TensorDType = Static<typeof TensorDTypeSchema>;

/** A model input or output: static dims are numbers, symbolic dims (e.g. "batch") strings. */
export const TensorSpecSchema = Type.Object({
  name: Type.String({ minLength: 1 }),
  type: TensorDTypeSchema,
  shape: Type.Array(Type.Union([Type.Integer(), Type.String()])),
});
export type TensorSpec = Static<typeof TensorSpecSchema>;

/** A tensor value inside JSON: raw little-endian bytes in base64. */
export const EncodedTensorSchema = Type.Object({
  dtype: TensorDTypeSchema,
  dims: Type.Array(Type.Integer({ minimum: 0 })),
  data: Type.String(),
});
export type EncodedTensor = Static<typeof EncodedTensorSchema>;

export type TypedData = Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;

const BYTES_PER_ELEMENT: Record<Exclude<TensorDType, 'string'>, number> = {
  float32: 4, float16: 2, int8: 1, uint8: 1, int32: 4, int64: 8, bool: 1,
};

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((n, d) => n * d, 1);
}

export function encodeTensor(dtype: TensorDType, dims: number[], data: TypedData): EncodedTensor {
  if (dtype === 'string') throw new EdgepackError('TENSOR_UNSUPPORTED', 'string tensors cannot be encoded');
  const bytes = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return { dtype, dims: [...dims], data: bytes.toString('base64') };
}

export function decodeTensor(t: EncodedTensor): { dtype: TensorDType; dims: number[]; data: TypedData } {
  if (t.dtype === 'string') throw new EdgepackError('TENSOR_UNSUPPORTED', 'string tensors cannot be decoded');
  const raw = Buffer.from(t.data, 'base64');
  const width = BYTES_PER_ELEMENT[t.dtype];
  const count = elementCount(t.dims);
  if (raw.length !== count * width) {
    throw new EdgepackError('TENSOR_INVALID', `tensor of ${t.dtype}${JSON.stringify(t.dims)} needs ${count * width} bytes, got ${raw.length}`);
  }
  // Copy into a fresh, aligned buffer: base64 decoding may hand back an unaligned slice.
  const buf = new ArrayBuffer(raw.length);
  new Uint8Array(buf).set(raw);
  const data: TypedData =
    t.dtype === 'float32' ? new Float32Array(buf)
    : t.dtype === 'float16' ? new Uint16Array(buf)
    : t.dtype === 'int8' ? new Int8Array(buf)
    : t.dtype === 'int32' ? new Int32Array(buf)
    : t.dtype === 'int64' ? new BigInt64Array(buf)
    : new Uint8Array(buf);
  return { dtype: t.dtype, dims: [...t.dims], data };
}
