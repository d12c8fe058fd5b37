import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError } from '@edgepack/protocol';
import type { DatasetKind, DatasetRecord, ModelRecord } from '../../records.js';
import { parseNpy } from '../../optimizer/npy.js';
import { newId } from '../../ids.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { IdParams, Next, PageQuery, StrictObject, StringEnum, Timestamp, encodeCursor, pageRequest } from '../schemas.js';

const DATASET_KINDS = ['calibration', 'evaluation', 'labels'] as const;

export const DatasetView = Type.Object({
  id: Type.String(),
  modelId: Type.String(),
  kind: StringEnum(DATASET_KINDS),
  sha256: Type.String(),
  sizeBytes: Type.Integer(),
  dtype: Type.String(),
  shape: Type.Array(Type.Integer()),
  samples: Type.Integer({ description: 'the first dimension of the shape' }),
  createdAt: Timestamp,
}, { title: 'Dataset' });
export type DatasetView = Static<typeof DatasetView>;

export function datasetView(d: DatasetRecord): DatasetView {
  return { id: d.id, modelId: d.modelId, kind: d.kind, sha256: d.sha256, sizeBytes: d.sizeBytes, dtype: d.dtype, shape: [...d.shape], samples: d.shape[0] ?? 0, createdAt: d.createdAt };
}

const DatasetResponse = Type.Object({ dataset: DatasetView }, { title: 'DatasetResponse' });
const DatasetList = Type.Object({ datasets: Type.Array(DatasetView), next: Next }, { title: 'DatasetList' });
const UploadQuery = StrictObject({ kind: StringEnum(DATASET_KINDS) });
const ListQuery = StrictObject({ ...PageQuery, kind: Type.Optional(StringEnum(DATASET_KINDS)) });

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

export const datasetRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { store, blobs, now } = deps;

  const getModel = (id: string) => {
    const model = store.getModel(id);
    if (!model) throw new EdgepackError('MODEL_NOT_FOUND', `model ${id} not found`);
    return model;
  };

  // Calibration and evaluation data travel with the model, as .npy: float32 [N, ...] inputs, or integer [N] labels.
  app.post('/models/:id/datasets', {
    config: { access: Access.operate, errors: ['MODEL_NOT_FOUND', 'DATASET_INVALID', 'DATASET_MISMATCH'] },
    schema: {
      summary: 'Upload a .npy dataset for a model: calibration or evaluation inputs, or labels',
      tags: ['models'], consumes: ['application/octet-stream'], params: IdParams, querystring: UploadQuery, response: { 201: DatasetResponse },
    },
  }, async (req, reply) => {
    const model = getModel(req.params.id);
    if (req.headers['content-type'] !== 'application/octet-stream') {
      throw new EdgepackError('UNSUPPORTED_MEDIA_TYPE', 'upload the .npy file as the raw body with Content-Type: application/octet-stream');
    }
    const put = await blobs.putStream(req.body as Readable, deps.config.maxModelBytes);
    try {
      let arr;
      try {
        arr = parseNpy(new Uint8Array(await readFile(put.tempPath)), req.query.kind);
      } catch (err) {
        throw new EdgepackError('DATASET_INVALID', `not a NumPy .npy array: ${(err as Error).message}`);
      }
      const problem = checkDatasetForModel(req.query.kind, arr, model);
      if (problem) throw new EdgepackError('DATASET_MISMATCH', problem);
      await blobs.commit(put.tempPath, put.sha256);
      const d: DatasetRecord = { id: newId('dts'), modelId: model.id, kind: req.query.kind, sha256: put.sha256, sizeBytes: put.sizeBytes, dtype: arr.dtype, shape: arr.shape, createdAt: now().toISOString() };
      store.insertDataset(d);
      return reply.status(201).send({ dataset: datasetView(d) });
    } finally {
      await blobs.discard(put.tempPath);
    }
  });

  app.get('/models/:id/datasets', {
    config: { access: Access.read, errors: ['MODEL_NOT_FOUND', 'CURSOR_INVALID'] },
    schema: { summary: 'List a model\'s datasets, oldest first', tags: ['models'], params: IdParams, querystring: ListQuery, response: { 200: DatasetList } },
  }, async (req) => {
    const model = getModel(req.params.id);
    const page = store.pageDatasets(model.id, req.query.kind ? { kind: req.query.kind } : {}, pageRequest(req.query));
    return { datasets: page.items.map(datasetView), next: encodeCursor(page.next) };
  });
};
