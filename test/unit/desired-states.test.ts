// Desired states for a whole fleet, over a real SQLite file and real signatures: signed in
// batches that let the event loop run between them, each published once with the seq its intent
// was given, never overtaken by an older one, and republished after a restart byte for byte.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { generateKeyPair, verifyDesiredSignature, type DesiredState, type Manifest } from '@edgepack/protocol';
import { DesiredStates } from '@edgepack/orchestrator/services/desired-states.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { testDeps, type TestDeps } from '../support/http-app.js';

let t: TestDeps;
const KEY = generateKeyPair();
const facts = { arch: 'x86_64', platform: 't', cpuModel: 't', cores: 1, ramBytes: 1, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };
const N = 1000;
const ids = Array.from({ length: N }, (_, i) => `dev_ds${String(i).padStart(4, '0')}`);

before(async () => {
  t = await testDeps('desired');
  const at = new Date(t.clock.ms).toISOString();
  t.store.insertModel({ id: 'mdl_ds', name: 'ds', version: '1', sha256: 'a'.repeat(64), sizeBytes: 1, format: 'onnx', opset: 13, inputs: [], outputs: [], details: {}, createdAt: at });
  t.store.insertBuild({ id: 'bld_ds', modelId: 'mdl_ds', profiles: ['p'], options: {}, createdAt: at });
  const manifest = { schema: 'edgepack.bundle/1', bundleId: 'bdl_ds', profile: 'p', files: [], expiresAt: '2030-01-01T00:00:00Z', keyId: 'k' } as unknown as Manifest;
  t.store.insertBundle({ id: 'bdl_ds', buildId: 'bld_ds', profile: 'p', manifest, signature: 'sig', createdAt: at });
  for (const id of ids) t.store.insertDevice({ id, name: id, profile: 'p', publicKey: KEY.publicKey, tags: [], facts, createdAt: at });
});
after(async () => { await t?.close(); });

function desiredStates(published: { deviceId: string; text: string }[]): DesiredStates {
  return new DesiredStates({
    store: t.store, rollouts: t.services.rolloutStore, signingSecretKey: KEY.secretKey, now: () => new Date(t.clock.ms), log: createLogger('silent'),
    publisher: { async publishDesired(deviceId, text) { published.push({ deviceId, text }); }, async clearDesired() {} },
  });
}

test('1,000 desired states are signed in batches, with the event loop running between them; each goes out once, signed, with its own seq', async () => {
  const published: { deviceId: string; text: string }[] = [];
  const ds = desiredStates(published);
  const sends = t.services.rolloutStore.transaction(() => ids.map((id) => ({ deviceId: id, rolloutId: 'rol_ds', bundleId: 'bdl_ds', seq: t.services.rolloutStore.allocateDesired(id, 'rol_ds', 'bdl_ds') })));
  let turns = 0;
  let spinning = true;
  const spin = () => { if (!spinning) return; turns++; setImmediate(spin); };
  setImmediate(spin);
  await ds.send(sends);
  spinning = false;
  assert.ok(turns >= 9, `the event loop ran ${turns} times while 1,000 were signed (in batches of 100)`);
  assert.equal(published.length, N);
  assert.deepEqual(new Set(published.map((p) => p.deviceId)).size, N);
  for (const p of published.slice(0, 50)) {
    const d = JSON.parse(p.text) as DesiredState;
    assert.equal(d.seq, 1);
    assert.equal(verifyDesiredSignature(d, KEY.publicKey), true);
  }
});

test('an intent replaced before it was signed is not sent: the newer one is, and the retained topic never goes back', async () => {
  const published: { deviceId: string; text: string }[] = [];
  const ds = desiredStates(published);
  const [a, b] = [ids[0]!, ids[1]!];
  const older = t.services.rolloutStore.allocateDesired(a, 'rol_ds', 'bdl_ds');
  const newer = t.services.rolloutStore.allocateDesired(a, 'rol_ds', 'bdl_ds');
  const other = t.services.rolloutStore.allocateDesired(b, 'rol_ds', 'bdl_ds');
  await ds.send([{ deviceId: a, rolloutId: 'rol_ds', bundleId: 'bdl_ds', seq: older }, { deviceId: b, rolloutId: 'rol_ds', bundleId: 'bdl_ds', seq: other }]);
  assert.deepEqual(published.map((p) => p.deviceId), [b], 'a\'s older intent was replaced before it was signed');
  await ds.send([{ deviceId: a, rolloutId: 'rol_ds', bundleId: 'bdl_ds', seq: newer }]);
  assert.equal((JSON.parse(published.at(-1)!.text) as DesiredState).seq, newer);
});

test('after a restart every device\'s latest desired state is republished byte for byte, and only an unsigned intent is signed', async () => {
  const before: { deviceId: string; text: string }[] = [];
  await desiredStates(before).republishAll(); // prime: whatever is unsigned from the tests above
  const latest = new Map(before.map((p) => [p.deviceId, p.text]));
  // An intent the "crash" caught after it was written and before it was signed.
  const seq = t.services.rolloutStore.allocateDesired(ids[5]!, 'rol_ds', 'bdl_ds');
  const after: { deviceId: string; text: string }[] = [];
  const r = await desiredStates(after).republishAll();
  assert.equal(r.signed, 1);
  assert.equal(r.republished, N);
  for (const p of after) {
    if (p.deviceId === ids[5]) assert.equal((JSON.parse(p.text) as DesiredState).seq, seq);
    else assert.equal(p.text, latest.get(p.deviceId), p.deviceId);
  }
});
