// Activation ranges for full-integer TFLite from the optimizer's calibrator, so ONNX static
// quantization and TFLite conversion share one calibration machine (MinMax, Percentile,
// Entropy) run through onnxruntime-node on the ONNX graph.
import type { ModelProto } from '../onnx/onnx-model.js';
import { calibrate, type CalibrationMethod } from '../optimizer/calibrate.js';
import { EdgepackError } from '@edgepack/protocol/errors.js';
import type { ActivationRangeEstimator, ActivationRanges } from './calibration.js';
import { TensorType } from './schema.js';

/**
 * The lowering keeps ONNX value names on the TFLite tensors it maps one to one (a fused
 * Conv+Relu output carries the Relu's name, whose range is the right one). Tensors the lowering
 * invents (layout transposes, reshapes) move values without changing them, so each takes the
 * range of the operator input that feeds it.
 */
export function onnxRangeEstimator(onnx: ModelProto, options: { method?: CalibrationMethod; percentile?: number; maxSamples?: number } = {}): ActivationRangeEstimator {
  return async (model, _inputs, calibration) => {
    const known = new Set<string>([...onnx.graph.input.map((v) => v.name), ...onnx.graph.node.flatMap((n) => n.output)]);
    const floatActivations = model.tensors.map((t, i) => ({ t, i })).filter(({ t }) => !t.data && t.type === TensorType.FLOAT32);
    const names = [...new Set(floatActivations.map(({ t }) => t.name).filter((n) => known.has(n)))];
    const inputName = onnx.graph.input.find((v) => !onnx.graph.initializer.some((t) => t.name === v.name))?.name;
    if (!inputName) throw new EdgepackError('TFLITE_CALIBRATION_INPUTS', 'the ONNX model has no data input to calibrate');
    const byName = await calibrate(onnx, names.filter((n) => n !== inputName), inputName, { source: 'calibration', shape: calibration.shape, data: calibration.data }, {
      ...(options.method ? { method: options.method } : {}),
      ...(options.percentile ? { percentile: options.percentile } : {}),
      ...(calibration.maxSamples ?? options.maxSamples ? { maxSamples: calibration.maxSamples ?? options.maxSamples } : {}),
    });
    const ranges: ActivationRanges = new Map();
    // The model input's range is the data's own.
    let lo = Infinity, hi = -Infinity;
    const n = Math.min(calibration.data.length, (calibration.maxSamples ?? Infinity) * (calibration.data.length / (calibration.shape[0] ?? 1)));
    for (let k = 0; k < n; k++) { const v = calibration.data[k]!; if (v < lo) lo = v; if (v > hi) hi = v; }
    byName.set(inputName, { min: lo, max: hi });
    for (const { t, i } of floatActivations) {
      const r = byName.get(t.name);
      if (r) ranges.set(i, { min: r.min, max: r.max });
    }
    for (const op of model.operators) {
      const source = op.inputs.find((i) => i >= 0 && ranges.has(i));
      for (const o of op.outputs) if (!ranges.has(o) && source !== undefined && model.tensors[o]?.type === TensorType.FLOAT32) ranges.set(o, { ...ranges.get(source)! });
    }
    const missing = floatActivations.filter(({ i }) => !ranges.has(i)).map(({ t }) => t.name);
    if (missing.length) throw new EdgepackError('TFLITE_CALIBRATION_INCOMPLETE', `no calibrated range for TFLite tensors ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`);
    return ranges;
  };
}
