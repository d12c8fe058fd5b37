// One class per failure so callers branch on `.code` (stable) rather than on message text.

export type OnnxErrorCode =
  | 'MODEL_NOT_ONNX'
  | 'MODEL_TRUNCATED'
  | 'MODEL_TOO_LARGE'
  | 'MODEL_INVALID'
  | 'MODEL_EXTERNAL_DATA'
  | 'TENSOR_DATA_INVALID';

export abstract class OnnxError extends Error {
  abstract readonly code: OnnxErrorCode;
}

export class ModelNotOnnxError extends OnnxError {
  readonly code = 'MODEL_NOT_ONNX' as const;
  override readonly name = 'ModelNotOnnxError';
}

export class ModelTruncatedError extends OnnxError {
  readonly code = 'MODEL_TRUNCATED' as const;
  override readonly name = 'ModelTruncatedError';
}

export class ModelTooLargeError extends OnnxError {
  readonly code = 'MODEL_TOO_LARGE' as const;
  override readonly name = 'ModelTooLargeError';
  constructor(readonly sizeBytes: number, readonly limitBytes: number) {
    super(`model is ${sizeBytes} bytes, over the limit of ${limitBytes} bytes`);
  }
}

/** Structurally a protobuf, but missing or carrying out-of-range ONNX essentials. */
export class ModelInvalidError extends OnnxError {
  readonly code = 'MODEL_INVALID' as const;
  override readonly name = 'ModelInvalidError';
}

export class ModelExternalDataError extends OnnxError {
  readonly code = 'MODEL_EXTERNAL_DATA' as const;
  override readonly name = 'ModelExternalDataError';
  constructor(readonly tensorName: string, message: string) {
    super(message);
  }
}

export class TensorDataError extends OnnxError {
  readonly code = 'TENSOR_DATA_INVALID' as const;
  override readonly name = 'TensorDataError';
  constructor(readonly tensorName: string, message: string) {
    super(message);
  }
}
