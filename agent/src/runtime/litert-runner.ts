// ModelRunner over Google's LiteRT.js (wasm, XNNPACK) so .tflite bundles are benchmarked and
// checked exactly like ONNX ones. LiteRT objects live in wasm memory and are not garbage
// collected: every input, output and model is deleted explicitly.
import { EdgepackError } from '@edgepack/protocol/errors.js';
import type { ModelRunner, RunnerFactory, RunnerOptions, TensorDType, TensorInfo, TensorValue } from './runner.js';
import { loadLiteRtRuntime, type LiteRtLoadOptions } from './litert-shim.js';

type LiteRtTensor = InstanceType<Awaited<ReturnType<typeof loadLiteRtRuntime>>['lib']['Tensor']>;

/** Tensor dtypes LiteRT.js can exchange with JavaScript. */
const SUPPORTED_DTYPES: ReadonlySet<TensorDType> = new Set(['float32', 'int32', 'uint8']);

export interface LiteRtRunnerFactoryOptions extends LiteRtLoadOptions {}

export function createLiteRtRunnerFactory(factoryOptions: LiteRtRunnerFactoryOptions = {}): RunnerFactory {
  return (modelBytes, options) => createLiteRtRunner(modelBytes, options, factoryOptions);
}

export async function createLiteRtRunner(
  modelBytes: Uint8Array,
  _options: RunnerOptions = {},
  factoryOptions: LiteRtRunnerFactoryOptions = {},
): Promise<ModelRunner> {
  const { lib, liteRt } = await loadLiteRtRuntime(factoryOptions);
  // LiteRT rejects ArrayBuffer and non-plain views; hand it a Uint8Array it may keep.
  const bytes = modelBytes instanceof Uint8Array ? modelBytes : new Uint8Array(modelBytes);
  let model: Awaited<ReturnType<typeof liteRt.loadAndCompile>>;
  try {
    model = await liteRt.loadAndCompile(bytes, { accelerator: 'wasm' });
  } catch (err) {
    throw new EdgepackError('LITERT_LOAD_FAILED', `LiteRT could not load the model: ${err instanceof Error ? err.message : String(err)}`);
  }
  const toInfo = (d: { name: string; dtype: string; shape: Int32Array }): TensorInfo => ({
    name: d.name,
    dtype: d.dtype as TensorDType,
    shape: Array.from(d.shape),
  });
  const inputs = model.getInputDetails().map(toInfo);
  const outputs = model.getOutputDetails().map(toInfo);
  let closed = false;

  return {
    runtime: 'litert',
    providers: ['wasm'],
    inputs,
    outputs,
    async run(feeds: Record<string, TensorValue>): Promise<Record<string, TensorValue>> {
      if (closed) throw new EdgepackError('RUNNER_CLOSED', 'LiteRT runner is closed');
      const created: LiteRtTensor[] = [];
      let results: LiteRtTensor[] = [];
      try {
        for (const info of inputs) {
          const feed = feeds[info.name];
          if (!feed) throw new EdgepackError('RUNNER_MISSING_INPUT', `missing input '${info.name}'`);
          if (!SUPPORTED_DTYPES.has(feed.dtype)) {
            throw new EdgepackError('RUNNER_UNSUPPORTED_DTYPE', `LiteRT.js cannot take ${feed.dtype} input '${info.name}' (float32, int32, uint8 only)`);
          }
          created.push(new lib.Tensor(feed.data as Float32Array<ArrayBuffer> | Int32Array<ArrayBuffer> | Uint8Array<ArrayBuffer>, feed.dims));
        }
        results = await model.run(created);
        const out: Record<string, TensorValue> = {};
        results.forEach((t, i) => {
          const info = outputs[i];
          // toTypedArray views wasm memory that delete() frees, so copy it out.
          const data = t.toTypedArray().slice();
          out[info.name] = { dtype: t.type.dtype, dims: Array.from(t.type.layout.dimensions), data };
        });
        return out;
      } finally {
        for (const t of created) t.delete();
        for (const t of results) t.delete();
      }
    },
    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      model.delete();
    },
  };
}
