/**
 * Schemas and helpers every route shares: strict input objects, list pages with keyset
 * cursors, the error shape. A schema with a `title` becomes a named component in the OpenAPI
 * document (see openapi.ts), so a title names a view type once for every route that uses it.
 */
import { Type, type Static, type TObject, type TProperties, type TSchema, type TUnsafe } from '@sinclair/typebox';
import {
  BenchmarkResultSchema, DeviceFactsSchema, ERROR_CODES, EdgepackError, HeartbeatSchema, ManifestSchema,
  TensorSpecSchema, type BenchmarkResult, type ErrorCode, type TensorSpec,
} from '@edgepack/protocol';

/** A string that is one of `values`: `enum` gives clear errors ("must be one of …") and docs. */
export function StringEnum<const T extends readonly string[]>(values: T, options: { description?: string; default?: T[number] } = {}): TUnsafe<T[number]> {
  return Type.Unsafe<T[number]>({ type: 'string', enum: [...values], ...options });
}

/**
 * `schema` or null, as a JSON Schema type array (`type: ['object', 'null']`) wherever the
 * schema has one plain type. fast-json-stringify serializes a type array with a typeof check;
 * an anyOf it serializes by validating the value against each branch with Ajv, which for a view
 * of 1,000 devices with a nullable benchmark each cost more than everything else in the reply.
 * A titled (named) view loses its title in the nullable copy: it is written out in place rather
 * than referenced, as the named one may not also be nullable.
 */
export function Nullable<T extends TSchema>(schema: T): TUnsafe<Static<T> | null> {
  const s = schema as unknown as Record<string, unknown>;
  if (typeof s.type === 'string' && s.anyOf === undefined && s.oneOf === undefined && s.$ref === undefined) {
    const { title: _title, ...rest } = s;
    const enumOf = Array.isArray(s.enum) ? { enum: [...(s.enum as unknown[]), null] } : {};
    return Type.Unsafe<Static<T> | null>({ ...rest, ...enumOf, type: [s.type, 'null'] });
  }
  return Type.Unsafe<Static<T> | null>(Type.Union([schema, Type.Null()]));
}

export const Timestamp = Type.String({ format: 'date-time', description: 'ISO 8601 timestamp (UTC)' });

/** Objects refuse fields they do not name, so a typo or a field from another version is a 400 naming it, not silently dropped. */
export function StrictObject<T extends TProperties>(properties: T, options: { title?: string; description?: string } = {}): TObject<T> {
  return Type.Object(properties, { ...options, additionalProperties: false });
}

/**
 * A deep copy of `schema` in which every object without an `additionalProperties` rule refuses
 * unknown fields. For wire schemas from protocol/, which stay lenient on MQTT (a newer device may
 * add fields) but are strict at the HTTP door.
 */
export function strict<T extends TSchema>(schema: T): T {
  const walk = (s: unknown): unknown => {
    if (Array.isArray(s)) return s.map(walk);
    if (typeof s !== 'object' || s === null) return s;
    const out: Record<string | symbol, unknown> = {};
    for (const key of Reflect.ownKeys(s)) out[key] = walk((s as Record<string | symbol, unknown>)[key]);
    if (out.type === 'object' && out.properties && out.additionalProperties === undefined && out.patternProperties === undefined) out.additionalProperties = false;
    return out;
  };
  return walk(schema) as T;
}

/** Gives a schema a title (a component name in the OpenAPI document) without touching the original. */
export function named<T extends TSchema>(title: string, schema: T, description?: string): T {
  return { ...schema, title, ...(description ? { description } : {}) };
}

// --- path parameters ---

export const Id = Type.String({ minLength: 1, maxLength: 128 });
export const IdParams = StrictObject({ id: Id });

// --- lists: keyset pages over (created_at, id) ---

export const DEFAULT_PAGE_LIMIT = 50;
export const MAX_PAGE_LIMIT = 200;

/** Spread into a route's querystring schema: `StrictObject({ ...PageQuery, status: … })`. */
export const PageQuery = {
  limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE_LIMIT, default: DEFAULT_PAGE_LIMIT, description: `items per page (1-${MAX_PAGE_LIMIT}, default ${DEFAULT_PAGE_LIMIT})` })),
  cursor: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'the `next` of the previous page' })),
};

export const Next = Type.Union([Type.String(), Type.Null()], { description: 'cursor of the next page; null on the last page' });

export interface PageKey {
  createdAt: string;
  id: string;
}

/** Opaque to clients: base64url of the last item's sort key. */
export function encodeCursor(key: PageKey | null): string | null {
  return key ? Buffer.from(JSON.stringify([key.createdAt, key.id])).toString('base64url') : null;
}

export function decodeCursor(cursor: string | undefined): PageKey | undefined {
  if (cursor === undefined) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
  } catch {
    parsed = undefined;
  }
  if (!Array.isArray(parsed) || parsed.length !== 2 || typeof parsed[0] !== 'string' || typeof parsed[1] !== 'string') {
    throw new EdgepackError('CURSOR_INVALID', 'cursor is not one this server issued; start again without it');
  }
  return { createdAt: parsed[0], id: parsed[1] };
}

export interface PageRequest {
  limit: number;
  after?: PageKey;
}

export function pageRequest(query: { limit?: number; cursor?: string }): PageRequest {
  const after = decodeCursor(query.cursor);
  return { limit: query.limit ?? DEFAULT_PAGE_LIMIT, ...(after ? { after } : {}) };
}

// --- the error shape ---

export const ErrorResponseSchema = Type.Object({
  error: Type.Object({
    code: Type.Unsafe<ErrorCode>({
      type: 'string',
      enum: ERROR_CODES,
      description: 'stable code from the error catalogue (protocol/src/error-catalogue.ts); branch on it, never on the message',
    }),
    message: Type.String({ description: 'what went wrong, for people; may change between versions' }),
  }),
}, { title: 'ErrorResponse', description: 'every error answer, whatever the status' });
export type ErrorResponse = Static<typeof ErrorResponseSchema>;

export function errorBody(code: ErrorCode, message: string): ErrorResponse {
  return { error: { code, message } };
}

// --- wire types that views reuse as they are ---

export const TensorSpecView = named('TensorSpec', TensorSpecSchema);
export const BenchmarkResultView = named('BenchmarkResult', BenchmarkResultSchema, 'what the on-device acceptance benchmark measured');
export const DeviceFactsView = named('DeviceFacts', DeviceFactsSchema, 'what the agent reported about its hardware and runtimes at enrollment');
export const ManifestView = named('Manifest', ManifestSchema, 'the signed bundle manifest; the signature is over its canonical JSON');
export const HeartbeatView = named('Heartbeat', Type.Object({
  uptimeSec: HeartbeatSchema.properties.uptimeSec,
  activeBundle: HeartbeatSchema.properties.activeBundle,
  lastBenchmark: Nullable(BenchmarkResultView),
  agentVersion: HeartbeatSchema.properties.agentVersion,
  at: HeartbeatSchema.properties.at,
}), 'the last heartbeat the device sent');

// --- view functions for the shared wire types: pick each field, never spread stored JSON ---

export function benchmarkView(r: BenchmarkResult): Static<typeof BenchmarkResultView> {
  return {
    runtime: r.runtime, providers: [...r.providers], loadMs: r.loadMs, warmupRuns: r.warmupRuns, runs: r.runs,
    latencyMs: { p50: r.latencyMs.p50, p90: r.latencyMs.p90, p95: r.latencyMs.p95, p99: r.latencyMs.p99 },
    throughputPerSec: r.throughputPerSec, peakRssBytes: r.peakRssBytes,
    golden: { passed: r.golden.passed, maxAbsError: r.golden.maxAbsError, samples: r.golden.samples },
  };
}

export function tensorSpecView(t: TensorSpec): Static<typeof TensorSpecView> {
  return { name: t.name, type: t.type, shape: [...t.shape] };
}
