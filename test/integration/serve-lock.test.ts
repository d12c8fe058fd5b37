// One orchestrator per data dir, and no half-started one on a port clash: both end the second
// process at once with a clear error and a non-zero exit, and the first keeps serving.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { ORCHESTRATOR_CLI } from '../support/paths.js';
import { startOrchestrator, startProcess, tempDir, until, type Orchestrator } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let first: Orchestrator;

before(async () => {
  dir = await tempDir('serve-lock');
  first = await startOrchestrator(join(dir.path, 'data'));
});
after(async () => {
  await first?.stop();
  await dir?.remove();
});

const serve = (dataDir: string, httpPort = '0') =>
  startProcess(ORCHESTRATOR_CLI(), ['serve', '--data-dir', dataDir, '--http-host', '127.0.0.1', '--http-port', httpPort, '--mqtt-host', '127.0.0.1', '--mqtt-port', '0']);

test('a second serve on the same data dir refuses to start, names the lock, and leaves the first serving', async () => {
  const token = await first.api('POST', '/v1/enrollment-tokens', {});
  assert.equal(token.status, 201);
  const second = serve(first.dataDir);
  const code = await second.exited;
  assert.notEqual(code, 0);
  assert.match(second.stderr(), /DATA_DIR_LOCKED|another orchestrator is already serving/);
  assert.doesNotMatch(second.stdout(), /"event":"listening"/);
  const health = await first.api('GET', '/v1/health');
  assert.equal(health.status, 200);
  const devices = await first.api('GET', '/v1/devices');
  assert.equal(devices.status, 200);
});

test('a port already in use ends serve with a non-zero exit and the address in the error', async () => {
  const clash = serve(join(dir.path, 'other'), String(first.httpPort));
  const code = await Promise.race([clash.exited, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 15_000))]);
  if (code === 'hung') await clash.kill('SIGKILL');
  assert.notEqual(code, 'hung', 'serve must not linger after a listen failure');
  assert.notEqual(code, 0);
  assert.match(clash.stderr(), /EADDRINUSE/);
});

test('after a kill -9 the lock is gone at once: a new serve on the same dir starts', async () => {
  await first.proc.kill('SIGKILL');
  const again = await startOrchestrator(first.dataDir);
  try {
    await until('health', async () => (await again.api('GET', '/v1/health')).status === 200);
  } finally {
    await again.stop();
  }
});
