import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError, PrecisionSchema, errorCode, type Precision } from '@edgepack/protocol';
import { examineModel } from '../../build/model-intake.js';
import type { ModelRecord } from '../../records.js';
import { newId } from '../../ids.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { IdParams, Next, Nullable, PageQuery, StrictObject, StringEnum, Timestamp, TensorSpecView, encodeCursor, pageRequest, tensorSpecView } from '../schemas.js';

/** What model intake learned beyond inputs and outputs; which fields are set depends on the format. */
const ModelDetailsView = Type.Object({
  irVersion: Type.Optional(Type.Integer({ description: 'ONNX: IR version' })),
  producer: Type.Optional(Type.String({ description: 'ONNX: producer name and version' })),
  schemaVersion: Type.Optional(Type.Integer({ description: 'TFLite: schema version' })),
  operators: Type.Optional(Type.Record(Type.String(), Type.Integer({ minimum: 0 }), { description: 'TFLite: how many times each builtin operator occurs, by operator name' })),
  precision: Type.Optional(PrecisionSchema),
}, { title: 'ModelDetails' });

export const ModelView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  version: Type.String(),
  sha256: Type.String(),
  sizeBytes: Type.Integer(),
  format: StringEnum(['onnx', 'tflite']),
  opset: Nullable(Type.Integer()),
  inputs: Type.Array(TensorSpecView),
  outputs: Type.Array(TensorSpecView),
  details: ModelDetailsView,
  createdAt: Timestamp,
}, { title: 'Model' });
export type ModelView = Static<typeof ModelView>;

const PRECISIONS: readonly string[] = PrecisionSchema.anyOf.map((s) => s.const);

/** Picks the known figures out of the stored details; anything else stored there stays inside. */
function modelDetailsView(d: Record<string, unknown>): ModelView['details'] {
  const out: ModelView['details'] = {};
  if (Number.isInteger(d.irVersion)) out.irVersion = d.irVersion as number;
  if (typeof d.producer === 'string') out.producer = d.producer;
  if (Number.isInteger(d.schemaVersion)) out.schemaVersion = d.schemaVersion as number;
  if (typeof d.operators === 'object' && d.operators !== null) {
    out.operators = Object.fromEntries(Object.entries(d.operators).filter((e): e is [string, number] => Number.isInteger(e[1])));
  }
  if (typeof d.precision === 'string' && PRECISIONS.includes(d.precision)) out.precision = d.precision as Precision;
  return out;
}

export function modelView(m: ModelRecord): ModelView {
  return {
    id: m.id, name: m.name, version: m.version, sha256: m.sha256, sizeBytes: m.sizeBytes, format: m.format, opset: m.opset,
    inputs: m.inputs.map(tensorSpecView), outputs: m.outputs.map(tensorSpecView), details: modelDetailsView(m.details), createdAt: m.createdAt,
  };
}

const ModelResponse = Type.Object({ model: ModelView }, { title: 'ModelResponse' });
const ModelList = Type.Object({ models: Type.Array(ModelView), next: Next }, { title: 'ModelList' });

const UploadQuery = StrictObject({
  name: Type.String({ pattern: '^[A-Za-z0-9._-]{1,128}$' }),
  version: Type.String({ pattern: '^[A-Za-z0-9._+-]{1,64}$' }),
});
const ListQuery = StrictObject({ ...PageQuery, name: Type.Optional(Type.String({ maxLength: 128 })) });

export const modelRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { store, blobs, now } = deps;

  app.post('/models', {
    config: { access: Access.operate, errors: ['MODEL_EXISTS', 'MODEL_INVALID', 'MODEL_UNSUPPORTED'] },
    schema: {
      summary: 'Upload a model (.onnx or .tflite) as the raw body, streamed to the blob store under a size limit',
      tags: ['models'], consumes: ['application/octet-stream'], querystring: UploadQuery, response: { 201: ModelResponse },
    },
  }, async (req, reply) => {
    if (req.headers['content-type'] !== 'application/octet-stream') {
      throw new EdgepackError('UNSUPPORTED_MEDIA_TYPE', 'upload the model file (.onnx or .tflite) as the raw body with Content-Type: application/octet-stream');
    }
    const { name, version } = req.query;
    if (store.findModel(name, version)) throw new EdgepackError('MODEL_EXISTS', `model ${name}@${version} already exists`);
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > deps.config.maxModelBytes) throw new EdgepackError('PAYLOAD_TOO_LARGE', `model is ${declared} bytes, over the ${deps.config.maxModelBytes}-byte limit`);

    const put = await blobs.putStream(req.body as Readable, deps.config.maxModelBytes);
    try {
      if (put.sizeBytes === 0) throw new EdgepackError('MODEL_INVALID', 'the upload is empty');
      const facts = await examineModel(new Uint8Array(await readFile(put.tempPath)));
      await blobs.commit(put.tempPath, put.sha256);
      const model: ModelRecord = {
        id: newId('mdl'), name, version, sha256: put.sha256, sizeBytes: put.sizeBytes, format: facts.format, opset: facts.opset,
        inputs: facts.inputs, outputs: facts.outputs, details: facts.details, createdAt: now().toISOString(),
      };
      try {
        store.insertModel(model);
      } catch (err) {
        // Two uploads of one name and version raced past the check above; the UNIQUE index decided.
        if (errorCode(err) === 'SQLITE_CONSTRAINT_UNIQUE') throw new EdgepackError('MODEL_EXISTS', `model ${name}@${version} already exists`);
        throw err;
      }
      return reply.status(201).send({ model: modelView(model) });
    } finally {
      await blobs.discard(put.tempPath);
    }
  });

  app.get('/models', {
    config: { access: Access.read, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'List models, oldest first', tags: ['models'], querystring: ListQuery, response: { 200: ModelList } },
  }, async (req) => {
    const page = store.pageModels(req.query.name ? { name: req.query.name } : {}, pageRequest(req.query));
    return { models: page.items.map(modelView), next: encodeCursor(page.next) };
  });

  app.get('/models/:id', {
    config: { access: Access.read, errors: ['MODEL_NOT_FOUND'] },
    schema: { summary: 'One model', tags: ['models'], params: IdParams, response: { 200: ModelResponse } },
  }, async (req) => {
    const m = store.getModel(req.params.id);
    if (!m) throw new EdgepackError('MODEL_NOT_FOUND', `model ${req.params.id} not found`);
    return { model: modelView(m) };
  });
};
