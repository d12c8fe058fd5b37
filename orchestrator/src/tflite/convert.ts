// ONNX → TFLite conversion: lower to a float graph, then optionally quantize (int8 weights with
// float activations, or full-integer int8 calibrated on sample inputs), then serialise.
// Pure apart from running LiteRT for calibration; callers do the file IO.
import { EdgepackError } from '@edgepack/protocol/errors.js';
import { decodeModel, type ModelProto } from '../onnx/onnx-model.js';
import { lowerOnnxToTflite, type LoweredIo } from './lower-onnx.js';
import { quantizeDynamicRange, quantizeFullInteger } from './quantize.js';
import type { ActivationRangeEstimator, CalibrationSet } from './calibration.js';
import { onnxRangeEstimator } from './onnx-calibration.js';
import type { CalibrationMethod } from '../optimizer/calibrate.js';
import { writeTflite } from './writer.js';
import { builtinOperatorName } from './schema.js';

export type TflitePrecision = 'fp32' | 'int8-dynamic' | 'int8';
export const TFLITE_PRECISIONS: readonly TflitePrecision[] = ['fp32', 'int8-dynamic', 'int8'];

export interface ConvertOptions {
  precision?: TflitePrecision;
  /** Keep NCHW inputs/outputs (transposes at the boundary). Default: NHWC IO. */
  keepNchwIo?: boolean;
  /** Batch size fixed into the model. Default 1. */
  batch?: number;
  /** Sample inputs in the ONNX (NCHW) layout; required for precision 'int8'. */
  calibration?: CalibrationSet;
  /** Calibration method of the shared calibrator (default minmax). */
  method?: CalibrationMethod;
  /** Replaces the shared ONNX calibrator (e.g. with minMaxRanges, which measures through LiteRT). */
  rangeEstimator?: ActivationRangeEstimator;
  /** Full-integer only: int8 model IO instead of float IO with QUANTIZE/DEQUANTIZE. */
  int8Io?: boolean;
}

export interface ConversionResult {
  tflite: Uint8Array;
  precision: TflitePrecision;
  /** Layout the model's 4-D inputs take, for the manifest. */
  inputLayout: 'NHWC' | 'NCHW' | 'none';
  inputs: LoweredIo[];
  outputs: LoweredIo[];
  operators: Record<string, number>;
}

export async function convertOnnxToTflite(onnx: Uint8Array | ModelProto, options: ConvertOptions = {}): Promise<ConversionResult> {
  const precision = options.precision ?? 'fp32';
  if (!TFLITE_PRECISIONS.includes(precision)) {
    throw new EdgepackError('TFLITE_BAD_PRECISION', `unknown precision '${precision}'; expected one of ${TFLITE_PRECISIONS.join(', ')}`);
  }
  if (precision === 'int8' && !options.calibration) {
    throw new EdgepackError('TFLITE_CALIBRATION_REQUIRED', 'full-integer int8 conversion needs calibration samples');
  }
  const model = onnx instanceof Uint8Array ? decodeModel(onnx) : onnx;
  const lowered = lowerOnnxToTflite(model, { batch: options.batch ?? 1, keepNchwIo: options.keepNchwIo ?? false });
  let tflModel = lowered.graph.toModel(`edgepack onnx->tflite ${precision}`);
  if (precision === 'int8-dynamic') tflModel = quantizeDynamicRange(tflModel);
  if (precision === 'int8') {
    // Same calibrator as ONNX static quantization, so both paths see the same ranges.
    const estimate = options.rangeEstimator ?? onnxRangeEstimator(model, options.method ? { method: options.method } : {});
    const ranges = await estimate(tflModel, lowered.inputs, options.calibration!);
    tflModel = quantizeFullInteger(tflModel, ranges, { int8Io: options.int8Io ?? false });
  }
  const operators: Record<string, number> = {};
  for (const op of tflModel.operators) {
    const name = builtinOperatorName(op.opcode);
    operators[name] = (operators[name] ?? 0) + 1;
  }
  const firstLayout = lowered.inputs.find((i) => i.layout !== 'none')?.layout ?? 'none';
  return { tflite: writeTflite(tflModel), precision, inputLayout: firstLayout, inputs: lowered.inputs, outputs: lowered.outputs, operators };
}
