// Enrollment pins a root: against a real orchestrator (in-process, real SQLite and broker on
// ephemeral ports) the device gets the orchestrator's latest root; against a server that
// answers enrollment with no root or a root short of its threshold, enrollment fails.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import { join } from 'node:path';
import { PROTOCOL_VERSION, TrustVerifier, canonicalJson, createRoot, generateKeyPair, signRoot, type DeviceFacts } from '@edgepack/protocol';
import { parseServeConfig } from '@edgepack/orchestrator/config.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { startServer } from '@edgepack/orchestrator/server.js';
import { enroll } from '@edgepack/agent/enroll.js';
import { tempDir } from '../support/processes.js';

const FACTS: DeviceFacts = {
  arch: 'x86_64', platform: 'linux 6.6', cpuModel: 'test', cores: 2, ramBytes: 8 << 30, cpuFlags: ['avx2'], accelerators: [],
  runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0',
};
const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => { while (cleanups.length) await cleanups.pop()!(); });

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try { await p; } catch (err) { return (err as { code?: string }).code; }
  return undefined;
}

test('a device enrolling with a real orchestrator pins its latest root, signed by its own threshold', async () => {
  const dir = await tempDir('enroll-trust');
  cleanups.push(dir.remove);
  const config = parseServeConfig(['--data-dir', dir.path, '--http-host', '127.0.0.1', '--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', '0', '--log-level', 'silent'], {});
  assert.notEqual(config, 'help');
  const server = await startServer(config as Exclude<typeof config, 'help'>, { log: createLogger('silent') });
  cleanups.push(() => server.close());
  const url = `http://127.0.0.1:${server.httpPort}`;
  const t = await fetch(`${url}/v1/enrollment-tokens`, { method: 'POST', headers: { authorization: `Bearer ${server.adminToken}`, 'content-type': 'application/json' }, body: '{}' });
  const { token } = (await t.json()) as { token: string };
  const identity = await enroll({ server: url, token, facts: FACTS, profile: 'x86-64-gateway' });
  assert.ok(identity.trustedRoot);
  new TrustVerifier().verifyInitialRoot(identity.trustedRoot);
  const onDisk = JSON.parse(await readFile(join(dir.path, 'trust', 'root-1.json'), 'utf8'));
  assert.equal(canonicalJson(identity.trustedRoot.signed), canonicalJson(onDisk.signed));
});

test('an enrollment answer with no root, a malformed root, or a root short of its threshold is refused', async () => {
  const keys = [generateKeyPair(), generateKeyPair()];
  const online = generateKeyPair();
  const r = createRoot({ version: 1, expires: new Date(Date.now() + 86_400_000), rootKeys: keys.map((k) => k.publicKey), rootThreshold: 2, bundlesKeys: [online.publicKey] });
  const answers: [string, unknown][] = [
    ['ENROLL_BAD_RESPONSE', undefined],
    ['ROOT_INVALID', { signed: { type: 'root' }, signatures: [] }],
    ['ROOT_THRESHOLD_NOT_MET', signRoot(r, keys[0]!.secretKey)],
  ];
  for (const [code, trustedRoot] of answers) {
    // Whoever answers plaintext enrollment, as an attacker on the path could.
    const fake = createServer((_req, res) => {
      res.writeHead(201, { 'content-type': 'application/json' });
      res.end(JSON.stringify({
        v: PROTOCOL_VERSION, deviceId: 'dev_x', name: 'x', profile: 'x86-64-gateway', orchestratorPublicKey: online.publicKey,
        mqtt: { host: '127.0.0.1', port: 1 }, heartbeatSec: 15, ...(trustedRoot === undefined ? {} : { trustedRoot }),
      }));
    });
    await new Promise<void>((resolve) => fake.listen(0, '127.0.0.1', resolve));
    const port = (fake.address() as { port: number }).port;
    assert.equal(await codeOf(enroll({ server: `http://127.0.0.1:${port}`, token: 'enr_x', facts: FACTS })), code);
    await new Promise((resolve) => fake.close(resolve));
  }
});
