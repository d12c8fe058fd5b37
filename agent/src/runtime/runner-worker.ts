// Runs in a worker thread: one model runner, driven by messages from worker-runner.ts.
// onnxruntime-node's run() and LiteRT's are synchronous native/wasm calls; here they block
// only this thread, so the agent's HTTP server, MQTT client and timers keep running.
import { parentPort } from 'node:worker_threads';
import { errorCode, errorMessage } from '@edgepack/protocol';
import { createRunner } from './create-runner.js';
import type { ModelRunner } from './runner.js';
import type { ToWorker } from './worker-runner.js';

if (parentPort) {
  const port = parentPort;
  let runner: ModelRunner | undefined;
  port.on('message', (m: ToWorker) => {
    void (async () => {
      switch (m.type) {
        case 'init':
          try {
            runner = await createRunner({ format: m.format }, m.bytes, m.options);
            port.postMessage({ type: 'ready', runtime: runner.runtime, providers: runner.providers, inputs: runner.inputs, outputs: runner.outputs });
          } catch (err) {
            port.postMessage({ type: 'failed', code: errorCode(err) ?? 'MODEL_LOAD_FAILED', message: errorMessage(err) });
          }
          return;
        case 'run':
          try {
            if (!runner) throw Object.assign(new Error('the runner is not loaded'), { code: 'RUNNER_CLOSED' });
            const outputs = await runner.run(m.feeds);
            port.postMessage({ type: 'result', id: m.id, outputs });
          } catch (err) {
            port.postMessage({ type: 'error', id: m.id, code: errorCode(err) ?? 'INFER_FAILED', message: errorMessage(err) });
          }
          return;
        case 'close':
          try { await runner?.close(); } catch { /* closing anyway */ }
          runner = undefined;
          port.postMessage({ type: 'closed' });
          port.close();
      }
    })();
  });
}
