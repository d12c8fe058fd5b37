import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile, mkdir } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { encodeNpy, parseNpy } from '@edgepack/orchestrator/optimizer/npy.js';
import { checkDataset, datasetFromNpy, labelsFromNpy, loadDataset, loadNpyDataset, loadLabels } from '@edgepack/orchestrator/optimizer/dataset.js';
import { encodeTensor } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { DataType, makeTensor } from '@edgepack/orchestrator/onnx/tensor.js';
import { sharedModelsDir, SHARED_MISSING } from './onnx-fixtures.js';

const sig = { name: 'input', type: 'float32' as const, shape: ['batch', 1, 28, 28], hasShape: true };

test('npy round trip and header padding', () => {
  const arr = { dtype: 'float32' as const, shape: [2, 3], data: Float32Array.from([1, 2, 3, 4, 5, 6]) };
  const bytes = encodeNpy(arr);
  assert.equal((bytes.length - 24) % 64 === 0 || (10 + new DataView(bytes.buffer).getUint16(8, true)) % 64 === 0, true);
  const back = parseNpy(bytes);
  assert.deepEqual(back.shape, [2, 3]);
  assert.deepEqual(Array.from(back.data as Float32Array), [1, 2, 3, 4, 5, 6]);
  const labels = parseNpy(encodeNpy({ dtype: 'int64', shape: [3], data: BigInt64Array.from([1n, 9n, 0n]) }));
  assert.deepEqual(labelsFromNpy(labels, 'l'), [1, 9, 0]);
});

test('npy errors: not npy, truncated data, wrong dtype for inputs and labels', () => {
  assert.throws(() => parseNpy(new TextEncoder().encode('hello world, not numpy')), (e: { code?: string }) => e.code === 'NPY_INVALID');
  const good = encodeNpy({ dtype: 'float32', shape: [4], data: new Float32Array(4) });
  assert.throws(() => parseNpy(good.subarray(0, good.length - 3)), /truncated/);
  const f64 = parseNpy(encodeNpy({ dtype: 'float64', shape: [1, 1, 28, 28], data: new Float64Array(784) }));
  assert.throws(() => datasetFromNpy(f64, 'x.npy'), (e: { code?: string; message: string }) => e.code === 'DATASET_MISMATCH' && /float64/.test(e.message));
  const floatLabels = parseNpy(encodeNpy({ dtype: 'float32', shape: [2], data: new Float32Array(2) }));
  assert.throws(() => labelsFromNpy(floatLabels, 'y.npy'), (e: { code?: string }) => e.code === 'DATASET_MISMATCH');
});

test('dataset vs model: mismatched shape names both sides; empty set is rejected', () => {
  const wrong = { source: 'calib.npy', shape: [8, 3, 28, 28], data: new Float32Array(8 * 3 * 784) };
  assert.throws(() => checkDataset(wrong, sig), (e: { code?: string; message: string }) =>
    e.code === 'DATASET_MISMATCH' && e.message.includes('calib.npy float32[8,3,28,28]') && e.message.includes("model input 'input' float32[batch,1,28,28]"));
  const rank = { source: 'r.npy', shape: [8, 784], data: new Float32Array(8 * 784) };
  assert.throws(() => checkDataset(rank, sig), /rank 2 vs 4/);
  const empty = { source: 'e.npy', shape: [0, 1, 28, 28], data: new Float32Array(0) };
  assert.throws(() => checkDataset(empty, sig), (e: { code?: string }) => e.code === 'DATASET_EMPTY');
  checkDataset({ source: 'ok.npy', shape: [2, 1, 28, 28], data: new Float32Array(2 * 784) }, sig);
});

test('TensorProto directory dataset concatenates .pb batches in numeric order', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-pb-'));
  try {
    await mkdir(path.join(dir, 'set'));
    for (const [i, v] of [[0, 1], [1, 2], [10, 3]] as const) {
      const t = makeTensor(`input_${i}`, DataType.FLOAT, [1, 1, 28, 28], new Float32Array(784).fill(v));
      await writeFile(path.join(dir, 'set', `input_${i}.pb`), encodeTensor(t).finish());
    }
    const ds = await loadDataset(path.join(dir, 'set'));
    assert.deepEqual(ds.shape, [3, 1, 28, 28]);
    assert.deepEqual([ds.data[0], ds.data[784], ds.data[2 * 784]], [1, 2, 3]);
    checkDataset(ds, sig);
    const bad = makeTensor('input_11', DataType.FLOAT, [1, 1, 28, 27], new Float32Array(756));
    await writeFile(path.join(dir, 'set', 'input_11.pb'), encodeTensor(bad).finish());
    await assert.rejects(loadDataset(path.join(dir, 'set')), (e: { code?: string }) => e.code === 'DATASET_MISMATCH');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('shared Fashion-MNIST .npy files load with the documented shapes', async (t) => {
  const dir = sharedModelsDir();
  if (!dir) return t.skip(SHARED_MISSING);
  const x = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  assert.deepEqual(x.shape, [1000, 1, 28, 28]);
  const y = await loadLabels(path.join(dir, 'fashion_test1k.labels.npy'));
  assert.equal(y.length, 1000);
  assert.ok(y.every((v) => v >= 0 && v < 10));
});

test('npy parsing copies data even from an odd-offset Node Buffer', () => {
  const bytes = encodeNpy({ dtype: 'float32', shape: [3], data: Float32Array.from([1.5, -2, 3]) });
  const backing = Buffer.alloc(bytes.length + 3);
  backing.set(bytes, 3);
  const arr = parseNpy(backing.subarray(3));
  assert.deepEqual(Array.from(arr.data as Float32Array), [1.5, -2, 3]);
});
