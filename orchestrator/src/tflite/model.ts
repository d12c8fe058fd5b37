// In-memory description of a single-subgraph TFLite model: what the converter produces and the
// writer serialises. Plain data, so graph passes can be tested without flatbuffers.
import type { Activation, BuiltinOperator, Padding, TensorType } from './schema.js';

export interface TfliteQuantization {
  scale: number[];
  zeroPoint: number[];
  /** Axis the per-channel scales run along; 0 for per-tensor. */
  quantizedDimension?: number;
  min?: number[];
  max?: number[];
}

export interface TfliteTensor {
  name: string;
  type: TensorType;
  shape: number[];
  /** Shape with -1 for dynamic dims (e.g. batch); omitted when fully static. */
  shapeSignature?: number[];
  /** Little-endian constant contents; absent for activations. */
  data?: Uint8Array;
  quantization?: TfliteQuantization;
}

export type TfliteOptions =
  | { type: 'Conv2DOptions'; padding: Padding; strideW: number; strideH: number; activation: Activation; dilationW?: number; dilationH?: number }
  | { type: 'DepthwiseConv2DOptions'; padding: Padding; strideW: number; strideH: number; depthMultiplier: number; activation: Activation; dilationW?: number; dilationH?: number }
  | { type: 'Pool2DOptions'; padding: Padding; strideW: number; strideH: number; filterW: number; filterH: number; activation: Activation }
  | { type: 'FullyConnectedOptions'; activation: Activation; keepNumDims?: boolean; asymmetricQuantizeInputs?: boolean }
  | { type: 'SoftmaxOptions'; beta: number }
  | { type: 'ConcatenationOptions'; axis: number; activation: Activation }
  | { type: 'AddOptions' | 'SubOptions' | 'MulOptions' | 'DivOptions'; activation: Activation }
  | { type: 'ReshapeOptions'; newShape: number[] }
  | { type: 'ReducerOptions'; keepDims: boolean }
  | { type: 'SqueezeOptions'; squeezeDims: number[] }
  | { type: 'LeakyReluOptions'; alpha: number }
  | { type: 'PadOptions' | 'PadV2Options' | 'TransposeOptions' | 'DequantizeOptions' | 'QuantizeOptions' | 'HardSwishOptions' | 'MaximumMinimumOptions' };

export interface TfliteOperator {
  opcode: BuiltinOperator;
  /** Kernel version; must be one the runtime registers for this op. */
  version: number;
  /** Tensor indices; -1 marks an omitted optional input. */
  inputs: number[];
  outputs: number[];
  options?: TfliteOptions;
}

export interface TfliteModel {
  description?: string;
  tensors: TfliteTensor[];
  operators: TfliteOperator[];
  inputs: number[];
  outputs: number[];
  /** Signature key; LiteRT exposes inputs/outputs under their tensor names. Default 'serving_default'. */
  signatureKey?: string;
}
