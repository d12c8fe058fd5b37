// The orchestrator's TLS material in a real temp data dir: the self-made CA and server certificate
// (names, modes, reuse, renewal on a fake clock), certificates brought with --tls-cert, and the
// serve flags; each checked with a real TLS handshake where it matters.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { X509Certificate } from 'node:crypto';
import { readFile, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { connect, createServer } from 'node:tls';
import { parseServeConfig } from '@edgepack/orchestrator/config.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { RENEW_BEFORE_DAYS, SERVER_CERT_DAYS, loadTlsMaterial, pemBlocks, renewTlsMaterial, serverSans, type TlsMaterial } from '@edgepack/orchestrator/tls-material.js';
import { tempDir } from '../support/processes.js';

const log = createLogger('silent');
const DAY = 86_400_000;
const T0 = new Date('2026-06-01T12:00:00.000Z');

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try { await p; } catch (err) { return (err as { code?: string }).code; }
  return undefined;
}

/** A TLS server with the material, and a client that trusts only `ca` and asks for `host`. */
async function handshake(m: TlsMaterial, ca: string, host: string): Promise<{ ok: boolean; error?: string; chain: number }> {
  const server = createServer({ key: m.key, cert: m.cert }, (s) => s.end());
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    return await new Promise((resolve) => {
      const isIp = /^[\d.:]+$/.test(host);
      const c = connect({ host: '127.0.0.1', port, ca, ...(isIp ? {} : { servername: host }), checkServerIdentity: (_h, cert) => {
        const x = new X509Certificate(cert.raw);
        return (isIp ? x.checkIP(host) : x.checkHost(host)) ? undefined : new Error(`not for ${host}`);
      } });
      c.once('secureConnect', () => {
        let n = 0;
        for (let p = c.getPeerCertificate(true) as { issuerCertificate?: unknown; fingerprint256?: string } | undefined, seen = new Set(); p && !seen.has(p.fingerprint256); p = p.issuerCertificate as typeof p) { seen.add(p.fingerprint256); n++; }
        c.end();
        resolve({ ok: true, chain: n });
      });
      c.once('error', (err) => resolve({ ok: false, error: String((err as { code?: string }).code ?? err.message), chain: 0 }));
    });
  } finally {
    await new Promise((r) => server.close(r));
  }
}

test('the first start makes a CA and a server certificate naming localhost, 127.0.0.1, ::1, the public host and --tls-san names; keys are 0600', async () => {
  const dir = await tempDir('tls-first');
  try {
    const sans = serverSans('orch.example', ['edge.lan', '10.1.2.3']);
    assert.deepEqual(sans, ['localhost', '127.0.0.1', '::1', 'orch.example', 'edge.lan', '10.1.2.3']);
    const m = await loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'self-made', sans }, now: T0, log });
    assert.equal(m.source, 'self-made');
    assert.match(m.caFingerprint, /^sha256:[0-9a-f]{64}$/);
    for (const f of ['ca-key.pem', 'server-key.pem']) assert.equal((await stat(join(dir.path, 'tls', f))).mode & 0o777, 0o600, f);
    assert.equal((await stat(join(dir.path, 'tls'))).mode & 0o777, 0o700);
    const ca = new X509Certificate(await readFile(join(dir.path, 'tls', 'ca-cert.pem')));
    assert.equal(ca.ca, true);
    const leaf = new X509Certificate(pemBlocks(m.cert)[0]!);
    assert.equal(leaf.ca, false);
    assert.ok(leaf.checkIssued(ca) && leaf.verify(ca.publicKey));
    assert.equal(Math.round((Date.parse(leaf.validTo) - T0.getTime()) / DAY), SERVER_CERT_DAYS);
    // Presented leaf then CA, so an agent can find the CA it pinned in what it is shown.
    assert.equal(pemBlocks(m.cert).length, 2);
    assert.equal(pemBlocks(m.cert)[1], m.caCertificate);
    // Real handshakes under today's clock are in the self-made cert's validity only if T0 is near; use a fresh one for those.
    const now = await loadTlsMaterial({ dataDir: (await tempDir('tls-now')).path, settings: { mode: 'self-made', sans }, now: new Date(), log });
    for (const host of ['localhost', '127.0.0.1', '::1', 'orch.example', 'edge.lan', '10.1.2.3']) {
      const h = await handshake(now, now.caCertificate, host);
      assert.ok(h.ok, `${host}: ${h.error}`);
      assert.equal(h.chain, 2);
    }
    const other = await handshake(now, now.caCertificate, 'elsewhere.example');
    assert.equal(other.ok, false);
    const wrongCa = await handshake(now, m.caCertificate, 'localhost');
    assert.equal(wrongCa.ok, false, 'another data dir\'s CA does not vouch for it');
  } finally {
    await dir.remove();
  }
});

test('later starts reuse the CA and the certificate; near its end, or for new names, only the server certificate is issued again', async () => {
  const dir = await tempDir('tls-renew');
  try {
    const settings = { mode: 'self-made' as const, sans: serverSans('127.0.0.1', []) };
    const first = await loadTlsMaterial({ dataDir: dir.path, settings, now: T0, log });
    const again = await loadTlsMaterial({ dataDir: dir.path, settings, now: new Date(T0.getTime() + 10 * DAY), log });
    assert.equal(again.cert, first.cert);
    assert.equal(await renewTlsMaterial(first, { dataDir: dir.path, settings, now: new Date(T0.getTime() + 10 * DAY), log }), null);

    const late = new Date(T0.getTime() + (SERVER_CERT_DAYS - RENEW_BEFORE_DAYS + 1) * DAY);
    const renewed = await renewTlsMaterial(first, { dataDir: dir.path, settings, now: late, log });
    assert.ok(renewed, 'renewed within the last 30 days');
    assert.notEqual(renewed.cert, first.cert);
    assert.notEqual(renewed.key, first.key);
    assert.equal(renewed.caFingerprint, first.caFingerprint, 'devices pin the CA, which stays');
    assert.ok(renewed.serverNotAfter.getTime() > late.getTime() + (SERVER_CERT_DAYS - 1) * DAY);

    const named = await loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'self-made', sans: serverSans('127.0.0.1', ['new.example']) }, now: late, log });
    assert.notEqual(named.cert, renewed.cert);
    assert.ok(new X509Certificate(pemBlocks(named.cert)[0]!).checkHost('new.example'));
    assert.equal(named.caFingerprint, first.caFingerprint);

    // Half a CA is never replaced by a new one: every enrolled device pins the old one.
    await rm(join(dir.path, 'tls', 'ca-key.pem'));
    assert.equal(await codeOf(loadTlsMaterial({ dataDir: dir.path, settings, now: late, log })), 'TLS_MATERIAL_INVALID');
  } finally {
    await dir.remove();
  }
});

test('a brought certificate is served with its CA, pinned by the CA\'s fingerprint; a mismatched key or an expired certificate is refused', async () => {
  const dir = await tempDir('tls-provided');
  try {
    // An operator's CA and certificate, made here the way the orchestrator makes its own.
    const made = await loadTlsMaterial({ dataDir: join(dir.path, 'pki'), settings: { mode: 'self-made', sans: ['localhost', '127.0.0.1'] }, now: new Date(), log });
    const leafOnly = join(dir.path, 'leaf.pem');
    await writeFile(leafOnly, pemBlocks(made.cert)[0]!);
    await writeFile(join(dir.path, 'key.pem'), made.key);
    await writeFile(join(dir.path, 'ca.pem'), made.caCertificate);
    const p = await loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'provided', certFile: leafOnly, keyFile: join(dir.path, 'key.pem'), caFile: join(dir.path, 'ca.pem') }, now: new Date(), log });
    assert.equal(p.source, 'provided');
    assert.equal(p.caFingerprint, made.caFingerprint);
    assert.equal(pemBlocks(p.cert).length, 2, 'the CA is added to what is presented');
    assert.ok((await handshake(p, made.caCertificate, '127.0.0.1')).ok);
    // Without --tls-ca the chain's last certificate is the CA.
    await writeFile(join(dir.path, 'chain.pem'), made.cert);
    const q = await loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'provided', certFile: join(dir.path, 'chain.pem'), keyFile: join(dir.path, 'key.pem') }, now: new Date(), log });
    assert.equal(q.caFingerprint, made.caFingerprint);

    const other = await loadTlsMaterial({ dataDir: join(dir.path, 'other'), settings: { mode: 'self-made', sans: ['localhost'] }, now: new Date(), log });
    await writeFile(join(dir.path, 'other-key.pem'), other.key);
    assert.equal(await codeOf(loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'provided', certFile: leafOnly, keyFile: join(dir.path, 'other-key.pem') }, now: new Date(), log })), 'TLS_MATERIAL_INVALID');
    assert.equal(await codeOf(loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'provided', certFile: leafOnly, keyFile: join(dir.path, 'key.pem') }, now: new Date(Date.now() + 400 * DAY), log })), 'TLS_MATERIAL_INVALID');
    assert.equal(await codeOf(loadTlsMaterial({ dataDir: dir.path, settings: { mode: 'provided', certFile: join(dir.path, 'nope.pem'), keyFile: join(dir.path, 'key.pem') }, now: new Date(), log })), 'TLS_MATERIAL_INVALID');
  } finally {
    await dir.remove();
  }
});

test('serve\'s TLS flags: defaults, both-or-neither, --tls-san checks, --allow-plaintext and the session max age', () => {
  const parse = (argv: string[], env: NodeJS.ProcessEnv = {}) => {
    const c = parseServeConfig(argv, env);
    assert.notEqual(c, 'help');
    return c as Exclude<typeof c, 'help'>;
  };
  const d = parse([]);
  assert.equal(d.httpPort, 8443);
  assert.equal(d.mqttPort, 8883);
  assert.equal(d.allowPlaintext, false);
  assert.equal(d.mqttSessionMaxAgeSec, 3600);
  assert.deepEqual(d.tls, { mode: 'self-made', sans: ['localhost', '127.0.0.1', '::1'] });
  const s = parse(['--public-host', 'Orch.Example', '--tls-san', 'a.lan', '--tls-san', '192.168.1.9']);
  assert.deepEqual(s.tls, { mode: 'self-made', sans: ['localhost', '127.0.0.1', '::1', 'orch.example', 'a.lan', '192.168.1.9'] });
  assert.deepEqual(parse([], { EDGEPACK_TLS_SAN: 'x.lan, y.lan' }).tls, { mode: 'self-made', sans: ['localhost', '127.0.0.1', '::1', 'x.lan', 'y.lan'] });
  const b = parse(['--tls-cert', 'c.pem', '--tls-key', 'k.pem']);
  assert.equal(b.tls.mode, 'provided');
  for (const bad of [['--tls-cert', 'c.pem'], ['--tls-key', 'k.pem'], ['--tls-ca', 'ca.pem'], ['--tls-cert', 'c', '--tls-key', 'k', '--tls-san', 'x'], ['--tls-san', 'not a host'], ['--mqtt-session-max-age-sec=-1']]) {
    assert.throws(() => parse(bad), (err: { code?: string }) => err.code === 'CONFIG_INVALID', bad.join(' '));
  }
  const p = parse(['--allow-plaintext', '--plain-http-port', '0', '--mqtt-session-max-age-sec', '0']);
  assert.equal(p.allowPlaintext, true);
  assert.equal(p.plainHttpPort, 0);
  assert.equal(p.plainMqttPort, 1883);
  assert.equal(p.mqttSessionMaxAgeSec, 0);
  assert.equal(parse([], { EDGEPACK_ALLOW_PLAINTEXT: '1' }).allowPlaintext, true);
  assert.throws(() => parse([], { EDGEPACK_ALLOW_PLAINTEXT: 'maybe' }), (err: { code?: string }) => err.code === 'CONFIG_INVALID');
});
