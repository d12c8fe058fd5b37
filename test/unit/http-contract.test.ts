// The API contract, checked against the running app (inject() and, for what Node's own HTTP
// parser answers, a real loopback socket): the OpenAPI document is valid and lists every route
// with its response type; input is strict; every not-found is a 404; lists page; errors keep one
// shape and their catalogue status; replies carry their view's fields and nothing else.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { connect } from 'node:net';
import path from 'node:path';
import Fastify, { type FastifyInstance, type LightMyRequestResponse, type RouteOptions } from 'fastify';
import { Validator as OpenApiValidator } from '@seriousme/openapi-schema-validator';
import { ERROR_CATALOGUE, ERROR_CODES, EdgepackError, PROTOCOL_VERSION, generateKeyPair, type DeviceFacts, type ErrorCode, type Heartbeat } from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import { Access, installAccessControl, type Audience, type Authenticator } from '@edgepack/orchestrator/http/access.js';
import { installErrorHandling } from '@edgepack/orchestrator/http/errors.js';
import { DeviceView } from '@edgepack/orchestrator/http/routes/devices.js';
import { ModelView } from '@edgepack/orchestrator/http/routes/models.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ADMIN, capturingLogger, testDeps, type TestDeps } from '../support/http-app.js';
import { repoRoot } from '../support/paths.js';

let t: TestDeps;
let app: FastifyInstance;
/** Every route the app registered, seen by a hook of the test's own (not the app's bookkeeping). */
const registered: { method: string; url: string; access: readonly Audience[] | undefined; hidden: boolean; schema: RouteOptions['schema'] }[] = [];
let doc: any;

const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);

/** Asserts the one error shape and the catalogue status of its code; returns the code and message. */
function errorOf(res: LightMyRequestResponse, status: number): { code: string; message: string } {
  assert.equal(res.statusCode, status, res.body);
  const body = json(res);
  assert.deepEqual(Object.keys(body), ['error'], res.body);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message'], res.body);
  assert.equal(ERROR_CATALOGUE[body.error.code as ErrorCode]?.status, status, `${body.error.code} answers ${status}; the catalogue says otherwise`);
  return body.error;
}

function facts(over: Partial<DeviceFacts> = {}): DeviceFacts {
  return {
    arch: 'x86_64', platform: 'linux 6.6', cpuModel: 'AMD EPYC', cores: 4, ramBytes: 16 * 1024 ** 3, cpuFlags: ['avx2'], accelerators: [],
    runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0', ...over,
  };
}

before(async () => {
  t = await testDeps('contract');
  app = buildApp(t.deps);
  app.addHook('onRoute', (r) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    for (const method of methods) {
      registered.push({ method, url: r.url, access: r.config?.access, hidden: !!(r.schema as { hide?: boolean } | undefined)?.hide, schema: r.schema });
    }
  });
  await app.ready();
  const res = await app.inject({ url: '/openapi.json' });
  assert.equal(res.statusCode, 200, 'the document is public');
  doc = json(res);
});

after(async () => {
  await app?.close();
  await t?.close();
});

/** Fastify's `/v1/devices/:id` as OpenAPI's `/v1/devices/{id}`. */
const openapiPath = (url: string) => url.replace(/:(\w+)/g, '{$1}');
const apiRoutes = () => registered.filter((r) => !r.hidden && r.method !== 'HEAD');
const operations = () => Object.entries(doc.paths as Record<string, Record<string, any>>).flatMap(([p, ops]) =>
  Object.entries(ops).map(([method, op]) => ({ method: method.toUpperCase(), path: p, op })));

// --- the OpenAPI document ---

test('GET /openapi.json validates as OpenAPI 3.1 and every $ref resolves', async () => {
  assert.equal(doc.openapi, '3.1.0');
  const validator = new OpenApiValidator();
  const result = await validator.validate(structuredClone(doc));
  assert.equal(result.valid, true, JSON.stringify(result.errors, null, 2));
  assert.doesNotThrow(() => validator.resolveRefs());
  // …and the validator does refuse a document that is not one.
  const broken = structuredClone(doc);
  delete broken.info;
  broken.paths['/v1/health'].get.responses = 'none';
  assert.equal((await new OpenApiValidator().validate(broken)).valid, false);
  for (const [, name] of JSON.stringify(doc).matchAll(/"\$ref":"#\/components\/schemas\/(\w+)"/g)) assert.ok(doc.components.schemas[name!], `${name} resolves`);
});

test('every registered route is in the document with its 2xx response schema, and nothing else is', () => {
  const routes = apiRoutes();
  assert.ok(routes.length >= 19, `${routes.length} routes`);
  for (const r of routes) {
    const op = doc.paths[openapiPath(r.url)]?.[r.method.toLowerCase()];
    assert.ok(op, `${r.method} ${r.url} is missing from the document`);
    const ok = Object.keys(op.responses).filter((s) => /^2/.test(s));
    assert.ok(ok.length > 0, `${r.method} ${r.url} documents no 2xx response`);
    const declared = (r.schema as { response?: Record<string, any> }).response ?? {};
    for (const status of ok) {
      const res = op.responses[status];
      const mine = declared[status];
      assert.ok(mine, `${r.method} ${r.url} ${status}`);
      if (status === '204') continue;
      const [type, media] = Object.entries(res.content ?? {})[0] as [string, any];
      if (type === 'application/octet-stream') assert.equal(media.schema.format, 'binary');
      else assert.equal(media.schema.$ref, `#/components/schemas/${mine.title}`, `${r.method} ${r.url} ${status} is the named view ${mine.title}`);
    }
    assert.deepEqual(op['x-access'], [...(r.access ?? [])], `${r.method} ${r.url} documents its access`);
  }
  const known = new Set(routes.map((r) => `${r.method} ${openapiPath(r.url)}`));
  for (const { method, path: p } of operations()) assert.ok(known.has(`${method} ${p}`), `${method} ${p} is documented but not registered`);
});

test('the error shape is one component, referenced by every 4xx and 5xx response', () => {
  assert.deepEqual(doc.components.schemas.ErrorResponse.required, ['error']);
  assert.deepEqual(doc.components.schemas.ErrorResponse.properties.error.required, ['code', 'message']);
  assert.deepEqual(doc.components.schemas.ErrorResponse.properties.error.properties.code.enum, ERROR_CODES);
  for (const { method, path: p, op } of operations()) {
    const errors = Object.keys(op.responses).filter((s) => /^[45]/.test(s));
    assert.ok(errors.includes('400') && errors.includes('500'), `${method} ${p} documents 400 and 500`);
    for (const s of errors) {
      assert.equal(op.responses[s].content['application/json'].schema.$ref, '#/components/schemas/ErrorResponse', `${method} ${p} ${s}`);
      for (const code of op.responses[s].description.match(/\b[A-Z][A-Z0-9_]+(?=:)/g) ?? []) assert.equal(String(ERROR_CATALOGUE[code as ErrorCode].status), s);
    }
  }
});

test('every route declares who may call it; the admin may call every route that is not public', () => {
  for (const r of registered) {
    assert.ok(r.access && r.access.length > 0, `${r.method} ${r.url} declares no access`);
    if (!r.access.includes('public')) assert.ok(r.access.includes('admin'), `${r.method} ${r.url}: admin may do everything`);
  }
  const access = (m: string, u: string) => registered.find((r) => r.method === m && r.url === u)?.access;
  assert.deepEqual(access('GET', '/v1/health'), ['public']);
  assert.deepEqual(access('POST', '/v1/enroll'), ['public']);
  assert.deepEqual(access('GET', '/v1/bundles/:id/files/:path'), ['admin', 'operator', 'viewer', 'device']);
  assert.deepEqual(access('POST', '/v1/rollouts'), ['admin', 'operator']);
  for (const c of ['pause', 'resume', 'approve', 'cancel', 'rollback']) assert.deepEqual(access('POST', `/v1/rollouts/:id/${c}`), ['admin', 'operator'], c);
  assert.deepEqual(access('GET', '/v1/rollouts/:id/events'), ['admin', 'operator', 'viewer']);
  assert.deepEqual(access('GET', '/v1/rollouts/:id'), ['admin', 'operator', 'viewer']);
  assert.deepEqual(access('DELETE', '/v1/devices/:id'), ['admin']);
});

test('a route without an access declaration cannot be added', async () => {
  const other = buildApp(t.deps);
  try {
    assert.throws(() => other.get('/v1/undeclared', async () => ({})), /declares no access/);
    assert.throws(() => other.get('/v1/typo', { config: { access: ['admins' as Audience] } }, async () => ({})), /unknown audiences admins/);
  } finally {
    await other.close();
  }
});

test('the access hook: roles get what their route lists, 403 for the rest, 401 without a credential', async () => {
  // The hook and error handling of the app, with a stand-in for the token table the security
  // issue adds: it turns "viewer" into a viewer token, "dev" into a device, nothing else.
  const auth: Authenticator = {
    bearer: (token) => (token === 'viewer' ? { kind: 'token', role: 'viewer', tokenId: 'v1' } : token === 'op' ? { kind: 'token', role: 'operator', tokenId: 'o1' } : null),
    device: (id, credential) => (credential === 'ok' ? { kind: 'device', deviceId: id } : null),
  };
  const bare = Fastify();
  installErrorHandling(bare);
  installAccessControl(bare, auth);
  for (const [name, access] of Object.entries(Access)) bare.get(`/${name}`, { config: { access } }, async (req) => ({ caller: req.caller ?? null }));
  try {
    const call = (url: string, authorization?: string) => bare.inject({ url, headers: authorization ? { authorization } : {} });
    assert.equal((await call('/public')).statusCode, 200);
    assert.deepEqual(json(await call('/read', 'Bearer viewer')).caller, { kind: 'token', role: 'viewer', tokenId: 'v1' });
    assert.equal(errorOf(await call('/operate', 'Bearer viewer'), 403).code, 'FORBIDDEN');
    assert.equal((await call('/operate', 'Bearer op')).statusCode, 200);
    assert.equal(errorOf(await call('/admin', 'Bearer op'), 403).code, 'FORBIDDEN');
    assert.equal(errorOf(await call('/read'), 401).code, 'UNAUTHORIZED');
    assert.equal(errorOf(await call('/read', 'Bearer nope'), 401).code, 'UNAUTHORIZED');
    assert.deepEqual(json(await call('/readOrDevice', 'Device dev_1:ok')).caller, { kind: 'device', deviceId: 'dev_1' });
    // a device credential is no credential where devices are not let in
    assert.equal(errorOf(await call('/read', 'Device dev_1:ok'), 401).code, 'UNAUTHORIZED');
  } finally {
    await bare.close();
  }
});

// --- strict input ---

test('every object in every route\'s body, query string and path parameters refuses unknown fields', () => {
  const open: string[] = [];
  const walk = (node: unknown, where: string): void => {
    if (Array.isArray(node)) return node.forEach((n, i) => walk(n, `${where}[${i}]`));
    if (typeof node !== 'object' || node === null) return;
    const s = node as Record<string, unknown>;
    // A map keyed by name (patternProperties) is open by design; every other object is closed.
    if ((s.type === 'object' || s.properties) && s.additionalProperties !== false && !s.patternProperties) open.push(where);
    for (const [k, v] of Object.entries(s)) walk(v, `${where}.${k}`);
  };
  for (const r of apiRoutes()) {
    const schema = r.schema as Record<string, unknown>;
    for (const part of ['body', 'querystring', 'params']) if (schema[part]) walk(schema[part], `${r.method} ${r.url} ${part}`);
    assert.ok(schema.querystring, `${r.method} ${r.url} has a querystring schema`);
  }
  assert.deepEqual(open, []);
});

test('an unknown body field is a 400 that names it, and nothing happens', async () => {
  const before = t.store.listRollouts().length;
  const wave = errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: ADMIN, payload: { buildId: 'bld_x', target: {}, wave: [{ size: { percent: 10 } }] } }), 400);
  assert.equal(wave.code, 'VALIDATION_FAILED');
  assert.match(wave.message, /unknown field 'wave'/);
  const gate = errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: ADMIN, payload: { buildId: 'bld_x', target: {}, waves: [{ size: { percent: 10 }, gate: { maxFailureRate: 0.1 } }] } }), 400);
  assert.match(gate.message, /body\.waves\.0\.gate has unknown field 'maxFailureRate'/);
  const nested = errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: ADMIN, payload: { buildId: 'bld_x', target: { tag: ['lab'] } } }), 400);
  assert.match(nested.message, /body\.target has unknown field 'tag'/);
  assert.equal(t.store.listRollouts().length, before);
  assert.equal(t.published.length, 0);

  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: ADMIN, payload: { modelId: 'mdl_x', priority: 1 } }), 400).message, /'priority'/);
  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: ADMIN, payload: { modelId: 'mdl_x', acceptance: { p99LatencyMs: 5 } } }), 400).message, /body\.acceptance has unknown field 'p99LatencyMs'/);
  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN, payload: { ttl: 600 } }), 400).message, /unknown field 'ttl'/);
  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: ADMIN, payload: {} }), 400).message, /missing required field 'modelId'/);
});

test('a body value of the wrong type is refused, not coerced (only the URL, which is text, is)', async () => {
  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN, payload: { ttlSec: '600' } }), 400).message, /body\.ttlSec must be integer/);
  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: ADMIN, payload: { modelId: 'mdl_x', profiles: 'x86-64-gateway' } }), 400).message, /body\.profiles must be array/);
  const ok = await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN, payload: { ttlSec: 600 } });
  assert.equal(ok.statusCode, 201, ok.body);
  assert.equal(Date.parse(json(ok).expiresAt) - t.clock.ms, 600_000);
});

test('enrollment refuses unknown fields too, even inside the facts, and the token survives', async () => {
  const token = json(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN })).token as string;
  const body = { v: PROTOCOL_VERSION, token, publicKey: generateKeyPair().publicKey, facts: facts() };
  const extra = errorOf(await app.inject({ method: 'POST', url: '/v1/enroll', payload: { ...body, facts: { ...facts(), gpu: 'rtx' } } }), 400);
  assert.match(extra.message, /body\.facts has unknown field 'gpu'/);
  assert.match(errorOf(await app.inject({ method: 'POST', url: '/v1/enroll', payload: { ...body, role: 'admin' } }), 400).message, /unknown field 'role'/);
  assert.equal((await app.inject({ method: 'POST', url: '/v1/enroll', payload: body })).statusCode, 201);
});

test('a bad or unknown query parameter is a 400 that names it', async () => {
  const q = async (url: string) => errorOf(await app.inject({ url, headers: ADMIN }), 400);
  assert.match((await q('/v1/devices?limit=0')).message, /querystring\.limit must be >= 1/);
  assert.match((await q('/v1/devices?limit=201')).message, /querystring\.limit must be <= 200/);
  assert.match((await q('/v1/devices?limit=ten')).message, /querystring\.limit must be integer/);
  assert.match((await q('/v1/devices?status=sleeping')).message, /querystring\.status must be one of online, offline/);
  assert.match((await q('/v1/devices?colour=red')).message, /querystring has unknown parameter 'colour'/);
  assert.match((await q('/v1/devices/dev_x?expand=all')).message, /unknown parameter 'expand'/, 'a route without query parameters takes none');
  assert.match((await q('/v1/builds?status=done')).message, /must be one of queued, running, succeeded, failed/);
  assert.match(errorOf(await app.inject({ url: '/v1/health?verbose=1' }), 400).message, /unknown parameter 'verbose'/);
  assert.equal((await q('/v1/devices?cursor=not-ours')).code, 'CURSOR_INVALID');
});

test('a body that is not what its Content-Type says, or a URL that does not decode, is a 400 in our shape', async () => {
  const notJson = errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: { ...ADMIN, 'content-type': 'application/json' }, payload: '{"buildId": ' }), 400);
  assert.equal(notJson.code, 'BODY_INVALID');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: { ...ADMIN, 'content-type': 'application/json' }, payload: '' }), 400).code, 'BODY_INVALID');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: { ...ADMIN, 'content-type': 'application/xml' }, payload: '<x/>' }), 415).code, 'UNSUPPORTED_MEDIA_TYPE');
  assert.equal(errorOf(await app.inject({ url: '/v1/devices/%E0%A4%A', headers: ADMIN }), 400).code, 'REQUEST_MALFORMED');
});

// --- not found ---

/** What each route with path parameters needs besides them; a new one must be added here. */
const NOT_FOUND_CALLS: Record<string, { query?: string; body?: unknown; octet?: boolean }> = {
  'GET /v1/devices/{id}': {},
  'PATCH /v1/devices/{id}': { body: { name: 'x' } },
  'DELETE /v1/devices/{id}': {},
  'GET /v1/devices/{id}/health': {},
  'GET /v1/models/{id}': {},
  'GET /v1/models/{id}/datasets': {},
  'POST /v1/models/{id}/datasets': { query: '?kind=calibration', octet: true },
  'GET /v1/builds/{id}': {},
  'GET /v1/rollouts/{id}': {},
  'GET /v1/rollouts/{id}/events': {},
  'POST /v1/rollouts/{id}/pause': {},
  'POST /v1/rollouts/{id}/resume': {},
  'POST /v1/rollouts/{id}/approve': {},
  'POST /v1/rollouts/{id}/cancel': {},
  'POST /v1/rollouts/{id}/rollback': {},
  'GET /v1/bundles/{id}': {},
  'GET /v1/bundles/{id}/files/{path}': {},
  'DELETE /v1/tokens/{id}': {},
};

test('every route that names a resource answers 404 with a *_NOT_FOUND code it documents', async () => {
  const withParams = operations().filter((o) => o.path.includes('{'));
  assert.deepEqual(withParams.map((o) => `${o.method} ${o.path}`).sort(), Object.keys(NOT_FOUND_CALLS).sort(), 'NOT_FOUND_CALLS lists every route with path parameters');
  for (const { method, path: p, op } of withParams) {
    const call = NOT_FOUND_CALLS[`${method} ${p}`]!;
    const url = p.replace(/\{(\w+)\}/g, (_, name: string) => (name === 'path' ? 'model.onnx' : 'nope_0000000000000000')) + (call.query ?? '');
    const res = await app.inject({
      method: method as 'GET', url,
      headers: call.octet ? { ...ADMIN, 'content-type': 'application/octet-stream' } : ADMIN,
      ...(call.octet ? { payload: Buffer.from('x') } : call.body ? { payload: call.body as object } : {}),
    });
    const { code } = errorOf(res, 404);
    assert.match(code, /NOT_FOUND$/, `${method} ${p}`);
    assert.match(op.responses['404'].description, new RegExp(`\\b${code}:`), `${method} ${p} documents ${code}`);
  }
  assert.equal(errorOf(await app.inject({ url: '/v1/no-such-thing', headers: ADMIN }), 404).code, 'NOT_FOUND');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: ADMIN, payload: { modelId: 'mdl_nope' } }), 404).code, 'MODEL_NOT_FOUND');
});

// --- lists ---

/** Walks a list route page by page and returns the ids in order, checking the page sizes on the way. */
async function walk(url: string, key: string, limit: number): Promise<string[]> {
  const ids: string[] = [];
  let cursor: string | null = null;
  for (let pages = 0; ; pages++) {
    assert.ok(pages < 50, 'pages end');
    const sep = url.includes('?') ? '&' : '?';
    const res: LightMyRequestResponse = await app.inject({ url: `${url}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, headers: ADMIN });
    assert.equal(res.statusCode, 200, res.body);
    const body = json(res);
    assert.deepEqual(Object.keys(body).sort(), [key, 'next'].sort());
    const items = body[key] as { id: string }[];
    assert.ok(items.length <= limit);
    ids.push(...items.map((i) => i.id));
    if (body.next === null) return ids;
    assert.equal(items.length, limit, 'only the last page is short');
    cursor = body.next as string;
  }
}

test('lists page with limit and cursor, oldest first, and say next: null at the end', async () => {
  const { store } = t;
  // Seven of each, two of them created in the same millisecond so the id breaks the tie.
  const at = (i: number) => new Date(Date.parse('2026-01-01T00:00:00.000Z') + Math.min(i, 5) * 1000).toISOString();
  const deviceIds: string[] = [];
  for (let i = 0; i < 7; i++) {
    const id = `dev_page${String(6 - i).padStart(2, '0')}`;
    store.insertDevice({ id, name: id, profile: 'x86-64-gateway', publicKey: generateKeyPair().publicKey, tags: i % 2 ? ['odd'] : ['even'], facts: facts(), createdAt: at(i) });
    deviceIds.push(id);
  }
  const modelIds: string[] = [];
  const datasetIds: string[] = [];
  const buildIds: string[] = [];
  const rolloutIds: string[] = [];
  for (let i = 0; i < 7; i++) {
    const m = { id: `mdl_page${i}`, name: `paged-${i}`, version: '1', sha256: 'a'.repeat(64), sizeBytes: 1, format: 'onnx' as const, opset: 13, inputs: [], outputs: [], details: {}, createdAt: at(i) };
    store.insertModel(m);
    modelIds.push(m.id);
    store.insertDataset({ id: `dts_page${i}`, modelId: 'mdl_page0', kind: 'calibration', sha256: 'b'.repeat(64), sizeBytes: 1, dtype: 'float32', shape: [1, 1, 28, 28], createdAt: at(i) });
    datasetIds.push(`dts_page${i}`);
    store.insertBuild({ id: `bld_page${i}`, modelId: 'mdl_page0', profiles: ['x86-64-gateway'], options: {}, createdAt: at(i) });
    buildIds.push(`bld_page${i}`);
    store.insertRollout({ id: `rol_page${i}`, buildId: 'bld_page0', status: 'running', target: {}, createdAt: at(i), finishedAt: null }, [], []);
    rolloutIds.push(`rol_page${i}`);
  }
  const sorted = (ids: string[], created: (id: string) => string) => [...ids].sort((a, b) => created(a).localeCompare(created(b)) || a.localeCompare(b));
  const byIndex = (ids: string[]) => (id: string) => at(ids.indexOf(id));

  const devices = await walk('/v1/devices', 'devices', 3);
  const paged = devices.filter((id) => id.startsWith('dev_page'));
  assert.deepEqual(paged, sorted(deviceIds, byIndex(deviceIds)), 'oldest first, ties by id');
  assert.equal(new Set(devices).size, devices.length, 'no device twice');
  // a filter pages the same way
  assert.deepEqual(await walk('/v1/devices?tag=odd', 'devices', 2), sorted(deviceIds.filter((_, i) => i % 2), byIndex(deviceIds)));

  for (const [url, key, ids] of [['/v1/models?name=paged-3', 'models', ['mdl_page3']], ['/v1/models/mdl_page0/datasets', 'datasets', datasetIds], ['/v1/builds?modelId=mdl_page0', 'builds', buildIds], ['/v1/rollouts?buildId=bld_page0', 'rollouts', rolloutIds]] as const) {
    for (const limit of [1, 3, 7, 200]) assert.deepEqual(await walk(url, key, limit), sorted([...ids], byIndex([...ids])), `${url} limit ${limit}`);
  }
  const models = await walk('/v1/models', 'models', 4);
  assert.deepEqual(models.filter((id) => id.startsWith('mdl_page')), modelIds);
  // without limit: the default page (50) holds them all
  assert.equal(json(await app.inject({ url: '/v1/builds?modelId=mdl_page0', headers: ADMIN })).builds.length, 7);
});

// --- replies carry their view and nothing else ---

test('a reply carries exactly its view\'s fields: nothing stored beside them leaks out', async () => {
  const { store } = t;
  // Stored JSON with fields the views do not name, as an older or newer writer might leave.
  store.insertModel({
    id: 'mdl_view', name: 'view', version: '1', sha256: 'c'.repeat(64), sizeBytes: 9, format: 'onnx', opset: 13,
    inputs: [{ name: 'x', type: 'float32', shape: ['batch', 4], internal: '/data/blobs/x' } as never], outputs: [],
    details: { irVersion: 7, producer: 'pytorch 2.3', blobPath: '/data/blobs/ccc', operators: { Conv: 2, Relu: 'x' } }, createdAt: '2026-01-02T00:00:00.000Z',
  });
  const model = json(await app.inject({ url: '/v1/models/mdl_view', headers: ADMIN })).model;
  assert.deepEqual(Object.keys(model).sort(), Object.keys(ModelView.properties).sort());
  assert.deepEqual(model.details, { irVersion: 7, producer: 'pytorch 2.3', operators: { Conv: 2 } });
  assert.deepEqual(model.inputs, [{ name: 'x', type: 'float32', shape: ['batch', 4] }]);

  store.insertDevice({ id: 'dev_view', name: 'v', profile: 'x86-64-gateway', publicKey: generateKeyPair().publicKey, tags: [], facts: { ...facts(), serial: 'SN-1' } as DeviceFacts, createdAt: '2026-01-02T00:00:00.000Z' });
  store.recordHeartbeat('dev_view', { v: 1, deviceId: 'dev_view', uptimeSec: 5, activeBundle: null, agentVersion: '0.1.0', at: '2026-01-02T00:00:05.000Z', wifiPassword: 'hunter2' } as Heartbeat, '2026-01-02T00:00:05.000Z');
  const res = await app.inject({ url: '/v1/devices/dev_view', headers: ADMIN });
  const device = json(res).device;
  assert.deepEqual(Object.keys(device).sort(), Object.keys(DeviceView.properties).sort());
  for (const secret of ['publicKey', 'public_key', 'desiredSeq', 'revokedAt', 'SN-1', 'hunter2', 'wifiPassword']) assert.ok(!res.body.includes(secret), `${secret} stays inside`);
  assert.deepEqual(device.lastHeartbeat, { uptimeSec: 5, activeBundle: null, lastBenchmark: null, agentVersion: '0.1.0', at: '2026-01-02T00:00:05.000Z' });

  store.insertBuild({ id: 'bld_view', modelId: 'mdl_view', profiles: ['x86-64-gateway'], options: {}, createdAt: '2026-01-02T00:00:00.000Z' });
  store.updateArtifact('bld_view', {
    profile: 'x86-64-gateway', status: 'skipped', format: null, precision: null, bundleId: null, sizeBytes: null, reason: 'budget',
    details: { blobPath: '/data/tmp/x', layout: 'NCHW', decisions: [{ format: 'onnx', precision: 'fp16', accepted: false, reason: 'too big', workDir: '/tmp/w', metrics: { sizeBytes: 10, hostName: 'build-1' } }] },
  });
  const b = await app.inject({ url: '/v1/builds/bld_view', headers: ADMIN });
  for (const secret of ['/data/tmp/x', '/tmp/w', 'build-1', 'blobPath', 'workDir']) assert.ok(!b.body.includes(secret), `${secret} stays inside`);
  assert.deepEqual(json(b).build.artifacts[0].decisions, [{ format: 'onnx', precision: 'fp16', accepted: false, reason: 'too big', metrics: { sizeBytes: 10 } }]);
  assert.equal(json(b).build.artifacts[0].layout, 'NCHW');
});

// --- async work ---

test('POST /v1/builds answers 202 with a Location that GET /v1/builds/:id and GET /v1/builds know', async () => {
  const up = await app.inject({ method: 'POST', url: '/v1/models?name=async&version=1', headers: { ...ADMIN, 'content-type': 'application/octet-stream' }, payload: Buffer.from(buildTinyMlpModel({ seed: 11 })) });
  assert.equal(up.statusCode, 201, up.body);
  const modelId = json(up).model.id as string;
  const res = await app.inject({ method: 'POST', url: '/v1/builds', headers: ADMIN, payload: { modelId, profiles: ['x86-64-gateway'] } });
  assert.equal(res.statusCode, 202, res.body);
  const build = json(res).build;
  assert.equal(build.status, 'queued');
  assert.equal(res.headers.location, `/v1/builds/${build.id}`);
  const polled = await app.inject({ url: String(res.headers.location), headers: ADMIN });
  assert.equal(polled.statusCode, 200);
  assert.equal(json(polled).build.id, build.id);
  const listed = json(await app.inject({ url: `/v1/builds?modelId=${modelId}`, headers: ADMIN })).builds;
  assert.deepEqual(listed.map((b: { id: string }) => b.id), [build.id]);
  assert.equal(listed[0].artifacts, undefined, 'the list holds summaries');
  await t.builds.idle();
});

// --- the error handler ---

test('every catalogue code answers with its catalogue status; a code outside it is a bug: 500, logged', async () => {
  const lines: string[] = [];
  const other = buildApp({ ...t.deps, logger: capturingLogger(lines) });
  other.get('/v1/raise', { config: { access: Access.public }, schema: { querystring: { type: 'object', properties: { code: { type: 'string' } }, additionalProperties: false } } }, async (req) => {
    throw new EdgepackError((req.query as { code: string }).code as ErrorCode, `raised ${(req.query as { code: string }).code}`);
  });
  other.get('/v1/errno', { config: { access: Access.public } }, async () => { throw Object.assign(new Error('ENOENT: no such file, open /data/blobs/abc'), { code: 'ENOENT' }); });
  other.get('/v1/plain', { config: { access: Access.public } }, async () => { throw new TypeError('cannot read properties of undefined'); });
  other.get('/v1/full', { config: { access: Access.public } }, async () => { throw Object.assign(new Error('no space'), { code: 'ENOSPC' }); });
  try {
    for (const code of ERROR_CODES) {
      const res = await other.inject({ url: `/v1/raise?code=${code}` });
      assert.equal(errorOf(res, ERROR_CATALOGUE[code].status).code, code);
    }
    const before = lines.length;
    const bogus = errorOf(await other.inject({ url: '/v1/raise?code=NOT_A_REAL_CODE' }), 500);
    assert.equal(bogus.code, 'INTERNAL_ERROR');
    assert.doesNotMatch(bogus.message, /NOT_A_REAL_CODE/, 'internals stay in the log');
    assert.ok(lines.slice(before).some((l) => l.includes('NOT_A_REAL_CODE') && l.includes('unhandled error')), 'logged with its code');
    for (const url of ['/v1/errno', '/v1/plain']) {
      const e = errorOf(await other.inject({ url }), 500);
      assert.equal(e.code, 'INTERNAL_ERROR');
      assert.doesNotMatch(e.message, /data\/blobs|undefined/);
    }
    assert.ok(lines.some((l) => l.includes('ENOENT')), 'a Node errno is logged');
    assert.equal(errorOf(await other.inject({ url: '/v1/full' }), 507).code, 'STORAGE_FULL');
  } finally {
    await other.close();
  }
});

// --- what Node's HTTP parser refuses, over a real socket ---

/** One raw request over loopback; returns the status and the body. */
function raw(port: number, request: string): Promise<{ status: number; headers: string; body: string }> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1');
    let data = '';
    socket.setEncoding('utf8');
    socket.on('data', (d) => { data += d; });
    socket.on('error', reject);
    socket.on('close', () => {
      const [head = '', body = ''] = data.split('\r\n\r\n');
      resolve({ status: Number(head.split(' ')[1]), headers: head, body });
    });
    socket.end(request);
  });
}

test('Node\'s own 431 and 400, and the 413 of the body limit, answer in our error shape', async () => {
  const other = buildApp(t.deps);
  await other.listen({ host: '127.0.0.1', port: 0 });
  try {
    const port = (other.server.address() as { port: number }).port;
    const check = (r: { status: number; headers: string; body: string }, status: number, code: string) => {
      assert.equal(r.status, status, r.headers);
      assert.match(r.headers, /content-type: application\/json/i);
      const body = JSON.parse(r.body);
      assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
      assert.equal(body.error.code, code);
      assert.equal(ERROR_CATALOGUE[code as ErrorCode].status, status);
    };
    check(await raw(port, `GET /v1/devices?tag=${'x'.repeat(20_000)} HTTP/1.1\r\nHost: a\r\n\r\n`), 431, 'HEADERS_TOO_LARGE');
    check(await raw(port, `GET /v1/health HTTP/1.1\r\nHost: a\r\nX-Big: ${'y'.repeat(20_000)}\r\n\r\n`), 431, 'HEADERS_TOO_LARGE');
    check(await raw(port, 'NOT HTTP AT ALL\r\n\r\n'), 400, 'REQUEST_MALFORMED');
    const big = await fetch(`http://127.0.0.1:${port}/v1/rollouts`, {
      method: 'POST', headers: { ...ADMIN, 'content-type': 'application/json' }, body: JSON.stringify({ buildId: 'b', target: { tags: ['x'.repeat(2 << 20)] } }),
    });
    assert.equal(big.status, 413);
    assert.equal(((await big.json()) as { error: { code: string } }).error.code, 'PAYLOAD_TOO_LARGE');
    // and the server still answers
    assert.equal((await fetch(`http://127.0.0.1:${port}/v1/health`)).status, 200);
  } finally {
    await other.close();
  }
});

// --- the docs UI ---

test('/docs serves Swagger UI from the orchestrator itself: every asset local, no CDN', async () => {
  const page = await app.inject({ url: '/docs/' });
  assert.equal(page.statusCode, 200);
  assert.match(page.headers['content-type'] as string, /text\/html/);
  assert.doesNotMatch(page.body, /https?:\/\//, 'no absolute URLs: nothing is fetched from elsewhere');
  const csp = String(page.headers['content-security-policy']);
  assert.match(csp, /default-src 'self'/);
  assert.doesNotMatch(csp, /https?:|\*/);
  const assets = [...page.body.matchAll(/(?:src|href)="([^"]+)"/g)].map((m) => m[1]!);
  assert.ok(assets.some((a) => a.endsWith('swagger-ui-bundle.js')));
  for (const a of assets) {
    const res = await app.inject({ url: new URL(a, 'http://x/docs/').pathname });
    assert.equal(res.statusCode, 200, a);
  }
  const init = await app.inject({ url: '/docs/static/swagger-initializer.js' });
  assert.doesNotMatch(init.body, /validator\.swagger\.io|petstore/);
});

// --- the README ---

/** The README's API table rows, as the document says they must read. */
function expectedRows(): string[] {
  return operations().map(({ method, path: p, op }) => {
    const ok = Object.entries(op.responses).find(([s]) => /^2/.test(s)) as [string, any];
    const media = Object.values(ok[1].content ?? {})[0] as { schema: { $ref?: string; format?: string } } | undefined;
    const type = !media ? '—' : media.schema.$ref ? `\`${media.schema.$ref.split('/').pop()}\`` : 'bytes';
    return `| \`${method}\` | \`${p.replace(/\{(\w+)\}/g, ':$1')}\` | ${(op['x-access'] as string[]).join(', ')} | ${ok[0]} ${type} | ${op.summary} |`;
  });
}

test('the README API table lists exactly the routes of the OpenAPI document', async () => {
  const readme = await readFile(path.join(repoRoot(), 'README.md'), 'utf8');
  const section = readme.slice(readme.indexOf('### API'), readme.indexOf('\n## ', readme.indexOf('### API')));
  const rows = section.split('\n').filter((l) => /^\| `[A-Z]+` \|/.test(l));
  const expected = expectedRows();
  assert.deepEqual(rows, expected, `README.md "### API" must hold these rows, in this order:\n${expected.join('\n')}\n`);
});
