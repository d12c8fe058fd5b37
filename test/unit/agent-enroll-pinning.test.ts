// Issue 12, finding 2: "A fake /v1/enroll hands the agent an attacker's key and broker." The agent
// now authenticates the server before its token leaves: against real TLS servers on loopback (a
// real orchestrator in-process, and impostors with certificates of their own CA, or with the real
// CA's certificate copied into their chain), it refuses every impostor before a single request
// reaches it, and after enrollment trusts only the pinned CA for MQTTS.
import { afterEach, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { createServer as createTlsServer } from 'node:tls';
import { join } from 'node:path';
import mqtt from 'mqtt';
import { PROTOCOL_VERSION, parseEnrollmentToken, type DeviceFacts } from '@edgepack/protocol';
import { parseServeConfig } from '@edgepack/orchestrator/config.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { startServer, type RunningServer } from '@edgepack/orchestrator/server.js';
import { loadTlsMaterial, type TlsMaterial } from '@edgepack/orchestrator/tls-material.js';
import { enroll } from '@edgepack/agent/enroll.js';
import { deviceClientOptions } from '@edgepack/agent/device-session.js';
import { fetchTrusting, tempDir } from '../support/processes.js';

const FACTS: DeviceFacts = {
  arch: 'x86_64', platform: 'linux 6.6', cpuModel: 'test', cores: 2, ramBytes: 8 << 30, cpuFlags: ['avx2'], accelerators: [],
  runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0',
};
const log = createLogger('silent');
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => { while (cleanups.length) await cleanups.pop()!(); });

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try { await p; } catch (err) { return (err as { code?: string }).code; }
  return 'resolved';
}

let dir: Awaited<ReturnType<typeof tempDir>>;
/** Another orchestrator's TLS material: a CA of its own and a certificate for 127.0.0.1 from it. */
let impostor: TlsMaterial;
/** The real orchestrator's, read from its data dir as an attacker who stole its server key would have it. */
let real: TlsMaterial;

before(async () => {
  dir = await tempDir('enroll-pinning');
  impostor = await loadTlsMaterial({ dataDir: join(dir.path, 'impostor'), settings: { mode: 'self-made', sans: ['localhost', '127.0.0.1'] }, now: new Date(), log });
});

async function startOrchestrator(): Promise<{ server: RunningServer; url: string; token: () => Promise<string> }> {
  const config = parseServeConfig(['--data-dir', join(dir.path, 'orchestrator'), '--http-host', '127.0.0.1', '--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', '0', '--log-level', 'silent'], {});
  assert.notEqual(config, 'help');
  const server = await startServer(config as Exclude<typeof config, 'help'>, { log });
  cleanups.push(() => server.close());
  real = await loadTlsMaterial({ dataDir: join(dir.path, 'orchestrator'), settings: (config as Exclude<typeof config, 'help'>).tls, now: new Date(), log });
  const url = `https://127.0.0.1:${server.httpPort}`;
  const api = fetchTrusting(server.caCertificate);
  const token = async () => {
    const r = await api(`${url}/v1/enrollment-tokens`, { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' }, body: '{}' });
    assert.equal(r.status, 201);
    return ((await r.json()) as { token: string }).token;
  };
  return { server, url, token };
}

/** A fake /v1/enroll that answers like the real one would, with an attacker's key; counts what reaches it. */
async function fakeEnrollServer(tls: { key: string; cert: string } | null): Promise<{ url: string; requests: string[] }> {
  const requests: string[] = [];
  const handler = (req: import('node:http').IncomingMessage, res: import('node:http').ServerResponse) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => {
      requests.push(body);
      res.writeHead(500).end();
    });
  };
  const server = tls ? createHttpsServer({ key: tls.key, cert: tls.cert }, handler) : createHttpServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }));
  const port = (server.address() as { port: number }).port;
  return { url: `${tls ? 'https' : 'http'}://127.0.0.1:${port}`, requests };
}

test('an impostor with a certificate of another CA is refused before the token is sent (finding 2)', async () => {
  const { token } = await startOrchestrator();
  const pinned = await token();
  const fake = await fakeEnrollServer(impostor);
  assert.equal(await codeOf(enroll({ server: fake.url, token: pinned, facts: FACTS })), 'ENROLL_SERVER_UNTRUSTED');
  assert.deepEqual(fake.requests, [], 'not one HTTP request, so not the token, reached the impostor');
});

test('an impostor that shows the real CA certificate in its chain, with its own leaf, is refused before the token is sent', async () => {
  const { token, server } = await startOrchestrator();
  const pinned = await token();
  // The CA certificate is public; presenting it proves nothing without a leaf it issued.
  const fake = await fakeEnrollServer({ key: impostor.key, cert: impostor.cert + server.caCertificate });
  assert.equal(await codeOf(enroll({ server: fake.url, token: pinned, facts: FACTS })), 'ENROLL_SERVER_UNTRUSTED');
  assert.deepEqual(fake.requests, []);
});

test('the same fake, with the real certificate (a stolen server key), does get the token: the pin is about the CA, and the test can tell', async () => {
  const { token } = await startOrchestrator();
  const pinned = await token();
  const fake = await fakeEnrollServer(real);
  assert.equal(await codeOf(enroll({ server: fake.url, token: pinned, facts: FACTS })), 'ENROLL_REFUSED');
  assert.equal(fake.requests.length, 1);
  assert.equal(JSON.parse(fake.requests[0]!).token, parseEnrollmentToken(pinned).secret, 'only the secret before # is sent');
});

test('without a pinned fingerprint https is refused unless --insecure-enroll; plain http unless --allow-plaintext; nothing is sent', async () => {
  const { token, url, server } = await startOrchestrator();
  const plainToken = parseEnrollmentToken(await token()).secret;
  const fakeTls = await fakeEnrollServer(impostor);
  assert.equal(await codeOf(enroll({ server: fakeTls.url, token: plainToken, facts: FACTS })), 'ENROLL_INSECURE');
  const fakePlain = await fakeEnrollServer(null);
  assert.equal(await codeOf(enroll({ server: fakePlain.url, token: plainToken, facts: FACTS })), 'ENROLL_INSECURE');
  assert.deepEqual([...fakeTls.requests, ...fakePlain.requests], []);

  // Trust on first use, asked for: the CA the real server presents is pinned, with a warning.
  const warnings: string[] = [];
  const identity = await enroll({ server: url, token: plainToken, facts: FACTS, profile: 'x86-64-gateway', insecureEnroll: true, warn: (_f, m) => warnings.push(m) });
  assert.equal(identity.tls?.caFingerprint, server.caFingerprint);
  assert.match(warnings.join('\n'), /insecure enrollment/);
});

test('enrolled with a pinned token, the device keeps that CA, is told MQTTS, and its MQTT session trusts nothing else', async () => {
  const { token, url, server } = await startOrchestrator();
  const identity = await enroll({ server: url, token: await token(), facts: FACTS, profile: 'x86-64-gateway' });
  assert.equal(identity.tls?.caFingerprint, server.caFingerprint);
  assert.equal(identity.mqtt.protocol, 'mqtts');
  assert.equal(identity.mqtt.port, server.mqttPort);

  // The real broker: a verified TLS session and an accepted CONNECT.
  const c = await mqtt.connectAsync({ ...deviceClientOptions(identity, new Date()), reconnectPeriod: 0 });
  assert.equal(c.connected, true);
  await c.endAsync();

  // A broker with another CA's certificate: the handshake fails, so no CONNECT (with its credential) is ever written.
  let bytesAfterHandshake = 0;
  const fakeBroker = createTlsServer({ key: impostor.key, cert: impostor.cert }, (s) => { s.on('data', (d: Buffer) => { bytesAfterHandshake += d.length; }); });
  await new Promise<void>((resolve) => fakeBroker.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => fakeBroker.close(() => resolve())));
  const port = (fakeBroker.address() as { port: number }).port;
  const err = await new Promise<Error>((resolve) => {
    const f = mqtt.connect({ ...deviceClientOptions(identity, new Date(), { host: '127.0.0.1', port, protocol: 'mqtts' }), reconnectPeriod: 0, connectTimeout: 5000 });
    f.once('error', (e) => { f.end(true); resolve(e); });
    f.once('connect', () => { f.end(true); resolve(new Error('connected to the impostor')); });
  });
  assert.match(String((err as { code?: string }).code ?? err.message), /SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|CERT/);
  assert.equal(bytesAfterHandshake, 0);
});

test('an answer naming another CA than the one the connection was checked with is refused', async () => {
  const { token, server } = await startOrchestrator();
  const pinned = await token();
  // The real certificate (so the connection checks out), but an answer that hands over another CA.
  const fake = createHttpsServer({ key: real.key, cert: real.cert }, (_req, res) => {
    res.writeHead(201, { 'content-type': 'application/json' });
    res.end(JSON.stringify({
      v: PROTOCOL_VERSION, deviceId: 'dev_x', name: 'x', profile: 'x86-64-gateway', orchestratorPublicKey: 'x', heartbeatSec: 15,
      mqtt: { host: '127.0.0.1', port: server.mqttPort, protocol: 'mqtts' }, tls: { caCertificate: impostor.caCertificate, caFingerprint: impostor.caFingerprint },
      trustedRoot: {},
    }));
  });
  await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
  cleanups.push(() => new Promise((resolve) => { fake.closeAllConnections(); fake.close(() => resolve()); }));
  const url = `https://127.0.0.1:${(fake.address() as { port: number }).port}`;
  assert.equal(await codeOf(enroll({ server: url, token: pinned, facts: FACTS })), 'ENROLL_BAD_RESPONSE');
});
