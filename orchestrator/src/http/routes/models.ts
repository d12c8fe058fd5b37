import { readFile } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { examineOnnxModel } from '../../build/model-intake.js';
import type { ModelRecord } from '../../db/store.js';
import { newId } from '../../ids.js';
import { requireAdmin, type AppDeps } from '../app.js';
import { HttpError } from '../errors.js';

const UploadQuery = Type.Object({
  name: Type.String({ pattern: '^[A-Za-z0-9._-]{1,128}$' }),
  version: Type.String({ pattern: '^[A-Za-z0-9._+-]{1,64}$' }),
});
const IdParams = Type.Object({ id: Type.String() });

export function modelView(m: ModelRecord) {
  return { id: m.id, name: m.name, version: m.version, sha256: m.sha256, sizeBytes: m.sizeBytes, format: m.format, opset: m.opset, inputs: m.inputs, outputs: m.outputs, createdAt: m.createdAt, ...m.details };
}

export function registerModelRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { store, blobs, now } = deps;

  app.post<{ Querystring: Static<typeof UploadQuery> }>('/v1/models', { schema: { querystring: UploadQuery } }, async (req, reply) => {
    requireAdmin(req);
    if (req.headers['content-type'] !== 'application/octet-stream') {
      throw new HttpError(415, 'UNSUPPORTED_MEDIA_TYPE', 'upload the model file as the raw body with Content-Type: application/octet-stream');
    }
    const { name, version } = req.query;
    if (store.findModel(name, version)) throw new HttpError(409, 'MODEL_EXISTS', `model ${name}@${version} already exists`);
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (declared > deps.config.maxModelBytes) throw new HttpError(413, 'PAYLOAD_TOO_LARGE', `model is ${declared} bytes, over the ${deps.config.maxModelBytes}-byte limit`);

    const put = await blobs.putStream(req.body as Readable, deps.config.maxModelBytes);
    try {
      if (put.sizeBytes === 0) throw new HttpError(400, 'MODEL_INVALID', 'the upload is empty');
      const facts = await examineOnnxModel(new Uint8Array(await readFile(put.tempPath)));
      await blobs.commit(put.tempPath, put.sha256);
      const model: ModelRecord = {
        id: newId('mdl'), name, version, sha256: put.sha256, sizeBytes: put.sizeBytes, format: facts.format, opset: facts.opset,
        inputs: facts.inputs, outputs: facts.outputs, details: { irVersion: facts.irVersion, producer: facts.producer }, createdAt: now().toISOString(),
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
