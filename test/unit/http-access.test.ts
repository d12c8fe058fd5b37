// Who may do what: API tokens in the token table (stored hashed, with a role, an expiry and
// revocation), each role against a representative set of routes, and the audit log of every
// mutating call. Real SQLite, real app, driven with inject(); the clock is the app's own.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { ERROR_CATALOGUE, createDeviceCredential, generateKeyPair, type DeviceFacts, type ErrorCode } from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { ADMIN, ADMIN_TOKEN, testDeps, type TestDeps } from '../support/http-app.js';

let t: TestDeps;
let app: FastifyInstance;
const lines: string[] = [];
const secrets: string[] = [];
const deviceKeys = generateKeyPair();

const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);
const bearer = (secret: string) => ({ authorization: `Bearer ${secret}` });

function errorOf(res: LightMyRequestResponse, status: number): string {
  assert.equal(res.statusCode, status, res.body);
  const code = json(res).error.code as ErrorCode;
  assert.equal(ERROR_CATALOGUE[code].status, status);
  return code;
}

const facts: DeviceFacts = {
  arch: 'x86_64', platform: 'linux', cpuModel: 'x', cores: 4, ramBytes: 8e9, cpuFlags: [], accelerators: [],
  runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0',
};

async function createToken(body: Record<string, unknown>, headers = ADMIN): Promise<{ id: string; secret: string; res: LightMyRequestResponse }> {
  const res = await app.inject({ method: 'POST', url: '/v1/tokens', headers, payload: body });
  if (res.statusCode !== 201) return { id: '', secret: '', res };
  const b = json(res);
  secrets.push(b.secret);
  return { id: b.token.id, secret: b.secret, res };
}

let tokens: Record<'admin' | 'operator' | 'viewer' | 'device', string>;

before(async () => {
  t = await testDeps('access');
  app = buildApp({ ...t.deps, logger: createLogger('trace', { write: (l: string) => { lines.push(l); } }) });
  await app.ready();
  t.store.insertDevice({ id: 'dev_own', name: 'own', profile: 'x86-64-gateway', publicKey: deviceKeys.publicKey, tags: [], facts, createdAt: '2026-01-01T00:00:00.000Z' });
  t.store.insertDevice({ id: 'dev_other', name: 'other', profile: 'x86-64-gateway', publicKey: generateKeyPair().publicKey, tags: [], facts, createdAt: '2026-01-01T00:00:00.000Z' });
  tokens = {
    admin: (await createToken({ name: 'second admin', role: 'admin' })).secret,
    operator: (await createToken({ name: 'ci pipeline', role: 'operator' })).secret,
    viewer: (await createToken({ name: 'dashboard', role: 'viewer' })).secret,
    device: (await createToken({ name: 'own device tool', role: 'device', deviceId: 'dev_own' })).secret,
  };
});

after(async () => {
  await app?.close();
  await t?.close();
});

test('a token is created with a role, its secret is shown once and is high-entropy, and the list never shows secrets', async () => {
  const { res, secret, id } = await createToken({ name: 'shown once', role: 'viewer', ttlSec: 3600 });
  assert.equal(res.statusCode, 201, res.body);
  const body = json(res);
  assert.deepEqual(Object.keys(body).sort(), ['secret', 'token']);
  assert.match(secret, /^ept_[A-Za-z0-9_-]{43}$/, '32 random bytes');
  assert.deepEqual(
    { name: body.token.name, role: body.token.role, deviceId: body.token.deviceId, createdAt: body.token.createdAt, expiresAt: body.token.expiresAt, revokedAt: body.token.revokedAt, lastUsedAt: body.token.lastUsedAt },
    { name: 'shown once', role: 'viewer', deviceId: null, createdAt: new Date(t.clock.ms).toISOString(), expiresAt: new Date(t.clock.ms + 3600_000).toISOString(), revokedAt: null, lastUsedAt: null },
  );
  assert.ok(body.token.createdBy, 'made by an admin token, named by id');
  // The list pages like every list, and holds no secret of any token.
  const list = await app.inject({ url: '/v1/tokens?limit=2', headers: ADMIN });
  assert.equal(list.statusCode, 200);
  assert.equal(json(list).tokens.length, 2);
  assert.equal(typeof json(list).next, 'string');
  const all: any[] = [];
  let cursor: string | null = null;
  do {
    const page: LightMyRequestResponse = await app.inject({ url: `/v1/tokens?limit=3${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`, headers: ADMIN });
    all.push(...json(page).tokens);
    for (const s of [...secrets, ADMIN_TOKEN]) assert.ok(!page.body.includes(s), 'no secret in the list');
    assert.ok(!/token_?hash|tokenHash/i.test(page.body), 'nor their hashes');
    cursor = json(page).next;
  } while (cursor);
  assert.ok(all.some((x) => x.id === id));
  // The admin-token file's token is one row: role admin, never expires.
  const file = all.find((x) => x.name === 'admin-token file');
  assert.equal(file.role, 'admin');
  assert.equal(file.expiresAt, null);
  assert.equal(file.createdBy, null);
  assert.deepEqual(new Set(json(await app.inject({ url: '/v1/tokens?role=device', headers: ADMIN })).tokens.map((x: any) => x.role)), new Set(['device']));
});

test('a device token needs a live device; other roles take none', async () => {
  assert.equal(errorOf((await createToken({ name: 'x', role: 'device' })).res, 400), 'VALIDATION_FAILED');
  assert.equal(errorOf((await createToken({ name: 'x', role: 'device', deviceId: 'dev_nope' })).res, 404), 'DEVICE_NOT_FOUND');
  assert.equal(errorOf((await createToken({ name: 'x', role: 'viewer', deviceId: 'dev_own' })).res, 400), 'VALIDATION_FAILED');
  assert.equal(errorOf((await createToken({ name: 'x', role: 'superuser' })).res, 400), 'VALIDATION_FAILED');
  assert.equal(errorOf((await createToken({ name: 'x', role: 'viewer', ttlSec: 10 * 365 * 86400 })).res, 400), 'VALIDATION_FAILED');
});

/** [method, url, body] → the status each role gets; 403 is the access hook's refusal, anything else means it let the call through. */
const MATRIX: { call: [string, string, unknown?]; admin: number; operator: number; viewer: number; device: number }[] = [
  { call: ['GET', '/v1/devices'], admin: 200, operator: 200, viewer: 200, device: 403 },
  { call: ['GET', '/v1/devices/dev_own'], admin: 200, operator: 200, viewer: 200, device: 200 },
  // A device learns nothing of other devices, not even that they exist.
  { call: ['GET', '/v1/devices/dev_other'], admin: 200, operator: 200, viewer: 200, device: 404 },
  { call: ['PATCH', '/v1/devices/dev_other', { name: 'renamed' }], admin: 200, operator: 403, viewer: 403, device: 403 },
  { call: ['DELETE', '/v1/devices/dev_nope'], admin: 404, operator: 403, viewer: 403, device: 403 },
  { call: ['POST', '/v1/enrollment-tokens', {}], admin: 201, operator: 403, viewer: 403, device: 403 },
  { call: ['GET', '/v1/models'], admin: 200, operator: 200, viewer: 200, device: 403 },
  { call: ['POST', '/v1/builds', { modelId: 'mdl_nope' }], admin: 404, operator: 404, viewer: 403, device: 403 },
  { call: ['GET', '/v1/builds'], admin: 200, operator: 200, viewer: 200, device: 403 },
  { call: ['POST', '/v1/rollouts', { buildId: 'bld_nope', target: {} }], admin: 404, operator: 404, viewer: 403, device: 403 },
  { call: ['GET', '/v1/rollouts'], admin: 200, operator: 200, viewer: 200, device: 403 },
  { call: ['GET', '/v1/bundles/bdl_nope'], admin: 404, operator: 404, viewer: 404, device: 403 },
  { call: ['POST', '/v1/tokens', { name: 'x', role: 'viewer' }], admin: 201, operator: 403, viewer: 403, device: 403 },
  { call: ['GET', '/v1/tokens'], admin: 200, operator: 403, viewer: 403, device: 403 },
  { call: ['DELETE', '/v1/tokens/tok_nope'], admin: 404, operator: 403, viewer: 403, device: 403 },
  { call: ['GET', '/v1/audit'], admin: 200, operator: 403, viewer: 403, device: 403 },
];

test('each role gets what its routes allow and 403 FORBIDDEN for the rest', async () => {
  for (const row of MATRIX) {
    const [method, url, body] = row.call;
    for (const role of ['admin', 'operator', 'viewer', 'device'] as const) {
      const res = await app.inject({ method: method as 'GET', url, headers: bearer(tokens[role]), ...(body === undefined ? {} : { payload: body as object }) });
      if (res.statusCode === 201 && url === '/v1/tokens') secrets.push(json(res).secret);
      assert.equal(res.statusCode, row[role], `${role} ${method} ${url}: ${res.body}`);
      if (row[role] === 403 && !(role === 'device' && url.startsWith('/v1/bundles'))) assert.equal(json(res).error.code, 'FORBIDDEN', `${role} ${method} ${url}`);
    }
  }
  // The upload an operator runs, for real: a model goes in.
  const up = await app.inject({ method: 'POST', url: '/v1/models?name=by-operator&version=1', headers: { ...bearer(tokens.operator), 'content-type': 'application/octet-stream' }, payload: Buffer.from(buildTinyMlpModel({ seed: 3 })) });
  assert.equal(up.statusCode, 201, up.body);
  const viewerUp = await app.inject({ method: 'POST', url: '/v1/models?name=by-viewer&version=1', headers: { ...bearer(tokens.viewer), 'content-type': 'application/octet-stream' }, payload: Buffer.from(buildTinyMlpModel({ seed: 4 })) });
  assert.equal(errorOf(viewerUp, 403), 'FORBIDDEN');
  // A device's own credential reaches what a device token does, and no more.
  const own = { authorization: `Device dev_own:${createDeviceCredential('dev_own', deviceKeys.secretKey, new Date(t.clock.ms), 'http')}` };
  assert.equal((await app.inject({ url: '/v1/devices/dev_own', headers: own })).statusCode, 200);
  assert.equal(errorOf(await app.inject({ url: '/v1/devices/dev_other', headers: own }), 404), 'DEVICE_NOT_FOUND');
  assert.equal(errorOf(await app.inject({ url: '/v1/devices', headers: own }), 401), 'UNAUTHORIZED', 'a device credential is no credential where devices are not let in');
});

test('an expired token and a revoked one answer 401 with their own codes; an unknown one 401 UNAUTHORIZED', async () => {
  const short = await createToken({ name: 'short-lived', role: 'viewer', ttlSec: 60 });
  assert.equal((await app.inject({ url: '/v1/devices', headers: bearer(short.secret) })).statusCode, 200);
  t.clock.ms += 61_000;
  try {
    assert.equal(errorOf(await app.inject({ url: '/v1/devices', headers: bearer(short.secret) }), 401), 'TOKEN_EXPIRED');
  } finally {
    t.clock.ms -= 61_000;
  }
  const doomed = await createToken({ name: 'doomed', role: 'operator' });
  assert.equal((await app.inject({ url: '/v1/models', headers: bearer(doomed.secret) })).statusCode, 200);
  assert.equal((await app.inject({ method: 'DELETE', url: `/v1/tokens/${doomed.id}`, headers: ADMIN })).statusCode, 204);
  assert.equal(errorOf(await app.inject({ url: '/v1/models', headers: bearer(doomed.secret) }), 401), 'TOKEN_REVOKED');
  const listed = json(await app.inject({ url: '/v1/tokens?revoked=true&limit=200', headers: ADMIN })).tokens.find((x: any) => x.id === doomed.id);
  assert.equal(listed.revokedAt, new Date(t.clock.ms).toISOString());
  assert.equal(json(await app.inject({ url: '/v1/tokens?limit=200', headers: ADMIN })).tokens.some((x: any) => x.id === doomed.id), false, 'revoked tokens are left out by default');
  assert.equal(errorOf(await app.inject({ url: '/v1/models', headers: bearer(`${doomed.secret}x`) }), 401), 'UNAUTHORIZED');
  assert.equal(errorOf(await app.inject({ url: '/v1/models', headers: bearer('ept_guess') }), 401), 'UNAUTHORIZED');
  // A device token dies with its device.
  t.store.insertDevice({ id: 'dev_gone', name: 'gone', profile: 'x86-64-gateway', publicKey: generateKeyPair().publicKey, tags: [], facts, createdAt: '2026-01-01T00:00:00.000Z' });
  const dt = await createToken({ name: 'gone device', role: 'device', deviceId: 'dev_gone' });
  assert.equal((await app.inject({ url: '/v1/devices/dev_gone', headers: bearer(dt.secret) })).statusCode, 200);
  assert.equal((await app.inject({ method: 'DELETE', url: '/v1/devices/dev_gone', headers: ADMIN })).statusCode, 204);
  assert.equal(errorOf(await app.inject({ url: '/v1/devices/dev_gone', headers: bearer(dt.secret) }), 401), 'TOKEN_REVOKED');
});

test('lastUsedAt records use (at most once a minute), and revoking the last usable admin token is refused', async () => {
  const v = await createToken({ name: 'used', role: 'viewer' });
  const find = async () => json(await app.inject({ url: '/v1/tokens?limit=200', headers: ADMIN })).tokens.find((x: any) => x.id === v.id);
  assert.equal((await find()).lastUsedAt, null);
  await app.inject({ url: '/v1/devices', headers: bearer(v.secret) });
  assert.equal((await find()).lastUsedAt, new Date(t.clock.ms).toISOString());

  // A fresh database: the admin-token file's token and one more admin.
  const other = await testDeps('access-last');
  const a = buildApp(other.deps);
  try {
    const second = json(await a.inject({ method: 'POST', url: '/v1/tokens', headers: ADMIN, payload: { name: 'second', role: 'admin' } }));
    const fileRow = json(await a.inject({ url: '/v1/tokens', headers: ADMIN })).tokens.find((x: any) => x.name === 'admin-token file');
    assert.equal((await a.inject({ method: 'DELETE', url: `/v1/tokens/${fileRow.id}`, headers: bearer(second.secret) })).statusCode, 204);
    assert.equal(errorOf(await a.inject({ url: '/v1/tokens', headers: ADMIN }), 401), 'TOKEN_REVOKED', 'the file token is revoked like any other');
    assert.equal(errorOf(await a.inject({ method: 'DELETE', url: `/v1/tokens/${second.token.id}`, headers: bearer(second.secret) }), 409), 'LAST_ADMIN_TOKEN');
    // A restart (a new app over the same database) does not bring the revoked file token back.
    const again = buildApp(other.deps);
    assert.equal(errorOf(await again.inject({ url: '/v1/tokens', headers: ADMIN }), 401), 'TOKEN_REVOKED');
    await again.close();
  } finally {
    await a.close();
    await other.close();
  }
});

test('the audit log holds every mutating call with who, what, target, when and result, failed ones too; GET is admin only and filters', async () => {
  const at = new Date(t.clock.ms).toISOString();
  const op = await createToken({ name: 'auditable operator', role: 'operator' });
  const created = json(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN, payload: {} }));
  assert.ok(created.token);
  await app.inject({ method: 'POST', url: '/v1/rollouts', headers: bearer(op.secret), payload: { buildId: 'bld_audit', target: {} } }); // 404
  await app.inject({ method: 'PATCH', url: '/v1/devices/dev_other', headers: bearer(op.secret), payload: { name: 'no' } }); // 403
  await app.inject({ method: 'PATCH', url: '/v1/devices/dev_other', headers: ADMIN, payload: { tags: ['audited'] } }); // 200
  await app.inject({ method: 'POST', url: '/v1/builds', headers: bearer('ept_wrong'), payload: { modelId: 'x' } }); // 401
  await app.inject({ method: 'GET', url: '/v1/devices', headers: ADMIN }); // not mutating: not audited

  const entries: any[] = json(await app.inject({ url: `/v1/audit?since=${encodeURIComponent(at)}&limit=200`, headers: ADMIN })).entries;
  const pick = (route: string, method: string) => entries.filter((e) => e.route === route && e.method === method);
  const tokenRow = pick('/v1/tokens', 'POST').find((e) => e.targetId === op.id);
  assert.ok(tokenRow, 'the created token is the target');
  assert.equal(tokenRow.actor.kind, 'token');
  assert.equal(tokenRow.actor.role, 'admin');
  assert.equal(tokenRow.actor.name, 'admin-token file');
  assert.equal(tokenRow.status, 201);
  assert.equal(tokenRow.code, null);
  assert.match(tokenRow.requestId, /^req_/);
  assert.equal(tokenRow.ip, '127.0.0.1');
  assert.equal(tokenRow.at, at);
  const rollout = pick('/v1/rollouts', 'POST').find((e) => e.actor.id === op.id);
  assert.deepEqual({ actor: rollout.actor, status: rollout.status, code: rollout.code }, { actor: { kind: 'token', id: op.id, name: 'auditable operator', role: 'operator' }, status: 404, code: 'BUILD_NOT_FOUND' });
  const patches = pick('/v1/devices/:id', 'PATCH').filter((e) => e.targetId === 'dev_other' && (e.actor.id === op.id || e.actor.name === 'admin-token file'));
  assert.deepEqual(patches.slice(-2).map((e) => [e.actor.role, e.status, e.code]), [['operator', 403, 'FORBIDDEN'], ['admin', 200, null]], 'in the order they were made');
  const anon = pick('/v1/builds', 'POST').find((e) => e.actor.kind === 'anonymous');
  assert.deepEqual({ actor: anon.actor, status: anon.status, code: anon.code }, { actor: { kind: 'anonymous', id: null, name: null, role: null }, status: 401, code: 'UNAUTHORIZED' });
  assert.ok(!entries.some((e) => e.method === 'GET'), 'reads are not audited');
  for (const s of secrets) assert.ok(!JSON.stringify(entries).includes(s), 'no secret in the audit log');

  // Filters: actor, target, time; and pages.
  const byActor = json(await app.inject({ url: `/v1/audit?actor=${op.id}`, headers: ADMIN })).entries;
  assert.deepEqual(byActor.map((e: any) => e.status), [404, 403]);
  const byTarget = json(await app.inject({ url: '/v1/audit?target=dev_other&limit=200', headers: ADMIN })).entries;
  assert.ok(byTarget.length >= 2 && byTarget.every((e: any) => e.targetId === 'dev_other'));
  assert.deepEqual(json(await app.inject({ url: `/v1/audit?until=${encodeURIComponent(at)}&actor=${op.id}`, headers: ADMIN })).entries, []);
  const page = json(await app.inject({ url: `/v1/audit?since=${encodeURIComponent(at)}&limit=2`, headers: ADMIN }));
  assert.equal(page.entries.length, 2);
  const page2 = json(await app.inject({ url: `/v1/audit?since=${encodeURIComponent(at)}&limit=2&cursor=${encodeURIComponent(page.next)}`, headers: ADMIN }));
  assert.notEqual(page2.entries[0].id, page.entries[0].id);
  assert.deepEqual(page2.entries[0], entries[2]);
  assert.equal(errorOf(await app.inject({ url: '/v1/audit?since=yesterday', headers: ADMIN }), 400), 'VALIDATION_FAILED');
});

test('a failed audit write is logged and changes nothing about the answer', async () => {
  const other = await testDeps('audit-fail');
  const seen: string[] = [];
  const a = buildApp({ ...other.deps, logger: createLogger('info', { write: (l: string) => { seen.push(l); } }) });
  try {
    // A real SQLite failure on every audit insert.
    other.db.exec("CREATE TRIGGER audit_fails BEFORE INSERT ON audit_log BEGIN SELECT RAISE(ABORT, 'audit store unavailable'); END");
    const res = await a.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: ADMIN, payload: {} });
    assert.equal(res.statusCode, 201, res.body);
    assert.ok(json(res).token);
    const err = seen.map((l) => JSON.parse(l)).find((l) => l.msg.startsWith('audit row could not be written'));
    assert.ok(err, 'the failure is logged');
    assert.equal(err.level, 50);
    assert.equal(err.audit.route, '/v1/enrollment-tokens');
    assert.equal(err.audit.status, 201);
    assert.match(err.err.message, /audit store unavailable/);
  } finally {
    await a.close();
    await other.close();
  }
});

test('token secrets never reach the log or the database', async () => {
  // Refusals of a real secret with a byte changed, and the summary lines they make.
  for (const s of secrets.slice(0, 3)) await app.inject({ url: '/v1/devices', headers: bearer(`${s.slice(0, -1)}Q`) });
  await app.close();
  const all = lines.join('\n');
  assert.ok(lines.length > 20, `${lines.length} log lines`);
  for (const s of [...secrets, ADMIN_TOKEN]) {
    assert.ok(!all.includes(s), 'a secret is in the log');
    assert.ok(!all.includes(s.slice(4, 20)), 'part of a secret is in the log');
  }
  assert.ok(all.includes('authentication failed'), 'failed authentication is logged (without the credential)');
  // SQLite holds only hashes: neither the main file nor its WAL contains a secret.
  const files = (await readdir(t.dir)).filter((f) => f.startsWith('edgepack.db'));
  assert.ok(files.length >= 1);
  for (const f of files) {
    const bytes = (await readFile(path.join(t.dir, f))).toString('latin1');
    for (const s of [...secrets, ADMIN_TOKEN]) assert.ok(!bytes.includes(s), `${f} holds a secret`);
  }
});
