// Status reports signed by the device key (issue 12, finding 3) and enrollment tokens that pin a
// CA fingerprint: the wire helpers in protocol, with real ed25519 keys.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  PROTOCOL_VERSION, StatusReportSchema, Validator, createDeviceCredential, formatEnrollmentToken, generateKeyPair, parseEnrollmentToken,
  signStatusReport, verifyStatusReport, type StatusReport,
} from '@edgepack/protocol';

const report = (): Omit<StatusReport, 'signature'> => ({
  v: PROTOCOL_VERSION, deviceId: 'dev_1', rolloutId: 'rol_1', bundleId: 'bun_1', state: 'active',
  result: {
    runtime: 'onnxruntime', providers: ['cpu'], loadMs: 12.5, warmupRuns: 3, runs: 20, latencyMs: { p50: 1, p90: 2, p95: 2.5, p99: 3 },
    throughputPerSec: 900, peakRssBytes: 1 << 26, golden: { passed: true, maxAbsError: 0, samples: 8 },
  },
  at: '2026-06-01T12:00:00.000Z',
});

test('a signed status report verifies with the device key, still fits the wire schema, and key order does not matter', () => {
  const device = generateKeyPair();
  const signed = signStatusReport(report(), device.secretKey);
  assert.match(signed.signature!, /^[A-Za-z0-9+/]{86}==$/);
  assert.ok(verifyStatusReport(signed, device.publicKey));
  const parsed = new Validator('status report', StatusReportSchema).parse(JSON.stringify(signed));
  assert.ok(parsed.ok);
  assert.ok(verifyStatusReport(parsed.value, device.publicKey), 'survives the JSON round trip');
  const reordered = Object.fromEntries(Object.entries(signed).reverse()) as StatusReport;
  assert.ok(verifyStatusReport(reordered, device.publicKey));
  // Signing again replaces an old signature instead of signing over it.
  assert.ok(verifyStatusReport(signStatusReport(signed, device.secretKey), device.publicKey));
});

test('unsigned, re-figured, re-addressed, other-key and garbage signatures do not verify', () => {
  const device = generateKeyPair();
  const signed = signStatusReport(report(), device.secretKey);
  const { signature: _, ...unsigned } = signed;
  assert.equal(verifyStatusReport(unsigned as StatusReport, device.publicKey), false);
  const edits: ((r: StatusReport) => StatusReport)[] = [
    (r) => ({ ...r, state: 'failed' }),
    (r) => ({ ...r, rolloutId: 'rol_2' }),
    (r) => ({ ...r, deviceId: 'dev_2' }),
    (r) => ({ ...r, result: { ...r.result!, latencyMs: { ...r.result!.latencyMs, p95: 0.1 } } }),
    (r) => ({ ...r, code: 'GOLDEN_MISMATCH' }),
    (r) => ({ ...r, signature: 'not base64 at all' }),
    (r) => ({ ...r, signature: signed.signature!.replace(/^./, (c) => (c === 'A' ? 'B' : 'A')) }),
  ];
  for (const edit of edits) assert.equal(verifyStatusReport(edit(signed), device.publicKey), false, JSON.stringify(edit(signed)).slice(0, 120));
  assert.equal(verifyStatusReport(signed, generateKeyPair().publicKey), false);
  assert.equal(verifyStatusReport(signStatusReport(report(), generateKeyPair().secretKey), device.publicKey), false);
  // The device's MQTT credential is signed by the same key but can never pass for a report signature.
  assert.equal(verifyStatusReport({ ...signed, signature: createDeviceCredential('dev_1', device.secretKey, new Date()).split('.')[1]! }, device.publicKey), false);
});

test('enrollment tokens: enr_…#sha256:<hex> parses to the secret and the pin; fingerprints as OpenSSL prints them are taken; bad ones are refused', () => {
  const hex = 'ab'.repeat(32);
  assert.deepEqual(parseEnrollmentToken(`enr_abc#sha256:${hex}`), { secret: 'enr_abc', caFingerprint: `sha256:${hex}` });
  assert.deepEqual(parseEnrollmentToken('  enr_abc\n'), { secret: 'enr_abc' });
  const colons = hex.toUpperCase().match(/../g)!.join(':');
  assert.deepEqual(parseEnrollmentToken(`enr_abc#SHA256:${colons}`), { secret: 'enr_abc', caFingerprint: `sha256:${hex}` });
  assert.equal(formatEnrollmentToken('enr_abc', `sha256:${hex}`), `enr_abc#sha256:${hex}`);
  assert.equal(formatEnrollmentToken('enr_abc'), 'enr_abc');
  for (const bad of ['', '#sha256:' + hex, 'enr_abc#sha256:abc', `enr_abc#sha1:${hex}`, `enr_abc#sha256:${hex}00`, 'enr_abc#']) {
    assert.throws(() => parseEnrollmentToken(bad), (err: { code?: string }) => err.code === 'CONFIG_INVALID', JSON.stringify(bad));
  }
});
