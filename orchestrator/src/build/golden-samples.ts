import ort from 'onnxruntime-node';
import { encodeTensor, type GoldenFile, type TensorSpec } from '@edgepack/protocol';
import { seededRandom } from '../seeded-random.js';

/** Symbolic dims (batch, sequence) become 1: golden samples are single examples. */
export function concreteDims(shape: TensorSpec['shape']): number[] {
  return shape.map((d) => (typeof d === 'number' && d > 0 ? d : 1));
}

/** Pure: the golden inputs for a model's input signature (standard-normal floats, small ints). */
export function goldenInputs(inputs: readonly TensorSpec[], count: number, seed = 1234): Record<string, ort.Tensor>[] {
  const rand = seededRandom(seed);
  const normal = () => Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
  const samples: Record<string, ort.Tensor>[] = [];
  for (let s = 0; s < count; s++) {
    const feeds: Record<string, ort.Tensor> = {};
    for (const spec of inputs) {
      const dims = concreteDims(spec.shape);
      const n = dims.reduce((a, b) => a * b, 1);
      if (spec.type === 'float32') feeds[spec.name] = new ort.Tensor('float32', Float32Array.from({ length: n }, normal), dims);
      else if (spec.type === 'int64') feeds[spec.name] = new ort.Tensor('int64', BigInt64Array.from({ length: n }, () => BigInt(Math.floor(rand() * 8))), dims);
      else if (spec.type === 'int32') feeds[spec.name] = new ort.Tensor('int32', Int32Array.from({ length: n }, () => Math.floor(rand() * 8)), dims);
      else throw new Error(`golden samples for ${spec.type} input ${spec.name} are not supported`);
    }
    samples.push(feeds);
  }
  return samples;
}

/** Runs the artifact itself in onnxruntime-node to record the outputs the device must reproduce. */
export async function computeOnnxGolden(modelBytes: Uint8Array, inputs: readonly TensorSpec[], count = 3): Promise<GoldenFile> {
  const session = await ort.InferenceSession.create(modelBytes, { intraOpNumThreads: 1, graphOptimizationLevel: 'all' });
  try {
    const samples: GoldenFile['samples'] = [];
    for (const feeds of goldenInputs(inputs, count)) {
      const out = await session.run(feeds);
      const encode = (t: ort.Tensor) => encodeTensor(t.type as 'float32', [...t.dims], t.data as Float32Array);
      samples.push({
        inputs: Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, encode(t)])),
        outputs: Object.fromEntries(Object.entries(out).map(([k, t]) => [k, encode(t)])),
      });
    }
    return { samples };
  } finally {
    await session.release();
  }
}
