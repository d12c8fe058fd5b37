import { EdgepackError } from '@edgepack/protocol';
import type { ModelRunner, RunnerOptions, TensorDType, TensorInfo, TensorValue } from './runner.js';

type Ort = typeof import('onnxruntime-node');

/** Maps profile execution-provider names to onnxruntime-node's, keeping only those this build has. */
function usableProviders(ort: Ort, wanted: string[] | undefined): string[] {
  const available = new Set(ort.listSupportedBackends().map((b) => b.name));
  const picked = (wanted ?? ['cpu']).filter((p) => available.has(p));
  // Always end on CPU: a device whose accelerator is missing still benchmarks, and says so.
  return picked.includes('cpu') ? picked : [...picked, 'cpu'];
}

/** ModelRunner over onnxruntime-node; the module is imported lazily so loading the agent stays cheap. */
export async function createOnnxRunner(modelBytes: Uint8Array, options: RunnerOptions = {}): Promise<ModelRunner> {
  const ort = (await import('onnxruntime-node')).default as unknown as Ort;
  let providers = usableProviders(ort, options.providers);
  const create = (eps: string[]) => ort.InferenceSession.create(modelBytes, {
    executionProviders: eps,
    intraOpNumThreads: options.intraOpThreads ?? 0,
    graphOptimizationLevel: 'all',
    ...(options.allowSpinning === false ? { extra: { session: { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' } } } : {}),
  });
  let session: import('onnxruntime-node').InferenceSession;
  try {
    session = await create(providers);
  } catch (err) {
    // onnxruntime-node lists the CUDA/TensorRT providers even where their shared libraries are
    // missing; fall back to the CPU rather than refuse a model that runs, and say so in `providers`.
    if (providers.length === 1) throw new EdgepackError('MODEL_LOAD_FAILED', `onnxruntime could not load the model: ${(err as Error).message.split('\n')[0]}`);
    try {
      session = await create(['cpu']);
      providers = ['cpu'];
    } catch (err2) {
      throw new EdgepackError('MODEL_LOAD_FAILED', `onnxruntime could not load the model: ${(err2 as Error).message.split('\n')[0]}`);
    }
  }
  const info = (m: import('onnxruntime-node').InferenceSession.ValueMetadata): TensorInfo => {
    const meta = m as { name: string; type?: string; shape?: readonly (number | string)[] };
    return { name: meta.name, dtype: (meta.type ?? 'float32') as TensorDType, shape: [...(meta.shape ?? [])] };
  };
  return {
    runtime: 'onnxruntime',
    providers,
    inputs: session.inputMetadata.map(info),
    outputs: session.outputMetadata.map(info),
    async run(feeds: Record<string, TensorValue>): Promise<Record<string, TensorValue>> {
      const ortFeeds: Record<string, import('onnxruntime-node').Tensor> = {};
      for (const [name, t] of Object.entries(feeds)) ortFeeds[name] = new ort.Tensor(t.dtype as 'float32', t.data as Float32Array, t.dims);
      const out = await session.run(ortFeeds);
      const result: Record<string, TensorValue> = {};
      for (const [name, t] of Object.entries(out)) result[name] = { dtype: t.type as TensorDType, dims: [...t.dims], data: t.data as Float32Array };
      return result;
    },
    close: () => session.release(),
  };
}
