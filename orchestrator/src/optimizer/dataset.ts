// Calibration/evaluation datasets: a float32 [N,…] array for the model's single input, and
// optional integer labels. Sources: .npy files or a directory of ONNX TensorProto .pb files.

import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { EdgepackError } from '@edgepack/protocol';
import { decodeTensor } from '../onnx/onnx-model.js';
import { ProtoReader } from '../onnx/protobuf-wire.js';
import { dataTypeName, readTensorAsFloat32, readTensorData } from '../onnx/tensor.js';
import type { TensorSignature } from '../onnx/inspect.js';
import { parseNpy, type NpyArray } from './npy.js';

export interface Dataset {
  /** Where the data came from, for error messages. */
  source: string;
  /** Full shape, [N, ...]. */
  shape: number[];
  data: Float32Array;
}

export type DatasetErrorCode = 'DATASET_MISMATCH' | 'DATASET_EMPTY' | 'DATASET_INVALID';

export class DatasetError extends EdgepackError {
  declare readonly code: DatasetErrorCode;
  constructor(code: DatasetErrorCode, message: string) {
    super(code, message);
  }
}

export function sampleCount(ds: Dataset): number {
  return ds.shape[0] ?? 0;
}

export function datasetFromNpy(arr: NpyArray, source: string): Dataset {
  if (arr.dtype !== 'float32') {
    throw new DatasetError('DATASET_MISMATCH', `${source}: dtype ${arr.dtype}, but model inputs are float32 (convert with .astype(np.float32))`);
  }
  if (arr.shape.length < 1) throw new DatasetError('DATASET_INVALID', `${source}: a scalar is not a dataset; expected [N, ...]`);
  return { source, shape: arr.shape, data: arr.data as Float32Array };
}

export function labelsFromNpy(arr: NpyArray, source: string): number[] {
  if (arr.shape.length !== 1) {
    throw new DatasetError('DATASET_MISMATCH', `${source}: labels must be 1-D [N], got [${arr.shape.join(',')}]`);
  }
  const d = arr.data;
  if (d instanceof Float32Array || d instanceof Float64Array || arr.dtype === 'float16') {
    throw new DatasetError('DATASET_MISMATCH', `${source}: labels must be integers, got ${arr.dtype}`);
  }
  if (d instanceof BigInt64Array || d instanceof BigUint64Array) return Array.from(d, (v) => Number(v));
  return Array.from(d as ArrayLike<number>);
}

export async function loadNpyDataset(file: string): Promise<Dataset> {
  return datasetFromNpy(parseNpy(new Uint8Array(await readFile(file)), file), file);
}

export async function loadLabels(file: string): Promise<number[]> {
  return labelsFromNpy(parseNpy(new Uint8Array(await readFile(file)), file), file);
}

/**
 * A directory of ONNX TensorProto files (`input_0.pb`, `input_1.pb`, … as in ONNX test data
 * sets): each is one batch of the single model input, concatenated along axis 0 in name order.
 */
export async function loadTensorProtoDir(dir: string): Promise<Dataset> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.pb')).sort((a, b) => a.localeCompare(b, 'en', { numeric: true }));
  if (files.length === 0) throw new DatasetError('DATASET_EMPTY', `${dir}: no .pb tensor files`);
  const parts: Float32Array[] = [];
  let inner: number[] | undefined;
  let n = 0;
  for (const f of files) {
    const t = decodeTensor(new ProtoReader(new Uint8Array(await readFile(path.join(dir, f)))));
    if (t.dataType !== 1) {
      throw new DatasetError('DATASET_MISMATCH', `${path.join(dir, f)}: dtype ${dataTypeName(t.dataType)}, but model inputs are float32`);
    }
    const dims = t.dims;
    if (dims.length < 1) throw new DatasetError('DATASET_INVALID', `${path.join(dir, f)}: scalar tensor, expected [N, ...]`);
    if (inner && inner.join(',') !== dims.slice(1).join(',')) {
      throw new DatasetError('DATASET_MISMATCH', `${path.join(dir, f)}: shape [${dims.join(',')}] differs from earlier files [N,${inner.join(',')}]`);
    }
    inner = dims.slice(1);
    n += dims[0]!;
    parts.push(readTensorAsFloat32(t));
  }
  const data = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
  let off = 0;
  for (const p of parts) {
    data.set(p, off);
    off += p.length;
  }
  return { source: dir, shape: [n, ...inner!], data };
}

/** Loads labels stored as a single TensorProto .pb. */
export async function loadTensorProtoLabels(file: string): Promise<number[]> {
  const t = decodeTensor(new ProtoReader(new Uint8Array(await readFile(file))));
  const d = readTensorData(t);
  if (d instanceof BigInt64Array || d instanceof BigUint64Array) return Array.from(d, (v) => Number(v));
  return Array.from(d as ArrayLike<number>);
}

/** .npy file or TensorProto directory, by what is on disk. */
export async function loadDataset(location: string): Promise<Dataset> {
  return location.endsWith('.npy') ? loadNpyDataset(location) : loadTensorProtoDir(location);
}

/**
 * Checks a dataset against a model input: rank, static dims and dtype must agree; symbolic
 * dims accept anything. The error names both sides.
 */
export function checkDataset(ds: Dataset, input: TensorSignature): void {
  if (sampleCount(ds) === 0) throw new DatasetError('DATASET_EMPTY', `${ds.source}: dataset is empty (0 samples)`);
  const model = `model input '${input.name}' ${input.type}[${input.shape.join(',')}]`;
  const data = `${ds.source} float32[${ds.shape.join(',')}]`;
  if (input.type !== 'float32') throw new DatasetError('DATASET_MISMATCH', `${data} does not match ${model}: dtype differs`);
  if (!input.hasShape) return;
  if (input.shape.length !== ds.shape.length) {
    throw new DatasetError('DATASET_MISMATCH', `${data} does not match ${model}: rank ${ds.shape.length} vs ${input.shape.length}`);
  }
  input.shape.forEach((d, i) => {
    if (i === 0) return; // batch dim: data may hold any number of samples
    if (typeof d === 'number' && d !== ds.shape[i]) {
      throw new DatasetError('DATASET_MISMATCH', `${data} does not match ${model}: dim ${i} is ${ds.shape[i]}, model needs ${d}`);
    }
  });
}

export function checkLabels(ds: Dataset, labels: number[], source: string): void {
  if (labels.length !== sampleCount(ds)) {
    throw new DatasetError('DATASET_MISMATCH', `${source}: ${labels.length} labels for ${sampleCount(ds)} samples in ${ds.source}`);
  }
}

/** Slices of the dataset along axis 0. */
export function* batches(ds: Dataset, batchSize: number, limit = sampleCount(ds)): Generator<{ data: Float32Array; dims: number[]; start: number }> {
  const per = ds.shape.slice(1).reduce((a, b) => a * b, 1);
  const n = Math.min(limit, sampleCount(ds));
  for (let s = 0; s < n; s += batchSize) {
    const e = Math.min(n, s + batchSize);
    yield { data: ds.data.subarray(s * per, e * per), dims: [e - s, ...ds.shape.slice(1)], start: s };
  }
}

/** The first `count` samples as a new dataset. */
export function takeSamples(ds: Dataset, count: number): Dataset {
  const per = ds.shape.slice(1).reduce((a, b) => a * b, 1);
  const n = Math.min(count, sampleCount(ds));
  return { source: ds.source, shape: [n, ...ds.shape.slice(1)], data: ds.data.subarray(0, n * per) };
}
