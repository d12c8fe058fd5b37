// Runs a .tflite model through LiteRT.js so the orchestrator can compute golden samples and
// check converter output with the same runtime devices use. Small on purpose: float32, int32
// and uint8 tensors only, which is all LiteRT.js exchanges with JavaScript.
import { EdgepackError } from '@edgepack/protocol/errors.js';
import { loadLiteRtRuntime, type LiteRtLoadOptions } from './litert-shim.js';

export type LiteRtData = Float32Array | Int32Array | Uint8Array;
export interface LiteRtTensorValue {
  data: LiteRtData;
  dims: number[];
}
export interface LiteRtIoInfo {
  name: string;
  dtype: string;
  shape: number[];
}

export interface LiteRtSession {
  readonly inputs: LiteRtIoInfo[];
  readonly outputs: LiteRtIoInfo[];
  /** Feeds by input name; outputs are copies, safe after close(). */
  run(feeds: Record<string, LiteRtTensorValue>): Promise<Record<string, LiteRtTensorValue>>;
  close(): void;
}

export async function openLiteRtSession(modelBytes: Uint8Array, options: LiteRtLoadOptions = {}): Promise<LiteRtSession> {
  const { lib, liteRt } = await loadLiteRtRuntime(options);
  let model: Awaited<ReturnType<typeof liteRt.loadAndCompile>>;
  try {
    model = await liteRt.loadAndCompile(modelBytes, { accelerator: 'wasm' });
  } catch (err) {
    throw new EdgepackError('LITERT_LOAD_FAILED', `LiteRT could not load the model: ${err instanceof Error ? err.message : String(err)}`);
  }
  const info = (d: { name: string; dtype: string; shape: Int32Array }): LiteRtIoInfo => ({ name: d.name, dtype: d.dtype, shape: Array.from(d.shape) });
  const inputs = model.getInputDetails().map(info);
  const outputs = model.getOutputDetails().map(info);
  type Tensor = InstanceType<typeof lib.Tensor>;
  return {
    inputs,
    outputs,
    async run(feeds) {
      const created: Tensor[] = [];
      let results: Tensor[] = [];
      try {
        for (const i of inputs) {
          const feed = feeds[i.name];
          if (!feed) throw new EdgepackError('LITERT_MISSING_INPUT', `missing input '${i.name}'`);
          created.push(new lib.Tensor(feed.data as Float32Array<ArrayBuffer>, feed.dims));
        }
        results = await model.run(created);
        const out: Record<string, LiteRtTensorValue> = {};
        results.forEach((t, k) => {
          out[outputs[k].name] = { data: t.toTypedArray().slice(), dims: Array.from(t.type.layout.dimensions) };
        });
        return out;
      } finally {
        for (const t of created) t.delete();
        for (const t of results) t.delete();
      }
    },
    close() {
      model.delete();
    },
  };
}
