import { STATUS_CODES } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchemaValidationError, FastifyServerOptions } from 'fastify';
import { ERROR_CATALOGUE, errorCode, errorMessage, isErrorCode, type ErrorCode } from '@edgepack/protocol';
import { errorBody } from './schemas.js';

/**
 * Fastify's own request errors, in catalogue terms. An FST_ code missing here is a gap in this
 * table, so it answers 500 and is logged like any other error without a catalogue code.
 */
const FASTIFY_CODES: Readonly<Record<string, ErrorCode>> = {
  FST_ERR_VALIDATION: 'VALIDATION_FAILED',
  FST_ERR_CTP_BODY_TOO_LARGE: 'PAYLOAD_TOO_LARGE',
  FST_ERR_CTP_INVALID_MEDIA_TYPE: 'UNSUPPORTED_MEDIA_TYPE',
  FST_ERR_CTP_INVALID_CONTENT_LENGTH: 'BODY_INVALID',
  FST_ERR_CTP_EMPTY_JSON_BODY: 'BODY_INVALID',
  FST_ERR_CTP_INVALID_JSON_BODY: 'BODY_INVALID',
  FST_ERR_BAD_URL: 'REQUEST_MALFORMED',
  FST_ERR_MAX_PARAM_LENGTH: 'URL_TOO_LONG',
  FST_ERR_NOT_FOUND: 'NOT_FOUND',
};

/** Errors of the filesystem or SQLite that mean the data dir is full. */
const DISK_FULL = new Set(['ENOSPC', 'EDQUOT', 'SQLITE_FULL']);

interface Classified {
  code: ErrorCode;
  message: string;
  /** Log at error level: a fault on our side, not the client's. */
  fault: boolean;
}

/** Maps anything thrown on the way to a reply onto one catalogue code. */
export function classifyError(err: unknown, requestId: string): Classified {
  const raw = errorCode(err);
  if (typeof err === 'object' && err !== null && (err as { validation?: unknown }).validation) return { code: 'VALIDATION_FAILED', message: errorMessage(err), fault: false };
  if (raw && DISK_FULL.has(raw)) return { code: 'STORAGE_FULL', message: 'the orchestrator has no space left in its data dir; nothing was stored', fault: true };
  const code = raw?.startsWith('FST_') ? FASTIFY_CODES[raw] : raw;
  if (isErrorCode(code)) {
    // Only our own errors carry catalogue codes, so their messages are ours to show.
    return { code, message: errorMessage(err), fault: ERROR_CATALOGUE[code].status >= 500 };
  }
  // No code, or one outside the catalogue (a library's, a Node errno, a typo): a bug. Say so, log it.
  return { code: 'INTERNAL_ERROR', message: `internal error; see the orchestrator log (request ${requestId})`, fault: true };
}

function sendError(err: unknown, req: FastifyRequest, reply: FastifyReply): FastifyReply {
  const c = classifyError(err, String(req.id));
  if (c.fault) req.log.error({ err, code: errorCode(err) ?? null, answered: c.code }, c.code === 'INTERNAL_ERROR' ? 'unhandled error' : c.message);
  return reply.status(ERROR_CATALOGUE[c.code].status).send(errorBody(c.code, c.message));
}

/** Every error leaves as {"error":{"code","message"}}, with the status the catalogue gives the code. */
export function installErrorHandling(app: FastifyInstance): void {
  app.setErrorHandler((err, req, reply) => sendError(err, req, reply));
  app.setNotFoundHandler((req, reply) => reply.status(404).send(errorBody('NOT_FOUND', `no route ${req.method} ${req.url.length > 200 ? `${req.url.slice(0, 200)}…` : req.url}`)));
}

/** Errors Fastify raises before a route is matched (a malformed URL, say) take the same path. */
export const frameworkErrors: NonNullable<FastifyServerOptions['frameworkErrors']> = (err, req, reply) => {
  sendError(err, req, reply);
};

/**
 * Names the offending field, so a client learns what to fix: `body has unknown field 'waves'`,
 * `querystring.limit must be <= 200`. Fastify passes the first ajv error (allErrors is off).
 */
export function describeValidation(errors: FastifySchemaValidationError[], dataVar: string): string {
  const e = errors[0];
  if (!e) return `${dataVar} is invalid`;
  const where = `${dataVar}${e.instancePath.replace(/\//g, '.')}`;
  const params = e.params as Record<string, unknown>;
  const field = dataVar === 'querystring' ? 'parameter' : 'field';
  switch (e.keyword) {
    case 'additionalProperties': return `${where} has unknown ${field} '${String(params.additionalProperty)}'`;
    case 'required': return `${where} is missing required ${field} '${String(params.missingProperty)}'`;
    case 'enum': return `${where} must be one of ${(params.allowedValues as unknown[]).map(String).join(', ')}`;
    default: return `${where} ${e.message ?? 'is invalid'}`;
  }
}

export const schemaErrorFormatter: NonNullable<FastifyServerOptions['schemaErrorFormatter']> = (errors, dataVar) =>
  new Error(describeValidation(errors, dataVar));

/** What Node's HTTP parser refuses before Fastify sees a request. */
function clientErrorCode(code: string | undefined): ErrorCode {
  if (code === 'HPE_HEADER_OVERFLOW') return 'HEADERS_TOO_LARGE';
  if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'REQUEST_TIMEOUT';
  return 'REQUEST_MALFORMED';
}

/**
 * Answers requests Node's parser refused (a header or request line over the size limit, bad
 * framing, a request that took too long) in our error shape rather than Node's bare 400/431.
 */
export function clientErrorHandler(err: NodeJS.ErrnoException, socket: Socket): void {
  if (err.code === 'ECONNRESET' || !socket.writable) {
    socket.destroy();
    return;
  }
  const code = clientErrorCode(err.code);
  const status = ERROR_CATALOGUE[code].status;
  const message = code === 'HEADERS_TOO_LARGE'
    ? 'the request line and headers are over the size limit (a long query string counts); send less'
    : `the request could not be parsed (${err.code ?? 'unknown'})`;
  const body = JSON.stringify(errorBody(code, message));
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
    'Content-Type: application/json; charset=utf-8\r\n' +
    `Content-Length: ${Buffer.byteLength(body)}\r\n` +
    'Connection: close\r\n\r\n' +
    body,
  );
}
