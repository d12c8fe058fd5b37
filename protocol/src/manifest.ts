import { Type, type Static } from '@sinclair/typebox';
import { EncodedTensorSchema, TensorSpecSchema } from './tensors.js';

export const MANIFEST_SCHEMA_ID = 'edgepack.bundle/1';

export const ModelFormatSchema = Type.Union([Type.Literal('onnx'), Type.Literal('tflite')]);
export type ModelFormat = Static<typeof ModelFormatSchema>;

export const PrecisionSchema = Type.Union([
  Type.Literal('fp32'), Type.Literal('fp16'), Type.Literal('int8-dynamic'), Type.Literal('int8-static'), Type.Literal('int8'),
]);
export type Precision = Static<typeof PrecisionSchema>;

/** A bundle file name is a single plain path segment, so no manifest can point outside its bundle. */
export const BUNDLE_FILE_NAME = '^(?!\\.{1,2}$)[A-Za-z0-9._-]{1,128}$';

export const BundleFileSchema = Type.Object({
  path: Type.String({ pattern: BUNDLE_FILE_NAME }),
  role: Type.Union([Type.Literal('model'), Type.Literal('golden'), Type.Literal('other')]),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  length: Type.Integer({ minimum: 0 }),
});
export type BundleFile = Static<typeof BundleFileSchema>;

export const ManifestSchema = Type.Object({
  schema: Type.Literal(MANIFEST_SCHEMA_ID),
  /** Also a directory name on the device: a plain id, never a path. */
  bundleId: Type.String({ pattern: '^[A-Za-z0-9_-]{1,128}$' }),
  model: Type.Object({ name: Type.String(), version: Type.String(), sha256: Type.String() }),
  profile: Type.String({ minLength: 1 }),
  format: ModelFormatSchema,
  precision: PrecisionSchema,
  /** Tensor layout the model's image inputs take ("NCHW" for ONNX as exported, "NHWC" for most TFLite). */
  layout: Type.Optional(Type.String()),
  files: Type.Array(BundleFileSchema, { minItems: 1 }),
  io: Type.Object({ inputs: Type.Array(TensorSpecSchema), outputs: Type.Array(TensorSpecSchema) }),
  /** Golden samples live in the file named here (sha256-pinned through `files`), not inline, so a large input never bloats the manifest. */
  golden: Type.Object({ file: Type.String({ pattern: BUNDLE_FILE_NAME }), count: Type.Integer({ minimum: 0 }), maxAbsError: Type.Number({ minimum: 0 }) }),
  runtime: Type.Object({ name: Type.String(), executionProviders: Type.Array(Type.String()) }),
  /** What the on-device acceptance benchmark must show before the bundle is activated. */
  acceptance: Type.Object({
    p95LatencyMs: Type.Optional(Type.Number({ exclusiveMinimum: 0 })),
    warmupRuns: Type.Optional(Type.Integer({ minimum: 0 })),
    runs: Type.Optional(Type.Integer({ minimum: 1 })),
  }),
  createdAt: Type.String({ minLength: 1 }),
  expiresAt: Type.String({ minLength: 1 }),
  keyId: Type.String(),
});
export type Manifest = Static<typeof ManifestSchema>;

/** What travels: the manifest as data plus an ed25519 signature over its canonical JSON. */
export const SignedManifestSchema = Type.Object({
  manifest: ManifestSchema,
  signature: Type.String({ minLength: 1 }),
});
export type SignedManifest = Static<typeof SignedManifestSchema>;

export const GoldenSampleSchema = Type.Object({
  inputs: Type.Record(Type.String(), EncodedTensorSchema),
  outputs: Type.Record(Type.String(), EncodedTensorSchema),
});
export const GoldenFileSchema = Type.Object({ samples: Type.Array(GoldenSampleSchema) });
export type GoldenFile = Static<typeof GoldenFileSchema>;
