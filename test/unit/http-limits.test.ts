// The limits on the HTTP door and the smaller leaks the security issue found (findings 5 and
// 6): failed authentication is throttled per client IP and logged as one summary line per
// interval, enrollment has a per-IP rate limit, each token has a request rate, and every input
// has a cap whose refusal has its own code. Real SQLite and blob store, real app, inject() with
// chosen client addresses, and a real loopback socket for what Node's parser refuses.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { ERROR_CATALOGUE, PROTOCOL_VERSION, generateKeyPair, type DeviceFacts, type ErrorCode, type Manifest, MANIFEST_SCHEMA_ID } from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import type { HttpLimits } from '@edgepack/orchestrator/limits.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ADMIN, ADMIN_TOKEN, testDeps, type TestDeps } from '../support/http-app.js';

let t: TestDeps;
const apps: FastifyInstance[] = [];

const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);
function errorOf(res: LightMyRequestResponse, status: number): string {
  assert.equal(res.statusCode, status, res.body);
  const body = json(res);
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
  assert.equal(ERROR_CATALOGUE[body.error.code as ErrorCode].status, status);
  return body.error.code;
}

const facts: DeviceFacts = {
  arch: 'x86_64', platform: 'linux', cpuModel: 'x', cores: 4, ramBytes: 8e9, cpuFlags: [], accelerators: [],
  runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0',
};

const STRICT_FAILURES = { maxFailures: 10, windowMs: 60_000, blockMs: 60_000, maxBlockMs: 15 * 60_000 };

/** An app over the shared database with these limits and a log the test reads. */
async function appWith(limits: Partial<HttpLimits>, lines: Record<string, any>[] = []): Promise<FastifyInstance> {
  const app = buildApp({ ...t.deps, limits, logger: createLogger('info', { write: (l: string) => { lines.push(JSON.parse(l)); } }) });
  apps.push(app);
  await app.ready();
  return app;
}

before(async () => {
  t = await testDeps('limits');
});

after(async () => {
  for (const a of apps) await a.close();
  await t?.close();
});

/** Events of one kind the log accounts for: the first line, plus what each summary line says it repeated. */
const summed = (lines: Record<string, any>[], prefix: string) => lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith(prefix)).reduce((n, l) => n + (l.repeated ?? 1), 0);

const until = async (what: string, fn: () => boolean, ms = 3000) => {
  const end = Date.now() + ms;
  while (!fn()) {
    if (Date.now() > end) throw new Error(`timed out: ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
};

test('finding 5: wrong API tokens are throttled per client IP (429 with Retry-After before any lookup, with backoff) and logged as one line per interval', async () => {
  const lines: Record<string, any>[] = [];
  const app = await appWith({ authFailures: STRICT_FAILURES, logDigestMs: 200 }, lines);
  const from = (remoteAddress: string, token: string) => app.inject({ url: '/v1/devices', headers: { authorization: `Bearer ${token}` }, remoteAddress });
  const statuses: number[] = [];
  for (let i = 0; i < 200; i++) {
    const res = await from('10.0.0.1', `ept_wrong-${i}`);
    statuses.push(res.statusCode);
    if (res.statusCode === 429) {
      assert.equal(json(res).error.code, 'RATE_LIMITED');
      assert.ok(Number(res.headers['retry-after']) >= 1 && Number(res.headers['retry-after']) <= 60, String(res.headers['retry-after']));
    }
  }
  assert.deepEqual(statuses.slice(0, 10), Array(10).fill(401), 'the first ten are checked and refused');
  assert.deepEqual(statuses.slice(10), Array(190).fill(429), 'the rest are refused unread');
  // Refused before the token is looked at: even the real admin token, from that address.
  assert.equal(errorOf(await from('10.0.0.1', ADMIN_TOKEN), 429), 'RATE_LIMITED');
  // Other clients are not affected.
  assert.equal((await from('10.0.0.2', ADMIN_TOKEN)).statusCode, 200);

  // The log: one line at the first failure, then one summary per interval; not one per attempt.
  await until('the summaries', () => summed(lines, 'authentication failed: API token') === 10);
  const failed = lines.filter((l) => l.msg.startsWith('authentication failed'));
  assert.equal(failed[0].source, '10.0.0.1');
  assert.ok(failed.length <= 3, `${failed.length} lines for 10 failures`);
  assert.deepEqual(failed[1].top[0].source, '10.0.0.1');
  await until('the refusals summed', () => summed(lines, 'request refused: client blocked') === 191);
  const security = lines.filter((l) => l.msg !== 'request');
  assert.ok(security.length <= 8, `${security.length} security lines for 200 attempts: ${JSON.stringify(security.map((l) => l.msg))}`);
  // Nor one access line per refused request: the summaries stand for them.
  assert.equal(lines.filter((l) => l.msg === 'request' && l.statusCode === 429).length, 0);
  for (const l of lines) assert.ok(!JSON.stringify(l).includes('ept_wrong'), 'no credential in the log');

  // The block lifts after blockMs; failing again blocks for twice as long.
  t.clock.ms += 61_000;
  assert.equal((await from('10.0.0.1', ADMIN_TOKEN)).statusCode, 200);
  for (let i = 0; i < 10; i++) assert.equal((await from('10.0.0.1', 'ept_again')).statusCode, 401);
  assert.equal((await from('10.0.0.1', ADMIN_TOKEN)).statusCode, 429);
  t.clock.ms += 61_000;
  const still = await from('10.0.0.1', ADMIN_TOKEN);
  assert.equal(still.statusCode, 429, 'the second block lasts twice as long');
  assert.ok(Number(still.headers['retry-after']) > 50);
  t.clock.ms += 60_000;
  assert.equal((await from('10.0.0.1', ADMIN_TOKEN)).statusCode, 200);
});

test('finding 5: wrong enrollment tokens are throttled the same way; a blocked client cannot burn a good token', async () => {
  const lines: Record<string, any>[] = [];
  const app = await appWith({ authFailures: STRICT_FAILURES, logDigestMs: 200 }, lines);
  const enroll = (remoteAddress: string, token: string) => app.inject({
    method: 'POST', url: '/v1/enroll', remoteAddress, payload: { v: PROTOCOL_VERSION, token, publicKey: generateKeyPair().publicKey, facts },
  });
  const codes: string[] = [];
  for (let i = 0; i < 100; i++) codes.push(json(await enroll('10.0.1.1', `enr_wrong-${i}`)).error.code);
  assert.deepEqual(codes.slice(0, 10), Array(10).fill('ENROLLMENT_TOKEN_INVALID'));
  assert.deepEqual(codes.slice(10), Array(90).fill('RATE_LIMITED'));
  const good = json(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN, payload: {} })).token as string;
  const blocked = await enroll('10.0.1.1', good);
  assert.equal(errorOf(blocked, 429), 'RATE_LIMITED');
  assert.ok(Number(blocked.headers['retry-after']) >= 1);
  assert.equal((await enroll('10.0.1.2', good)).statusCode, 201, 'the token was not looked at, so it still works');
  await until('the summaries', () => summed(lines, 'authentication failed: enrollment token') === 10);
  assert.ok(lines.filter((l) => l.msg.startsWith('authentication failed: enrollment token')).length <= 3);
  for (const l of lines) assert.ok(!JSON.stringify(l).includes('enr_wrong'), 'no token in the log');
});

test('POST /v1/enroll has a per-IP rate limit in our error shape', async () => {
  const app = await appWith({ enrollPerMinute: 3 });
  const enroll = (remoteAddress: string) => app.inject({ method: 'POST', url: '/v1/enroll', remoteAddress, payload: { v: PROTOCOL_VERSION, token: 'enr_x', facts: {} } });
  for (let i = 0; i < 3; i++) assert.equal(errorOf(await enroll('10.0.2.1'), 400), 'VALIDATION_FAILED');
  const res = await enroll('10.0.2.1');
  assert.equal(errorOf(res, 429), 'RATE_LIMITED');
  assert.ok(Number(res.headers['retry-after']) >= 1);
  assert.equal(errorOf(await enroll('10.0.2.2'), 400), 'VALIDATION_FAILED', 'per IP');
});

test('each token has a request rate; over it is 429 with Retry-After, and other tokens go on', async () => {
  const app = await appWith({ requestsPerMinutePerToken: 5 });
  const mk = async (name: string) => json(await app.inject({ method: 'POST', url: '/v1/tokens', headers: ADMIN, payload: { name, role: 'viewer' } })).secret as string;
  const a = await mk('busy');
  const b = await mk('quiet');
  for (let i = 0; i < 5; i++) assert.equal((await app.inject({ url: '/v1/models', headers: { authorization: `Bearer ${a}` } })).statusCode, 200);
  const over = await app.inject({ url: '/v1/models', headers: { authorization: `Bearer ${a}` } });
  assert.equal(errorOf(over, 429), 'RATE_LIMITED');
  assert.ok(Number(over.headers['retry-after']) >= 1);
  assert.equal((await app.inject({ url: '/v1/models', headers: { authorization: `Bearer ${b}` } })).statusCode, 200);
});

test('a JSON body nested 10,000 deep is refused with BODY_TOO_DEEP, brackets inside strings do not count, and nothing crashes', async () => {
  const app = await appWith({ maxJsonDepth: 32 });
  const post = (payload: string) => app.inject({ method: 'POST', url: '/v1/rollouts', headers: { ...ADMIN, 'content-type': 'application/json' }, payload });
  assert.equal(errorOf(await post(`${'['.repeat(10_000)}${']'.repeat(10_000)}`), 400), 'BODY_TOO_DEEP');
  assert.equal(errorOf(await post(`${'{"a":'.repeat(10_000)}1${'}'.repeat(10_000)}`), 400), 'BODY_TOO_DEEP');
  assert.equal(errorOf(await post(`{"buildId":"b","target":{"tags":[${'['.repeat(40)}]}}`), 400), 'BODY_TOO_DEEP', 'deep inside a valid-looking body');
  // Brackets in a string are text, not nesting: this body is shallow and gets as far as validation.
  assert.equal(errorOf(await post(JSON.stringify({ buildId: 'b', target: { tags: ['['.repeat(5000) + '\\"{'.repeat(100)] } })), 400), 'VALIDATION_FAILED');
  // Prototype poisoning is still refused as Fastify refuses it.
  assert.equal(errorOf(await post('{"__proto__":{"x":1},"buildId":"b","target":{}}'), 400), 'BODY_INVALID');
  assert.equal((await app.inject({ url: '/v1/health' })).statusCode, 200);
});

test('a query string over the limit is 414 QUERY_TOO_LONG; one over Node\'s header limit is 431 in our error shape', async () => {
  const app = await appWith({ maxQueryBytes: 2048 });
  assert.equal(errorOf(await app.inject({ url: `/v1/devices?tag=${'x'.repeat(3000)}`, headers: ADMIN }), 414), 'QUERY_TOO_LONG');
  assert.equal((await app.inject({ url: `/v1/devices?tag=${'x'.repeat(60)}`, headers: ADMIN })).statusCode, 200);
  // Over the request line and header limit (Node's 16 KiB): answered before Fastify, still in our format.
  await app.listen({ host: '127.0.0.1', port: 0 });
  const port = (app.server.address() as { port: number }).port;
  for (const request of [`GET /v1/devices?tag=${'x'.repeat(20_000)} HTTP/1.1\r\nHost: a\r\n\r\n`, `GET /v1/health HTTP/1.1\r\nHost: a\r\nX-Big: ${'y'.repeat(20_000)}\r\n\r\n`]) {
    const raw = await new Promise<string>((resolve, reject) => {
      const s = connect(port, '127.0.0.1');
      let data = '';
      s.setEncoding('utf8');
      s.on('data', (d) => { data += d; });
      s.on('error', reject);
      s.on('close', () => resolve(data));
      s.end(request);
    });
    const [head = '', body = ''] = raw.split('\r\n\r\n');
    assert.match(head, /^HTTP\/1\.1 431 /);
    assert.match(head, /content-type: application\/json/i);
    assert.deepEqual(JSON.parse(body).error.code, 'HEADERS_TOO_LARGE');
  }
  assert.equal((await fetch(`http://127.0.0.1:${port}/v1/health`)).status, 200);
});

test('finding 6: two concurrent uploads of one name and version answer 201 and 409 MODEL_EXISTS with our own message', async () => {
  const app = await appWith({});
  const model = Buffer.from(buildTinyMlpModel({ seed: 77 }));
  const up = () => app.inject({ method: 'POST', url: '/v1/models?name=race&version=1', headers: { ...ADMIN, 'content-type': 'application/octet-stream' }, payload: model });
  const results = await Promise.all([up(), up(), up()]);
  const statuses = results.map((r) => r.statusCode).sort();
  assert.deepEqual(statuses, [201, 409, 409], results.map((r) => r.body).join('\n'));
  for (const r of results.filter((x) => x.statusCode === 409)) {
    assert.equal(errorOf(r, 409), 'MODEL_EXISTS');
    assert.doesNotMatch(r.body, /SQLITE|UNIQUE|constraint|models\.name/i, 'no SQL in the answer');
    assert.match(json(r).error.message, /model race@1 already exists/);
  }
});

test('finding 6: a bundle file whose blob is missing answers a logged 500 BLOB_MISSING, not Fastify\'s unlogged payload error', async () => {
  const lines: Record<string, any>[] = [];
  const app = await appWith({}, lines);
  const gone = 'e'.repeat(64);
  t.store.insertModel({ id: 'mdl_gone', name: 'gone', version: '1', sha256: gone, sizeBytes: 10, format: 'onnx', opset: 13, inputs: [], outputs: [], details: {}, createdAt: '2026-01-01T00:00:00.000Z' });
  t.store.insertBuild({ id: 'bld_gone', modelId: 'mdl_gone', profiles: ['x86-64-gateway'], options: {}, createdAt: '2026-01-01T00:00:00.000Z' });
  const manifest: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId: 'bdl_gone', model: { name: 'gone', version: '1', sha256: gone }, profile: 'x86-64-gateway', format: 'onnx', precision: 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: gone, length: 10 }], io: { inputs: [], outputs: [] }, golden: { file: 'model.onnx', count: 0, maxAbsError: 0 },
    runtime: { name: 'onnxruntime', executionProviders: ['cpu'] }, acceptance: {}, createdAt: '2026-01-01T00:00:00.000Z', expiresAt: '2099-01-01T00:00:00.000Z', keyId: 'k',
  };
  t.store.insertBundle({ id: 'bdl_gone', buildId: 'bld_gone', profile: 'x86-64-gateway', manifest, signature: 'x', createdAt: '2026-01-01T00:00:00.000Z' });
  for (const headers of [ADMIN, { ...ADMIN, range: 'bytes=0-3' }]) {
    const res = await app.inject({ url: '/v1/bundles/bdl_gone/files/model.onnx', headers });
    assert.equal(errorOf(res, 500), 'BLOB_MISSING');
    assert.doesNotMatch(res.body, new RegExp(t.dir.replace(/[/\\.]/g, '\\$&')), 'no server path in the answer');
    const logged = lines.find((l) => l.level === 50 && l.reqId === res.headers['x-request-id']);
    assert.ok(logged, 'logged at error level under the request id');
    assert.equal(logged.code, 'BLOB_MISSING');
  }
  assert.equal((await app.inject({ url: '/v1/health' })).statusCode, 200);
});
