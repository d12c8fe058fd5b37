// kill -9 during a trial, with a real agent process: the trial is saved as in progress before
// it starts, so the restarted agent reports it failed (TRIAL_INTERRUPTED), removes the scratch
// slot, and never runs it again although its desired state is still retained; the active model
// serves before, and after, as it was.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceTopic, generateKeyPair, verifyTrialReport } from '@edgepack/protocol';
import { startBroker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { BundleSlots } from '@edgepack/agent/bundle-slots.js';
import { saveIdentity } from '@edgepack/agent/identity.js';
import { AGENT_CLI } from '../support/paths.js';
import { startProcess, tempDir, until, type Proc } from '../support/processes.js';
import { installBundle, kserveJson, randomFloats } from '../support/serving-fixtures.js';
import { candidate, deviceRig, trialDesired, variantModels } from '../support/trial-fixtures.js';

const ORCH = generateKeyPair();
const DEVICE = generateKeyPair();
const DEVICE_ID = 'dev_trial_kill';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

test('kill -9 during a trial: after the restart the active model still serves and the trial is reported failed, TRIAL_INTERRUPTED, once and for all', async () => {
  const dir = await tempDir('agent-trial-kill');
  cleanups.push(() => dir.remove());
  const store = { getDeviceKey: (id: string) => (id === DEVICE_ID ? { publicKey: DEVICE.publicKey, revoked: false } : undefined) } as unknown as Store;
  const broker = await startBroker({ store, log: createLogger('silent'), host: '127.0.0.1', port: 0, now: () => new Date() });
  cleanups.push(() => broker.close());
  // An enrolled device (its identity as enrollment writes it), with an active model.
  await saveIdentity(dir.path, {
    deviceId: DEVICE_ID, name: 'kill', profile: 'x86-64-gateway', server: 'http://127.0.0.1:1', publicKey: DEVICE.publicKey, secretKey: DEVICE.secretKey,
    orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port: broker.port }, heartbeatSec: 60, enrolledAt: new Date().toISOString(),
  });
  const active = await installBundle(dir.path, { bundleId: 'bdl_active', name: 'fashion', version: '1', model: buildTinyMlpModel({ seed: 9 }) });
  await new BundleSlots(dir.path).activate(active);
  const activeJson = await readFile(join(dir.path, 'active.json'), 'utf8');

  let subscribed = 0;
  broker.aedes.on('subscribe', (subs, client) => { if (client?.id === DEVICE_ID) subscribed++; });
  const rig = deviceRig(broker, DEVICE_ID);
  const models = variantModels();
  const fp32 = await candidate({ bundleId: 'bdl_fp32', precision: 'fp32', model: models.fp32, signingKey: ORCH.secretKey, publicKey: ORCH.publicKey });
  const int8 = await candidate({ bundleId: 'bdl_int8', precision: 'int8-dynamic', model: models['int8-dynamic'], signingKey: ORCH.secretKey, publicKey: ORCH.publicKey });
  rig.add(fp32);
  rig.add(int8);
  // The second candidate's model never comes: the trial is surely in progress when the kill lands.
  const held = int8.bundle.manifest.files[0]!.sha256;
  rig.hold = (sha) => sha === held;

  const start = async (): Promise<{ proc: Proc; url: string }> => {
    const before = subscribed;
    const proc = startProcess(AGENT_CLI(), ['--data-dir', dir.path, '--serve', '127.0.0.1:0', '--bench-runs', '5', '--log-level', 'debug']);
    cleanups.push(async () => { await proc.kill('SIGKILL'); });
    const serving = await proc.event('serving');
    await proc.event('started');
    await until('agent subscribed', async () => subscribed > before, 10_000, 20);
    return { proc, url: serving.url as string };
  };
  const infer = async (url: string) => {
    const r = await fetch(`${url}/v2/models/fashion/infer`, { method: 'POST', body: kserveJson({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: randomFloats(784, 1) } }), headers: { 'content-type': 'application/json' } });
    return { status: r.status, body: await r.text() };
  };

  const first = await start();
  const served = await until('serving the active model', async () => { const r = await infer(first.url); return r.status === 200 && r; }, 20_000, 50);
  // Retained, as the orchestrator publishes desired states: the restarted agent gets it again.
  await rig.publish(DeviceTopic.desired, trialDesired({ deviceId: DEVICE_ID, seq: 2, rolloutId: 'rol_kill', candidates: [fp32.bundle, int8.bundle], rounds: 2, signingKey: ORCH.secretKey }), true);
  await until('the held file asked for', async () => rig.requests.some((q) => q.sha256 === held), 20_000, 20);
  assert.ok(rig.trialReports.some((r) => r.seq === 2 && r.state === 'running'));
  assert.ok((await readdir(join(dir.path, 'trial-scratch', 'bundles'))).includes('bdl_fp32'), 'the first candidate is in the scratch slot');
  assert.equal(JSON.parse(await readFile(join(dir.path, 'state.json'), 'utf8')).trial.state, 'running', 'saved as in progress');
  first.proc.child.kill('SIGKILL');
  await first.proc.exited;

  const asked = rig.requests.length;
  const second = await start();
  const failed = await until('the interrupted trial reported', async () => rig.trialReports.find((r) => r.seq === 2 && r.state === 'failed'), 20_000, 20);
  assert.equal(failed.code, 'TRIAL_INTERRUPTED');
  assert.equal(failed.rolloutId, 'rol_kill');
  assert.ok(verifyTrialReport(failed, DEVICE.publicKey));
  const after = await until('serving after the restart', async () => { const r = await infer(second.url); return r.status === 200 && r; }, 20_000, 50);
  assert.equal(after.body, served.body, 'the same model answers the same request alike');
  assert.equal(await readFile(join(dir.path, 'active.json'), 'utf8'), activeJson);
  assert.deepEqual(await readdir(join(dir.path, 'bundles')), ['bdl_active']);
  assert.equal(await stat(join(dir.path, 'trial-scratch')).then(() => true, () => false), false, 'the scratch slot is gone');
  // The retained trial came back with the new session and was answered, not run: no new start, nothing fetched.
  await until('the retained trial answered', async () => rig.trialReports.filter((r) => r.seq === 2 && r.state === 'failed').length >= 2, 10_000, 20);
  await new Promise((r) => setTimeout(r, 500));
  assert.equal(rig.trialReports.filter((r) => r.seq === 2 && r.state === 'running').length, 1);
  assert.equal(rig.requests.length, asked, 'nothing fetched after the restart');
  await second.proc.kill('SIGTERM');
});
