import { test } from 'node:test';
import assert from 'node:assert/strict';
import { DeviceTopic, PROTOCOL_VERSION, deviceTopic, type BenchmarkResult, type DeviceState, type StatusReport } from '@edgepack/protocol';
import { matchesTarget } from '@edgepack/orchestrator/core/rollout-member.js';
import { applyStatusReport, rolloutStatus } from '@edgepack/orchestrator/core/action-transition.js';
import { canPublish, canSubscribe } from '@edgepack/orchestrator/core/mqtt-acl.js';
import type { ActionRecord, DeviceRecord } from '@edgepack/orchestrator/records.js';

function device(id: string, profile: string, tags: string[] = [], revokedAt: string | null = null): DeviceRecord {
  return {
    id, name: id, profile, publicKey: 'pk', tags,
    facts: { arch: 'arm64', platform: 'linux', cpuModel: 'x', cores: 4, ramBytes: 1, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: '0' },
    status: 'online', activeBundle: null, lastSeen: null, lastHeartbeat: null, desiredSeq: 0, createdAt: '2026-01-01T00:00:00Z', revokedAt,
  };
}

const FLEET: DeviceRecord[] = [
  device('pi4-a', 'raspberry-pi-4', ['lab', 'floor1']),
  device('pi4-b', 'raspberry-pi-4', ['lab']),
  device('pi5-a', 'raspberry-pi-5', ['lab', 'floor1']),
  device('gw-a', 'x86-64-gateway', ['floor1']),
  device('esp-a', 'esp32-s3', ['floor1']),
  device('pi4-gone', 'raspberry-pi-4', ['lab', 'floor1'], '2026-02-01T00:00:00Z'),
];
const ids = (target: Parameters<typeof matchesTarget>[1]) => FLEET.filter((d) => !d.revokedAt && matchesTarget(d, target)).map((d) => d.id).sort();

// --- target selection (services/rollouts.ts applies it to the unrevoked fleet) ---

test('an empty target selects every device', () => {
  assert.deepEqual(ids({}), ['esp-a', 'gw-a', 'pi4-a', 'pi4-b', 'pi5-a']);
});

test('criteria narrow each other: ids ∧ all tags ∧ profile in list', () => {
  assert.deepEqual(ids({ tags: ['lab'] }), ['pi4-a', 'pi4-b', 'pi5-a']);
  assert.deepEqual(ids({ tags: ['lab', 'floor1'] }), ['pi4-a', 'pi5-a']);
  assert.deepEqual(ids({ profiles: ['raspberry-pi-4', 'x86-64-gateway'] }), ['gw-a', 'pi4-a', 'pi4-b']);
  assert.deepEqual(ids({ tags: ['floor1'], profiles: ['raspberry-pi-4'] }), ['pi4-a']);
  assert.deepEqual(ids({ deviceIds: ['pi4-a', 'pi4-b', 'gw-a'], tags: ['lab'] }), ['pi4-a', 'pi4-b']);
  assert.deepEqual(ids({ deviceIds: ['pi4-a', 'pi5-a'], tags: ['lab'], profiles: ['raspberry-pi-5'] }), ['pi5-a']);
  assert.deepEqual(ids({ tags: ['nobody'] }), []);
  assert.deepEqual(ids({ profiles: ['jetson-orin-nano'] }), []);
});

// --- applyStatusReport ---

const AT = '2026-06-01T00:00:10.000Z';
function action(state: DeviceState, over: Partial<ActionRecord> = {}): ActionRecord {
  return { rolloutId: 'rol_1', deviceId: 'dev_1', groupPosition: 0, bundleId: 'bdl_1', state, code: null, reason: null, result: null, updatedAt: '2026-06-01T00:00:00.000Z', ...over };
}
function report(state: DeviceState, over: Partial<StatusReport> = {}): StatusReport {
  return { v: PROTOCOL_VERSION, deviceId: 'dev_1', rolloutId: 'rol_1', bundleId: 'bdl_1', state, at: AT, ...over };
}
const RESULT: BenchmarkResult = {
  runtime: 'onnxruntime', providers: ['cpu'], loadMs: 12, warmupRuns: 3, runs: 30,
  latencyMs: { p50: 1, p90: 2, p95: 2.5, p99: 3 }, throughputPerSec: 900, peakRssBytes: 1 << 26,
  golden: { passed: true, maxAbsError: 1e-6, samples: 3 },
};

test('forward moves apply and stamp the time', () => {
  const order: DeviceState[] = ['pending', 'downloading', 'verifying', 'installing', 'benchmarking', 'active'];
  let a = action('pending');
  for (const s of order.slice(1)) {
    const d = applyStatusReport(a, report(s), AT);
    assert.equal(d.kind, 'apply', s);
    if (d.kind !== 'apply') return;
    assert.equal(d.next.state, s);
    assert.equal(d.next.updatedAt, AT);
    assert.equal(d.next.rolloutId, 'rol_1');
    assert.equal(d.next.deviceId, 'dev_1');
    a = d.next;
  }
  // skipping intermediate states is a forward move too (reports can be lost)
  const jump = applyStatusReport(action('pending'), report('active'), AT);
  assert.equal(jump.kind, 'apply');
  // the input action is not mutated
  const orig = action('pending');
  applyStatusReport(orig, report('downloading'), AT);
  assert.equal(orig.state, 'pending');
});

test('duplicate and backward reports are ignored', () => {
  assert.equal(applyStatusReport(action('downloading'), report('downloading'), AT).kind, 'ignore');
  assert.equal(applyStatusReport(action('installing'), report('downloading'), AT).kind, 'ignore');
  assert.equal(applyStatusReport(action('benchmarking'), report('pending'), AT).kind, 'ignore');
  assert.equal(applyStatusReport(action('verifying'), report('pending'), AT).kind, 'ignore');
});

test('reports for another rollout or another bundle are ignored', () => {
  assert.equal(applyStatusReport(action('pending'), report('downloading', { rolloutId: 'rol_2' }), AT).kind, 'ignore');
  assert.equal(applyStatusReport(action('pending'), report('downloading', { bundleId: 'bdl_2' }), AT).kind, 'ignore');
  // a planned-failed action (no bundle) never accepts a report
  assert.equal(applyStatusReport(action('failed', { bundleId: null, code: 'NO_ARTIFACT' }), report('active'), AT).kind, 'ignore');
});

test('a terminal state is final: nothing moves an action out of active, failed or rolled_back', () => {
  for (const terminal of ['active', 'failed', 'rolled_back'] as DeviceState[]) {
    for (const s of ['pending', 'downloading', 'benchmarking', 'active', 'failed', 'rolled_back'] as DeviceState[]) {
      assert.equal(applyStatusReport(action(terminal), report(s), AT).kind, 'ignore', `${terminal} ← ${s}`);
    }
  }
});

test('failure reports carry code and reason; a benchmark result is kept once reported', () => {
  const failed = applyStatusReport(action('verifying'), report('failed', { code: 'SIGNATURE_INVALID', reason: 'bad sig' }), AT);
  assert.equal(failed.kind, 'apply');
  if (failed.kind === 'apply') {
    assert.equal(failed.next.code, 'SIGNATURE_INVALID');
    assert.equal(failed.next.reason, 'bad sig');
  }
  const withResult = applyStatusReport(action('installing'), report('benchmarking', { result: RESULT }), AT);
  assert.equal(withResult.kind, 'apply');
  if (withResult.kind !== 'apply') return;
  assert.deepEqual(withResult.next.result, RESULT);
  // a later report without a result keeps the one already recorded
  const active = applyStatusReport(withResult.next, report('active'), AT);
  assert.equal(active.kind, 'apply');
  if (active.kind === 'apply') {
    assert.deepEqual(active.next.result, RESULT);
    assert.equal(active.next.code, null);
  }
  // a rolled_back report with its own result replaces it
  const other = { ...RESULT, golden: { passed: false, maxAbsError: 0.5, samples: 3 } };
  const rb = applyStatusReport(withResult.next, report('rolled_back', { code: 'GOLDEN_MISMATCH', result: other }), AT);
  assert.equal(rb.kind, 'apply');
  if (rb.kind === 'apply') assert.deepEqual(rb.next.result, other);
});

// --- rolloutStatus ---

test('rolloutStatus: running until every action is terminal; succeeded only if all active', () => {
  const s = (...states: DeviceState[]) => rolloutStatus(states.map((state) => ({ state })));
  assert.equal(s('pending'), 'running');
  assert.equal(s('active', 'downloading'), 'running');
  assert.equal(s('failed', 'benchmarking'), 'running');
  assert.equal(s('active'), 'succeeded');
  assert.equal(s('active', 'active', 'active'), 'succeeded');
  assert.equal(s('active', 'failed'), 'failed');
  assert.equal(s('active', 'rolled_back'), 'failed');
  assert.equal(s('failed', 'failed'), 'failed');
});

// --- MQTT ACL ---

const own = (kind: (typeof DeviceTopic)[keyof typeof DeviceTopic]) => deviceTopic('dev_1', kind);

test('ACL publish: a device may publish its own status, heartbeat, chunk-request and presence', () => {
  for (const k of ['status', 'heartbeat', 'chunk-request', 'presence'] as const) assert.deepEqual(canPublish('dev_1', own(k)), { allow: true }, k);
});

test('ACL publish: never on desired, chunk or notice, even its own', () => {
  for (const k of ['desired', 'chunk', 'notice'] as const) assert.equal(canPublish('dev_1', own(k)).allow, false, k);
});

test('ACL publish: not for another device, not outside device topics, not with wildcards or $SYS', () => {
  const refused = [
    deviceTopic('dev_2', 'status'), deviceTopic('dev_10', 'heartbeat'), 'edgepack/v1/devices/+/status', 'edgepack/v1/devices/dev_1/#',
    '$SYS/broker/clients', 'edgepack/v1/devices/dev_1/status/x', 'other/topic', '',
  ];
  for (const t of refused) {
    const d = canPublish('dev_1', t);
    assert.equal(d.allow, false, t);
    if (!d.allow) assert.ok(d.reason.length > 0);
  }
});

test('ACL subscribe: a device may subscribe to its own desired, chunk and notice', () => {
  for (const k of ['desired', 'chunk', 'notice'] as const) assert.deepEqual(canSubscribe('dev_1', own(k)), { allow: true }, k);
});

test('ACL telemetry: a device publishes only its own telemetry and subscribes only to its own telemetry acks', () => {
  assert.deepEqual(canPublish('dev_1', own('telemetry')), { allow: true });
  assert.deepEqual(canSubscribe('dev_1', own('telemetry-ack')), { allow: true });
  // Never the other way round: a device must not forge its own acks or read the raw stream.
  assert.equal(canPublish('dev_1', own('telemetry-ack')).allow, false);
  assert.equal(canSubscribe('dev_1', own('telemetry')).allow, false);
  for (const t of [deviceTopic('dev_2', 'telemetry'), 'edgepack/v1/devices/+/telemetry', 'edgepack/v1/devices/dev_1/telemetry/x']) assert.equal(canPublish('dev_1', t).allow, false, t);
  for (const f of [deviceTopic('dev_2', 'telemetry-ack'), 'edgepack/v1/devices/+/telemetry-ack', 'edgepack/v1/devices/dev_1/telemetry-ack/#']) assert.equal(canSubscribe('dev_1', f).allow, false, f);
});

test('ACL subscribe: not to its own reports, not to another device, not with + / # or $ filters', () => {
  const refused = [
    own('status'), own('heartbeat'), own('chunk-request'), own('presence'),
    deviceTopic('dev_2', 'desired'), deviceTopic('dev_2', 'chunk'),
    '#', '+', '+/+/+/+/+', 'edgepack/#', 'edgepack/v1/devices/+/desired', 'edgepack/v1/devices/dev_1/#', 'edgepack/v1/devices/dev_1/+',
    '$SYS/#', '$SYS/broker/clients/connected', '$share/g/edgepack/v1/devices/dev_1/desired', '',
  ];
  for (const f of refused) assert.equal(canSubscribe('dev_1', f).allow, false, f);
});
