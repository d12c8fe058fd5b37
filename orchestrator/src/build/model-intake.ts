import ort from 'onnxruntime-node';
import { EdgepackError, type Precision, type TensorSpec } from '@edgepack/protocol';
import { decodeModel, defaultOpsetVersion } from '../onnx/onnx-model.js';
import { inspectTflite } from '../tflite/reader.js';
import { TFLITE_FILE_IDENTIFIER } from '../tflite/schema.js';

export interface ModelFacts {
  format: 'onnx' | 'tflite';
  opset: number | null;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  details: Record<string, unknown>;
}

const TYPES = new Set(['float32', 'float16', 'int8', 'uint8', 'int32', 'int64', 'bool', 'string']);

/** A FlatBuffer carries its file identifier at bytes 4..8; TFLite's is "TFL3". */
export function isTflite(bytes: Uint8Array): boolean {
  return bytes.length >= 8 && Buffer.from(bytes.subarray(4, 8)).toString('latin1') === TFLITE_FILE_IDENTIFIER;
}

/** Decides what an upload is (ONNX or TFLite) and whether it is usable; failures are a 400 naming why. */
export async function examineModel(bytes: Uint8Array): Promise<ModelFacts> {
  return isTflite(bytes) ? examineTfliteModel(bytes) : examineOnnxModel(bytes);
}

function examineTfliteModel(bytes: Uint8Array): ModelFacts {
  let t;
  try {
    t = inspectTflite(bytes);
  } catch (err) {
    throw new EdgepackError('MODEL_INVALID', `not a valid TFLite model: ${(err as Error).message}`);
  }
  const spec = (x: { name: string; dtype: string; shape: number[] }): TensorSpec => {
    if (!TYPES.has(x.dtype)) throw new EdgepackError('MODEL_UNSUPPORTED', `TFLite tensor ${x.name} has type ${x.dtype}, which edgepack cannot feed`);
    return { name: x.name, type: x.dtype as TensorSpec['type'], shape: x.shape };
  };
  // Full-integer models quantize their weights; a float model has no quantized tensors at its core.
  const quantized = Object.keys(t.operators).some((op) => op === 'QUANTIZE' || op === 'DEQUANTIZE') || t.inputs.some((i) => i.dtype === 'int8');
  const precision: Precision = quantized ? 'int8' : 'fp32';
  return {
    format: 'tflite', opset: null, inputs: t.inputs.map(spec), outputs: t.outputs.map(spec),
    details: { schemaVersion: t.schemaVersion, operators: t.operators, precision },
  };
}

/** The protobuf must decode as a ModelProto and onnxruntime must be able to load it. */
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
      inputs: session.inputMetadata.map(spec),
      outputs: session.outputMetadata.map(spec),
      details: { irVersion: Number(model.irVersion ?? 0), producer: [model.producerName, model.producerVersion].filter(Boolean).join(' ') },
    };
  } finally {
    await session.release();
  }
}
