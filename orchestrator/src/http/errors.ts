import type { FastifyInstance } from 'fastify';
import { errorCode, errorMessage } from '@edgepack/protocol';

/** HTTP status for each stable error code; anything unlisted with a code is a 400. */
const STATUS_BY_CODE: Record<string, number> = {
  UNAUTHORIZED: 401,
  FORBIDDEN: 403,
  NOT_FOUND: 404,
  DEVICE_NOT_FOUND: 404,
  MODEL_NOT_FOUND: 404,
  BUILD_NOT_FOUND: 404,
  BUNDLE_NOT_FOUND: 404,
  ROLLOUT_NOT_FOUND: 404,
  PROFILE_NOT_FOUND: 400,
  ENROLLMENT_TOKEN_INVALID: 401,
  MODEL_EXISTS: 409,
  BUILD_NOT_READY: 409,
  PAYLOAD_TOO_LARGE: 413,
  RANGE_NOT_SATISFIABLE: 416,
  UNSUPPORTED_MEDIA_TYPE: 415,
};

export class HttpError extends Error {
  constructor(readonly statusCode: number, readonly code: string, message: string) {
    super(message);
  }
}

/** Every error leaves as {"error":{"code","message"}} with a status that fits it. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, req, reply) => {
    const e = err as { validation?: unknown; statusCode?: number; code?: string };
    if (e.validation) return reply.status(400).send({ error: { code: 'VALIDATION_FAILED', message: errorMessage(err) } });
    if (err instanceof HttpError) return reply.status(err.statusCode).send({ error: { code: err.code, message: err.message } });
    const code = errorCode(err);
    if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL') {
      req.log.error({ err }, 'data disk full');
      return reply.status(507).send({ error: { code: 'STORAGE_FULL', message: 'the orchestrator has no space left in its data dir; nothing was stored' } });
    }
    if (code && code.startsWith('FST_')) {
      const status = e.statusCode ?? 400;
      return reply.status(status).send({ error: { code: code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE' ? 'UNSUPPORTED_MEDIA_TYPE' : code, message: errorMessage(err) } });
    }
    if (code) return reply.status(STATUS_BY_CODE[code] ?? 400).send({ error: { code, message: errorMessage(err) } });
    // The one log line for this failure, with the stack; the client gets the request id to quote.
    req.log.error({ err }, 'unhandled error in a request');
    return reply.status(500).send({ error: { code: 'INTERNAL_ERROR', message: `internal error; see the orchestrator log for request ${req.id}` } });
  });
  app.setNotFoundHandler((req, reply) => reply.status(404).send({ error: { code: 'NOT_FOUND', message: `no route ${req.method} ${req.url}` } }));
}
