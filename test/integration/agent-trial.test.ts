// Trials on the device side, in-process against a real Aedes broker: the test plays the
// orchestrator (signed trial desired states, a chunk server), the agent runs real onnxruntime
// benchmarks of real candidates (fp32, int8-dynamic and fp16 variants of one model, made by the
// orchestrator's optimizer) while its inference service keeps serving the active model.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdir, readdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceTopic, PROTOCOL_VERSION, TrialReportSchema, Validator, generateKeyPair, signDesired, verifyTrialReport, type TrialReport } from '@edgepack/protocol';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { Agent } from '@edgepack/agent/agent.js';
import { BundleSlots } from '@edgepack/agent/bundle-slots.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { startDeviceServing, type DeviceServing } from '@edgepack/agent/serving/device-serving.js';
import { tempDir, until } from '../support/processes.js';
import { installBundle, kserveJson, randomFloats } from '../support/serving-fixtures.js';
import { candidate, deviceRig, trialDesired, variantModels, type Candidate } from '../support/trial-fixtures.js';

const ORCH = generateKeyPair();
const DEVICE = generateKeyPair();
const DEVICE_ID = 'dev_trial';
const silent = createLogger('silent');
const reportValidator = new Validator('trial report', TrialReportSchema);

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

const models = variantModels();
let made: Promise<Record<string, Candidate>> | undefined;
/** The three candidates of one build, signed by the orchestrator, plus one signed by a stranger. */
function candidates(): Promise<Record<string, Candidate>> {
  made ??= (async () => ({
    fp32: await candidate({ bundleId: 'bdl_fp32', precision: 'fp32', model: models.fp32, signingKey: ORCH.secretKey, publicKey: ORCH.publicKey }),
    int8: await candidate({ bundleId: 'bdl_int8', precision: 'int8-dynamic', model: models['int8-dynamic'], signingKey: ORCH.secretKey, publicKey: ORCH.publicKey }),
    fp16: await candidate({ bundleId: 'bdl_fp16', precision: 'fp16', model: models.fp16, signingKey: ORCH.secretKey, publicKey: ORCH.publicKey }),
    stranger: await candidate({ bundleId: 'bdl_stranger', precision: 'int8-dynamic', model: models['int8-dynamic'], signingKey: generateKeyPair().secretKey, publicKey: ORCH.publicKey }),
  }))();
  return made;
}

interface Device { agent: Agent; serving: DeviceServing; lines: { level: string; msg: string; obj: Record<string, unknown> }[]; stop: () => Promise<void> }

/** The agent and its inference service, wired as cli.ts wires them (onActiveChanged → serving). */
async function device(dataDir: string, port: number): Promise<Device> {
  const lines: Device['lines'] = [];
  const log = Object.fromEntries(['error', 'warn', 'info', 'debug'].map((level) => [level, (obj: object, msg?: string) => { lines.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> }); }])) as unknown as Logger;
  let serving: DeviceServing | undefined;
  let activations = 0;
  const agent = new Agent({
    dataDir, log, agentVersion: 'test', benchmarkRuns: 5, onActiveChanged: (a) => { activations++; return serving?.activate(a); },
    identity: {
      deviceId: DEVICE_ID, name: 'test', profile: 'x86-64-gateway', server: 'http://127.0.0.1:1', publicKey: DEVICE.publicKey, secretKey: DEVICE.secretKey,
      orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port }, heartbeatSec: 60, enrolledAt: new Date().toISOString(),
    },
  });
  serving = await startDeviceServing({
    dataDir, log, agentVersion: 'test', link: agent.link, listen: { tcp: { host: '127.0.0.1', port: 0 } },
    concurrency: 1, maxQueued: 32, defaultTimeoutMs: 20_000, memoryFactor: 3,
    telemetry: { windowSec: 60, spoolBytes: 1 << 20, reconnectJitterMs: 100, ackTimeoutMs: 5000, maxWindowsPerSec: 50 },
  });
  await agent.start();
  await until('agent connected', async () => lines.some((l) => l.msg === 'connected'), 10_000, 20);
  await new Promise((r) => setTimeout(r, 200)); // its subscriptions
  const s = serving;
  return { agent, serving: s, lines, stop: async () => { await s.stop(); await agent.stop(); } };
}

async function setup(name: string, o: { tmpfs?: string; active?: Candidate } = {}) {
  const dir = await tempDir(name);
  cleanups.push(() => dir.remove());
  if (o.tmpfs) {
    // A small disk of its own (needs root; the caller skips otherwise).
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${o.tmpfs}`, 'tmpfs', dir.path]);
    cleanups.push(async () => { execFileSync('umount', ['-l', dir.path]); });
  }
  const store = { getDeviceKey: (id: string) => (id === DEVICE_ID ? { publicKey: DEVICE.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker: Broker = await startBroker({ store, log: silent, host: '127.0.0.1', port: 0, now: () => new Date() });
  cleanups.push(() => broker.close());
  // The active model: another model entirely ("fashion"), installed and serving before the trial.
  const slots = new BundleSlots(dir.path);
  let activeId = 'bdl_active';
  let modelName = 'fashion';
  if (o.active) {
    // Or one of the trial's own candidates, installed as an install leaves it.
    const m = o.active.bundle.manifest;
    const staged = join(dir.path, 'staged');
    await mkdir(staged);
    for (const [k, v] of o.active.files) await writeFile(join(staged, k), v);
    await slots.install(m, (k) => join(staged, k));
    await slots.activate({ bundleId: m.bundleId, manifest: m, activatedAt: new Date().toISOString() });
    activeId = m.bundleId;
    modelName = m.model.name;
  } else {
    await slots.activate(await installBundle(dir.path, { bundleId: 'bdl_active', name: 'fashion', version: '1', model: buildTinyMlpModel({ seed: 9 }) }));
  }
  const rig = deviceRig(broker, DEVICE_ID);
  let d = await device(dir.path, broker.port);
  cleanups.push(() => d.stop());
  await until('serving the active bundle', async () => d.serving.service.ready, 20_000, 20);
  const activeJson = await readFile(join(dir.path, 'active.json'), 'utf8');
  const infer = async () => {
    const r = await fetch(`${d.serving.url}/v2/models/${modelName}/infer`, { method: 'POST', body: kserveJson({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: randomFloats(784, 1) } }), headers: { 'content-type': 'application/json' } });
    return { status: r.status, body: await r.json() as { outputs: { data: number[] }[] } };
  };
  const reportsOf = (seq: number) => rig.trialReports.filter((r) => r.seq === seq);
  const final = (seq: number) => until(`trial ${seq} over`, async () => reportsOf(seq).find((r) => r.state !== 'running'), 60_000, 50);
  /** Nothing of the install flow moved: active.json as it was, the install slots as they were, no scratch slot. */
  const assertUntouched = async () => {
    assert.equal(await readFile(join(dir.path, 'active.json'), 'utf8'), activeJson, 'active.json unchanged');
    assert.deepEqual(await readdir(join(dir.path, 'bundles')), [activeId], 'only the active bundle in the install slots');
    assert.equal(await stat(join(dir.path, 'trial-scratch')).then(() => true, () => false), false, 'the scratch slot is gone');
    assert.ok(!rig.statusReports.some((r) => r.bundleId !== activeId && r.state === 'active'), 'no status report of an install');
    const r = await infer();
    assert.equal(r.status, 200, 'the active model still serves');
  };
  return {
    dir: dir.path, broker, rig, reportsOf, final, infer, assertUntouched,
    get device() { return d; },
    get lines() { return d.lines; },
    restart: async () => {
      await d.stop();
      d = await device(dir.path, broker.port);
      await until('serving again', async () => d.serving.service.ready, 20_000, 20);
    },
  };
}

function assertSigned(r: TrialReport): void {
  assert.ok(reportValidator.parse(Buffer.from(JSON.stringify(r))).ok, 'a well-formed TrialReport');
  assert.ok(verifyTrialReport(r, DEVICE.publicKey), 'signed by the device key');
}

test('a trial of three real candidates: running, then done with every candidate\'s figures and agreement; the active model serves throughout and nothing of the install flow moves', async (t) => {
  const s = await setup('agent-trial');
  const c = await candidates();
  for (const k of ['fp32', 'int8', 'fp16']) s.rig.add(c[k]!);
  const before = await s.infer();
  await s.rig.publish(DeviceTopic.desired, trialDesired({ deviceId: DEVICE_ID, seq: 1, rolloutId: 'rol_t', candidates: [c.fp32!.bundle, c.int8!.bundle, c.fp16!.bundle], rounds: 2, signingKey: ORCH.secretKey }));
  await until('running reported', async () => s.reportsOf(1).some((r) => r.state === 'running'), 10_000, 20);
  // Requests during the trial are answered by the active model, with the same outputs.
  let during = 0;
  while (!s.reportsOf(1).some((r) => r.state !== 'running') && during < 200) {
    const r = await s.infer();
    assert.equal(r.status, 200);
    assert.deepEqual(r.body.outputs[0]!.data, before.body.outputs[0]!.data);
    during++;
  }
  const done = await s.final(1);
  assert.ok(during > 0, 'requests were served while the trial ran');
  for (const r of s.reportsOf(1)) assertSigned(r);
  assert.equal(s.reportsOf(1)[0]!.state, 'running', 'running comes first');
  assert.equal(done.state, 'done', JSON.stringify(done));
  assert.equal(done.rolloutId, 'rol_t');
  assert.deepEqual(done.results.map((r) => [r.bundleId, r.precision]), [['bdl_fp32', 'fp32'], ['bdl_int8', 'int8-dynamic'], ['bdl_fp16', 'fp16']]);
  for (const r of done.results) {
    assert.equal(r.code, undefined, `${r.bundleId}: ${r.reason}`);
    const f = r.result!;
    assert.ok(f.loadMs > 0 && f.latencyMs.p50 > 0 && f.latencyMs.p50 <= f.latencyMs.p95 && f.latencyMs.p95 <= f.latencyMs.p99, JSON.stringify(f));
    assert.ok(f.throughputPerSec > 0 && f.peakRssBytes > 0);
    assert.equal(f.runs, 10, 'five timed runs in each of two rounds');
    assert.equal(f.golden.passed, true);
    assert.equal(r.agreement!.samples, 4);
  }
  for (const r of done.results) t.diagnostic(`${r.precision}: p50 ${r.result!.latencyMs.p50} ms, p95 ${r.result!.latencyMs.p95} ms, load ${r.result!.loadMs} ms, rss ${(r.result!.peakRssBytes / 2 ** 20).toFixed(0)} MiB, agreement top1 ${r.agreement!.top1} maxAbsError ${r.agreement!.maxAbsError.toExponential(2)}`);
  const [ref, int8, fp16] = done.results;
  assert.deepEqual(ref!.agreement, { top1: 1, maxAbsError: 0, samples: 4 }, 'the reference agrees with itself');
  // The quantized model's outputs are close to the reference's but not equal: measured, not assumed.
  assert.ok(int8!.agreement!.maxAbsError > 0 && int8!.agreement!.maxAbsError < 0.5, JSON.stringify(int8!.agreement));
  assert.ok(fp16!.agreement!.maxAbsError > 0 && fp16!.agreement!.maxAbsError < 0.05, JSON.stringify(fp16!.agreement));
  assert.ok(int8!.agreement!.top1 >= 0.5 && fp16!.agreement!.top1 === 1);
  // Every candidate was fetched over MQTT (none was in an install slot).
  for (const b of ['bdl_fp32', 'bdl_int8', 'bdl_fp16']) assert.ok(s.rig.requests.some((q) => q.bundleId === b));
  await s.assertUntouched();
  const state = JSON.parse(await readFile(join(s.dir, 'state.json'), 'utf8'));
  assert.equal(state.trial.state, 'done');
  assert.equal(state.action, null, 'a trial is no Action');
});

test('a tampered file and a candidate signed by a stranger get codes of their own; the other candidates are measured', async () => {
  const s = await setup('agent-trial-tamper');
  const c = await candidates();
  for (const k of ['fp32', 'int8', 'fp16', 'stranger']) s.rig.add(c[k]!);
  // The fp16 model's bytes are altered in transit (same length, one byte flipped).
  const f = c.fp16!.bundle.manifest.files[0]!;
  const bad = Buffer.from(c.fp16!.files.get(f.sha256)!);
  bad[bad.length >> 1]! ^= 0xff;
  s.rig.tamper.set(f.sha256, bad);
  await s.rig.publish(DeviceTopic.desired, trialDesired({ deviceId: DEVICE_ID, seq: 3, rolloutId: 'rol_tamper', candidates: [c.fp32!.bundle, c.stranger!.bundle, c.fp16!.bundle, c.int8!.bundle], rounds: 1, signingKey: ORCH.secretKey }));
  const done = await s.final(3);
  assertSigned(done);
  assert.equal(done.state, 'done', JSON.stringify(done));
  const by = Object.fromEntries(done.results.map((r) => [r.bundleId, r]));
  assert.equal(by.bdl_fp16!.code, 'FILE_HASH_MISMATCH', by.bdl_fp16!.reason);
  assert.equal(by.bdl_fp16!.result, undefined);
  assert.equal(by.bdl_stranger!.code, 'SIGNATURE_INVALID', by.bdl_stranger!.reason);
  assert.ok(!s.rig.requests.some((q) => q.bundleId === 'bdl_stranger'), 'nothing of a bundle it cannot trust is fetched');
  for (const id of ['bdl_fp32', 'bdl_int8']) {
    assert.equal(by[id]!.code, undefined, by[id]!.reason);
    assert.ok(by[id]!.result!.latencyMs.p95 > 0 && by[id]!.agreement!.samples === 4);
  }
  await s.assertUntouched();
});

test('a trial seq already reported is never run again: a redelivery, the retained message after a restart, both answer with the same report', async () => {
  const s = await setup('agent-trial-replay');
  const c = await candidates();
  s.rig.add(c.fp32!);
  s.rig.add(c.int8!);
  const d = trialDesired({ deviceId: DEVICE_ID, seq: 5, rolloutId: 'rol_replay', candidates: [c.fp32!.bundle, c.int8!.bundle], rounds: 1, signingKey: ORCH.secretKey });
  await s.rig.publish(DeviceTopic.desired, d, true);
  const done = await s.final(5);
  assert.equal(done.state, 'done');
  const requests = s.rig.requests.length;
  await s.rig.publish(DeviceTopic.desired, d);
  await until('answered again', async () => s.reportsOf(5).filter((r) => r.state === 'done').length >= 2, 10_000, 20);
  await s.restart(); // the retained trial comes back on the new connection
  await until('answered after the restart', async () => s.reportsOf(5).filter((r) => r.state === 'done').length >= 3, 10_000, 20);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(s.reportsOf(5).filter((r) => r.state === 'running').length, 1, 'it started once');
  assert.equal(s.rig.requests.length, requests, 'nothing fetched again');
  for (const r of s.reportsOf(5).filter((x) => x.state === 'done')) assert.deepEqual(r.results, done.results);
  await s.assertUntouched();
});

test('a newer desired state stops a trial (TRIAL_SUPERSEDED) and runs; a trial that does not hold together is TRIAL_INVALID', async () => {
  const s = await setup('agent-trial-supersede');
  const c = await candidates();
  s.rig.add(c.fp32!);
  s.rig.add(c.int8!);
  // The int8 candidate's model is never served: the trial waits on it.
  const held = c.int8!.bundle.manifest.files[0]!.sha256;
  s.rig.hold = (sha) => sha === held;
  await s.rig.publish(DeviceTopic.desired, trialDesired({ deviceId: DEVICE_ID, seq: 7, rolloutId: 'rol_slow', candidates: [c.fp32!.bundle, c.int8!.bundle], rounds: 1, signingKey: ORCH.secretKey }));
  await until('the held file asked for', async () => s.rig.requests.some((q) => q.sha256 === held), 10_000, 20);
  assert.equal(await stat(join(s.dir, 'trial-scratch')).then(() => true, () => false), true, 'the scratch slot is in use');
  // A newer trial, whose reference is not among its candidates (signed all the same).
  const { trial: _t, ...rest } = trialDesired({ deviceId: DEVICE_ID, seq: 8, rolloutId: 'rol_bad', candidates: [c.fp32!.bundle], rounds: 1, signingKey: ORCH.secretKey });
  const invalid = signDesired({ ...rest, bundle: c.int8!.bundle, trial: { candidates: [c.fp32!.bundle], rounds: 1, referenceBundleId: 'bdl_int8' } }, ORCH.secretKey);
  await s.rig.publish(DeviceTopic.desired, invalid);
  const stopped = await s.final(7);
  assert.equal(stopped.state, 'failed');
  assert.equal(stopped.code, 'TRIAL_SUPERSEDED');
  const bad = await s.final(8);
  assert.equal(bad.state, 'failed');
  assert.equal(bad.code, 'TRIAL_INVALID');
  assert.match(bad.reason!, /reference bdl_int8 is not among the candidates/);
  assert.equal(s.reportsOf(8).some((r) => r.state === 'running'), false, 'never started');
  // And an install after a trial is the install flow as ever (its bundle never served here: it downloads).
  await s.rig.publish(DeviceTopic.desired, signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq: 9, rolloutId: 'rol_install', bundle: c.int8!.bundle, issuedAt: new Date().toISOString() }, ORCH.secretKey));
  await until('install downloading', async () => s.rig.statusReports.some((r) => r.rolloutId === 'rol_install' && r.state === 'downloading'), 10_000, 20);
  assert.equal(await readFile(join(s.dir, 'active.json'), 'utf8').then((t) => JSON.parse(t).bundleId), 'bdl_active');
  assert.equal(await stat(join(s.dir, 'trial-scratch')).then(() => true, () => false), false, 'the scratch slot is gone');
  assert.equal((await s.infer()).status, 200);
});

test('hostile and malformed trial states: refused with a reason, nothing crashes, the active model serves and a sound trial still runs', async () => {
  const s = await setup('agent-trial-hostile');
  const c = await candidates();
  s.rig.add(c.fp32!);
  const good = trialDesired({ deviceId: DEVICE_ID, seq: 11, rolloutId: 'rol_ok', candidates: [c.fp32!.bundle], rounds: 1, signingKey: ORCH.secretKey });
  const { trial: _t, ...noTrial } = good;
  await s.rig.publish(DeviceTopic.desired, Buffer.from('{"kind":"trial",'));
  await s.rig.publish(DeviceTopic.desired, noTrial); // a trial with its trial part cut off: the envelope no longer verifies
  await s.rig.publish(DeviceTopic.desired, { ...good, seq: 99 }); // seq pushed up under a genuine signature
  await s.rig.publish(DeviceTopic.desired, { ...good, trial: { ...good.trial!, candidates: Array.from({ length: 9 }, () => c.fp32!.bundle) } }); // over TRIAL_LIMITS
  await s.rig.publish(DeviceTopic.desired, { ...good, trial: { ...good.trial!, rounds: 1e9 } });
  await s.rig.publish(DeviceTopic.desired, { ...good, kind: 'benchmark' });
  await until('every hostile one refused', async () => s.lines.filter((l) => l.level === 'warn' && /desired state (refused|ignored)/.test(l.msg)).length >= 6, 10_000, 20);
  const codes = s.lines.filter((l) => l.level === 'warn' && /desired state (refused|ignored)/.test(l.msg)).map((l) => l.obj.code);
  assert.ok(codes.includes('DESIRED_SIGNATURE_INVALID'), JSON.stringify(codes));
  assert.ok(codes.every((x) => typeof x === 'string' && x.length > 0), JSON.stringify(codes));
  assert.deepEqual(s.rig.trialReports, [], 'none of them started anything');
  assert.equal((await s.infer()).status, 200);
  await s.rig.publish(DeviceTopic.desired, good);
  const done = await s.final(11);
  assert.equal(done.state, 'done');
  assert.equal(done.results[0]!.code, undefined);
  await s.assertUntouched();
});

test('a disk too small for the candidates: the trial fails with DISK_FULL, the scratch slot goes, the active model serves', async (t) => {
  const probe = await tempDir('agent-trial-probe');
  let canMount = false;
  try {
    await mkdir(join(probe.path, 'm'));
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=64k', 'tmpfs', join(probe.path, 'm')]);
    execFileSync('umount', [join(probe.path, 'm')]);
    canMount = true;
  } catch { /* not root */ }
  await probe.remove();
  if (!canMount) return t.skip('mounting a small tmpfs needs root');
  const s = await setup('agent-trial-disk', { tmpfs: '1m' });
  // About 1.6 MB of weights: more than the disk has left once the active bundle is on it.
  const big = await candidate({ bundleId: 'bdl_big', precision: 'fp32', model: encodeBig(), signingKey: ORCH.secretKey, publicKey: ORCH.publicKey, samples: 1 });
  s.rig.add(big);
  await s.rig.publish(DeviceTopic.desired, trialDesired({ deviceId: DEVICE_ID, seq: 13, rolloutId: 'rol_disk', candidates: [big.bundle], rounds: 1, signingKey: ORCH.secretKey }));
  const r = await s.final(13);
  assert.equal(r.state, 'failed', JSON.stringify(r));
  assert.equal(r.code, 'DISK_FULL');
  assert.match(r.reason!, /no space left/);
  await s.assertUntouched();
});

function encodeBig(): Uint8Array {
  return buildTinyMlpModel({ seed: 5, hidden: 512 });
}

test('a candidate already in an install slot is measured from a copy, without a download, and its slot stays as it was; a trial during an install download supersedes it', async () => {
  const c = await candidates();
  const s = await setup('agent-trial-kept', { active: c.fp32! });
  s.rig.add(c.int8!);
  const activeFile = join(s.dir, 'bundles', 'bdl_fp32', 'model.onnx');
  const before = await stat(activeFile);
  // An install of a bundle never served: it sits in downloading when the trial arrives.
  await s.rig.publish(DeviceTopic.desired, signDesired({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, seq: 20, rolloutId: 'rol_inst', bundle: c.fp16!.bundle, issuedAt: new Date().toISOString() }, ORCH.secretKey));
  await until('install downloading', async () => s.rig.statusReports.some((r) => r.rolloutId === 'rol_inst' && r.state === 'downloading'), 10_000, 20);
  await s.rig.publish(DeviceTopic.desired, trialDesired({ deviceId: DEVICE_ID, seq: 21, rolloutId: 'rol_kept', candidates: [c.fp32!.bundle, c.int8!.bundle], rounds: 1, signingKey: ORCH.secretKey }));
  const done = await s.final(21);
  const inst = s.rig.statusReports.filter((r) => r.rolloutId === 'rol_inst').at(-1)!;
  assert.equal(inst.state, 'failed');
  assert.equal(inst.code, 'SUPERSEDED');
  assert.equal(done.state, 'done', JSON.stringify(done));
  assert.deepEqual(done.results.map((r) => r.code), [undefined, undefined]);
  assert.deepEqual(done.results[0]!.agreement, { top1: 1, maxAbsError: 0, samples: 4 });
  assert.ok(!s.rig.requests.some((q) => q.bundleId === 'bdl_fp32'), 'the kept bundle was not downloaded');
  const after = await stat(activeFile);
  assert.equal(after.mtimeMs, before.mtimeMs, 'the active slot was not written');
  await s.assertUntouched();
});
