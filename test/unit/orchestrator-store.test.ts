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
