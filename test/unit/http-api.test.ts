// The HTTP API driven in-process with app.inject(): real SQLite, real blob store, real builds
// (onnxruntime-node computes the golden samples), real ed25519 signatures. Only the MQTT edge
// (publishDesired) is a recording stand-in.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import { loadProfiles } from '@edgepack/firmware-profiles';
import {
  PROTOCOL_VERSION,
  createDeviceCredential,
  createManifestVerifier,
  generateKeyPair,
  keyId,
  verifyCanonical, verifyDesiredSignature,
  type DesiredState,
  type DeviceFacts,
  type KeyPair,
} from '@edgepack/protocol';
import { openDatabase, type Db } from '@edgepack/orchestrator/db/database.js';
import { Store } from '@edgepack/orchestrator/db/store.js';
import { BlobStore } from '@edgepack/orchestrator/blob-store.js';
import { BuildQueue } from '@edgepack/orchestrator/build/build-queue.js';
import { createServices, type Services } from '@edgepack/orchestrator/services/wiring.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { telemetryAppDeps } from '../support/telemetry-deps.js';
import { buildApp, type AppDeps } from '@edgepack/orchestrator/http/app.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';

function findRepoRoot(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (existsSync(pkg) && existsSync(path.join(dir, 'tsconfig.base.json'))) return dir;
    const up = path.dirname(dir);
    if (up === dir) throw new Error('repo root not found');
    dir = up;
  }
}
const FASHION_CNN = path.join(path.resolve(findRepoRoot(), '../shared/models'), 'fashion_cnn.onnx');
const HAVE_FASHION = existsSync(FASHION_CNN);
const NO_FASHION = HAVE_FASHION ? false : `shared model missing: ${FASHION_CNN}`;

const ADMIN = 'ept_test-admin-token';
const AUTH = { authorization: `Bearer ${ADMIN}` };
const OCTET = { ...AUTH, 'content-type': 'application/octet-stream' };
const GiB = 1024 ** 3;

let dir: string;
let db: Db;
let store: Store;
let blobs: BlobStore;
let builds: BuildQueue;
let app: FastifyInstance;
let deps: AppDeps;
let signing: KeyPair & { keyId: string };
let clockMs = Date.parse('2026-06-01T12:00:00.000Z');
const now = () => new Date(clockMs);
const published: { deviceId: string; desired: DesiredState | null }[] = [];
let services: Services;
const revoked: string[] = [];

before(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-http-'));
  db = openDatabase(path.join(dir, 'edgepack.db'));
  store = new Store(db);
  blobs = new BlobStore(path.join(dir, 'blobs'));
  await blobs.init();
  const profiles = loadProfiles();
  const kp = generateKeyPair();
  signing = { ...kp, keyId: keyId(kp.publicKey) };
  const log = createLogger('error');
  builds = new BuildQueue({ store, blobs, profiles, signing, bundleTtlDays: 30, log, now });
  const config = { maxModelBytes: 64 << 20, heartbeatSec: 15, enrollmentTokenTtlSec: 3600, publicHost: 'orch.local' };
  services = createServices({
    db, store, log, now, signingSecretKey: signing.secretKey, signingPublicKey: signing.publicKey, profiles, config, mqttPort: () => 18830,
    publisher: {
      async publishDesired(deviceId, desired) { published.push({ deviceId, desired: JSON.parse(desired) as DesiredState }); },
      async clearDesired(deviceId) { published.push({ deviceId, desired: null }); },
    },
    sessions: { clearDesired: async () => undefined, disconnect: (id) => { revoked.push(id); } },
  });
  deps = {
    store, blobs, profiles, config, adminToken: ADMIN, signingPublicKey: signing.publicKey, mqttPort: () => 18830,
    rollouts: services.rollouts, devices: services.devices, builds, now,
    ...telemetryAppDeps(db, store, now),
    // This file checks which credentials are refused, dozens of times from one address; the
    // failed-authentication limit that would soon answer 429 instead has its own tests.
    limits: { authFailures: { maxFailures: 10_000, windowMs: 60_000, blockMs: 1000, maxBlockMs: 1000 } },
  };
  app = buildApp(deps);
  await app.ready();
});

after(async () => {
  await app?.close();
  await services?.engine.close();
  await builds?.idle();
  db?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

// --- helpers ---

function json(res: LightMyRequestResponse): any {
  return JSON.parse(res.body);
}

/** Asserts the uniform error shape and returns the code. */
function errorOf(res: LightMyRequestResponse, status: number): string {
  assert.equal(res.statusCode, status, res.body);
  const body = json(res);
  assert.deepEqual(Object.keys(body), ['error']);
  assert.deepEqual(Object.keys(body.error).sort(), ['code', 'message']);
  assert.equal(typeof body.error.code, 'string');
  assert.equal(typeof body.error.message, 'string');
  assert.ok(body.error.message.length > 0);
  return body.error.code;
}

function facts(over: Partial<DeviceFacts>): DeviceFacts {
  return {
    arch: 'arm64', platform: 'linux 6.6', cpuModel: 'unknown', cores: 4, ramBytes: 4 * GiB, cpuFlags: [], accelerators: [],
    runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0', ...over,
  };
}
const PI5 = facts({ cpuModel: 'Cortex-A76', cpuFlags: ['asimd', 'asimddp', 'fp'] });
const PI4 = facts({ cpuModel: 'Cortex-A72', cpuFlags: ['asimd', 'fp'], ramBytes: 3_900_000_000 });
const X86 = facts({ arch: 'x86_64', cpuModel: 'AMD EPYC', ramBytes: 16 * GiB, cpuFlags: ['avx2'] });
const CORAL = facts({ cpuModel: 'Cortex-A53', ramBytes: 1_003_000_000, cpuFlags: ['asimd'], accelerators: ['edgetpu'] });
const RISCV = facts({ arch: 'riscv64', cpuModel: 'SiFive U74' });

async function newToken(ttlSec?: number): Promise<string> {
  const res = await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: AUTH, payload: ttlSec ? { ttlSec } : {} });
  assert.equal(res.statusCode, 201, res.body);
  return json(res).token as string;
}

function enroll(token: string, f: DeviceFacts, extra: { name?: string; profile?: string; publicKey?: string } = {}) {
  return app.inject({
    method: 'POST', url: '/v1/enroll',
    payload: { v: PROTOCOL_VERSION, token, publicKey: extra.publicKey ?? generateKeyPair().publicKey, facts: f, ...extra },
  });
}

interface Enrolled { id: string; keys: KeyPair; profile: string }
async function enrollDevice(f: DeviceFacts, extra: { name?: string; profile?: string } = {}): Promise<Enrolled> {
  const keys = generateKeyPair();
  const res = await enroll(await newToken(), f, { ...extra, publicKey: keys.publicKey });
  assert.equal(res.statusCode, 201, res.body);
  const body = json(res);
  return { id: body.deviceId, keys, profile: body.profile };
}

function deviceAuth(d: Enrolled, at = now()) {
  return { authorization: `Device ${d.id}:${createDeviceCredential(d.id, d.keys.secretKey, at, 'http')}` };
}

function upload(name: string, version: string, payload: Buffer | Readable, headers: Record<string, string> = OCTET, target = app) {
  return target.inject({ method: 'POST', url: `/v1/models?name=${name}&version=${version}`, headers, payload });
}

async function blobFiles(): Promise<string[]> {
  return (await readdir(blobs.dir)).filter((n) => n !== 'tmp').sort();
}

// Shared state for the pipeline tests below (tests in a file run in order).
const devices: Record<string, Enrolled> = {};
let modelBytes: Buffer;
let modelId: string;
let buildId: string;
let bundleFor: Record<string, string> = {};

// --- authentication and error shape ---

test('health needs no credentials', async () => {
  const res = await app.inject({ url: '/v1/health' });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(json(res), { status: 'ok' });
});

test('401 UNAUTHORIZED without a bearer, with a wrong one, or with another scheme', async () => {
  for (const headers of [{}, { authorization: 'Bearer nope' }, { authorization: `Bearer ${ADMIN}x` }, { authorization: `Basic ${ADMIN}` }, { authorization: ADMIN }, { authorization: 'Bearer ' }]) {
    assert.equal(errorOf(await app.inject({ url: '/v1/devices', headers }), 401), 'UNAUTHORIZED', JSON.stringify(headers));
  }
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', payload: {} }), 401), 'UNAUTHORIZED');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', payload: { modelId: 'x' } }), 401), 'UNAUTHORIZED');
  assert.equal(errorOf(await app.inject({ url: '/v1/bundles/bdl_x' }), 401), 'UNAUTHORIZED');
});

test('errors share one shape: unknown route 404, validation 400', async () => {
  assert.equal(errorOf(await app.inject({ url: '/v1/no-such-thing', headers: AUTH }), 404), 'NOT_FOUND');
  assert.equal(errorOf(await app.inject({ url: '/v1/devices?status=sleeping', headers: AUTH }), 400), 'VALIDATION_FAILED');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/enrollment-tokens', headers: AUTH, payload: { ttlSec: 5 } }), 400), 'VALIDATION_FAILED');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/enroll', payload: { v: 1 } }), 400), 'VALIDATION_FAILED');
});

// --- enrollment ---

test('enrollment: a token enrolls one device, with the orchestrator key and MQTT endpoint in the answer', async () => {
  const token = await newToken();
  assert.match(token, /^enr_/);
  const keys = generateKeyPair();
  const res = await enroll(token, PI5, { name: 'kitchen-pi', publicKey: keys.publicKey });
  assert.equal(res.statusCode, 201, res.body);
  const body = json(res);
  assert.match(body.deviceId, /^dev_[0-9a-f]{16}$/);
  assert.equal(body.name, 'kitchen-pi');
  assert.equal(body.profile, 'raspberry-pi-5'); // matched from the facts
  assert.equal(body.orchestratorPublicKey, signing.publicKey);
  assert.deepEqual(body.mqtt, { host: 'orch.local', port: 18830 });
  assert.equal(body.heartbeatSec, 15);
  assert.equal(body.v, PROTOCOL_VERSION);
  devices.pi5 = { id: body.deviceId, keys, profile: body.profile };
  // stored with the public key it enrolled with
  assert.equal(store.getDevice(body.deviceId)?.publicKey, keys.publicKey);
});

test('enrollment: a token is single use (second enroll → 401 ENROLLMENT_TOKEN_INVALID)', async () => {
  const token = await newToken();
  assert.equal((await enroll(token, X86)).statusCode, 201);
  assert.equal(errorOf(await enroll(token, X86), 401), 'ENROLLMENT_TOKEN_INVALID');
  // …even when the second attempt names a profile
  assert.equal(errorOf(await enroll(token, X86, { profile: 'x86-64-gateway' }), 401), 'ENROLLMENT_TOKEN_INVALID');
});

test('enrollment: an unknown token is refused', async () => {
  assert.equal(errorOf(await enroll('enr_made-up', X86), 401), 'ENROLLMENT_TOKEN_INVALID');
});

test('enrollment: an expired token is refused', async () => {
  const token = await newToken(60);
  const saved = clockMs;
  try {
    clockMs += 61_000;
    assert.equal(errorOf(await enroll(token, X86), 401), 'ENROLLMENT_TOKEN_INVALID');
  } finally {
    clockMs = saved;
  }
});

test('enrollment: an unknown profile is 404 PROFILE_NOT_FOUND and does not burn the token', async () => {
  const token = await newToken();
  assert.equal(errorOf(await enroll(token, X86, { profile: 'cray-1' }), 404), 'PROFILE_NOT_FOUND');
  const ok = await enroll(token, X86, { profile: 'x86-64-gateway' });
  assert.equal(ok.statusCode, 201, ok.body);
});

test('enrollment: facts that match no profile give 422 PROFILE_NO_MATCH; an explicit profile overrides matching', async () => {
  const token = await newToken();
  assert.equal(errorOf(await enroll(token, RISCV), 422), 'PROFILE_NO_MATCH');
  const res = await enroll(token, RISCV, { profile: 'esp32-s3' });
  assert.equal(res.statusCode, 201, res.body);
  assert.equal(json(res).profile, 'esp32-s3');
  assert.ok(store.getDevice(json(res).deviceId));
});

test('enrollment: a public key that is not a 32-byte ed25519 key is refused and does not burn the token', async () => {
  const token = await newToken();
  for (const publicKey of ['not-a-key', Buffer.alloc(31).toString('base64'), Buffer.alloc(64).toString('base64')]) {
    const res = await enroll(token, X86, { publicKey });
    assert.equal(res.statusCode, 400, `${publicKey} → ${res.statusCode}`);
  }
  assert.equal((await enroll(token, X86)).statusCode, 201);
});

test('enrollment: automatic profile match per device kind', async () => {
  devices.pi4 = await enrollDevice(PI4, { name: 'pi4' });
  devices.x86 = await enrollDevice(X86, { name: 'gw' });
  devices.coral = await enrollDevice(CORAL, { name: 'coral' });
  assert.equal(devices.pi4.profile, 'raspberry-pi-4');
  assert.equal(devices.x86.profile, 'x86-64-gateway');
  assert.equal(devices.coral.profile, 'coral-dev-board');
});

// --- devices ---

test('devices: PATCH sets tags (deduplicated, sorted) and name; invalid tags are refused', async () => {
  const res = await app.inject({ method: 'PATCH', url: `/v1/devices/${devices.pi4!.id}`, headers: AUTH, payload: { tags: ['lab', 'floor1', 'lab'], name: 'pi4-lab' } });
  assert.equal(res.statusCode, 200, res.body);
  const d = json(res).device;
  assert.deepEqual(d.tags, ['floor1', 'lab']);
  assert.equal(d.name, 'pi4-lab');
  assert.equal(d.publicKey, undefined, 'public key is not exposed');
  await app.inject({ method: 'PATCH', url: `/v1/devices/${devices.pi5!.id}`, headers: AUTH, payload: { tags: ['lab'] } });
  assert.equal(errorOf(await app.inject({ method: 'PATCH', url: `/v1/devices/${devices.pi5!.id}`, headers: AUTH, payload: { tags: ['has space'] } }), 400), 'VALIDATION_FAILED');
  assert.equal(errorOf(await app.inject({ method: 'PATCH', url: '/v1/devices/dev_nope', headers: AUTH, payload: { tags: ['x'] } }), 404), 'DEVICE_NOT_FOUND');
  assert.deepEqual(store.getDevice(devices.pi5!.id)!.tags, ['lab']);
});

test('devices: GET /v1/devices filters by profile, tag and status', async () => {
  const list = async (qs: string) => {
    const res = await app.inject({ url: `/v1/devices${qs}`, headers: AUTH });
    assert.equal(res.statusCode, 200, res.body);
    return (json(res).devices as { id: string }[]).map((d) => d.id).sort();
  };
  const all = await list('');
  for (const d of Object.values(devices)) assert.ok(all.includes(d.id));
  assert.deepEqual(await list('?profile=raspberry-pi-4'), [devices.pi4!.id]);
  assert.deepEqual(await list('?tag=lab'), [devices.pi4!.id, devices.pi5!.id].sort());
  assert.deepEqual(await list('?tag=floor1&profile=raspberry-pi-5'), []);
  assert.deepEqual(await list('?tag=lab&profile=raspberry-pi-5'), [devices.pi5!.id]);
  assert.deepEqual(await list('?status=online'), []);
  store.markSeen(devices.x86!.id, now().toISOString());
  assert.deepEqual(await list('?status=online'), [devices.x86!.id]);
  assert.ok(!(await list('?status=offline')).includes(devices.x86!.id));
  assert.equal((await list('?status=offline')).length, all.length - 1);
});

test('devices: DELETE revokes (204), tells the broker side, then the device is 404 and out of the list', async () => {
  const victim = await enrollDevice(X86, { name: 'to-revoke' });
  const del = await app.inject({ method: 'DELETE', url: `/v1/devices/${victim.id}`, headers: AUTH });
  assert.equal(del.statusCode, 204, del.body);
  assert.deepEqual(revoked, [victim.id]);
  assert.equal(errorOf(await app.inject({ url: `/v1/devices/${victim.id}`, headers: AUTH }), 404), 'DEVICE_NOT_FOUND');
  assert.equal(errorOf(await app.inject({ method: 'DELETE', url: `/v1/devices/${victim.id}`, headers: AUTH }), 404), 'DEVICE_NOT_FOUND');
  const list = json(await app.inject({ url: '/v1/devices', headers: AUTH })).devices as { id: string }[];
  assert.ok(!list.some((d) => d.id === victim.id));
  devices.revoked = victim;
});

// --- models ---

test('models: fashion_cnn.onnx uploads → 201 with opset 13 and input shape [batch,1,28,28]', { skip: NO_FASHION }, async () => {
  const bytes = await readFile(FASHION_CNN);
  const res = await upload('fashion_cnn', '1.0.0', bytes);
  assert.equal(res.statusCode, 201, res.body);
  const m = json(res).model;
  assert.equal(m.format, 'onnx');
  assert.equal(m.opset, 13);
  assert.equal(m.sizeBytes, bytes.length);
  assert.equal(m.inputs.length, 1);
  assert.deepEqual(m.inputs[0].shape, ['batch', 1, 28, 28]);
  assert.equal(m.inputs[0].type, 'float32');
  assert.ok(m.outputs.length >= 1);
  // stored under its hash, byte for byte
  assert.deepEqual(await readFile(blobs.path(m.sha256)), bytes);
  const got = await app.inject({ url: `/v1/models/${m.id}`, headers: AUTH });
  assert.equal(json(got).model.sha256, m.sha256);
  modelBytes = bytes;
  modelId = m.id;
});

test('models: the tiny MLP uploads too (and stands in for fashion_cnn when the shared models are absent)', async () => {
  const bytes = Buffer.from(buildTinyMlpModel());
  const res = await upload('tiny', '1', bytes);
  assert.equal(res.statusCode, 201, res.body);
  const m = json(res).model;
  assert.deepEqual(m.inputs[0].shape, ['batch', 1, 28, 28]);
  assert.deepEqual(m.outputs[0].shape, ['batch', 10]);
  if (!modelId) {
    modelBytes = bytes;
    modelId = m.id;
  }
});

test('models: the same name and version again → 409 MODEL_EXISTS', async () => {
  assert.equal(errorOf(await upload('tiny', '1', Buffer.from(buildTinyMlpModel({ seed: 9 }))), 409), 'MODEL_EXISTS');
  const ok = await upload('tiny', '2', Buffer.from(buildTinyMlpModel({ seed: 9 })));
  assert.equal(ok.statusCode, 201, ok.body);
});

test('models: garbage bytes → 400 MODEL_INVALID and no blob kept', async () => {
  const before = await blobFiles();
  assert.equal(errorOf(await upload('junk', '1', Buffer.from('this is not a protobuf at all, just text'.repeat(10))), 400), 'MODEL_INVALID');
  assert.equal(errorOf(await upload('junk', '2', Buffer.from([0x08, 0x07, 0x12, 0x00])), 400), 'MODEL_INVALID');
  assert.deepEqual(await blobFiles(), before);
  assert.deepEqual(await readdir(path.join(blobs.dir, 'tmp')), []);
});

test('models: an empty upload → 400 MODEL_INVALID', async () => {
  assert.equal(errorOf(await upload('empty', '1', Buffer.alloc(0)), 400), 'MODEL_INVALID');
});

test('models: a wrong content type → 415 UNSUPPORTED_MEDIA_TYPE', async () => {
  const bytes = Buffer.from(buildTinyMlpModel());
  assert.equal(errorOf(await upload('ct', '1', bytes, { ...AUTH, 'content-type': 'application/x-onnx' }), 415), 'UNSUPPORTED_MEDIA_TYPE');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/models?name=ct&version=2', headers: AUTH, payload: { model: 'x' } }), 415), 'UNSUPPORTED_MEDIA_TYPE');
  assert.equal(errorOf(await upload('ct', '3', Buffer.from('abc'), { ...AUTH, 'content-type': 'text/plain' }), 415), 'UNSUPPORTED_MEDIA_TYPE');
});

test('models: bad name or version in the query → 400', async () => {
  assert.equal(errorOf(await upload('../etc', '1', Buffer.from('x')), 400), 'VALIDATION_FAILED');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/models?name=x', headers: OCTET, payload: Buffer.from('x') }), 400), 'VALIDATION_FAILED');
});

test('models: over the size limit → 413 PAYLOAD_TOO_LARGE, declared or streamed, with nothing left behind', async () => {
  const small = buildApp({ ...deps, config: { ...deps.config, maxModelBytes: 4096 } });
  try {
    const before = await blobFiles();
    const bytes = Buffer.from(buildTinyMlpModel({ seed: 3 }));
    assert.ok(bytes.length > 4096);
    // Content-Length declares it: refused before reading
    assert.equal(errorOf(await upload('big', '1', bytes, OCTET, small), 413), 'PAYLOAD_TOO_LARGE');
    // no Content-Length (streamed): refused while streaming. The blob store aborts the pipeline,
    // which destroys the request stream; light-my-request then rejects inject() with that error
    // instead of returning the 413 a real socket gets, so accept either, by code.
    const stream = Readable.from([bytes.subarray(0, 3000), bytes.subarray(3000, 6000), bytes.subarray(6000)]);
    let code: string | undefined;
    try {
      code = errorOf(await upload('big', '2', stream, OCTET, small), 413);
    } catch (err) {
      code = (err as { code?: string }).code;
    }
    assert.equal(code, 'PAYLOAD_TOO_LARGE');
    // the partial temp file is removed (allow the route's clean-up a moment to finish)
    const tmp = path.join(blobs.dir, 'tmp');
    for (let i = 0; i < 50 && (await readdir(tmp)).length > 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.deepEqual(await readdir(tmp), []);
    assert.deepEqual(await blobFiles(), before);
    assert.equal(store.findModel('big', '1'), undefined);
    assert.equal(store.findModel('big', '2'), undefined);
    // just under the limit goes through to the model check
    assert.equal(errorOf(await upload('big', '3', Buffer.alloc(4096, 1), OCTET, small), 400), 'MODEL_INVALID');
  } finally {
    await small.close();
  }
});

// --- builds ---

test('builds: unknown profile → 404 PROFILE_NOT_FOUND; unknown model → 404', async () => {
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: AUTH, payload: { modelId, profiles: ['raspberry-pi-4', 'amiga-500'] } }), 404), 'PROFILE_NOT_FOUND');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/builds', headers: AUTH, payload: { modelId: 'mdl_nope' } }), 404), 'MODEL_NOT_FOUND');
  assert.equal(errorOf(await app.inject({ url: '/v1/builds/bld_nope', headers: AUTH }), 404), 'BUILD_NOT_FOUND');
});

test('builds: POST → 202 queued with Location, then built for ONNX profiles and skipped with a reason for coral/esp32', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/builds', headers: AUTH, payload: { modelId } });
  assert.equal(res.statusCode, 202, res.body);
  const created = json(res).build;
  assert.equal(res.headers.location, `/v1/builds/${created.id}`);
  assert.equal(created.status, 'queued');
  assert.equal(created.artifacts.length, 6);
  for (const a of created.artifacts) assert.equal(a.status, 'pending');
  buildId = created.id;

  await builds.idle();
  const done = json(await app.inject({ url: `/v1/builds/${buildId}`, headers: AUTH })).build;
  assert.equal(done.status, 'succeeded', JSON.stringify(done));
  assert.ok(done.finishedAt);
  const by = Object.fromEntries((done.artifacts as any[]).map((a) => [a.profile, a]));
  for (const p of ['jetson-orin-nano', 'raspberry-pi-4', 'raspberry-pi-5', 'x86-64-gateway']) {
    assert.equal(by[p].status, 'built', `${p}: ${JSON.stringify(by[p])}`);
    assert.equal(by[p].format, 'onnx');
    assert.match(by[p].bundleId, /^bdl_/);
    bundleFor[p] = by[p].bundleId;
  }
  for (const p of ['coral-dev-board', 'esp32-s3']) {
    assert.equal(by[p].status, 'skipped', p);
    assert.equal(by[p].bundleId, null);
    assert.equal(typeof by[p].reason, 'string');
    assert.match(by[p].reason, /tflite/i);
  }
  // every bundle is distinct and signed by the orchestrator key
  assert.equal(new Set(Object.values(bundleFor)).size, 4);
  const b = json(await app.inject({ url: `/v1/bundles/${bundleFor['raspberry-pi-5']}`, headers: AUTH })).bundle;
  assert.equal(verifyCanonical(b.manifest, b.signature, signing.publicKey), true);
  assert.equal(b.manifest.profile, 'raspberry-pi-5');
  assert.equal(b.manifest.keyId, signing.keyId);
});

test('builds: a subset of profiles builds only those', async () => {
  const res = await app.inject({ method: 'POST', url: '/v1/builds', headers: AUTH, payload: { modelId, profiles: ['esp32-s3', 'esp32-s3'] } });
  assert.equal(res.statusCode, 202, res.body);
  await builds.idle();
  const b = json(await app.inject({ url: `/v1/builds/${json(res).build.id}`, headers: AUTH })).build;
  assert.deepEqual(b.artifacts.map((a: { profile: string }) => a.profile), ['esp32-s3']);
  // nothing could be built, so the build failed and says why
  assert.equal(b.status, 'failed');
  assert.ok(b.error);
});

// --- rollouts ---

test('rollouts: a build still queued → 409 BUILD_NOT_READY; unknown build → 404', async () => {
  store.insertBuild({ id: 'bld_queued0000000', modelId, profiles: ['x86-64-gateway'], options: {}, createdAt: now().toISOString() });
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: AUTH, payload: { buildId: 'bld_queued0000000', target: {} } }), 409), 'BUILD_NOT_READY');
  assert.equal(errorOf(await app.inject({ method: 'POST', url: '/v1/rollouts', headers: AUTH, payload: { buildId: 'bld_nope', target: {} } }), 404), 'BUILD_NOT_FOUND');
});

test('rollouts: unknown or revoked device ids → 404 DEVICE_NOT_FOUND; empty selection → 400 ROLLOUT_NO_TARGETS', async () => {
  const post = (target: object) => app.inject({ method: 'POST', url: '/v1/rollouts', headers: AUTH, payload: { buildId, target } });
  assert.equal(errorOf(await post({ deviceIds: ['dev_nope'] }), 404), 'DEVICE_NOT_FOUND');
  assert.equal(errorOf(await post({ deviceIds: [devices.revoked!.id] }), 404), 'DEVICE_NOT_FOUND');
  assert.equal(errorOf(await post({ tags: ['nobody-has-this'] }), 400), 'ROLLOUT_NO_TARGETS');
  assert.equal(published.length, 0, 'nothing published for refused rollouts');
});

test('rollouts: online devices are dispatched a signed desired state that verifies against the signing key; offline ones wait', async () => {
  const target = { deviceIds: [devices.pi4!.id, devices.pi5!.id, devices.x86!.id, devices.coral!.id] };
  // What the gateway does when devices connect; the coral stays offline and still counts (skipped: no bundle for it).
  for (const k of ['pi4', 'pi5', 'x86'] as const) services.rollouts.onPresence(devices[k]!.id, true);
  const res = await app.inject({ method: 'POST', url: '/v1/rollouts', headers: AUTH, payload: { buildId, target, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }] } });
  assert.equal(res.statusCode, 201, res.body);
  const r = json(res).rollout;
  assert.equal(r.status, 'running');
  assert.equal(r.buildId, buildId);
  assert.equal(r.staged, true);
  assert.deepEqual(r.waves.map((w: any) => [w.name, w.status]), [['all', 'open']]);
  const by = Object.fromEntries((r.devices as any[]).map((d) => [d.deviceId, d]));
  for (const k of ['pi4', 'pi5', 'x86'] as const) {
    const d = devices[k]!;
    assert.equal(by[d.id].outcome, 'dispatched', k);
    assert.equal(by[d.id].state, null, `${k}: nothing reported yet`);
    assert.equal(by[d.id].bundleId, bundleFor[d.profile], k);
  }
  // the coral has nothing built for it: skipped with the reason
  assert.equal(by[devices.coral!.id].outcome, 'skipped');
  assert.equal(by[devices.coral!.id].code, 'NO_ARTIFACT');
  assert.match(by[devices.coral!.id].reason, /coral-dev-board/);
  assert.deepEqual(r.counts, { dispatched: 3, skipped: 1 });

  // the MQTT edge saw exactly one desired state per dispatched device, and each verifies
  assert.deepEqual(published.map((p) => p.deviceId).sort(), [devices.pi4!.id, devices.pi5!.id, devices.x86!.id].sort());
  const verify = createManifestVerifier();
  for (const { deviceId, desired } of published) {
    assert.ok(desired);
    const d = Object.values(devices).find((x) => x.id === deviceId)!;
    assert.equal(desired.v, PROTOCOL_VERSION);
    assert.equal(desired.deviceId, deviceId);
    assert.equal(desired.rolloutId, r.id);
    assert.equal(desired.seq, 1);
    assert.equal(desired.bundle.manifest.bundleId, bundleFor[d.profile]);
    assert.equal(verifyCanonical(desired.bundle.manifest, desired.bundle.signature, signing.publicKey), true);
    assert.equal(verifyCanonical(desired.bundle.manifest, desired.bundle.signature, generateKeyPair().publicKey), false);
    // The envelope (device, seq, rollout) is signed too, so it cannot be replayed or moved ahead.
    assert.equal(verifyDesiredSignature(desired, signing.publicKey), true);
    assert.equal(verifyDesiredSignature({ ...desired, seq: desired.seq + 1000 }, signing.publicKey), false);
    // what the agent would do with it: the full check passes for its own profile only
    assert.doesNotThrow(() => verify(JSON.parse(JSON.stringify(desired.bundle)), { trustedPublicKey: signing.publicKey, expectedProfile: d.profile, now: now() }));
    const wrongProfile = d.profile === 'x86-64-gateway' ? 'raspberry-pi-4' : 'x86-64-gateway';
    assert.throws(() => verify(desired.bundle, { trustedPublicKey: signing.publicKey, expectedProfile: wrongProfile, now: now() }), (e: any) => e.code === 'PROFILE_MISMATCH');
  }
  const again = json(await app.inject({ url: `/v1/rollouts/${r.id}`, headers: AUTH })).rollout;
  assert.deepEqual(again.counts, { dispatched: 3, skipped: 1 });
  assert.equal(store.getDevice(devices.pi5!.id)!.desiredSeq, 1);
  // Done with it: cancel, so later tests may roll out to these devices again.
  assert.equal(json(await app.inject({ method: 'POST', url: `/v1/rollouts/${r.id}/cancel`, headers: AUTH })).rollout.status, 'cancelled');
  await services.engine.idle();
});

// --- bundle downloads ---

const fileUrl = (profile: string, file = 'model.onnx') => `/v1/bundles/${bundleFor[profile]}/files/${file}`;

test('bundles: the whole file downloads byte for byte with length and ETag', async () => {
  const res = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: AUTH });
  assert.equal(res.statusCode, 200);
  assert.deepEqual(res.rawPayload, modelBytes);
  assert.equal(Number(res.headers['content-length']), modelBytes.length);
  assert.equal(res.headers['accept-ranges'], 'bytes');
  assert.match(String(res.headers.etag), /^"[0-9a-f]{64}"$/);
  const golden = await app.inject({ url: fileUrl('raspberry-pi-5', 'golden.json'), headers: AUTH });
  assert.equal(golden.statusCode, 200);
  assert.equal(JSON.parse(golden.body).samples.length, 3);
});

test('bundles: Range bytes=0-99 → 206 with Content-Range and exactly those bytes', async () => {
  const size = modelBytes.length;
  const res = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range: 'bytes=0-99' } });
  assert.equal(res.statusCode, 206);
  assert.equal(res.headers['content-range'], `bytes 0-99/${size}`);
  assert.equal(Number(res.headers['content-length']), 100);
  assert.deepEqual(res.rawPayload, modelBytes.subarray(0, 100));

  const mid = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range: 'bytes=1000-1999' } });
  assert.equal(mid.statusCode, 206);
  assert.deepEqual(mid.rawPayload, modelBytes.subarray(1000, 2000));

  const open = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range: `bytes=${size - 10}-` } });
  assert.equal(open.statusCode, 206);
  assert.equal(open.headers['content-range'], `bytes ${size - 10}-${size - 1}/${size}`);
  assert.deepEqual(open.rawPayload, modelBytes.subarray(size - 10));

  // an end past the file is clipped to the last byte
  const clipped = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range: `bytes=${size - 5}-${size + 1000}` } });
  assert.equal(clipped.statusCode, 206);
  assert.deepEqual(clipped.rawPayload, modelBytes.subarray(size - 5));
});

test('bundles: a suffix range returns the last N bytes', async () => {
  const size = modelBytes.length;
  const res = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range: 'bytes=-100' } });
  assert.equal(res.statusCode, 206);
  assert.equal(res.headers['content-range'], `bytes ${size - 100}-${size - 1}/${size}`);
  assert.deepEqual(res.rawPayload, modelBytes.subarray(size - 100));
  // a suffix longer than the file is the whole file
  const all = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range: `bytes=-${size + 50}` } });
  assert.equal(all.statusCode, 206);
  assert.deepEqual(all.rawPayload, modelBytes);
});

test('bundles: ranges outside the file → 416 RANGE_NOT_SATISFIABLE with bytes */size', async () => {
  const size = modelBytes.length;
  for (const range of [`bytes=${size}-`, `bytes=${size + 10}-${size + 20}`, 'bytes=500-100', 'bytes=-0']) {
    const res = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...AUTH, range } });
    assert.equal(errorOf(res, 416), 'RANGE_NOT_SATISFIABLE', range);
    assert.equal(res.headers['content-range'], `bytes */${size}`, range);
  }
});

test('bundles: unknown bundle or file → 404', async () => {
  assert.equal(errorOf(await app.inject({ url: '/v1/bundles/bdl_nope/files/model.onnx', headers: AUTH }), 404), 'BUNDLE_NOT_FOUND');
  assert.equal(errorOf(await app.inject({ url: fileUrl('raspberry-pi-5', 'secrets.txt'), headers: AUTH }), 404), 'FILE_NOT_IN_BUNDLE');
  assert.equal(errorOf(await app.inject({ url: fileUrl('raspberry-pi-5', '..%2F..%2Fedgepack.db'), headers: AUTH }), 404), 'FILE_NOT_IN_BUNDLE');
});

test('bundles: a device credential downloads the bundle assigned to that device, with ranges', async () => {
  const pi5 = devices.pi5!;
  const meta = await app.inject({ url: `/v1/bundles/${bundleFor['raspberry-pi-5']}`, headers: deviceAuth(pi5) });
  assert.equal(meta.statusCode, 200, meta.body);
  const res = await app.inject({ url: fileUrl('raspberry-pi-5'), headers: { ...deviceAuth(pi5), range: 'bytes=0-99' } });
  assert.equal(res.statusCode, 206, res.body);
  assert.deepEqual(res.rawPayload, modelBytes.subarray(0, 100));
});

test('bundles: a device may not fetch a bundle that is not assigned to it (403), nor learn whether one exists', async () => {
  const pi5 = devices.pi5!;
  assert.equal(errorOf(await app.inject({ url: fileUrl('raspberry-pi-4'), headers: deviceAuth(pi5) }), 403), 'BUNDLE_NOT_ASSIGNED');
  assert.equal(errorOf(await app.inject({ url: `/v1/bundles/${bundleFor['jetson-orin-nano']}`, headers: deviceAuth(pi5) }), 403), 'BUNDLE_NOT_ASSIGNED');
  // the coral was planned failed: nothing is assigned to it
  assert.equal(errorOf(await app.inject({ url: fileUrl('raspberry-pi-5'), headers: deviceAuth(devices.coral!) }), 403), 'BUNDLE_NOT_ASSIGNED');
  // an id that names no bundle answers exactly like one that is not the device's
  assert.equal(errorOf(await app.inject({ url: '/v1/bundles/bdl_nope', headers: deviceAuth(pi5) }), 403), 'BUNDLE_NOT_ASSIGNED');
});

test('bundles: device credentials are refused when stale, forged, revoked, or used outside /v1/bundles', async () => {
  const pi5 = devices.pi5!;
  const url = fileUrl('raspberry-pi-5');
  // stale (20 minutes old)
  assert.equal(errorOf(await app.inject({ url, headers: deviceAuth(pi5, new Date(clockMs - 20 * 60_000)) }), 401), 'UNAUTHORIZED');
  // signed by another key
  const forged = { authorization: `Device ${pi5.id}:${createDeviceCredential(pi5.id, generateKeyPair().secretKey, now(), 'http')}` };
  assert.equal(errorOf(await app.inject({ url, headers: forged }), 401), 'UNAUTHORIZED');
  // pi4's credential presented as pi5
  const swapped = { authorization: `Device ${pi5.id}:${createDeviceCredential(devices.pi4!.id, devices.pi4!.keys.secretKey, now(), 'http')}` };
  assert.equal(errorOf(await app.inject({ url, headers: swapped }), 401), 'UNAUTHORIZED');
  // malformed
  for (const authorization of [`Device ${pi5.id}`, `Device ${pi5.id}:`, 'Device :', 'Device dev_nope:1.x']) {
    assert.equal(errorOf(await app.inject({ url, headers: { authorization } }), 401), 'UNAUTHORIZED', authorization);
  }
  // revoked device, even with a valid signature
  const gone = devices.revoked!;
  assert.equal(errorOf(await app.inject({ url, headers: deviceAuth(gone) }), 401), 'UNAUTHORIZED');
  // a device credential is not an admin credential
  assert.equal(errorOf(await app.inject({ url: '/v1/devices', headers: deviceAuth(pi5) }), 401), 'UNAUTHORIZED');
  assert.equal(errorOf(await app.inject({ url: `/v1/rollouts`, headers: deviceAuth(pi5) }), 401), 'UNAUTHORIZED');
});

test('auth: a percent-encoded path cannot skip authentication', async () => {
  for (const url of [`/%761/bundles/${bundleFor['raspberry-pi-5']}/files/model.onnx`, `/%761/bundles/${bundleFor['raspberry-pi-5']}`, '/%761/devices', '/v%31/devices']) {
    const res = await app.inject({ url });
    assert.equal(res.statusCode === 401 || res.statusCode === 404, true, `${url} → ${res.statusCode}`);
  }
});
