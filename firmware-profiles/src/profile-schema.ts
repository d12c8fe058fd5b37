import { Type, type Static } from '@sinclair/typebox';

/** CPU architecture names as profiles and device facts use them (Node's `x64` is reported as `x86_64`). */
export const ArchSchema = Type.Union([Type.Literal('x86_64'), Type.Literal('arm64'), Type.Literal('armv7'), Type.Literal('xtensa'), Type.Literal('riscv32')]);

export const ProfileSchema = Type.Object({
  id: Type.String({ pattern: '^[a-z0-9][a-z0-9-]{0,63}$' }),
  displayName: Type.String({ minLength: 1 }),
  description: Type.Optional(Type.String()),
  arch: ArchSchema,
  runtime: Type.Object({
    name: Type.Union([Type.Literal('onnxruntime'), Type.Literal('tflite'), Type.Literal('tflite-micro')]),
    /** Execution providers or delegates in order of preference; the agent falls back to the last. */
    executionProviders: Type.Array(Type.String(), { minItems: 1 }),
  }),
  formats: Type.Array(Type.Union([Type.Literal('onnx'), Type.Literal('tflite')]), { minItems: 1 }),
  /** Precisions in order of preference; a build tries them in this order. */
  precisions: Type.Array(Type.Union([
    Type.Literal('fp32'), Type.Literal('fp16'), Type.Literal('int8-dynamic'), Type.Literal('int8-static'), Type.Literal('int8'),
  ]), { minItems: 1 }),
  budgets: Type.Object({
    maxModelBytes: Type.Integer({ minimum: 1 }),
    maxRamBytes: Type.Integer({ minimum: 1 }),
    /** p95 latency the acceptance benchmark on the device must meet, in ms. */
    p95LatencyMs: Type.Number({ exclusiveMinimum: 0 }),
    /** Largest top-1 accuracy drop (points) a quantized variant may cost against fp32. */
    maxAccuracyDropPoints: Type.Optional(Type.Number({ minimum: 0 })),
  }),
  /** Facts used to match an enrolling device to this profile; every stated fact must hold. */
  match: Type.Object({
    arch: Type.Array(ArchSchema, { minItems: 1 }),
    cpuFlags: Type.Optional(Type.Array(Type.String())),
    /** Case-insensitive regular expression over the CPU model string. */
    cpuModelPattern: Type.Optional(Type.String()),
    minRamBytes: Type.Optional(Type.Integer({ minimum: 0 })),
    maxRamBytes: Type.Optional(Type.Integer({ minimum: 0 })),
    accelerators: Type.Optional(Type.Array(Type.String())),
  }),
  benchmark: Type.Optional(Type.Object({
    warmupRuns: Type.Integer({ minimum: 0 }),
    runs: Type.Integer({ minimum: 1 }),
  })),
});
export type Profile = Static<typeof ProfileSchema>;
