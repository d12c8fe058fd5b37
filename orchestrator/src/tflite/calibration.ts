// Activation ranges for full-integer quantization. The default estimator is MinMax: run the
// float TFLite model through LiteRT with every activation exposed as an output and record the
// extremes. It sits behind ActivationRangeEstimator so the optimizer's calibrator (shared with
// ONNX static quantization) can replace it.
import { EdgepackError } from '@edgepack/protocol/errors.js';
import type { TfliteModel } from './model.js';
import type { LoweredIo } from './lower-onnx.js';
import { TensorType } from './schema.js';
import { writeTflite } from './writer.js';
import { openLiteRtSession } from './litert-runner.js';
import { NCHW_TO_NHWC, sizeOf, transposeData } from './layout.js';

/** Calibration inputs for a single-input model, in the ONNX layout: shape [samples, ...]. */
export interface CalibrationSet {
  data: Float32Array;
  shape: number[];
  /** Use at most this many samples. */
  maxSamples?: number;
}

export interface TensorRange {
  min: number;
  max: number;
}

/** Ranges keyed by TFLite tensor index, for every float activation including model inputs. */
export type ActivationRanges = Map<number, TensorRange>;

export type ActivationRangeEstimator = (model: TfliteModel, inputs: LoweredIo[], calibration: CalibrationSet) => Promise<ActivationRanges>;

/** Float samples batched to the model input shape, already in the TFLite layout. */
export function* calibrationBatches(input: LoweredIo, calibration: CalibrationSet): Generator<Float32Array> {
  const batch = input.shape[0];
  const perSample = sizeOf(input.shape) / batch;
  const available = calibration.shape[0];
  if (sizeOf(calibration.shape.slice(1)) !== perSample) {
    throw new EdgepackError(
      'TFLITE_CALIBRATION_SHAPE',
      `calibration samples of shape [${calibration.shape.slice(1).join(',')}] do not fit model input '${input.name}' [${input.shape.join(',')}]`,
    );
  }
  const count = Math.min(available, calibration.maxSamples ?? available);
  for (let s = 0; s + batch <= count; s += batch) {
    const slice = calibration.data.subarray(s * perSample, (s + batch) * perSample);
    if (input.layout === 'NHWC') {
      const nhwc = input.shape;
      const nchw = [nhwc[0], nhwc[3], nhwc[1], nhwc[2]];
      yield transposeData(slice, nchw, NCHW_TO_NHWC);
    } else {
      yield slice;
    }
  }
}

export const minMaxRanges: ActivationRangeEstimator = async (model, inputs, calibration) => {
  if (inputs.length !== 1) throw new EdgepackError('TFLITE_CALIBRATION_INPUTS', `calibration supports single-input models; this one has ${inputs.length}`);
  const input = inputs[0];
  const inputIndex = model.inputs[0];
  const probed = model.tensors
    .map((t, i) => ({ t, i }))
    .filter(({ t, i }) => !t.data && t.type === TensorType.FLOAT32 && i !== inputIndex)
    .map(({ i }) => i);
  const probe: TfliteModel = { ...model, outputs: probed };
  const ranges: ActivationRanges = new Map();
  const widen = (i: number, data: ArrayLike<number>) => {
    const r = ranges.get(i) ?? { min: Infinity, max: -Infinity };
    for (let k = 0; k < data.length; k++) {
      const v = data[k];
      if (v < r.min) r.min = v;
      if (v > r.max) r.max = v;
    }
    ranges.set(i, r);
  };
  const session = await openLiteRtSession(writeTflite(probe));
  try {
    const byName = new Map(probed.map((i) => [model.tensors[i].name, i]));
    let batches = 0;
    for (const batch of calibrationBatches(input, calibration)) {
      widen(inputIndex, batch);
      const out = await session.run({ [model.tensors[inputIndex].name]: { data: batch, dims: input.shape } });
      for (const [name, v] of Object.entries(out)) {
        const idx = byName.get(name);
        if (idx !== undefined) widen(idx, v.data);
      }
      batches++;
    }
    if (batches === 0) throw new EdgepackError('TFLITE_CALIBRATION_EMPTY', 'no calibration samples fit the model batch size');
  } finally {
    session.close();
  }
  return ranges;
};
