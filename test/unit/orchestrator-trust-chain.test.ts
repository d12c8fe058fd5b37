// What `edgepack serve` does with <data-dir>/trust/ at start, on real files in a temp dir:
// a development root on first start, refusals (with codes) of any chain devices would refuse,
// and the `edgepack keys` CLI that makes production chains, run as a real process.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, stat, writeFile, mkdir, copyFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TRUST_LIMITS, TrustVerifier, createRoot, generateKeyPair, keyId, signRoot, type KeyPair, type SignedRoot } from '@edgepack/protocol';
import { loadTrustChain, TRUST_DIR } from '@edgepack/orchestrator/trust-chain.js';
import type { Logger } from '@edgepack/orchestrator/logger.js';
import { ORCHESTRATOR_CLI } from '../support/paths.js';
import { startProcess, tempDir } from '../support/processes.js';

const NOW = new Date('2026-06-01T12:00:00.000Z');
const DAY = 86_400_000;
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => { while (cleanups.length) await cleanups.pop()!(); });

function recorder(): { log: Logger; lines: { level: string; msg: string }[] } {
  const lines: { level: string; msg: string }[] = [];
  const log = Object.fromEntries(['fatal', 'error', 'warn', 'info', 'debug', 'trace'].map((level) =>
    [level, (_obj: object, msg?: string) => { lines.push({ level, msg: msg ?? '' }); }])) as unknown as Logger;
  return { log, lines };
}

async function dataDir(): Promise<string> {
  const d = await tempDir('trust-chain');
  cleanups.push(d.remove);
  return d.path;
}

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try { await p; } catch (err) { return (err as { code?: string }).code; }
  return undefined;
}

const ROOT_KEYS = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
const signWith = (r: SignedRoot, ...keys: KeyPair[]) => keys.reduce((acc, k) => signRoot(acc, k.secretKey), r);
const root = (version: number, online: KeyPair, o: { expires?: Date; rootKeys?: KeyPair[] } = {}) => createRoot({
  version, expires: o.expires ?? new Date(NOW.getTime() + 365 * DAY), rootKeys: (o.rootKeys ?? ROOT_KEYS).map((k) => k.publicKey), rootThreshold: 2, bundlesKeys: [online.publicKey],
});

async function put(dir: string, r: SignedRoot, name = `root-${r.signed.version}.json`): Promise<void> {
  await mkdir(join(dir, TRUST_DIR), { recursive: true });
  await writeFile(join(dir, TRUST_DIR, name), JSON.stringify(r));
}

test('first start: a 1-of-1 development root delegating to the online key, its key 0600, said loudly; later starts reuse it', async () => {
  const dir = await dataDir();
  const online = generateKeyPair();
  const { log, lines } = recorder();
  const chain = await loadTrustChain({ dataDir: dir, online, log, now: NOW });
  assert.equal(chain.development, true);
  assert.equal(chain.latest.signed.version, 1);
  assert.deepEqual(chain.latest.signed.roles.bundles.keyids, [keyId(online.publicKey)]);
  assert.equal(chain.latest.signed.roles.root.threshold, 1);
  assert.ok(lines.some((l) => l.level === 'warn' && /DEVELOPMENT/.test(l.msg)));
  assert.equal((await stat(join(dir, TRUST_DIR, 'dev-root-key.json'))).mode & 0o777, 0o600);
  new TrustVerifier().verifyInitialRoot(chain.latest);
  // Devices enrolled before roots existed pinned the online key: root 1 carries its signature too.
  assert.ok(chain.roots[0]!.signatures.some((s) => s.keyid === keyId(online.publicKey)));

  const again = await loadTrustChain({ dataDir: dir, online, log, now: new Date(NOW.getTime() + DAY) });
  assert.equal(again.latest.signed.version, 1);
  assert.deepEqual(await readdir(join(dir, TRUST_DIR)).then((f) => f.sort()), ['dev-root-key.json', 'root-1.json']);
  // A new online key in a development setup: the dev root key issues version 2 for it.
  const online2 = generateKeyPair();
  const rotated = await loadTrustChain({ dataDir: dir, online: online2, log, now: NOW });
  assert.equal(rotated.latest.signed.version, 2);
  assert.deepEqual(rotated.latest.signed.roles.bundles.keyids, [keyId(online2.publicKey)]);
  const walk = new TrustVerifier().walkChain(chain.latest, rotated.roots);
  assert.deepEqual([walk.walked, walk.error], [[2], undefined]);
});

test('a production chain loads as devices would walk it; the orchestrator never needs the root keys', async () => {
  const dir = await dataDir();
  const online = generateKeyPair();
  const online2 = generateKeyPair();
  await put(dir, signWith(root(1, online), ROOT_KEYS[0], ROOT_KEYS[1]));
  await put(dir, signWith(root(2, online2), ROOT_KEYS[1], ROOT_KEYS[2]));
  const chain = await loadTrustChain({ dataDir: dir, online: online2, log: recorder().log, now: NOW });
  assert.equal(chain.development, false);
  assert.deepEqual(chain.roots.map((r) => r.signed.version), [1, 2]);
  assert.equal(chain.latest.signed.version, 2);
  assert.deepEqual(await readdir(join(dir, TRUST_DIR)).then((f) => f.sort()), ['root-1.json', 'root-2.json'], 'no development key made');
});

test('serve refuses a trust/ directory devices would refuse, each with its own code', async () => {
  const online = generateKeyPair();
  const stranger = generateKeyPair();
  const cases: [string, string, (dir: string) => Promise<void>, Date?][] = [
    ['online key not delegated', 'TRUST_ONLINE_KEY_NOT_DELEGATED', (d) => put(d, signWith(root(1, stranger), ...ROOT_KEYS))],
    ['latest root expired', 'ROOT_EXPIRED', (d) => put(d, signWith(root(1, online, { expires: new Date(NOW.getTime() - 1) }), ...ROOT_KEYS))],
    ['root 1 below its threshold', 'ROOT_THRESHOLD_NOT_MET', (d) => put(d, signWith(root(1, online), ROOT_KEYS[0]))],
    ['root 2 below the previous threshold', 'ROOT_THRESHOLD_NOT_MET', async (d) => {
      await put(d, signWith(root(1, stranger), ...ROOT_KEYS));
      await put(d, signWith(root(2, online), ROOT_KEYS[0], generateKeyPair()));
    }],
    ['a missing version', 'ROOT_VERSION_GAP', async (d) => {
      await put(d, signWith(root(1, stranger), ...ROOT_KEYS));
      await put(d, signWith(root(3, online), ...ROOT_KEYS));
    }],
    ['no root 1', 'ROOT_VERSION_GAP', (d) => put(d, signWith(root(2, online), ...ROOT_KEYS))],
    ['file name and version disagree', 'TRUST_ROOT_FILE_MISMATCH', (d) => put(d, signWith(root(1, online), ...ROOT_KEYS), 'root-2.json').then(() => put(d, signWith(root(1, online), ...ROOT_KEYS)))],
    ['malformed root', 'ROOT_INVALID', async (d) => { await mkdir(join(d, TRUST_DIR), { recursive: true }); await writeFile(join(d, TRUST_DIR, 'root-1.json'), '{"signed":'); }],
    ['oversized root file', 'TRUST_METADATA_TOO_LARGE', async (d) => { await mkdir(join(d, TRUST_DIR), { recursive: true }); await writeFile(join(d, TRUST_DIR, 'root-1.json'), ' '.repeat(TRUST_LIMITS.maxRootBytes + 1)); }],
  ];
  for (const [what, code, setup] of cases) {
    const dir = await dataDir();
    await setup(dir);
    assert.equal(await codeOf(loadTrustChain({ dataDir: dir, online, log: recorder().log, now: NOW })), code, what);
  }
});

async function cli(...args: string[]): Promise<{ code: number | null; out: string; err: string }> {
  const p = startProcess(ORCHESTRATOR_CLI(), ['keys', ...args]);
  const code = await p.exited;
  return { code, out: p.stdout(), err: p.stderr() };
}

test('edgepack keys: init makes 0600 root keys and a 2-of-3 root; sign counts each key once; rotations make the next versions', async () => {
  const dir = await dataDir();
  const online = generateKeyPair();
  await writeFile(join(dir, 'signing-key.json'), JSON.stringify(online), { mode: 0o600 });
  const k = join(dir, 'offline');
  const init = await cli('init', '--keys', '3', '--threshold', '2', '--out', k, '--data-dir', dir);
  assert.equal(init.code, 0, init.err);
  for (const i of [1, 2, 3]) assert.equal((await stat(join(k, `root-key-${i}.json`))).mode & 0o777, 0o600);
  const v = new TrustVerifier();
  const r1 = v.verifyInitialRoot(await readFile(join(k, 'root-1.json')));
  assert.equal(r1.signed.roles.root.threshold, 2);
  assert.deepEqual(r1.signed.roles.bundles.keyids, [keyId(online.publicKey)]);
  // The root it wrote is what serve loads (no secret of it needed there).
  await mkdir(join(dir, TRUST_DIR));
  await copyFile(join(k, 'root-1.json'), join(dir, TRUST_DIR, 'root-1.json'));
  assert.equal((await loadTrustChain({ dataDir: dir, online, log: recorder().log, now: new Date() })).latest.signed.version, 1);

  assert.equal((await cli('rotate-online', join(k, 'root-1.json'), '--online-key', join(k, 'online-2.json'), '--create')).code, 0);
  // One key, given twice: still one signature, still short of the threshold.
  const once = await cli('sign', join(k, 'root-2.json'), '--key', join(k, 'root-key-1.json'), '--key', join(k, 'root-key-1.json'));
  assert.equal(once.code, 0, once.err);
  assert.match(once.out, /signed by version 1's root keys: 1 of 2 needed \(/);
  const r2raw = await readFile(join(k, 'root-2.json'));
  assert.equal(JSON.parse(r2raw.toString()).signatures.length, 1);
  assert.equal(v.walkChain(r1, [JSON.parse(r2raw.toString())]).error?.code, 'ROOT_THRESHOLD_NOT_MET');
  const twice = await cli('sign', join(k, 'root-2.json'), '--key', join(k, 'root-key-3.json'));
  assert.match(twice.out, /signed by version 1's root keys: 2 of 2 needed ✓/);
  const r2 = v.updateRoot(r1, await readFile(join(k, 'root-2.json')));
  const online2 = JSON.parse(await readFile(join(k, 'online-2.json'), 'utf8')) as KeyPair;
  assert.deepEqual(r2.signed.roles.bundles.keyids, [keyId(online2.publicKey)]);
  assert.deepEqual(r2.signed.roles.root, r1.signed.roles.root);
  assert.equal((await stat(join(k, 'online-2.json'))).mode & 0o777, 0o600);

  assert.equal((await cli('rotate-root', join(k, 'root-2.json'), '--keys', '2', '--threshold', '2', '--out', join(k, 'new'))).code, 0);
  assert.equal(v.walkChain(r2, [JSON.parse(await readFile(join(k, 'root-3.json'), 'utf8'))]).error?.code, 'ROOT_THRESHOLD_NOT_MET', 'only the new keys signed so far');
  assert.equal((await cli('sign', join(k, 'root-3.json'), '--key', join(k, 'root-key-1.json'), '--key', join(k, 'root-key-2.json'))).code, 0);
  const r3 = v.updateRoot(r2, await readFile(join(k, 'root-3.json')));
  assert.equal(r3.signed.roles.root.keyids.length, 2);
  assert.deepEqual(r3.signed.roles.bundles, r2.signed.roles.bundles);
  const verified = await cli('verify', join(k, 'root-1.json'), join(k, 'root-2.json'), join(k, 'root-3.json'));
  assert.equal(verified.code, 0, verified.err);
  assert.match(verified.out, /version 3: follows/);
});

test('edgepack keys refuses what could never work, and never overwrites a root version', async () => {
  const dir = await dataDir();
  const online = join(dir, 'online.json');
  await writeFile(online, JSON.stringify(generateKeyPair()));
  const k = join(dir, 'k');
  assert.equal((await cli('init', '--keys', '2', '--threshold', '3', '--out', k, '--online-key', online)).code, 2);
  assert.equal((await cli('init', '--keys', '3', '--threshold', '2', '--out', k)).code, 2, 'no online key');
  assert.equal((await cli('init', '--keys', '3', '--threshold', '2', '--out', k, '--online-key', online, '--bogus')).code, 2);
  assert.equal((await cli('init', '--keys', '3', '--threshold', '2', '--out', k, '--online-key', online)).code, 0);
  const before = await readFile(join(k, 'root-1.json'), 'utf8');
  const again = await cli('init', '--keys', '3', '--threshold', '2', '--out', k, '--online-key', online);
  assert.equal(again.code, 1);
  assert.match(again.err, /TRUST_ROOT_EXISTS/);
  assert.equal(await readFile(join(k, 'root-1.json'), 'utf8'), before);
  assert.equal((await readdir(k)).filter((f) => f.startsWith('root-key-')).length, 3, 'no stray keys made');
  const notKey = await cli('sign', join(k, 'root-1.json'), '--key', online.replace('online.json', 'missing.json'));
  assert.notEqual(notKey.code, 0);
  const bad = await cli('rotate-online', join(k, 'root-1.json'), '--online-key', join(k, 'root-1.json'));
  assert.equal(bad.code, 1);
  assert.match(bad.err, /KEY_INVALID/);
});
