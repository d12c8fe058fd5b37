import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { examineModel } from '../../build/model-intake.js';
import type { DatasetKind, DatasetRecord, ModelRecord } from '../../records.js';
import { parseNpy } from '../../optimizer/npy.js';
import { newId } from '../../ids.js';
import { requireAdmin, type AppDeps } from '../app.js';
import { HttpError } from '../errors.js';

const UploadQuery = Type.Object({
  name: Type.String({ pattern: '^[A-Za-z0-9._-]{1,128}$' }),
  version: Type.String({ pattern: '^[A-Za-z0-9._+-]{1,64}$' }),
});
const IdParams = Type.Object({ id: Type.String() });
const DatasetQuery = Type.Object({ kind: Type.Union([Type.Literal('calibration'), Type.Literal('evaluation'), Type.Literal('labels')]) });

export function datasetView(d: DatasetRecord) {
  return { id: d.id, modelId: d.modelId, kind: d.kind, sha256: d.sha256, sizeBytes: d.sizeBytes, dtype: d.dtype, shape: d.shape, samples: d.shape[0] ?? 0, createdAt: d.createdAt };
}

/**
 * Pure: whether an uploaded array fits the model. Inputs must be float32 [N, ...] matching the
 * first input's static dims; labels an integer vector. The error names both shapes.
 */
export function checkDatasetForModel(kind: DatasetKind, arr: { dtype: string; shape: number[] }, model: ModelRecord): string | null {
  if (kind === 'labels') {
    if (!['int64', 'int32', 'int16', 'int8', 'uint8', 'uint16', 'uint32', 'uint64'].includes(arr.dtype)) return `labels must be integers, got ${arr.dtype}`;
    return arr.shape.length === 1 ? null : `labels must be a vector [N], got [${arr.shape.join(',')}]`;
  }
  const input = model.inputs[0];
  if (!input) return 'model has no inputs';
  const want = `model input '${input.name}' ${input.type}[${input.shape.join(',')}]`;
  const got = `${arr.dtype}[${arr.shape.join(',')}]`;
  if (arr.dtype !== 'float32') return `dataset is ${got}, but ${want} takes float32`;
  if (arr.shape.length !== input.shape.length) return `dataset is ${got}: rank ${arr.shape.length}, ${want} has rank ${input.shape.length}`;
  if ((arr.shape[0] ?? 0) < 1) return `dataset is ${got}: no samples`;
  for (let i = 1; i < input.shape.length; i++) {
    const d = input.shape[i];
    if (typeof d === 'number' && d !== arr.shape[i]) return `dataset is ${got}, ${want}: dim ${i} is ${arr.shape[i]}, the model needs ${d}`;
  }
  return null;
}

export function modelView(m: ModelRecord) {
  return { id: m.id, name: m.name, version: m.version, sha256: m.sha256, sizeBytes: m.sizeBytes, format: m.format, opset: m.opset, inputs: m.inputs, outputs: m.outputs, createdAt: m.createdAt, ...m.details };
}

export function registerModelRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { store, blobs, now } = deps;

  app.post<{ Querystring: Static<typeof UploadQuery> }>('/v1/models', { schema: { querystring: UploadQuery } }, async (req, reply) => {
    requireAdmin(req);
    if (req.headers['content-type'] !== 'application/octet-stream') {
      throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'upload the model file (.onnx or .tflite) as the raw body with Content-Type: application/octet-stream');
    }
    const { name, version } = req.query;
    if (store.findModel(name, version)) throw new HttpError(409, 'MODEL_EXISTS', `model ${name}@${version} already exists`);
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > deps.config.maxModelBytes) throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `model is ${declared} bytes, over the ${deps.config.maxModelBytes}-byte limit`);

    const put = await blobs.putStream(req.body as Readable, deps.config.maxModelBytes);
    try {
      if (put.sizeBytes === 0) throw new HttpError(400, 'MODEL_INVALID', 'the upload is empty');
      const facts = await examineModel(new Uint8Array(await readFile(put.tempPath)));
      await blobs.commit(put.tempPath, put.sha256);
      const model: ModelRecord = {
        id: newId('mdl'), name, version, sha256: put.sha256, sizeBytes: put.sizeBytes, format: facts.format, opset: facts.opset,
        inputs: facts.inputs, outputs: facts.outputs, details: facts.details, createdAt: now().toISOString(),
      };
      store.insertModel(model);
      return reply.status(201).send({ model: modelView(model) });
    } finally {
      await blobs.discard(put.tempPath);
    }
  });

  app.get('/v1/models', async (req) => {
    requireAdmin(req);
    return { models: store.listModels().map(modelView) };
  });

  app.get<{ Params: Static<typeof IdParams> }>('/v1/models/:id', { schema: { params: IdParams } }, async (req) => {
    requireAdmin(req);
    const m = store.getModel(req.params.id);
    if (!m) throw new HttpError(404, 'MODEL_NOT_FOUND', `model ${req.params.id} not found`);
    return { model: modelView(m) };
  });
}

export function registerDatasetRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { store, blobs, now } = deps;

  // Calibration and evaluation data travel with the model, as .npy: float32 [N, ...] inputs, or integer [N] labels.
  app.post<{ Params: Static<typeof IdParams>; Querystring: Static<typeof DatasetQuery> }>('/v1/models/:id/datasets', { schema: { params: IdParams, querystring: DatasetQuery } }, async (req, reply) => {
    requireAdmin(req);
    const model = store.getModel(req.params.id);
    if (!model) throw new HttpError(404, 'MODEL_NOT_FOUND', `model ${req.params.id} not found`);
    if (req.headers['content-type'] !== 'application/octet-stream') {
      throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'upload the .npy file as the raw body with Content-Type: application/octet-stream');
    }
    const put = await blobs.putStream(req.body as Readable, deps.config.maxModelBytes);
    try {
      let arr;
      try {
        arr = parseNpy(new Uint8Array(await readFile(put.tempPath)), req.query.kind);
      } catch (err) {
        throw new HttpError(400, 'DATASET_INVALID', `not a NumPy .npy array: ${(err as Error).message}`);
      }
      const problem = checkDatasetForModel(req.query.kind, arr, model);
      if (problem) throw new HttpError(400, 'DATASET_MISMATCH', problem);
      await blobs.commit(put.tempPath, put.sha256);
      const d: DatasetRecord = { id: newId('dts'), modelId: model.id, kind: req.query.kind, sha256: put.sha256, sizeBytes: put.sizeBytes, dtype: arr.dtype, shape: arr.shape, createdAt: now().toISOString() };
      store.insertDataset(d);
      return reply.status(201).send({ dataset: datasetView(d) });
    } finally {
      await blobs.discard(put.tempPath);
    }
  });

  app.get<{ Params: Static<typeof IdParams> }>('/v1/models/:id/datasets', { schema: { params: IdParams } }, async (req) => {
    requireAdmin(req);
    if (!store.getModel(req.params.id)) throw new HttpError(404, 'MODEL_NOT_FOUND', `model ${req.params.id} not found`);
    return { datasets: store.listDatasets(req.params.id).map(datasetView) };
  });
}
