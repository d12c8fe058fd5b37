// One entry point for every precision, for the CLI and for build selection.

import { EdgepackError } from '@edgepack/protocol';
import type { ModelProto } from '../onnx/onnx-model.js';
import { inspectDecodedModel } from '../onnx/inspect.js';
import { encodeModel } from '../onnx/onnx-model.js';
import type { CalibrationMethod } from './calibrate.js';
import { cleanupModel, type CleanupReport } from './cleanup.js';
import { DatasetError, type Dataset } from './dataset.js';
import { convertToFloat16, type Fp16Report } from './fp16.js';
import type { QType } from './quant-math.js';
import { quantizeDynamic, type NodeDecision } from './quantize-dynamic.js';
import { quantizeStatic } from './quantize-static.js';

export type Precision = 'fp32' | 'fp16' | 'int8-dynamic' | 'int8-static';
export const PRECISIONS: readonly Precision[] = ['fp32', 'fp16', 'int8-dynamic', 'int8-static'];

export interface OptimizeOptions {
  precision: Precision;
  /** Required for int8-static. */
  calibration?: Dataset;
  method?: CalibrationMethod;
  percentile?: number;
  perChannel?: boolean;
  activationType?: QType;
  reduceRange?: boolean | 'auto';
  excludeNodes?: readonly string[];
  maxCalibrationSamples?: number;
  keepIoTypes?: boolean;
  fp16BlockList?: readonly string[];
}

export interface OptimizeReport {
  precision: Precision;
  options: Record<string, unknown>;
  cleanup?: CleanupReport;
  fp16?: Fp16Report;
  calibration?: { method: string; samples: number; tensors: number; ms: number };
  quantized: NodeDecision[];
  skipped: NodeDecision[];
  removedActivations?: string[];
  sharedWeightsDequantized?: string[];
  /** Ops left as they were because no pattern of this precision covers them (op type → count). */
  notCovered?: Record<string, number>;
  timings: { totalMs: number };
}

export class OptimizeError extends EdgepackError {
  declare readonly code: 'CALIBRATION_REQUIRED' | 'UNKNOWN_PRECISION';
  constructor(code: 'CALIBRATION_REQUIRED' | 'UNKNOWN_PRECISION', message: string) {
    super(code, message);
  }
}

/** Produces the variant for `options.precision`. Pure apart from running ORT for calibration. */
export async function optimizeModel(model: ModelProto, options: OptimizeOptions): Promise<{ model: ModelProto; report: OptimizeReport }> {
  const t0 = performance.now();
  const { calibration, ...rest } = options;
  const report: OptimizeReport = {
    precision: options.precision,
    options: { ...rest, ...(calibration ? { calibration: `${calibration.source} [${calibration.shape.join(',')}]` } : {}) },
    quantized: [],
    skipped: [],
    timings: { totalMs: 0 },
  };
  let out: ModelProto;
  switch (options.precision) {
    case 'fp32': {
      const c = cleanupModel(model);
      out = c.model;
      report.cleanup = c.report;
      break;
    }
    case 'fp16': {
      const c = cleanupModel(model);
      report.cleanup = c.report;
      const r = convertToFloat16(c.model, {
        ...(options.keepIoTypes !== undefined ? { keepIoTypes: options.keepIoTypes } : {}),
        ...(options.fp16BlockList ? { blockList: options.fp16BlockList } : {}),
        ...(options.excludeNodes ? { blockNodes: options.excludeNodes } : {}),
      });
      out = r.model;
      report.fp16 = r.report;
      report.skipped = r.report.keptFp32.map((k) => ({ node: k.node, opType: k.opType, reason: k.reason }));
      break;
    }
    case 'int8-dynamic': {
      const r = quantizeDynamic(model, {
        ...(options.perChannel !== undefined ? { perChannel: options.perChannel } : {}),
        ...(typeof options.reduceRange === 'boolean' ? { reduceRange: options.reduceRange } : {}),
        ...(options.excludeNodes ? { excludeNodes: options.excludeNodes } : {}),
      });
      out = r.model;
      if (r.report.cleanup) report.cleanup = r.report.cleanup;
      report.quantized = r.report.quantized;
      report.skipped = r.report.skipped;
      report.notCovered = r.report.notCovered;
      report.sharedWeightsDequantized = r.report.sharedWeightsDequantized;
      break;
    }
    case 'int8-static': {
      if (!calibration) throw new OptimizeError('CALIBRATION_REQUIRED', 'int8-static needs calibration data (--calibration X.npy)');
      const sig = inspectDecodedModel(model, new Uint8Array(0)).inputs;
      if (sig.length !== 1) {
        throw new DatasetError('DATASET_MISMATCH', `int8-static calibration feeds one input; the model has ${sig.length} (${sig.map((s) => s.name).join(', ')})`);
      }
      const r = await quantizeStatic(model, calibration, sig[0]!, {
        ...(options.method ? { method: options.method } : {}),
        ...(options.percentile !== undefined ? { percentile: options.percentile } : {}),
        ...(options.perChannel !== undefined ? { perChannel: options.perChannel } : {}),
        ...(options.activationType ? { activationType: options.activationType } : {}),
        ...(options.reduceRange !== undefined ? { reduceRange: options.reduceRange } : {}),
        ...(options.excludeNodes ? { excludeNodes: options.excludeNodes } : {}),
        ...(options.maxCalibrationSamples !== undefined ? { maxSamples: options.maxCalibrationSamples } : {}),
      });
      out = r.model;
      report.cleanup = r.report.cleanup;
      report.calibration = r.report.calibration;
      report.quantized = r.report.quantized;
      report.skipped = r.report.skipped;
      report.removedActivations = r.report.removedActivations;
      report.notCovered = r.report.notCovered;
      report.sharedWeightsDequantized = r.report.sharedWeightsDequantized;
      break;
    }
    default:
      throw new OptimizeError('UNKNOWN_PRECISION', `unknown precision '${String(options.precision)}' (expected ${PRECISIONS.join(', ')})`);
  }
  report.timings.totalMs = Math.round(performance.now() - t0);
  return { model: out, report };
}

/** Convenience for callers holding bytes. */
export async function optimizeModelBytes(model: ModelProto, options: OptimizeOptions): Promise<{ bytes: Uint8Array; report: OptimizeReport }> {
  const r = await optimizeModel(model, options);
  return { bytes: encodeModel(r.model), report: r.report };
}
