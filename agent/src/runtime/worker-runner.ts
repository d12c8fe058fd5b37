import { Worker } from 'node:worker_threads';
import { EdgepackError, catalogueCode, type ModelFormat } from '@edgepack/protocol';
import type { ModelRunner, RunOptions, RunnerOptions, TensorInfo, TensorValue } from './runner.js';

export type ToWorker =
  | { type: 'init'; format: ModelFormat; bytes: Uint8Array; options: RunnerOptions }
  | { type: 'run'; id: number; feeds: Record<string, TensorValue> }
  | { type: 'close' };

type FromWorker =
  | { type: 'ready'; runtime: string; providers: string[]; inputs: TensorInfo[]; outputs: TensorInfo[] }
  | { type: 'failed'; code: string; message: string }
  | { type: 'result'; id: number; outputs: Record<string, TensorValue> }
  | { type: 'error'; id: number; code: string; message: string }
  | { type: 'closed' };

/**
 * A ModelRunner whose runtime lives in a worker thread of its own (see runner-worker.ts).
 * Both runtimes run synchronously on the thread that calls them; in a worker they cannot stall
 * the agent's event loop, and a model can load and warm up while another one serves.
 * Inputs are copied to the worker unless the caller gives them up (`transferInputs`).
 */
export async function createWorkerRunner(format: ModelFormat, modelBytes: Uint8Array, options: RunnerOptions = {}): Promise<ModelRunner> {
  const worker = new Worker(new URL('./runner-worker.js', import.meta.url));
  const pending = new Map<number, { resolve: (o: Record<string, TensorValue>) => void; reject: (e: Error) => void }>();
  let nextId = 1;
  let dead: EdgepackError | undefined;
  let closed: Promise<void> | undefined;
  let onClosed: (() => void) | undefined;
  let init: { resolve: (m: Extract<FromWorker, { type: 'ready' }>) => void; reject: (e: Error) => void } | undefined;

  const fail = (err: EdgepackError) => {
    dead ??= err;
    init?.reject(err);
    for (const p of pending.values()) p.reject(err);
    pending.clear();
  };
  worker.on('message', (m: FromWorker) => {
    switch (m.type) {
      case 'ready': return init?.resolve(m);
      case 'failed': return init?.reject(new EdgepackError(catalogueCode(m.code, 'MODEL_LOAD_FAILED'), m.message));
      case 'result': { const p = pending.get(m.id); pending.delete(m.id); return p?.resolve(m.outputs); }
      case 'error': { const p = pending.get(m.id); pending.delete(m.id); return p?.reject(new EdgepackError(catalogueCode(m.code, 'INFER_FAILED'), m.message)); }
      case 'closed': return onClosed?.();
    }
  });
  worker.on('error', (err) => fail(new EdgepackError('RUNNER_CRASHED', `the model's worker thread failed: ${err.message}`)));
  worker.on('exit', (code) => { fail(new EdgepackError('RUNNER_CLOSED', `the model's worker thread exited (${code})`)); onClosed?.(); });

  const ready = await new Promise<Extract<FromWorker, { type: 'ready' }>>((resolve, reject) => {
    init = { resolve, reject };
    // The worker gets its own copy of the model bytes; the caller's stay usable.
    worker.postMessage({ type: 'init', format, bytes: modelBytes, options } satisfies ToWorker);
  }).catch(async (err) => {
    await worker.terminate();
    throw err;
  });
  init = undefined;

  return {
    runtime: ready.runtime,
    providers: ready.providers,
    inputs: ready.inputs,
    outputs: ready.outputs,
    run(feeds: Record<string, TensorValue>, runOptions?: RunOptions): Promise<Record<string, TensorValue>> {
      if (dead || closed) return Promise.reject(dead ?? new EdgepackError('RUNNER_CLOSED', 'the runner is closed'));
      const id = nextId++;
      return new Promise((resolve, reject) => {
        pending.set(id, { resolve, reject });
        const transfer = runOptions?.transferInputs ? [...new Set(Object.values(feeds).map((t) => t.data.buffer as ArrayBuffer))] : [];
        worker.postMessage({ type: 'run', id, feeds } satisfies ToWorker, transfer);
      });
    },
    close(): Promise<void> {
      closed ??= (async () => {
        if (!dead) {
          await new Promise<void>((resolve) => {
            onClosed = resolve;
            worker.postMessage({ type: 'close' } satisfies ToWorker);
          });
        }
        await worker.terminate();
      })();
      return closed;
    },
  };
}
