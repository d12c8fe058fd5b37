// Entry point of the build worker thread: one job in, progress messages and one result out.
// Quantization, calibration and evaluation are CPU-bound for seconds to minutes; running them
// here keeps the API and the MQTT broker on the main thread responsive.
import { isMainThread, parentPort, workerData } from 'node:worker_threads';
import { catalogueCode, errorMessage, type ErrorCode } from '@edgepack/protocol';
import { buildArtifacts, type ArtifactOutcome, type BuildJob } from './artifact-builder.js';

export type WorkerMessage =
  | { type: 'progress'; step: string; done: number; total: number }
  | { type: 'done'; outcomes: ArtifactOutcome[] }
  | { type: 'error'; code: ErrorCode; message: string };

if (!isMainThread && parentPort) {
  const port = parentPort;
  buildArtifacts(workerData as BuildJob, (p) => port.postMessage({ type: 'progress', ...p } satisfies WorkerMessage)).then(
    (outcomes) => port.postMessage({ type: 'done', outcomes } satisfies WorkerMessage),
    (err) => port.postMessage({ type: 'error', code: catalogueCode(err, 'BUILD_FAILED'), message: errorMessage(err) } satisfies WorkerMessage),
  );
}
