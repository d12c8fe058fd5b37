// The orchestrator's one logger (pino) as Fastify's logger instance: a failing route handler
// is logged once with its stack under the request's id, the client gets that id back, and the
// admin token never reaches the log. Real SQLite, real app, driven with inject().
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { loadProfiles } from '@edgepack/firmware-profiles';
import { generateKeyPair, keyId } from '@edgepack/protocol';
import { openDatabase, type Db } from '@edgepack/orchestrator/db/database.js';
import { Store } from '@edgepack/orchestrator/db/store.js';
import { BlobStore } from '@edgepack/orchestrator/blob-store.js';
import { BuildQueue } from '@edgepack/orchestrator/build/build-queue.js';
import { createServices } from '@edgepack/orchestrator/services/wiring.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { telemetryAppDeps } from '../support/telemetry-deps.js';
import { buildApp } from '@edgepack/orchestrator/http/app.js';

const ADMIN = 'ept_logging-test-admin-token';
const lines: Record<string, any>[] = [];
let dir: string;
let db: Db;
let app: FastifyInstance;
let builds: BuildQueue;

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-logging-'));
  db = openDatabase(path.join(dir, 'edgepack.db'));
  const store = new Store(db);
  const blobs = new BlobStore(path.join(dir, 'blobs'));
  await blobs.init();
  const log = createLogger('info', { write: (line: string) => { lines.push(JSON.parse(line)); } });
  const kp = generateKeyPair();
  const now = () => new Date();
  builds = new BuildQueue({ store, blobs, profiles: loadProfiles(), signing: { ...kp, keyId: keyId(kp.publicKey) }, bundleTtlDays: 30, log, now });
  const config = { maxModelBytes: 1 << 20, heartbeatSec: 15, enrollmentTokenTtlSec: 3600, publicHost: 'x' };
  const services = createServices({
    db, store, log, now, signingSecretKey: kp.secretKey, signingPublicKey: kp.publicKey, profiles: loadProfiles(), config, mqttPort: () => 1883,
    publisher: { async publishDesired() {}, async clearDesired() {} },
  });
  app = buildApp({
    store, blobs, profiles: loadProfiles(), config, adminToken: ADMIN, signingPublicKey: kp.publicKey, mqttPort: () => 1883,
    rollouts: services.rollouts, devices: services.devices, builds, now, logger: log,
    ...telemetryAppDeps(db, store, now),
  });
  await app.ready();
});

after(async () => {
  await app?.close();
  await builds?.idle();
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('every response carries a request id; a plain id the client sent is kept', async () => {
  const mine = await app.inject({ method: 'GET', url: '/v1/health', headers: { 'x-request-id': 'client-trace-42' } });
  assert.equal(mine.headers['x-request-id'], 'client-trace-42');
  const made = await app.inject({ method: 'GET', url: '/v1/health', headers: { 'x-request-id': 'bad id\twith spaces' } });
  assert.match(String(made.headers['x-request-id']), /^req_[0-9a-f]{16}$/);
  const none = await app.inject({ method: 'GET', url: '/v1/nope' });
  assert.equal(none.statusCode, 404);
  assert.match(String(none.headers['x-request-id']), /^req_[0-9a-f]{16}$/);
});

test('an error inside a route handler reaches the log once, with its stack, under the id the response carries', async () => {
  // A real failure inside the handler: the database goes away under the API.
  db.close();
  const res = await app.inject({ method: 'GET', url: '/v1/devices', headers: { authorization: `Bearer ${ADMIN}` } });
  assert.equal(res.statusCode, 500);
  const id = String(res.headers['x-request-id']);
  const body = JSON.parse(res.body);
  assert.equal(body.error.code, 'INTERNAL_ERROR');
  assert.ok(body.error.message.includes(id), `the message names the request id: ${body.error.message}`);
  const errors = lines.filter((l) => l.level === 50 && l.reqId === id);
  assert.equal(errors.length, 1, `one error line for the request: ${JSON.stringify(errors)}`);
  assert.match(errors[0]!.err.stack, /database connection is not open[\s\S]*\n\s+at /, 'the stack is logged');
  assert.equal(errors[0]!.err.type, 'TypeError');
  const access = lines.filter((l) => l.reqId === id && l.msg === 'request');
  assert.equal(access.length, 1);
  assert.equal(access[0]!.statusCode, 500);
});

test('the admin token never reaches the log, even when a handler logs the request headers', () => {
  const seen: string[] = [];
  const log = createLogger('info', { write: (line: string) => { seen.push(line); } });
  log.info({ req: { headers: { authorization: `Bearer ${ADMIN}`, host: 'x' } } }, 'headers');
  log.info({ headers: { authorization: `Device dev_1:123.sig` } }, 'headers');
  assert.equal(seen.length, 2);
  for (const line of seen) {
    assert.ok(!line.includes(ADMIN) && !line.includes('123.sig'), line);
    assert.ok(line.includes('[redacted]'), line);
  }
  assert.ok(lines.length > 3);
  for (const l of lines) assert.ok(!JSON.stringify(l).includes(ADMIN), JSON.stringify(l));
});
