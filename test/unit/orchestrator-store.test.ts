// The SQLite store and key files on a real temp dir: migrations, single-use tokens, the
// offline sweep the cron job runs, and secrets created once with mode 0600.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openDatabase } from '@edgepack/orchestrator/db/database.js';
import { MIGRATIONS } from '@edgepack/orchestrator/db/migrations.js';
import { Store } from '@edgepack/orchestrator/db/store.js';
import { loadOrCreateSecrets } from '@edgepack/orchestrator/keys.js';

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'edgepack-store-'));
  try { await fn(dir); } finally { await rm(dir, { recursive: true, force: true }); }
}

const facts = { arch: 'x86_64', platform: 't', cpuModel: 't', cores: 1, ramBytes: 1, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };

test('migrations run once each, in order, in WAL mode; reopening changes nothing', () => withDir(async (dir) => {
  const file = join(dir, 'e.db');
  const db = openDatabase(file);
  assert.equal(db.pragma('journal_mode', { simple: true }), 'wal');
  const versions = () => (db.prepare('SELECT version FROM schema_migrations ORDER BY version').all() as { version: number }[]).map((r) => r.version);
  assert.deepEqual(versions(), MIGRATIONS.map((m) => m.version));
  db.close();
  const again = openDatabase(file);
  assert.equal((again.prepare('SELECT count(*) AS n FROM schema_migrations').get() as { n: number }).n, MIGRATIONS.length);
  again.close();
}));

test('an enrollment token can be consumed exactly once', () => withDir(async (dir) => {
  const db = openDatabase(join(dir, 'e.db'));
  const store = new Store(db);
  store.insertEnrollmentToken('h1', '2026-01-01T00:00:00Z', '2030-01-01T00:00:00Z');
  assert.equal(store.consumeEnrollmentToken('h1', 'dev_a', '2026-01-02T00:00:00Z'), true);
  assert.equal(store.consumeEnrollmentToken('h1', 'dev_b', '2026-01-02T00:00:01Z'), false);
  assert.equal(store.getEnrollmentToken('h1')?.usedAt, '2026-01-02T00:00:00Z');
  db.close();
}));

test('the offline sweep marks only online devices silent since the cutoff', () => withDir(async (dir) => {
  const db = openDatabase(join(dir, 'e.db'));
  const store = new Store(db);
  for (const id of ['dev_old', 'dev_new', 'dev_off']) store.insertDevice({ id, name: id, profile: 'p', publicKey: 'k', tags: [], facts, createdAt: '2026-01-01T00:00:00Z' });
  store.markSeen('dev_old', '2026-01-01T00:00:00Z');
  store.markSeen('dev_new', '2026-01-01T00:10:00Z');
  assert.deepEqual(store.markStaleOffline('2026-01-01T00:05:00Z'), ['dev_old']);
  assert.equal(store.getDevice('dev_old')!.status, 'offline');
  assert.equal(store.getDevice('dev_new')!.status, 'online');
  assert.deepEqual(store.markStaleOffline('2026-01-01T00:05:00Z'), [], 'a second sweep finds nothing new');
  db.close();
}));

test('the signing key and admin token are created once, mode 0600, and reloaded unchanged', () => withDir(async (dir) => {
  const first = await loadOrCreateSecrets(dir);
  assert.equal(first.created, true);
  for (const f of ['signing-key.json', 'admin-token']) assert.equal((await stat(join(dir, f))).mode & 0o777, 0o600, f);
  const second = await loadOrCreateSecrets(dir);
  assert.equal(second.created, false);
  assert.equal(second.adminToken, first.adminToken);
  assert.equal(second.signing.publicKey, first.signing.publicKey);
  assert.equal(second.signing.keyId, first.signing.keyId);
}));

test('migration 6 over a database of one-wave rollouts: the rollouts stay readable, and each device\'s latest desired state becomes its intent (with the seq it saw)', () => withDir(async (dir) => {
  const Database = (await import('better-sqlite3')).default;
  const { migrate } = await import('@edgepack/orchestrator/db/database.js');
  const { RolloutStore } = await import('@edgepack/orchestrator/db/rollout-store.js');
  const file = join(dir, 'old.db');
  // A database as the last release left it: migrations 1-5 only.
  const old = new Database(file);
  old.exec('CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at TEXT NOT NULL)');
  for (const m of MIGRATIONS.filter((x) => x.version <= 5)) {
    old.exec(m.sql);
    old.prepare('INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)').run(m.version, m.name, '2026-01-01T00:00:00Z');
  }
  old.exec(`
    INSERT INTO devices (id, name, profile, public_key, facts, desired_seq, created_at) VALUES ('dev_a', 'a', 'p', 'k', '{}', 2, '2026-01-01T00:00:00Z');
    INSERT INTO models (id, name, version, sha256, size_bytes, format, inputs, outputs, created_at) VALUES ('mdl_1', 'm', '1', 'x', 1, 'onnx', '[]', '[]', '2026-01-01T00:00:00Z');
    INSERT INTO builds (id, model_id, status, profiles, created_at) VALUES ('bld_1', 'mdl_1', 'succeeded', '["p"]', '2026-01-01T00:00:00Z');
    INSERT INTO rollouts (id, build_id, status, target, created_at) VALUES ('rol_1', 'bld_1', 'succeeded', '{}', '2026-01-01T00:00:00Z');
    INSERT INTO rollouts (id, build_id, status, target, created_at) VALUES ('rol_2', 'bld_1', 'running', '{}', '2026-01-02T00:00:00Z');
    INSERT INTO actions (rollout_id, device_id, group_position, bundle_id, state, updated_at, desired_seq) VALUES ('rol_1', 'dev_a', 0, 'bdl_1', 'active', '2026-01-01T00:00:00Z', 1);
    INSERT INTO actions (rollout_id, device_id, group_position, bundle_id, state, updated_at, desired_seq) VALUES ('rol_2', 'dev_a', 0, 'bdl_2', 'pending', '2026-01-02T00:00:00Z', 2);
  `);
  old.close();
  const db = new Database(file);
  migrate(db);
  const store = new Store(db);
  const rollouts = new RolloutStore(db);
  assert.deepEqual(rollouts.desiredIntent('dev_a'), { deviceId: 'dev_a', seq: 2, rolloutId: 'rol_2', bundleId: 'bdl_2', signed: null, signedSeq: null, signedKey: null });
  assert.equal(store.getDevice('dev_a')!.desiredSeq, 2, 'the seq counter goes on from where it was');
  const legacy = store.getRollout('rol_2')!;
  assert.equal(legacy.staged, false);
  assert.equal(legacy.stream, null);
  assert.equal(rollouts.getStaged('rol_2'), undefined, 'no plan: not one the engine runs');
  assert.deepEqual(store.listActions('rol_2').map((a) => a.state), ['pending']);
  // The new seqs continue above it.
  assert.equal(rollouts.allocateDesired('dev_a', 'rol_x', 'bdl_3'), 3);
  db.close();
}));
