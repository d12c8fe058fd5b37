// One class per failure so callers branch on `.code` (stable) rather than on message text. They
// extend EdgepackError, so the HTTP error handler and the CLI treat them like every other coded
// error, with the status from the error catalogue.
import { EdgepackError } from '@edgepack/protocol';

export type OnnxErrorCode =
  | 'MODEL_NOT_ONNX'
  | 'MODEL_TRUNCATED'
  | 'MODEL_TOO_LARGE'
  | 'MODEL_INVALID'
  | 'MODEL_EXTERNAL_DATA'
  | 'TENSOR_DATA_INVALID';

export abstract class OnnxError extends EdgepackError {
  declare readonly code: OnnxErrorCode;
}

export class ModelNotOnnxError extends OnnxError {
  declare readonly code: 'MODEL_NOT_ONNX';
  constructor(message: string) {
    super('MODEL_NOT_ONNX', message);
  }
}

export class ModelTruncatedError extends OnnxError {
  declare readonly code: 'MODEL_TRUNCATED';
  constructor(message: string) {
    super('MODEL_TRUNCATED', message);
  }
}

export class ModelTooLargeError extends OnnxError {
  declare readonly code: 'MODEL_TOO_LARGE';
  constructor(readonly sizeBytes: number, readonly limitBytes: number) {
    super('MODEL_TOO_LARGE', `model is ${sizeBytes} bytes, over the limit of ${limitBytes} bytes`);
  }
}

/** Structurally a protobuf, but missing or carrying out-of-range ONNX essentials. */
export class ModelInvalidError extends OnnxError {
  declare readonly code: 'MODEL_INVALID';
  constructor(message: string) {
    super('MODEL_INVALID', message);
  }
}

export class ModelExternalDataError extends OnnxError {
  declare readonly code: 'MODEL_EXTERNAL_DATA';
  constructor(readonly tensorName: string, message: string) {
    super('MODEL_EXTERNAL_DATA', message);
  }
}

export class TensorDataError extends OnnxError {
  declare readonly code: 'TENSOR_DATA_INVALID';
  constructor(readonly tensorName: string, message: string) {
    super('TENSOR_DATA_INVALID', message);
  }
}
