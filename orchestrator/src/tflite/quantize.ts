// Quantization of a float TFLite model, following the TFLite int8 quantization spec:
// activations int8 per-tensor asymmetric; conv/FC weights int8 symmetric per-channel (axis 0,
// axis 3 for depthwise, as the kernels require); bias int32 with scale input×weight; ops that
// only move data share one scale/zero point across inputs and output; LOGISTIC/SOFTMAX/TANH
// outputs have the fixed parameters their kernels assume.
import { EdgepackError } from '@edgepack/protocol/errors.js';
import type { TfliteModel, TfliteOperator, TfliteQuantization, TfliteTensor } from './model.js';
import { BuiltinOperator, TensorType, builtinOperatorName } from './schema.js';
import { bytesOf, floatsOf } from './graph.js';
import type { ActivationRanges, TensorRange } from './calibration.js';

const WEIGHT_OPS: ReadonlySet<number> = new Set([BuiltinOperator.CONV_2D, BuiltinOperator.DEPTHWISE_CONV_2D, BuiltinOperator.FULLY_CONNECTED]);

/** Axis of the per-channel weight scales for each weighted op. */
function weightAxis(opcode: number): number {
  return opcode === BuiltinOperator.DEPTHWISE_CONV_2D ? 3 : 0;
}

/** Symmetric per-channel int8 weights: scale_c = max|w_c| / 127, values in [-127, 127]. */
export function quantizeWeightsPerChannel(w: Float32Array, shape: number[], axis: number): { q: Int8Array; scales: number[] } {
  const channels = shape[axis];
  const inner = shape.slice(axis + 1).reduce((a, b) => a * b, 1);
  const maxAbs = new Array<number>(channels).fill(0);
  for (let i = 0; i < w.length; i++) {
    const c = Math.floor(i / inner) % channels;
    const a = Math.abs(w[i]);
    if (a > maxAbs[c]) maxAbs[c] = a;
  }
  const scales = maxAbs.map((m) => (m > 0 ? m / 127 : 1));
  const q = new Int8Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const c = Math.floor(i / inner) % channels;
    q[i] = Math.max(-127, Math.min(127, Math.round(w[i] / scales[c])));
  }
  return { q, scales };
}

function withWeights(t: TfliteTensor, opcode: number): TfliteTensor {
  const axis = weightAxis(opcode);
  const { q, scales } = quantizeWeightsPerChannel(floatsOf(t), t.shape, axis);
  return { ...t, type: TensorType.INT8, data: bytesOf(q), quantization: { scale: scales, zeroPoint: scales.map(() => 0), quantizedDimension: axis } };
}

/**
 * int8 weights, float activations: TFLite's hybrid kernels quantize activations on the fly.
 * Weights shared by several ops are quantized once.
 */
export function quantizeDynamicRange(model: TfliteModel): TfliteModel {
  const tensors = model.tensors.map((t) => ({ ...t }));
  const done = new Set<number>();
  const operators = model.operators.map((op): TfliteOperator => {
    if (!WEIGHT_OPS.has(op.opcode)) return op;
    const wi = op.inputs[1];
    const w = tensors[wi];
    if (!w.data || w.type !== TensorType.FLOAT32) return op;
    if (!done.has(wi)) {
      tensors[wi] = withWeights(w, op.opcode);
      done.add(wi);
    }
    if (op.opcode === BuiltinOperator.FULLY_CONNECTED) {
      const options = op.options?.type === 'FullyConnectedOptions' ? op.options : undefined;
      return { ...op, version: 7, options: { type: 'FullyConnectedOptions', activation: options?.activation ?? 0, keepNumDims: options?.keepNumDims ?? false, asymmetricQuantizeInputs: true } };
    }
    return { ...op, version: op.opcode === BuiltinOperator.CONV_2D ? 5 : 6 };
  });
  return { ...model, tensors, operators };
}

export interface FullIntegerOptions {
  /** int8 model IO instead of float IO wrapped in QUANTIZE/DEQUANTIZE. */
  int8Io: boolean;
}

/** Ops whose int8 kernels require identical input and output quantization. */
const SHARED_PARAMS: ReadonlySet<number> = new Set([
  BuiltinOperator.MAX_POOL_2D, BuiltinOperator.AVERAGE_POOL_2D, BuiltinOperator.RESHAPE, BuiltinOperator.TRANSPOSE,
  BuiltinOperator.PAD, BuiltinOperator.PADV2, BuiltinOperator.SQUEEZE, BuiltinOperator.CONCATENATION,
  BuiltinOperator.MAXIMUM, BuiltinOperator.MINIMUM,
]);

const FIXED_OUTPUT: Partial<Record<number, TfliteQuantization>> = {
  [BuiltinOperator.LOGISTIC]: { scale: [1 / 256], zeroPoint: [-128] },
  [BuiltinOperator.SOFTMAX]: { scale: [1 / 256], zeroPoint: [-128] },
  [BuiltinOperator.TANH]: { scale: [1 / 128], zeroPoint: [0] },
};

/** Kernel versions registered for int8 inputs. */
const INT8_VERSION: Partial<Record<number, number>> = {
  [BuiltinOperator.CONV_2D]: 3, [BuiltinOperator.DEPTHWISE_CONV_2D]: 3, [BuiltinOperator.FULLY_CONNECTED]: 4,
  [BuiltinOperator.ADD]: 2, [BuiltinOperator.SUB]: 2, [BuiltinOperator.MUL]: 2, [BuiltinOperator.AVERAGE_POOL_2D]: 2,
  [BuiltinOperator.MAX_POOL_2D]: 2, [BuiltinOperator.SOFTMAX]: 2, [BuiltinOperator.CONCATENATION]: 2,
  [BuiltinOperator.PAD]: 2, [BuiltinOperator.PADV2]: 2, [BuiltinOperator.MEAN]: 2, [BuiltinOperator.TRANSPOSE]: 2,
  [BuiltinOperator.LOGISTIC]: 2, [BuiltinOperator.TANH]: 2, [BuiltinOperator.RELU]: 2, [BuiltinOperator.RELU6]: 2,
  [BuiltinOperator.LEAKY_RELU]: 2, [BuiltinOperator.HARD_SWISH]: 1, [BuiltinOperator.MAXIMUM]: 2,
  [BuiltinOperator.MINIMUM]: 2, [BuiltinOperator.RESHAPE]: 1, [BuiltinOperator.SQUEEZE]: 1,
};

/** Asymmetric int8 parameters covering [min, max] and always 0 (so zero padding is exact). */
export function activationParams(r: TensorRange): TfliteQuantization {
  const lo = Math.min(r.min, 0);
  let hi = Math.max(r.max, 0);
  if (hi - lo < 1e-8) hi = lo + 1e-8;
  const scale = (hi - lo) / 255;
  const zp = Math.max(-128, Math.min(127, Math.round(-128 - lo / scale)));
  return { scale: [scale], zeroPoint: [zp] };
}

function quantizeAsymmetric(values: Float32Array, q: TfliteQuantization): Int8Array {
  const s = q.scale[0];
  const z = q.zeroPoint[0];
  return Int8Array.from(values, (v) => Math.max(-128, Math.min(127, Math.round(v / s) + z)));
}

function rangeOf(values: Float32Array): TensorRange {
  let min = Infinity;
  let max = -Infinity;
  for (const v of values) {
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

export function quantizeFullInteger(model: TfliteModel, ranges: ActivationRanges, options: FullIntegerOptions): TfliteModel {
  const unsupported = model.operators.filter((op) => INT8_VERSION[op.opcode] === undefined);
  if (unsupported.length) {
    const names = [...new Set(unsupported.map((op) => builtinOperatorName(op.opcode)))];
    throw new EdgepackError('TFLITE_INT8_UNSUPPORTED', `no int8 kernel for ${names.join(', ')}; convert with --precision fp32 or int8-dynamic`);
  }
  const tensors: TfliteTensor[] = model.tensors.map((t) => ({ ...t }));
  const isActivation = (i: number) => i >= 0 && !tensors[i].data && tensors[i].type === TensorType.FLOAT32;
  const isFloatConst = (i: number) => i >= 0 && !!tensors[i].data && tensors[i].type === TensorType.FLOAT32;

  // Union-find over tensors that must share quantization parameters.
  const parent = tensors.map((_, i) => i);
  const find = (i: number): number => (parent[i] === i ? i : (parent[i] = find(parent[i])));
  const union = (a: number, b: number) => {
    parent[find(a)] = find(b);
  };
  for (const op of model.operators) {
    if (!SHARED_PARAMS.has(op.opcode)) continue;
    const linked = [...op.inputs.filter((i) => isActivation(i) || (isFloatConst(i) && op.opcode !== BuiltinOperator.RESHAPE)), ...op.outputs];
    for (let k = 1; k < linked.length; k++) union(linked[0], linked[k]);
  }
  const groupParams = new Map<number, TfliteQuantization>();
  for (const op of model.operators) {
    const fixed = FIXED_OUTPUT[op.opcode];
    if (fixed) groupParams.set(find(op.outputs[0]), fixed);
  }
  const groupRange = new Map<number, TensorRange>();
  tensors.forEach((t, i) => {
    let r = ranges.get(i);
    if (!r && isFloatConst(i) && find(i) !== i) r = rangeOf(floatsOf(t));
    if (!r) return;
    const root = find(i);
    const g = groupRange.get(root) ?? { min: Infinity, max: -Infinity };
    groupRange.set(root, { min: Math.min(g.min, r.min), max: Math.max(g.max, r.max) });
  });
  const paramsOf = (i: number): TfliteQuantization => {
    const root = find(i);
    const fixed = groupParams.get(root);
    if (fixed) return fixed;
    const r = groupRange.get(root);
    if (!r) throw new EdgepackError('TFLITE_CALIBRATION_MISSING', `no calibration range for tensor '${tensors[i].name}'`);
    const p = activationParams(r);
    groupParams.set(root, p);
    return p;
  };

  // Activations.
  tensors.forEach((t, i) => {
    if (isActivation(i)) tensors[i] = { ...t, type: TensorType.INT8, quantization: paramsOf(i) };
  });

  // Constants, per consuming op.
  const operators: TfliteOperator[] = model.operators.map((op) => {
    const version = INT8_VERSION[op.opcode]!;
    if (WEIGHT_OPS.has(op.opcode)) {
      const [xi, wi, bi] = op.inputs;
      if (tensors[wi].type === TensorType.FLOAT32) tensors[wi] = withWeights(tensors[wi], op.opcode);
      const inScale = tensors[xi].quantization!.scale[0];
      const wScales = tensors[wi].quantization!.scale;
      if (bi >= 0 && tensors[bi].type === TensorType.FLOAT32) {
        const b = floatsOf(tensors[bi]);
        const scales = Array.from(b, (_, c) => inScale * wScales[wScales.length === 1 ? 0 : c]);
        const q = Int32Array.from(b, (v, c) => Math.round(v / scales[c]));
        tensors[bi] = { ...tensors[bi], type: TensorType.INT32, data: bytesOf(q), quantization: { scale: scales, zeroPoint: scales.map(() => 0), quantizedDimension: 0 } };
      }
      return { ...op, version };
    }
    for (const ci of op.inputs) {
      if (!isFloatConst(ci)) continue;
      const values = floatsOf(tensors[ci]);
      const params = find(ci) !== ci || SHARED_PARAMS.has(op.opcode) ? paramsOf(ci) : activationParams(rangeOf(values));
      tensors[ci] = { ...tensors[ci], type: TensorType.INT8, data: bytesOf(quantizeAsymmetric(values, params)), quantization: params };
    }
    return { ...op, version };
  });

  let inputs = [...model.inputs];
  let outputs = [...model.outputs];
  if (!options.int8Io) {
    // Float boundary: the float tensor keeps the public name, the int8 one gets a suffix.
    const pre: TfliteOperator[] = [];
    const post: TfliteOperator[] = [];
    inputs = inputs.map((qi) => {
      const q = tensors[qi];
      const fi = tensors.push({ name: q.name, type: TensorType.FLOAT32, shape: [...q.shape] }) - 1;
      q.name = `${q.name}/int8`;
      pre.push({ opcode: BuiltinOperator.QUANTIZE, version: 2, inputs: [fi], outputs: [qi], options: { type: 'QuantizeOptions' } });
      return fi;
    });
    outputs = outputs.map((qi) => {
      const q = tensors[qi];
      const fi = tensors.push({ name: q.name, type: TensorType.FLOAT32, shape: [...q.shape] }) - 1;
      q.name = `${q.name}/int8`;
      post.push({ opcode: BuiltinOperator.DEQUANTIZE, version: 2, inputs: [qi], outputs: [fi], options: { type: 'DequantizeOptions' } });
      return fi;
    });
    operators.unshift(...pre);
    operators.push(...post);
  }
  return { ...model, tensors, operators, inputs, outputs };
}
