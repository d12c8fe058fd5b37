import { Ajv, type Options } from 'ajv';
import addFormats from 'ajv-formats';
import type { FastifySchemaCompiler } from 'fastify';

/**
 * Request validation with one rule more than Fastify's default: only the URL is coerced.
 * Query strings and path parameters arrive as text, so `?limit=3` must become a number; a JSON
 * body arrives typed, so `{"ttlSec": "600"}` is refused, never quietly turned into 600. Neither
 * removes unknown fields (every object schema refuses them, and the refusal names the field).
 */
export function createValidatorCompiler(): FastifySchemaCompiler<object> {
  const options: Options = { removeAdditional: false, useDefaults: true, allErrors: false, strict: true };
  const body = new Ajv({ ...options, coerceTypes: false });
  const url = new Ajv({ ...options, coerceTypes: 'array' });
  for (const ajv of [body, url]) addFormats.default(ajv);
  return ({ schema, httpPart }) => (httpPart === 'body' ? body : url).compile(schema);
}
