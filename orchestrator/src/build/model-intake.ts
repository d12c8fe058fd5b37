import ort from 'onnxruntime-node';
import { EdgepackError, type TensorSpec } from '@edgepack/protocol';
import { decodeModel, defaultOpsetVersion } from '../onnx/onnx-model.js';

export interface ModelFacts {
  format: 'onnx';
  opset: number | null;
  irVersion: number;
  producer: string;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
}

const TYPES = new Set(['float32', 'float16', 'int8', 'uint8', 'int32', 'int64', 'bool', 'string']);

/**
 * Decides whether uploaded bytes are a usable ONNX model: the protobuf must decode as a
 * ModelProto and onnxruntime must be able to load it. Either failure is a 400 naming why.
 */
export async function examineOnnxModel(bytes: Uint8Array): Promise<ModelFacts> {
  let model;
  try {
    model = decodeModel(bytes);
  } catch (err) {
    const e = err as { code?: string; message: string };
    throw new EdgepackError('MODEL_INVALID', `not a valid ONNX model: ${e.message}`, { cause: e.code });
  }
  let session: ort.InferenceSession;
  try {
    session = await ort.InferenceSession.create(bytes, { graphOptimizationLevel: 'disabled' });
  } catch (err) {
    throw new EdgepackError('MODEL_INVALID', `ONNX model does not load in onnxruntime: ${(err as Error).message.split('\n')[0]}`);
  }
  try {
    const spec = (m: ort.InferenceSession.ValueMetadata): TensorSpec => {
      const meta = m as { name: string; isTensor: boolean; type?: string; shape?: readonly (number | string)[] };
      if (!meta.isTensor || !meta.type || !TYPES.has(meta.type)) throw new EdgepackError('MODEL_UNSUPPORTED', `model input/output ${meta.name} is not a plain tensor (${meta.type ?? 'non-tensor'})`);
      return { name: meta.name, type: meta.type as TensorSpec['type'], shape: (meta.shape ?? []).map((d) => (typeof d === 'number' && d >= 0 ? d : String(d))) };
    };
    return {
      format: 'onnx',
      opset: defaultOpsetVersion(model) ?? null,
      irVersion: Number(model.irVersion ?? 0),
      producer: [model.producerName, model.producerVersion].filter(Boolean).join(' '),
      inputs: session.inputMetadata.map(spec),
      outputs: session.outputMetadata.map(spec),
    };
  } finally {
    await session.release();
  }
}
