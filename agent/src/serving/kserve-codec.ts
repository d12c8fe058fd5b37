// The KServe v2 (Open Inference Protocol) HTTP/REST wire, as pure functions: JSON tensors and
// the binary tensor data extension in, typed arrays out, checked against the model's
// signature so that a bad request is refused naming the tensor and the shape it needed.
import { ERROR_CATALOGUE, EdgepackError, float16BitsToFloat32, float32ToFloat16Bits, type ErrorCode } from '@edgepack/protocol';
import type { TensorDType, TensorInfo, TensorValue } from '../runtime/runner.js';

export type KserveDatatype = 'BOOL' | 'UINT8' | 'INT8' | 'INT32' | 'INT64' | 'FP16' | 'FP32';

export const KSERVE_DATATYPE: Record<TensorDType, KserveDatatype> = {
  bool: 'BOOL', uint8: 'UINT8', int8: 'INT8', int32: 'INT32', int64: 'INT64', float16: 'FP16', float32: 'FP32',
};
const FROM_KSERVE: Record<string, TensorDType> = Object.fromEntries(Object.entries(KSERVE_DATATYPE).map(([k, v]) => [v, k as TensorDType]));
const WIDTH: Record<TensorDType, number> = { bool: 1, uint8: 1, int8: 1, int32: 4, int64: 8, float16: 2, float32: 4 };

/** A refusal answered with its code's HTTP status from the error catalogue; the message names the problem. */
export class ServingError extends EdgepackError {
  readonly status: number;
  constructor(code: ErrorCode, message: string, readonly retryAfterSec?: number) {
    super(code, message);
    this.status = ERROR_CATALOGUE[code].status;
  }
}

const invalid = (message: string) => new ServingError('INFER_REQUEST_INVALID', message);

export interface ModelSignature {
  inputs: readonly TensorInfo[];
  outputs: readonly TensorInfo[];
}

/** KServe shapes: a dynamic dimension (symbolic, or ≤ 0 in some runtimes) is -1. */
export function kserveShape(shape: readonly (number | string)[]): number[] {
  return shape.map((d) => (typeof d === 'number' && d > 0 ? d : -1));
}

function describe(t: TensorInfo): string {
  return `${KSERVE_DATATYPE[t.dtype] ?? t.dtype} ${JSON.stringify(kserveShape(t.shape))}`;
}

export interface RequestedOutput {
  name: string;
  binary: boolean;
}

export interface DecodedInfer {
  id?: string;
  inputs: Record<string, TensorValue>;
  /** The first dimension, shared by every input: the batch's item count. */
  items: number;
  outputs: RequestedOutput[];
  /** `parameters.timeout_ms` of the request, if any. */
  timeoutMs?: number;
}

/**
 * Splits a body by the binary extension's `Inference-Header-Content-Length` header: the JSON
 * header first, then the tensors' bytes. Without the header the whole body is JSON.
 */
export function splitInferBody(body: Buffer, headerLength: string | undefined): { json: Buffer; binary: Buffer } {
  if (headerLength === undefined) return { json: body, binary: Buffer.alloc(0) };
  const n = Number(headerLength);
  if (!/^\d+$/.test(headerLength) || n > body.length) throw invalid(`Inference-Header-Content-Length ${JSON.stringify(headerLength)} does not fit a ${body.length}-byte body`);
  return { json: body.subarray(0, n), binary: body.subarray(n) };
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Flattens nested or flat `data` of `shape` into `out`, checking every level's length. */
function flatten(data: unknown, shape: readonly number[], name: string): unknown[] {
  const count = shape.reduce((a, b) => a * b, 1);
  if (!Array.isArray(data)) throw invalid(`input '${name}': data must be an array`);
  if (data.length === count && (count === 0 || !Array.isArray(data[0]))) return data; // flat, the fast path
  const out: unknown[] = [];
  const walk = (node: unknown, depth: number): void => {
    if (depth === shape.length) { out.push(node); return; }
    if (!Array.isArray(node) || node.length !== shape[depth]) {
      throw invalid(`input '${name}': data is neither flat with ${count} elements nor nested as ${JSON.stringify(shape)}`);
    }
    for (const child of node) walk(child, depth + 1);
  };
  walk(data, 0);
  return out;
}


function fromJson(values: unknown[], dtype: TensorDType, name: string): TensorValue['data'] {
  const n = values.length;
  const bad = (i: number, what: string) => invalid(`input '${name}': element ${i} (${JSON.stringify(values[i])}) is not ${what}`);
  switch (dtype) {
    case 'float32': {
      const out = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v !== 'number') throw bad(i, 'a number');
        out[i] = v;
      }
      return out;
    }
    case 'float16': {
      const out = new Uint16Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v !== 'number') throw bad(i, 'a number');
        out[i] = float32ToFloat16Bits(v);
      }
      return out;
    }
    case 'bool': {
      const out = new Uint8Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v !== 'boolean') throw bad(i, 'true or false');
        out[i] = v ? 1 : 0;
      }
      return out;
    }
    case 'int64': {
      const out = new BigInt64Array(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v !== 'number' || !Number.isSafeInteger(v)) throw bad(i, 'a safe integer');
        out[i] = BigInt(v);
      }
      return out;
    }
    default: {
      const [Ctor, lo, hi] = dtype === 'uint8' ? [Uint8Array, 0, 255] as const : dtype === 'int8' ? [Int8Array, -128, 127] as const : [Int32Array, -(2 ** 31), 2 ** 31 - 1] as const;
      const out = new Ctor(n);
      for (let i = 0; i < n; i++) {
        const v = values[i];
        if (typeof v !== 'number' || !Number.isInteger(v) || v < lo || v > hi) throw bad(i, `an integer in [${lo}, ${hi}]`);
        out[i] = v;
      }
      return out;
    }
  }
}

function fromBinary(bytes: Buffer, dtype: TensorDType, owned: boolean): TensorValue['data'] {
  const width = WIDTH[dtype];
  let buf: ArrayBuffer;
  let offset = 0;
  if (owned && bytes.byteOffset % width === 0) {
    // The fast path: a view on the body itself, no copy (the body is this request's alone).
    buf = bytes.buffer as ArrayBuffer;
    offset = bytes.byteOffset;
  } else {
    // Copy into a fresh ArrayBuffer: the slice may be unaligned, or share memory with others.
    buf = new ArrayBuffer(bytes.length);
    new Uint8Array(buf).set(bytes);
  }
  const n = bytes.length / width;
  switch (dtype) {
    case 'float32': return new Float32Array(buf, offset, n);
    case 'float16': return new Uint16Array(buf, offset, n);
    case 'int8': return new Int8Array(buf, offset, n);
    case 'int32': return new Int32Array(buf, offset, n);
    case 'int64': return new BigInt64Array(buf, offset, n);
    default: return new Uint8Array(buf, offset, n);
  }
}

/**
 * Decodes and checks an inference request against the model's signature. Throws a 400
 * ServingError that names the tensor, what was sent and what the model takes. `ownsBody`: the
 * body's whole ArrayBuffer belongs to this request (see readBody), so aligned binary tensors
 * may be views on it rather than copies, and may be moved to the runner's thread.
 */
export function decodeInferRequest(body: Buffer, headerLength: string | undefined, sig: ModelSignature, ownsBody = false): DecodedInfer {
  const { json, binary } = splitInferBody(body, headerLength);
  let req: unknown;
  try {
    req = JSON.parse(json.toString('utf8'));
  } catch (err) {
    throw invalid(`request body is not JSON (${(err as Error).message})`);
  }
  if (!isObject(req)) throw invalid('request body must be a JSON object with "inputs"');
  if (!Array.isArray(req.inputs) || req.inputs.length === 0) throw invalid(`"inputs" must be a non-empty array; the model takes ${sig.inputs.map((i) => `'${i.name}' (${describe(i)})`).join(', ')}`);
  const params = isObject(req.parameters) ? req.parameters : {};
  let timeoutMs: number | undefined;
  if (params.timeout_ms !== undefined) {
    if (typeof params.timeout_ms !== 'number' || !Number.isInteger(params.timeout_ms) || params.timeout_ms < 1) throw invalid('parameters.timeout_ms must be a positive integer');
    timeoutMs = params.timeout_ms;
  }
  const wanted = new Map(sig.inputs.map((i) => [i.name, i]));
  const inputs: Record<string, TensorValue> = {};
  let cursor = 0;
  let items: number | undefined;
  for (const raw of req.inputs) {
    if (!isObject(raw) || typeof raw.name !== 'string') throw invalid('every input needs a "name"');
    const name = raw.name;
    const spec = wanted.get(name);
    if (!spec) throw invalid(`unknown input '${name}'; the model takes ${sig.inputs.map((i) => `'${i.name}' (${describe(i)})`).join(', ')}`);
    if (inputs[name]) throw invalid(`input '${name}' is given twice`);
    const expected = kserveShape(spec.shape);
    const dt = typeof raw.datatype === 'string' ? FROM_KSERVE[raw.datatype] : undefined;
    if (dt !== spec.dtype) throw invalid(`input '${name}' has datatype ${JSON.stringify(raw.datatype)}; the model takes ${describe(spec)}`);
    const shape = raw.shape;
    if (!Array.isArray(shape) || !shape.every((d) => typeof d === 'number' && Number.isInteger(d) && d >= 0)) {
      throw invalid(`input '${name}' needs "shape" as an array of non-negative integers; the model takes ${describe(spec)}`);
    }
    const dims = shape as number[];
    if (dims.length !== expected.length || dims.some((d, i) => expected[i] !== -1 && expected[i] !== d)) {
      throw invalid(`input '${name}' has shape ${JSON.stringify(dims)}; the model takes ${describe(spec)}`);
    }
    const batch = dims.length > 0 ? dims[0]! : 1;
    if (batch < 1) throw invalid(`input '${name}' has an empty batch (shape ${JSON.stringify(dims)}); the model takes ${describe(spec)}`);
    if (items !== undefined && batch !== items) throw invalid(`input '${name}' has batch ${batch}, another input has ${items}: every input's first dimension is the batch`);
    items = batch;
    const count = dims.reduce((a, b) => a * b, 1);
    const p = isObject(raw.parameters) ? raw.parameters : {};
    let data: TensorValue['data'];
    if (p.binary_data_size !== undefined) {
      const size = p.binary_data_size;
      const need = count * WIDTH[spec.dtype];
      if (typeof size !== 'number' || size !== need) throw invalid(`input '${name}': binary_data_size ${JSON.stringify(size)}, but ${describe(spec)} with shape ${JSON.stringify(dims)} is ${need} bytes`);
      if (cursor + size > binary.length) throw invalid(`input '${name}': the body holds ${binary.length - cursor} more binary bytes, binary_data_size says ${size}`);
      data = fromBinary(binary.subarray(cursor, cursor + size), spec.dtype, ownsBody);
      cursor += size;
    } else {
      const flat = flatten(raw.data, dims, name);
      if (flat.length !== count) throw invalid(`input '${name}': ${flat.length} elements for shape ${JSON.stringify(dims)} (${count})`);
      data = fromJson(flat, spec.dtype, name);
    }
    inputs[name] = { dtype: spec.dtype, dims: [...dims], data };
  }
  if (cursor !== binary.length) throw invalid(`${binary.length - cursor} binary bytes after the last binary input`);
  for (const spec of sig.inputs) if (!inputs[spec.name]) throw invalid(`missing input '${spec.name}' (${describe(spec)})`);

  const binaryAll = params.binary_data_output === true;
  const outNames = new Set(sig.outputs.map((o) => o.name));
  let outputs: RequestedOutput[];
  if (Array.isArray(req.outputs) && req.outputs.length > 0) {
    outputs = req.outputs.map((o) => {
      if (!isObject(o) || typeof o.name !== 'string') throw invalid('every requested output needs a "name"');
      if (!outNames.has(o.name)) throw invalid(`unknown output '${o.name}'; the model gives ${[...outNames].map((n) => `'${n}'`).join(', ')}`);
      const op = isObject(o.parameters) ? o.parameters : {};
      return { name: o.name, binary: op.binary_data === true || (op.binary_data === undefined && binaryAll) };
    });
  } else {
    outputs = sig.outputs.map((o) => ({ name: o.name, binary: binaryAll }));
  }
  return {
    ...(typeof req.id === 'string' ? { id: req.id.slice(0, 256) } : {}),
    inputs, items: items ?? 1, outputs, ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  };
}

function toJsonData(t: TensorValue): unknown[] {
  if (t.dtype === 'bool') return Array.from(t.data as Uint8Array, (x) => x !== 0);
  if (t.dtype === 'int64') return Array.from(t.data as BigInt64Array, (x) => Number(x));
  if (t.dtype === 'float16') return Array.from(t.data as Uint16Array, float16BitsToFloat32);
  return Array.from(t.data as Float32Array);
}


/** The inference response; binary outputs follow the JSON header, which Inference-Header-Content-Length then measures. */
export function encodeInferResponse(args: {
  modelName: string;
  modelVersion: string;
  id?: string;
  outputs: Record<string, TensorValue>;
  requested: readonly RequestedOutput[];
}): { body: Buffer; headers: Record<string, string> } {
  const parts: Buffer[] = [];
  const outputs = args.requested.map(({ name, binary }) => {
    const t = args.outputs[name];
    if (!t) throw new ServingError('INFER_OUTPUT_MISSING', `the runtime returned no output '${name}'`);
    const head = { name, datatype: KSERVE_DATATYPE[t.dtype] ?? t.dtype, shape: t.dims };
    if (!binary) return { ...head, data: toJsonData(t) };
    const bytes = Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    parts.push(bytes);
    return { ...head, parameters: { binary_data_size: bytes.length } };
  });
  const json = Buffer.from(JSON.stringify({ model_name: args.modelName, model_version: args.modelVersion, ...(args.id ? { id: args.id } : {}), outputs }));
  if (parts.length === 0) return { body: json, headers: { 'content-type': 'application/json' } };
  return {
    body: Buffer.concat([json, ...parts]),
    headers: { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length) },
  };
}

/** KServe v2 model metadata, plus edgepack's own fields (bundle id, precision, format, layout). */
export function modelMetadata(m: {
  name: string; version: string; platform: string; sig: ModelSignature; bundleId: string; precision: string; format: string; layout?: string;
}): Record<string, unknown> {
  const tensor = (t: TensorInfo) => ({ name: t.name, datatype: KSERVE_DATATYPE[t.dtype] ?? t.dtype, shape: kserveShape(t.shape) });
  return {
    name: m.name,
    versions: [m.version],
    platform: m.platform,
    inputs: m.sig.inputs.map(tensor),
    outputs: m.sig.outputs.map(tensor),
    parameters: { bundle_id: m.bundleId, precision: m.precision, format: m.format, ...(m.layout ? { layout: m.layout } : {}) },
  };
}
