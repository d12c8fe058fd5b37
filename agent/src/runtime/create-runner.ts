import type { Manifest } from '@edgepack/protocol';
import type { ModelRunner, RunnerOptions } from './runner.js';

/** The runner for a bundle's format: LiteRT for .tflite, onnxruntime for ONNX; each imported only when used. */
export async function createRunner(manifest: Pick<Manifest, 'format'>, bytes: Uint8Array, options: RunnerOptions): Promise<ModelRunner> {
  if (manifest.format === 'tflite') {
    const { createLiteRtRunner } = await import('./litert-runner.js');
    return createLiteRtRunner(bytes, options);
  }
  const { createOnnxRunner } = await import('./onnx-runner.js');
  return createOnnxRunner(bytes, options);
}
