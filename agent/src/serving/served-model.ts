import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { EdgepackError, GoldenFileSchema, Validator, errorMessage, modelFile, type Manifest } from '@edgepack/protocol';
import { decodeGolden, maxAbsDiff } from '../benchmark-stats.js';
import type { ActiveRecord } from '../bundle-slots.js';
import { createWorkerRunner } from '../runtime/worker-runner.js';
import type { ModelRunner, RunnerOptions, TensorInfo, TensorValue } from '../runtime/runner.js';
import { ServingError, type ModelSignature } from './kserve-codec.js';
import { RunQueue } from './run-queue.js';

export interface ServedModelOptions {
  /** Runner instances, each in its own worker thread with its own session: runs at once. */
  concurrency: number;
  maxQueued: number;
  /** Warm-up runs before the model counts as ready (default: the manifest's acceptance.warmupRuns, else 3). */
  warmupRuns?: number;
  /** Runtime settings (threads, spinning); providers come from the manifest. */
  runner?: RunnerOptions;
}

/** Bytes of a bundle's model file: what the memory check of a hot swap scales. */
export function modelBytes(manifest: Manifest): number {
  return modelFile(manifest).length;
}

/** A zero tensor of a spec's shape (dynamic dims as 1), for warming a model without golden samples. */
function zeros(t: TensorInfo): TensorValue {
  const dims = t.shape.map((d) => (typeof d === 'number' && d > 0 ? d : 1));
  const n = dims.reduce((a, b) => a * b, 1);
  const data = t.dtype === 'float32' ? new Float32Array(n) : t.dtype === 'int64' ? new BigInt64Array(n) : t.dtype === 'int32' ? new Int32Array(n)
    : t.dtype === 'int8' ? new Int8Array(n) : t.dtype === 'float16' ? new Uint16Array(n) : new Uint8Array(n);
  return { dtype: t.dtype, dims, data };
}

/**
 * One loaded bundle being served: its runner instances, its run queue, and a count of the
 * requests that have chosen it and not finished, so that a model being replaced closes only
 * once they have.
 */
export class ServedModel {
  readonly queue: RunQueue;
  private users = 0;
  private drained: (() => void)[] = [];
  private retired = false;
  private readonly free: ModelRunner[];

  private constructor(readonly active: ActiveRecord, private readonly runners: ModelRunner[], o: ServedModelOptions) {
    this.queue = new RunQueue(runners.length, o.maxQueued);
    this.free = [...runners];
  }

  private get runner(): ModelRunner { return this.runners[0]!; }

  get bundleId(): string { return this.active.bundleId; }
  get manifest(): Manifest { return this.active.manifest; }
  get name(): string { return this.active.manifest.model.name; }
  get version(): string { return this.active.manifest.model.version; }
  get runtime(): string { return this.runner.runtime; }
  get signature(): ModelSignature { return { inputs: this.runner.inputs, outputs: this.runner.outputs }; }

  /** Loads the bundle's model, warms it and checks its golden samples; only then may it serve. */
  static async load(bundleDir: string, active: ActiveRecord, o: ServedModelOptions): Promise<ServedModel> {
    const m = active.manifest;
    const bytes = new Uint8Array(await readFile(join(bundleDir, modelFile(m).path)));
    // In worker threads: loading, warming and running never stall the agent's event loop.
    const runners: ModelRunner[] = [];
    try {
      for (let i = 0; i < Math.max(1, o.concurrency); i++) runners.push(await createWorkerRunner(m.format, bytes, { ...o.runner, providers: m.runtime.executionProviders }));
      const model = new ServedModel(active, runners, o);
      for (const r of runners) await model.prepare(r, bundleDir, o.warmupRuns ?? m.acceptance.warmupRuns ?? 3);
      return model;
    } catch (err) {
      await Promise.all(runners.map((r) => r.close().catch(() => undefined)));
      throw err;
    }
  }

  private async prepare(runner: ModelRunner, bundleDir: string, warmupRuns: number): Promise<void> {
    const m = this.manifest;
    const parsed = new Validator('golden file', GoldenFileSchema).parse(await readFile(join(bundleDir, m.golden.file)), 256 << 20);
    if (!parsed.ok) throw new EdgepackError('GOLDEN_INVALID', parsed.reason);
    const samples = decodeGolden(parsed.value);
    const feeds = samples[0]?.inputs ?? Object.fromEntries(runner.inputs.map((t) => [t.name, zeros(t)]));
    for (let i = 0; i < warmupRuns; i++) await runner.run(feeds);
    let worst = 0;
    for (const s of samples) {
      const out = await runner.run(s.inputs);
      for (const [name, expected] of Object.entries(s.outputs)) {
        const got = out[name];
        worst = Math.max(worst, got ? maxAbsDiff(got, expected) : Infinity);
      }
    }
    if (worst > m.golden.maxAbsError) {
      throw new EdgepackError('GOLDEN_MISMATCH', `bundle ${m.bundleId}: golden samples differ by up to ${worst}, allowed ${m.golden.maxAbsError}`);
    }
  }

  /** A request has chosen this model; every enter() is followed by exactly one leave(). */
  enter(): void { this.users++; }

  leave(): void {
    this.users--;
    if (this.users === 0) for (const d of this.drained.splice(0)) d();
  }

  /**
   * Runs one request: waits for a slot (503 when the queue is full, 504 at the deadline), then
   * runs, answering 504 at the deadline even if the run goes on (its slot is freed when it ends).
   * `deadline` and `now()` are performance.now() times.
   */
  async run(inputs: Record<string, TensorValue>, deadline: number, now: () => number): Promise<{ outputs: Record<string, TensorValue>; queuedAt: number; startedAt: number }> {
    const queuedAt = now();
    const release = await this.queue.acquire(deadline, now);
    const startedAt = now();
    const runner = this.free.pop()!;
    // The decoded inputs belong to this request alone: move them to the worker, do not copy.
    const running = runner.run(inputs, { transferInputs: true }).finally(() => { this.free.push(runner); release(); });
    const left = deadline - startedAt;
    if (left <= 0) {
      running.catch(() => undefined);
      throw new ServingError('INFER_TIMEOUT', 'the request timed out before the model ran it');
    }
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new ServingError('INFER_TIMEOUT', `the model did not answer within the request's timeout`)), left);
    });
    try {
      const outputs = await Promise.race([running, timeout]);
      return { outputs, queuedAt, startedAt };
    } catch (err) {
      if (err instanceof ServingError) {
        running.catch(() => undefined);
        throw err;
      }
      throw new ServingError('INFER_FAILED', `the runtime failed: ${errorMessage(err)}`);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Waits for the requests that chose this model, then closes the runner. Idempotent. */
  async retire(): Promise<void> {
    if (this.retired) return;
    this.retired = true;
    if (this.users > 0) await new Promise<void>((resolve) => this.drained.push(resolve));
    await this.queue.idle();
    await Promise.all(this.runners.map((r) => r.close()));
  }
}
