import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import {
  CHUNK_SIZE,
  ChunkRequestSchema,
  DEVICE_PUBLISH_KINDS,
  DEVICE_SUBSCRIBE_KINDS,
  DeviceTopic,
  HeartbeatSchema,
  PROTOCOL_VERSION,
  PresenceSchema,
  StatusReportSchema,
  TOPIC_ROOT,
  Validator,
  createChunkDecoder,
  deviceTopic,
  encodeChunkFrame,
  isValidDeviceId,
  parseDeviceTopic,
} from '@edgepack/protocol';

const sha = (b: Uint8Array | string) => createHash('sha256').update(b).digest('hex');

/** mulberry32: a seeded PRNG so a fuzz failure is reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const status = () => ({
  v: PROTOCOL_VERSION, deviceId: 'dev_1', rolloutId: 'rol_1', bundleId: 'bdl_1', state: 'downloading', at: '2026-06-01T00:00:00Z',
});

// --- Validator ---

test('Validator.parse accepts a valid message from a string and from bytes', () => {
  const v = new Validator('status', StatusReportSchema);
  const text = JSON.stringify(status());
  const a = v.parse(text);
  const b = v.parse(new TextEncoder().encode(text));
  assert.equal(a.ok, true);
  assert.equal(b.ok, true);
  if (a.ok) assert.equal(a.value.state, 'downloading');
});

test('Validator.parse: non-JSON payloads give MESSAGE_NOT_JSON', () => {
  const v = new Validator('status', StatusReportSchema);
  for (const bad of ['', 'not json', '{"v":1,', '{v:1}', "{'v':1}", new Uint8Array([0xff, 0xfe, 0x00])]) {
    const r = v.parse(bad);
    assert.equal(r.ok ? 'ok' : r.code, 'MESSAGE_NOT_JSON', String(bad));
  }
});

test('Validator.parse: payloads over the limit give MESSAGE_TOO_LARGE before parsing', () => {
  const v = new Validator('status', StatusReportSchema);
  // default limit is 1 MiB
  const big = JSON.stringify({ ...status(), pad: 'x'.repeat(1 << 20) });
  const r1 = v.parse(big);
  assert.equal(r1.ok ? 'ok' : r1.code, 'MESSAGE_TOO_LARGE');
  // the limit counts bytes, not characters: 30 × 'é' is 60 UTF-8 bytes
  const r2 = v.parse(JSON.stringify('é'.repeat(30)), 50);
  assert.equal(r2.ok ? 'ok' : r2.code, 'MESSAGE_TOO_LARGE');
  // garbage that is too large is TOO_LARGE, not NOT_JSON: size is checked first
  const r3 = v.parse(new Uint8Array(101), 100);
  assert.equal(r3.ok ? 'ok' : r3.code, 'MESSAGE_TOO_LARGE');
  // exactly at the limit is allowed
  const exact = JSON.stringify(status());
  const r4 = v.parse(exact, Buffer.byteLength(exact));
  assert.equal(r4.ok, true);
});

test('Validator.parse: JSON of the wrong shape gives MESSAGE_INVALID with a reason', () => {
  const v = new Validator('status', StatusReportSchema);
  const cases: unknown[] = [
    null, 1, 'str', [], {},
    { ...status(), state: 'exploded' },
    { ...status(), deviceId: 7 },
    { ...status(), at: undefined },
    { ...status(), reason: 'x'.repeat(4097) },
    { ...status(), result: { runtime: 'ort' } },
  ];
  for (const c of cases) {
    const r = v.parse(JSON.stringify(c) ?? 'null');
    assert.equal(r.ok ? 'ok' : r.code, 'MESSAGE_INVALID', JSON.stringify(c)?.slice(0, 80));
    if (!r.ok) assert.ok(r.reason.startsWith('status:'), r.reason);
  }
});

test('Validator: unknown fields are accepted and left in place', () => {
  const v = new Validator('status', StatusReportSchema);
  const r = v.parse(JSON.stringify({ ...status(), addedInV1_1: { x: 1 } }));
  assert.equal(r.ok, true);
  if (r.ok) assert.deepEqual((r.value as unknown as Record<string, unknown>).addedInV1_1, { x: 1 });
});

test('Validator: protocol version above ours, zero, fractional or missing is refused', () => {
  const v = new Validator('presence', PresenceSchema);
  assert.equal(v.validate({ v: PROTOCOL_VERSION, online: true }).ok, true);
  for (const ver of [PROTOCOL_VERSION + 1, 0, 1.5, '1', undefined]) {
    const r = v.validate({ v: ver, online: true });
    assert.equal(r.ok ? 'ok' : r.code, 'MESSAGE_INVALID', String(ver));
  }
});

test('schemas: heartbeat activeBundle may be null; chunk request count is 1..64; sha256 must be lowercase hex', () => {
  const hb = new Validator('heartbeat', HeartbeatSchema);
  const base = { v: 1, deviceId: 'd', uptimeSec: 3, activeBundle: null, agentVersion: '0.1.0', at: 'now' };
  assert.equal(hb.validate(base).ok, true);
  assert.equal(hb.validate({ ...base, uptimeSec: -1 }).ok, false);
  const cr = new Validator('chunk request', ChunkRequestSchema);
  const req = { v: 1, bundleId: 'b', sha256: sha('x'), index: 0, count: 64 };
  assert.equal(cr.validate(req).ok, true);
  assert.equal(cr.validate({ ...req, count: 65 }).ok, false);
  assert.equal(cr.validate({ ...req, count: 0 }).ok, false);
  assert.equal(cr.validate({ ...req, index: -1 }).ok, false);
  assert.equal(cr.validate({ ...req, sha256: sha('x').toUpperCase() }).ok, false);
});

// --- chunk frames ---

function frameFor(fileBytes: Buffer, index: number) {
  const bytes = fileBytes.subarray(index * CHUNK_SIZE, (index + 1) * CHUNK_SIZE);
  return encodeChunkFrame({ bundleId: 'bdl_1', sha256: sha(fileBytes), index, fileLength: fileBytes.length, bytes });
}

test('chunk frames round-trip: header fields and bytes survive', () => {
  const rand = prng(7);
  const file = Buffer.from(Array.from({ length: CHUNK_SIZE * 2 + 100 }, () => Math.floor(rand() * 256)));
  const decode = createChunkDecoder();
  for (let i = 0; i < 3; i++) {
    const d = decode(frameFor(file, i));
    assert.equal(d.ok, true, d.ok ? '' : d.reason);
    if (!d.ok) continue;
    assert.equal(d.header.v, PROTOCOL_VERSION);
    assert.equal(d.header.index, i);
    assert.equal(d.header.total, 3);
    assert.equal(d.header.offset, i * CHUNK_SIZE);
    assert.equal(d.header.fileLength, file.length);
    assert.equal(d.header.sha256, sha(file));
    assert.equal(d.header.length, i < 2 ? CHUNK_SIZE : 100);
    assert.deepEqual(d.bytes, file.subarray(i * CHUNK_SIZE, i * CHUNK_SIZE + d.header.length));
  }
});

test('chunk frames: an empty file is one empty chunk; a frame inside a larger buffer decodes (byteOffset respected)', () => {
  const decode = createChunkDecoder();
  const empty = encodeChunkFrame({ bundleId: 'b', sha256: sha(''), index: 0, fileLength: 0, bytes: new Uint8Array(0) });
  const d = decode(empty);
  assert.equal(d.ok, true);
  if (d.ok) { assert.equal(d.header.total, 1); assert.equal(d.bytes.length, 0); }

  const frame = frameFor(Buffer.from('hello world'), 0);
  const big = new Uint8Array(frame.length + 20);
  big.set(frame, 7);
  const view = big.subarray(7, 7 + frame.length);
  const d2 = decode(view);
  assert.equal(d2.ok, true);
  if (d2.ok) assert.equal(d2.bytes.toString(), 'hello world');
});

test('chunk frames: a flipped data byte gives CHUNK_HASH_MISMATCH', () => {
  const decode = createChunkDecoder();
  const frame = frameFor(Buffer.from('some chunk payload bytes'), 0);
  for (let k = 1; k <= 5; k++) {
    const bad = Buffer.from(frame);
    bad[bad.length - k]! ^= 0x01;
    const d = decode(bad);
    assert.equal(d.ok ? 'ok' : d.code, 'CHUNK_HASH_MISMATCH');
  }
});

test('chunk frames: truncated, extended and short frames give CHUNK_INVALID', () => {
  const decode = createChunkDecoder();
  const frame = frameFor(Buffer.from('0123456789abcdef'), 0);
  const headerLength = frame.readUInt32BE(0);
  const cases: Buffer[] = [
    Buffer.alloc(0), Buffer.alloc(3),
    frame.subarray(0, 4 + headerLength - 1), // header cut short
    frame.subarray(0, frame.length - 1), // data cut short
    Buffer.concat([frame, Buffer.from([0])]), // one byte too many
    Buffer.concat([Buffer.from([0xff, 0xff, 0xff, 0xff]), frame.subarray(4)]), // absurd header length
    Buffer.concat([Buffer.from([0, 0, 0x10, 0x01]), Buffer.alloc(5000, 0x20)]), // header length 4097 > 4096
  ];
  for (const [i, c] of cases.entries()) {
    const d = decode(c);
    assert.equal(d.ok ? 'ok' : d.code, 'CHUNK_INVALID', `case ${i}`);
  }
});

const ANY_REFUSAL = new Set(['CHUNK_INVALID', 'CHUNK_HASH_MISMATCH', 'MESSAGE_NOT_JSON', 'MESSAGE_INVALID']);

test('chunk frames: fuzzing random and mutated frames never throws and never decodes garbage', () => {
  const decode = createChunkDecoder();
  const rand = prng(0xed6e);
  const good = frameFor(Buffer.from('the quick brown fox jumps over the lazy dog'), 0);
  const headerLength = good.readUInt32BE(0);
  let decodedOk = 0;
  for (let i = 0; i < 600; i++) {
    let buf: Buffer;
    const mode = i % 4;
    if (mode === 0) {
      // pure noise of random length
      buf = Buffer.from(Array.from({ length: Math.floor(rand() * 300) }, () => Math.floor(rand() * 256)));
    } else if (mode === 1) {
      // plausible length prefix, noise after it
      const n = Math.floor(rand() * 200);
      buf = Buffer.concat([Buffer.alloc(4), Buffer.from(Array.from({ length: n + Math.floor(rand() * 50) }, () => Math.floor(rand() * 256)))]);
      buf.writeUInt32BE(n, 0);
    } else if (mode === 2) {
      // the good frame with 1–4 random bytes flipped
      buf = Buffer.from(good);
      const flips = 1 + Math.floor(rand() * 4);
      for (let f = 0; f < flips; f++) buf[Math.floor(rand() * buf.length)]! ^= 1 + Math.floor(rand() * 255);
    } else {
      // the good frame truncated at a random point
      buf = Buffer.from(good.subarray(0, Math.floor(rand() * good.length)));
    }
    let d;
    assert.doesNotThrow(() => { d = decode(buf); }, `iteration ${i}`);
    const r = d as unknown as ReturnType<typeof decode>;
    if (r.ok) {
      // a mutation may only pass if it left the chunk bytes intact (the header is not authenticated)
      decodedOk++;
      assert.equal(mode, 2, `iteration ${i}: noise decoded`);
      assert.equal(sha(r.bytes), r.header.chunkSha256);
      assert.deepEqual(r.bytes, good.subarray(4 + headerLength));
    } else {
      assert.ok(ANY_REFUSAL.has(r.code), `iteration ${i}: unexpected code ${r.code}`);
      assert.equal(typeof r.reason, 'string');
    }
  }
  assert.ok(decodedOk < 150, `too many mutated frames decoded: ${decodedOk}`);
});

test('chunk frames: a frame whose header bytes are garbage is refused as CHUNK_INVALID', () => {
  const decode = createChunkDecoder();
  const notJson = Buffer.concat([Buffer.from([0, 0, 0, 3]), Buffer.from('{{{')]);
  const wrongShape = Buffer.concat([Buffer.from([0, 0, 0, 2]), Buffer.from('{}')]);
  for (const f of [notJson, wrongShape]) {
    const d = decode(f);
    assert.equal(d.ok ? 'ok' : d.code, 'CHUNK_INVALID');
  }
});

// --- topics ---

test('deviceTopic builds topics under the root and parseDeviceTopic inverts it for every kind', () => {
  for (const kind of Object.values(DeviceTopic)) {
    const t = deviceTopic('dev_Ab-9', kind);
    assert.equal(t, `${TOPIC_ROOT}/dev_Ab-9/${kind}`);
    assert.deepEqual(parseDeviceTopic(t), { deviceId: 'dev_Ab-9', kind });
  }
});

test('parseDeviceTopic accepts only exact device topics', () => {
  const bad = [
    '', 'edgepack/v1/devices', 'edgepack/v1/devices/', 'edgepack/v1/devices/dev_1',
    'edgepack/v1/devices/dev_1/', 'edgepack/v1/devices/dev_1/status/', 'edgepack/v1/devices/dev_1/status/extra',
    '/edgepack/v1/devices/dev_1/status', 'edgepack/v2/devices/dev_1/status', 'Edgepack/v1/devices/dev_1/status',
    'edgepack/v1/devices/+/status', 'edgepack/v1/devices/#', 'edgepack/v1/devices/dev_1/+', 'edgepack/v1/devices/dev_1/#',
    'edgepack/v1/devices//status', 'edgepack/v1/devices/dev.1/status', 'edgepack/v1/devices/dev 1/status',
    `edgepack/v1/devices/${'a'.repeat(65)}/status`, 'edgepack/v1/devices/dev_1/Status', 'edgepack/v1/devices/dev_1/firmware',
    '$SYS/edgepack/v1/devices/dev_1/status', 'edgepack/v1/devices/dev_1/status\u0000',
  ];
  for (const t of bad) assert.equal(parseDeviceTopic(t), null, JSON.stringify(t));
  assert.deepEqual(parseDeviceTopic(`edgepack/v1/devices/${'a'.repeat(64)}/notice`), { deviceId: 'a'.repeat(64), kind: 'notice' });
});

test('deviceTopic refuses ids that would escape their topic level', () => {
  for (const id of ['', 'a/b', '+', '#', 'a b', 'x'.repeat(65), '../x']) {
    assert.equal(isValidDeviceId(id), false, id);
    assert.throws(() => deviceTopic(id, 'status'));
  }
});

test('publish and subscribe kinds are disjoint and together cover every kind', () => {
  const pub = new Set(DEVICE_PUBLISH_KINDS);
  for (const k of DEVICE_SUBSCRIBE_KINDS) assert.equal(pub.has(k), false, k);
  assert.deepEqual([...DEVICE_SUBSCRIBE_KINDS, ...DEVICE_PUBLISH_KINDS].sort(), Object.values(DeviceTopic).sort());
  assert.ok(DEVICE_SUBSCRIBE_KINDS.includes('desired'));
  assert.ok(!DEVICE_PUBLISH_KINDS.includes('desired'));
  assert.ok(!DEVICE_PUBLISH_KINDS.includes('chunk'));
});
