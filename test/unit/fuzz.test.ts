// A bounded fuzz run (fast-check, fixed seeds, fixed run counts: deterministic, and a few seconds
// per target) over everything that reads hostile input: the MQTT payload parsers, the manifest
// and trust metadata verifiers, the ONNX and TFLite readers, and the HTTP bodies. Inputs are
// random and, more usefully, valid inputs with a few things changed. Properties: nothing throws
// but a coded EdgepackError (or returns a Parsed refusal with a catalogue code), no single call
// runs long, and no run grows the process by more than a bounded amount (inputs are bounded too).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import {
  ChunkRequestSchema, DesiredStateSchema, EdgepackError, EnrollRequestSchema, EnrollResponseSchema, ERROR_CATALOGUE, HeartbeatSchema, MANIFEST_SCHEMA_ID,
  NoticeSchema, PROTOCOL_VERSION, PresenceSchema, StatusReportSchema, TrustVerifier, Validator, createChunkDecoder, createManifestVerifier, createRoot,
  encodeChunkFrame, generateKeyPair, isErrorCode, keyId, signCanonical, signDesired, signRoot, type ErrorCode, type Manifest, type SignedManifest,
} from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import { decodeModel } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { inspectModel } from '@edgepack/orchestrator/onnx/inspect.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { convertOnnxToTflite } from '@edgepack/orchestrator/tflite/convert.js';
import { inspectTflite } from '@edgepack/orchestrator/tflite/reader.js';
import { ADMIN, testDeps, type TestDeps } from '../support/http-app.js';

const SEED = 20_260_601;
/** The slowest one call may be: a parser that needs longer on a few KB of input is looping. */
const MAX_CALL_MS = 2000;
/** How much one target's run may grow the process (inputs are a few KB each). */
const MAX_GROWTH_BYTES = 256 * 1024 * 1024;

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** Runs `fn`; it may return anything or throw a coded EdgepackError, nothing else, and not for long. */
function coded(what: string, fn: () => unknown): void {
  const t0 = performance.now();
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof EdgepackError, `${what} threw ${(err as Error)?.constructor?.name}: ${(err as Error)?.message}`);
    assert.ok(isErrorCode(err.code), `${what} threw code ${String(err.code)}, not in the catalogue`);
  } finally {
    assert.ok(performance.now() - t0 < MAX_CALL_MS, `${what} took ${Math.round(performance.now() - t0)} ms`);
  }
}

/** A Parsed-style answer: ok, or a refusal with a catalogue code and a reason. */
function refusedOrOk(what: string, r: { ok: boolean; code?: string; reason?: string }): void {
  if (r.ok) return;
  assert.ok(isErrorCode(r.code), `${what} refused with code ${String(r.code)}`);
  assert.ok(typeof r.reason === 'string' && r.reason.length > 0, `${what} gave no reason`);
}

function bounded(name: string, run: () => void | Promise<void>): () => Promise<void> {
  return async () => {
    const before = process.memoryUsage();
    await run();
    const after = process.memoryUsage();
    const growth = (after.rss - before.rss);
    assert.ok(growth < MAX_GROWTH_BYTES, `${name} grew the process by ${Math.round(growth / 2 ** 20)} MiB`);
  };
}

// --- mutations of valid documents: the inputs that get past the first check ---

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Every path to a value inside `v`, root first. */
function paths(v: unknown, at: (string | number)[] = [], out: (string | number)[][] = []): (string | number)[][] {
  out.push(at);
  if (Array.isArray(v)) v.forEach((x, i) => paths(x, [...at, i], out));
  else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) paths(x, [...at, k], out);
  return out;
}

/** A copy of `doc` with one value replaced, removed or given a sibling, chosen by `pick`. */
function mutate(doc: unknown, pick: number, kind: 'replace' | 'delete' | 'add', value: Json): unknown {
  const copy = structuredClone(doc);
  const all = paths(copy);
  const path = all[pick % all.length]!;
  if (path.length === 0) return kind === 'replace' ? value : copy;
  let parent = copy as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  const last = path[path.length - 1]!;
  if (kind === 'replace') parent[last] = value;
  else if (kind === 'delete') {
    if (Array.isArray(parent)) parent.splice(Number(last), 1);
    else delete parent[last];
  } else if (Array.isArray(parent)) parent.push(value);
  else parent[`x${String(last)}`] = value;
  return copy;
}

const jsonValue = fc.jsonValue({ maxDepth: 4 }) as fc.Arbitrary<Json>;
const mutation = fc.tuple(fc.nat(), fc.constantFrom('replace' as const, 'delete' as const, 'add' as const), jsonValue);
/** Byte edits of a binary: a few overwritten bytes and maybe a cut. */
const byteEdits = fc.record({ edits: fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 12 }), cut: fc.option(fc.nat()) });
function edit(bytes: Uint8Array, e: { edits: [number, number][]; cut: number | null }): Uint8Array {
  const out = new Uint8Array(bytes);
  for (const [pos, b] of e.edits) out[pos % out.length] = b;
  return e.cut === null ? out : out.subarray(0, e.cut % (out.length + 1));
}

// --- valid documents to start from ---

const DEVICE_ID = 'dev_fuzz';
const ORCH = generateKeyPair();
const ROOT_KEYS = [generateKeyPair(), generateKeyPair()];
const NOW = new Date('2026-06-01T12:00:00.000Z');

function signedManifest(): SignedManifest {
  const m: Manifest = {
    schema: MANIFEST_SCHEMA_ID, bundleId: 'bdl_fuzz', model: { name: 'm', version: '1', sha256: sha('m') }, profile: 'x86-64-gateway', format: 'onnx', precision: 'fp32',
    files: [{ path: 'model.onnx', role: 'model', sha256: sha('m'), length: 10 }, { path: 'golden.json', role: 'golden', sha256: sha('g'), length: 5 }],
    io: { inputs: [{ name: 'x', type: 'float32', shape: [1, 4] }], outputs: [] }, golden: { file: 'golden.json', count: 0, maxAbsError: 0 },
    runtime: { name: 'onnxruntime', executionProviders: ['cpu'] }, acceptance: { p95LatencyMs: 5 },
    createdAt: '2026-05-01T00:00:00.000Z', expiresAt: '2026-07-01T00:00:00.000Z', keyId: keyId(ORCH.publicKey),
  };
  return { manifest: m, signature: signCanonical(m, ORCH.secretKey) };
}

function root(version: number) {
  const r = createRoot({ version, expires: new Date('2027-01-01T00:00:00.000Z'), rootKeys: ROOT_KEYS.map((k) => k.publicKey), rootThreshold: 2, bundlesKeys: [ORCH.publicKey] });
  return ROOT_KEYS.reduce((acc, k) => signRoot(acc, k.secretKey), r);
}

const MESSAGES: { name: string; schema: ConstructorParameters<typeof Validator>[1]; valid: unknown }[] = [
  { name: 'status report', schema: StatusReportSchema, valid: { v: PROTOCOL_VERSION, deviceId: DEVICE_ID, rolloutId: 'rol_1', bundleId: 'bdl_1', state: 'failed', code: 'GOLDEN_MISMATCH', reason: 'x', at: NOW.toISOString() } },
  { name: 'heartbeat', schema: HeartbeatSchema, valid: { v: PROTOCOL_VERSION, deviceId: DEVICE_ID, uptimeSec: 5, activeBundle: null, agentVersion: '0.1.0', at: NOW.toISOString() } },
  { name: 'chunk request', schema: ChunkRequestSchema, valid: { v: PROTOCOL_VERSION, bundleId: 'bdl_1', sha256: sha('x'), index: 0, count: 32 } },
  { name: 'presence', schema: PresenceSchema, valid: { v: PROTOCOL_VERSION, online: true } },
  { name: 'notice', schema: NoticeSchema, valid: { v: PROTOCOL_VERSION, code: 'BUNDLE_NOT_ASSIGNED', message: 'x', bundleId: 'bdl_1' } },
  { name: 'desired state', schema: DesiredStateSchema, valid: { ...signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq: 1, rolloutId: 'rol_1', bundle: signedManifest(), issuedAt: NOW.toISOString() }, ORCH.secretKey), roots: [root(1)] } },
  { name: 'enroll request', schema: EnrollRequestSchema, valid: { v: PROTOCOL_VERSION, token: 'enr_x', publicKey: generateKeyPair().publicKey, facts: { arch: 'x', platform: 'x', cpuModel: 'x', cores: 1, ramBytes: 1, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 'x' } } },
  { name: 'enroll response', schema: EnrollResponseSchema, valid: { v: PROTOCOL_VERSION, deviceId: DEVICE_ID, name: 'x', profile: 'x', orchestratorPublicKey: ORCH.publicKey, mqtt: { host: 'h', port: 1 }, heartbeatSec: 15, trustedRoot: root(1) } },
];

// --- the targets ---

test('MQTT payloads: every device message validator refuses with a catalogue code or accepts, for random bytes, random JSON and edited messages', { timeout: 60_000 }, bounded('validators', () => {
  for (const [i, m] of MESSAGES.entries()) {
    const v = new Validator(m.name, m.schema);
    assert.equal(v.parse(JSON.stringify(m.valid)).ok, true, `${m.name}: the starting message is valid`);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => refusedOrOk(m.name, v.parse(bytes))), { seed: SEED + i, numRuns: 150 });
    fc.assert(fc.property(fc.json({ maxDepth: 5 }), (text) => refusedOrOk(m.name, v.parse(text))), { seed: SEED + i, numRuns: 150 });
    fc.assert(fc.property(mutation, ([pick, kind, value]) => refusedOrOk(m.name, v.parse(JSON.stringify(mutate(m.valid, pick, kind, value))))), { seed: SEED + i, numRuns: 300 });
  }
}));

test('chunk frames: the decoder refuses with a catalogue code or decodes, for random bytes and edited frames', { timeout: 60_000 }, bounded('chunk decoder', () => {
  const decode = createChunkDecoder();
  const bytes = Buffer.from('the chunk bytes, a few of them '.repeat(20));
  const frame = encodeChunkFrame({ bundleId: 'bdl_1', sha256: sha('file'), index: 2, fileLength: 200_000, bytes });
  assert.equal(decode(frame).ok, true);
  const check = (f: Uint8Array) => {
    const r = decode(f);
    refusedOrOk('chunk decoder', r);
    // What decodes must hold together: the bytes hash to the header's own hash.
    if (r.ok) assert.equal(sha(r.bytes), r.header.chunkSha256);
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 4096 }), check), { seed: SEED, numRuns: 500 });
  fc.assert(fc.property(byteEdits, (e) => check(edit(frame, e))), { seed: SEED + 1, numRuns: 800 });
  // A length prefix claiming a huge header, with the rest random.
  fc.assert(fc.property(fc.integer({ min: 0, max: 0xffffffff }), fc.uint8Array({ maxLength: 256 }), (n, rest) => {
    const f = Buffer.concat([Buffer.alloc(4), Buffer.from(rest)]);
    f.writeUInt32BE(n, 0);
    check(f);
  }), { seed: SEED + 2, numRuns: 300 });
}));

test('manifests: the verifier throws only coded errors for random JSON and edited signed manifests', { timeout: 60_000 }, bounded('manifest verifier', () => {
  const verify = createManifestVerifier();
  const good = signedManifest();
  const o = { trustedPublicKey: ORCH.publicKey, expectedProfile: 'x86-64-gateway', now: NOW };
  verify(good, o);
  fc.assert(fc.property(jsonValue, (doc) => coded('verifyManifest', () => verify(doc, o))), { seed: SEED, numRuns: 300 });
  fc.assert(fc.property(mutation, ([pick, kind, value]) => coded('verifyManifest', () => verify(mutate(good, pick, kind, value), o))), { seed: SEED + 1, numRuns: 600 });
}));

test('trust metadata: parsing, pinning, updating and walking roots, and verifying bundles through them, throw only coded errors', { timeout: 60_000 }, bounded('trust verifier', () => {
  const v = new TrustVerifier();
  const r1 = root(1);
  const r2 = root(2);
  const trusted = v.verifyInitialRoot(r1);
  const bundle = signedManifest();
  v.verifyBundle(trusted, bundle, { expectedProfile: 'x86-64-gateway', now: NOW });
  const all = (doc: unknown) => {
    coded('parseRoot', () => v.parseRoot(doc));
    coded('verifyInitialRoot', () => v.verifyInitialRoot(doc));
    coded('updateRoot', () => v.updateRoot(trusted, doc));
    coded('walkChain', () => {
      const w = v.walkChain(trusted, [doc]);
      if (w.error) assert.ok(isErrorCode(w.error.code));
    });
    coded('checkFresh', () => v.checkFresh(v.parseRoot(doc), NOW));
  };
  fc.assert(fc.property(jsonValue, all), { seed: SEED, numRuns: 200 });
  fc.assert(fc.property(mutation, ([pick, kind, value]) => all(mutate(r2, pick, kind, value))), { seed: SEED + 1, numRuns: 400 });
  fc.assert(fc.property(mutation, ([pick, kind, value]) => coded('verifyBundle', () => v.verifyBundle(trusted, mutate(bundle, pick, kind, value), { expectedProfile: 'x86-64-gateway', now: NOW }))), { seed: SEED + 2, numRuns: 400 });
  fc.assert(fc.property(fc.array(fc.oneof(jsonValue, fc.constant(r2 as unknown as Json)), { maxLength: 12 }), (chain) => coded('walkChain', () => v.walkChain(trusted, chain))), { seed: SEED + 3, numRuns: 200 });
}));

test('what the run found: a root whose keys map holds a name that is no key id is ROOT_INVALID, not a TypeError', () => {
  const r = structuredClone(root(1)) as unknown as { signed: { keys: Record<string, unknown> } };
  r.signed.keys.xnotakeyid = null;
  for (const f of [(x: unknown) => new TrustVerifier().parseRoot(x), (x: unknown) => new TrustVerifier().verifyInitialRoot(x)]) {
    assert.throws(() => f(r), (err: unknown) => (err as { code?: string }).code === 'ROOT_INVALID');
  }
});

test('ONNX: the protobuf reader and the inspector throw only coded errors for random bytes and edited models', { timeout: 60_000 }, bounded('onnx reader', () => {
  const model = buildTinyMlpModel({ seed: 9, hidden: 8 });
  inspectModel(model);
  const both = (bytes: Uint8Array) => {
    coded('decodeModel', () => decodeModel(bytes));
    coded('inspectModel', () => inspectModel(bytes));
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 4096 }), both), { seed: SEED, numRuns: 400 });
  fc.assert(fc.property(byteEdits, (e) => both(edit(model, e))), { seed: SEED + 1, numRuns: 800 });
}));

test('TFLite: the flatbuffer reader throws only coded errors for random bytes and edited models', { timeout: 60_000 }, async () => {
  const { tflite } = await convertOnnxToTflite(buildTinyMlpModel({ seed: 4, hidden: 8 }), { precision: 'fp32' });
  await bounded('tflite reader', () => {
    inspectTflite(tflite);
    fc.assert(fc.property(fc.uint8Array({ maxLength: 4096 }), (bytes) => coded('inspectTflite', () => inspectTflite(bytes))), { seed: SEED, numRuns: 400 });
    fc.assert(fc.property(byteEdits, (e) => coded('inspectTflite', () => inspectTflite(edit(tflite, e)))), { seed: SEED + 1, numRuns: 800 });
    // The file identifier kept, so the edits reach the tables.
    fc.assert(fc.property(byteEdits, (e) => {
      const evil = edit(tflite, e);
      if (evil.length >= 8) evil.set(tflite.subarray(4, 8), 4);
      coded('inspectTflite', () => inspectTflite(evil));
    }), { seed: SEED + 2, numRuns: 400 });
  })();
});

describeHttp();

function describeHttp(): void {
  let t: TestDeps;
  let app: FastifyInstance;
  before(async () => {
    t = await testDeps('fuzz');
    app = buildApp(t.deps);
    await app.ready();
    t.store.insertDevice({ id: DEVICE_ID, name: 'f', profile: 'x86-64-gateway', publicKey: generateKeyPair().publicKey, tags: [], facts: (MESSAGES[6]!.valid as { facts: never }).facts, createdAt: NOW.toISOString() });
  });
  after(async () => {
    await app?.close();
    await t?.close();
  });

  const ROUTES: { method: 'POST' | 'PATCH'; url: string; valid: unknown; auth: boolean }[] = [
    { method: 'POST', url: '/v1/rollouts', valid: { buildId: 'bld_1', target: { tags: ['a'] } }, auth: true },
    { method: 'POST', url: '/v1/builds', valid: { modelId: 'mdl_1', profiles: ['x86-64-gateway'], acceptance: { p95LatencyMs: 3 } }, auth: true },
    { method: 'POST', url: '/v1/enroll', valid: MESSAGES[6]!.valid, auth: false },
    { method: 'POST', url: '/v1/tokens', valid: { name: 'n', role: 'viewer', ttlSec: 600 }, auth: true },
    { method: 'POST', url: '/v1/enrollment-tokens', valid: { ttlSec: 600 }, auth: true },
    { method: 'PATCH', url: `/v1/devices/${DEVICE_ID}`, valid: { tags: ['a'], name: 'n' }, auth: true },
  ];

  /** Our error shape, with the catalogue's status for its code; never a 500. */
  const ours = (what: string, res: { statusCode: number; body: string }) => {
    assert.ok(res.statusCode < 500, `${what}: ${res.statusCode} ${res.body}`);
    if (res.statusCode < 400) return;
    const body = JSON.parse(res.body) as { error?: { code?: string; message?: string } };
    assert.deepEqual(Object.keys(body), ['error'], `${what}: ${res.body}`);
    assert.ok(isErrorCode(body.error?.code), `${what}: code ${body.error?.code}`);
    assert.equal(ERROR_CATALOGUE[body.error!.code as ErrorCode].status, res.statusCode, `${what}: ${res.body}`);
  };

  test('HTTP bodies: random JSON, edited valid bodies and random text into the API never answer 500, always our error shape', { timeout: 60_000 }, bounded('http bodies', async () => {
    for (const [i, r] of ROUTES.entries()) {
      const send = (payload: string, contentType = 'application/json') => app.inject({
        method: r.method, url: r.url, payload, headers: { 'content-type': contentType, ...(r.auth ? ADMIN : {}) },
      });
      await fc.assert(fc.asyncProperty(fc.json({ maxDepth: 6 }), async (text) => ours(`${r.method} ${r.url} ${text.slice(0, 80)}`, await send(text))), { seed: SEED + i, numRuns: 40 });
      await fc.assert(fc.asyncProperty(mutation, async ([pick, kind, value]) => {
        const text = JSON.stringify(mutate(r.valid, pick, kind, value));
        ours(`${r.method} ${r.url} ${text.slice(0, 80)}`, await send(text));
      }), { seed: SEED + i, numRuns: 60 });
      await fc.assert(fc.asyncProperty(fc.string({ maxLength: 200 }), async (text) => ours(`${r.method} ${r.url} text`, await send(text))), { seed: SEED + i, numRuns: 20 });
    }
    // Random query strings on the lists, which coerce the URL's text.
    for (const url of ['/v1/devices', '/v1/audit', '/v1/tokens', '/v1/builds']) {
      await fc.assert(fc.asyncProperty(fc.dictionary(fc.constantFrom('limit', 'cursor', 'status', 'tag', 'since', 'actor', 'role', 'revoked', 'x'), fc.string({ maxLength: 40 }), { maxKeys: 4 }), async (q) => {
        const res = await app.inject({ url: `${url}?${new URLSearchParams(q).toString()}`, headers: ADMIN });
        ours(`GET ${url}?${JSON.stringify(q)}`, res);
      }), { seed: SEED, numRuns: 40 });
    }
  }));
}
