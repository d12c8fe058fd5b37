// One interface for every inference runtime the agent can drive (onnxruntime-node, LiteRT),
// so benchmarking, golden-sample checks and serving treat them alike.

export type TensorDType = 'float32' | 'float16' | 'int8' | 'uint8' | 'int32' | 'int64' | 'bool';

export interface TensorValue {
  dtype: TensorDType;
  dims: number[];
  /** Typed array matching dtype (Float32Array for float32, BigInt64Array for int64, ...). */
  data: Float32Array | Uint16Array | Int8Array | Uint8Array | Int32Array | BigInt64Array;
}

export interface TensorInfo {
  name: string;
  dtype: TensorDType;
  /** Static dims as numbers, symbolic dims as strings. */
  shape: (number | string)[];
}

export interface ModelRunner {
  readonly runtime: string;
  /** Execution providers / accelerators actually in use, e.g. ['cpu'] or ['wasm']. */
  readonly providers: string[];
  readonly inputs: TensorInfo[];
  readonly outputs: TensorInfo[];
  run(feeds: Record<string, TensorValue>, options?: RunOptions): Promise<Record<string, TensorValue>>;
  close(): Promise<void>;
}

export interface RunOptions {
  /** The caller gives up the inputs' buffers: a runner in another thread may move them instead of copying. */
  transferInputs?: boolean;
}

export interface RunnerOptions {
  /** Preferred execution providers in order; the runner falls back to CPU when one is missing. */
  providers?: string[];
  intraOpThreads?: number;
  /**
   * onnxruntime's intra-op threads spin for a while after each run (its default), which wins
   * for back-to-back runs but burns the cores a server needs between requests. False turns it off.
   */
  allowSpinning?: boolean;
}

export type RunnerFactory = (modelBytes: Uint8Array, options: RunnerOptions) => Promise<ModelRunner>;
