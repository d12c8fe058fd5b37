// NumPy .npy (format 1.0–3.0) reader/writer for calibration and evaluation data.

import { EdgepackError } from '@edgepack/protocol';

export type NpyDType = 'float32' | 'float64' | 'float16' | 'int8' | 'uint8' | 'int16' | 'uint16' | 'int32' | 'uint32' | 'int64' | 'uint64' | 'bool';

export type NpyData =
  | Float32Array | Float64Array | Uint16Array | Int8Array | Uint8Array | Int16Array | Int32Array | Uint32Array | BigInt64Array | BigUint64Array;

export interface NpyArray {
  dtype: NpyDType;
  shape: number[];
  data: NpyData;
}

export class NpyFormatError extends EdgepackError {
  declare readonly code: 'NPY_INVALID';
  constructor(message: string) {
    super('NPY_INVALID', message);
  }
}

const DESCR: Record<string, NpyDType> = {
  f4: 'float32', f8: 'float64', f2: 'float16', i1: 'int8', u1: 'uint8', b1: 'bool', i2: 'int16', u2: 'uint16',
  i4: 'int32', u4: 'uint32', i8: 'int64', u8: 'uint64',
};
const SIZE: Record<NpyDType, number> = {
  float32: 4, float64: 8, float16: 2, int8: 1, uint8: 1, bool: 1, int16: 2, uint16: 2, int32: 4, uint32: 4, int64: 8, uint64: 8,
};
const MAGIC = [0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]; // \x93NUMPY

function makeArray(dtype: NpyDType, buf: ArrayBuffer): NpyData {
  switch (dtype) {
    case 'float32': return new Float32Array(buf);
    case 'float64': return new Float64Array(buf);
    case 'float16': case 'uint16': return new Uint16Array(buf);
    case 'int8': return new Int8Array(buf);
    case 'uint8': case 'bool': return new Uint8Array(buf);
    case 'int16': return new Int16Array(buf);
    case 'int32': return new Int32Array(buf);
    case 'uint32': return new Uint32Array(buf);
    case 'int64': return new BigInt64Array(buf);
    case 'uint64': return new BigUint64Array(buf);
  }
}

/** Parses .npy bytes. Only little-endian (or byte-order-free) C-order arrays are accepted. */
export function parseNpy(bytes: Uint8Array, label = 'array'): NpyArray {
  if (bytes.length < 10 || !MAGIC.every((b, i) => bytes[i] === b)) {
    throw new NpyFormatError(`${label}: not a .npy file (missing \\x93NUMPY magic)`);
  }
  const major = bytes[6]!;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let headerLen: number;
  let offset: number;
  if (major === 1) {
    headerLen = dv.getUint16(8, true);
    offset = 10;
  } else if (major === 2 || major === 3) {
    if (bytes.length < 12) throw new NpyFormatError(`${label}: truncated .npy header`);
    headerLen = dv.getUint32(8, true);
    offset = 12;
  } else {
    throw new NpyFormatError(`${label}: unsupported .npy format version ${major}`);
  }
  if (offset + headerLen > bytes.length) throw new NpyFormatError(`${label}: truncated .npy header`);
  const header = new TextDecoder('latin1').decode(bytes.subarray(offset, offset + headerLen));
  const descr = /'descr'\s*:\s*'([^']*)'/.exec(header)?.[1];
  const fortran = /'fortran_order'\s*:\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape'\s*:\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) {
    throw new NpyFormatError(`${label}: unreadable .npy header: ${header.trim()}`);
  }
  if (fortran === 'True') throw new NpyFormatError(`${label}: Fortran-order arrays are not supported; save with np.ascontiguousarray`);
  const order = descr[0];
  const code = descr.slice(1);
  const dtype = DESCR[code];
  if (!dtype || (order === '>' && SIZE[dtype] > 1)) {
    throw new NpyFormatError(`${label}: unsupported dtype '${descr}' (expected little-endian numeric)`);
  }
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map(Number);
  if (shape.some((d) => !Number.isInteger(d) || d < 0)) throw new NpyFormatError(`${label}: bad shape (${shapeText})`);
  const count = shape.reduce((a, b) => a * b, 1);
  const start = offset + headerLen;
  const need = count * SIZE[dtype];
  if (bytes.length - start < need) {
    throw new NpyFormatError(`${label}: truncated data: shape [${shape.join(',')}] ${dtype} needs ${need} bytes, file has ${bytes.length - start}`);
  }
  // Copy (aligned); not slice(), which is a view on a Node Buffer.
  const copy = new Uint8Array(need);
  copy.set(bytes.subarray(start, start + need));
  const buf = copy.buffer;
  return { dtype, shape, data: makeArray(dtype, buf) };
}

const CODE_OF: Record<NpyDType, string> = {
  float32: '<f4', float64: '<f8', float16: '<f2', int8: '|i1', uint8: '|u1', bool: '|b1', int16: '<i2', uint16: '<u2',
  int32: '<i4', uint32: '<u4', int64: '<i8', uint64: '<u8',
};

export function encodeNpy(arr: NpyArray): Uint8Array {
  const shapeText = arr.shape.length === 1 ? `(${arr.shape[0]},)` : `(${arr.shape.join(', ')})`;
  let header = `{'descr': '${CODE_OF[arr.dtype]}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Header (with magic, version and length) is padded with spaces to a multiple of 64, ending in \n.
  const total = 10 + header.length + 1;
  header += ' '.repeat((64 - (total % 64)) % 64) + '\n';
  const headerBytes = new TextEncoder().encode(header);
  const data = new Uint8Array(arr.data.buffer, arr.data.byteOffset, arr.data.byteLength);
  const out = new Uint8Array(10 + headerBytes.length + data.length);
  out.set(MAGIC, 0);
  out[6] = 1;
  out[7] = 0;
  new DataView(out.buffer).setUint16(8, headerBytes.length, true);
  out.set(headerBytes, 10);
  out.set(data, 10 + headerBytes.length);
  return out;
}
