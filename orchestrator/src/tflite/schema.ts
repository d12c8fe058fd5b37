// Enum values and union tags from TFLite's schema.fbs (tensorflow/compiler/mlir/lite/schema).
// Only what edgepack writes or reports is listed; the numbers are the wire contract and must
// never be renumbered.

export const TensorType = {
  FLOAT32: 0,
  FLOAT16: 1,
  INT32: 2,
  UINT8: 3,
  INT64: 4,
  STRING: 5,
  BOOL: 6,
  INT16: 7,
  COMPLEX64: 8,
  INT8: 9,
  FLOAT64: 10,
} as const;
export type TensorType = (typeof TensorType)[keyof typeof TensorType];

export const TENSOR_TYPE_NAMES: Record<number, string> = {
  0: 'float32', 1: 'float16', 2: 'int32', 3: 'uint8', 4: 'int64', 5: 'string', 6: 'bool',
  7: 'int16', 8: 'complex64', 9: 'int8', 10: 'float64', 11: 'complex128', 12: 'uint64',
  13: 'resource', 14: 'variant', 15: 'uint32', 16: 'uint16', 17: 'int4', 18: 'bfloat16',
};

/** Bytes per element for the tensor types we write constants for. */
export const TENSOR_TYPE_BYTES: Record<number, number> = { 0: 4, 1: 2, 2: 4, 3: 1, 4: 8, 6: 1, 7: 2, 9: 1, 10: 8 };

export const BuiltinOperator = {
  ADD: 0,
  AVERAGE_POOL_2D: 1,
  CONCATENATION: 2,
  CONV_2D: 3,
  DEPTHWISE_CONV_2D: 4,
  DEQUANTIZE: 6,
  FULLY_CONNECTED: 9,
  LOGISTIC: 14,
  MAX_POOL_2D: 17,
  MUL: 18,
  RELU: 19,
  RELU6: 21,
  RESHAPE: 22,
  SOFTMAX: 25,
  TANH: 28,
  PAD: 34,
  PADV2: 60,
  TRANSPOSE: 39,
  MEAN: 40,
  SUB: 41,
  DIV: 42,
  SQUEEZE: 43,
  MAXIMUM: 55,
  MINIMUM: 57,
  LEAKY_RELU: 98,
  QUANTIZE: 114,
  HARD_SWISH: 117,
  BATCH_MATMUL: 126,
} as const;
export type BuiltinOperator = (typeof BuiltinOperator)[keyof typeof BuiltinOperator];

/** Codes below this fit the legacy int8 `deprecated_builtin_code` field. */
export const PLACEHOLDER_FOR_GREATER_OP_CODES = 127;

const OPERATOR_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(BuiltinOperator).map(([name, code]) => [code, name]),
);

export function builtinOperatorName(code: number): string {
  return OPERATOR_NAMES[code] ?? `BUILTIN_${code}`;
}

/** Tags of the `BuiltinOptions` union (0 = NONE). */
export const BuiltinOptionsType = {
  NONE: 0,
  Conv2DOptions: 1,
  DepthwiseConv2DOptions: 2,
  Pool2DOptions: 5,
  FullyConnectedOptions: 8,
  SoftmaxOptions: 9,
  ConcatenationOptions: 10,
  AddOptions: 11,
  ReshapeOptions: 17,
  MulOptions: 21,
  PadOptions: 22,
  TransposeOptions: 26,
  ReducerOptions: 27,
  SubOptions: 28,
  DivOptions: 29,
  SqueezeOptions: 30,
  DequantizeOptions: 38,
  MaximumMinimumOptions: 39,
  PadV2Options: 43,
  LeakyReluOptions: 75,
  QuantizeOptions: 89,
  HardSwishOptions: 91,
} as const;

export const Padding = { SAME: 0, VALID: 1 } as const;
export type Padding = (typeof Padding)[keyof typeof Padding];

export const Activation = { NONE: 0, RELU: 1, RELU_N1_TO_1: 2, RELU6: 3, TANH: 4 } as const;
export type Activation = (typeof Activation)[keyof typeof Activation];

/** Schema version written in Model.version. */
export const TFLITE_SCHEMA_VERSION = 3;
export const TFLITE_FILE_IDENTIFIER = 'TFL3';
