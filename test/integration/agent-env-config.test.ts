// The agent configured only through EDGEPACK_AGENT_* variables, as a systemd unit or a
// container sets it: no flags at all. A real orchestrator and a real agent process.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { AGENT_CLI, ORCHESTRATOR_CLI } from '../support/paths.js';
import { startOrchestrator, startProcess, tempDir, until, type Orchestrator } from '../support/processes.js';

let dir: Awaited<ReturnType<typeof tempDir>>;
let orch: Orchestrator;

before(async () => {
  dir = await tempDir('agent-env');
  orch = await startOrchestrator(join(dir.path, 'o'));
});
after(async () => {
  await orch?.stop();
  await dir?.remove();
});

test('an agent started with no flags, only EDGEPACK_AGENT_* variables, enrolls, connects and logs JSON at the level asked', async () => {
  const token = (await orch.api('POST', '/v1/enrollment-tokens', {})).body.token as string;
  const dataDir = join(dir.path, 'agent');
  const agent = startProcess(AGENT_CLI(), [], {
    EDGEPACK_AGENT_SERVER: orch.url,
    EDGEPACK_AGENT_ENROLL: token,
    EDGEPACK_AGENT_DATA_DIR: dataDir,
    EDGEPACK_AGENT_PROFILE: 'raspberry-pi-5',
    EDGEPACK_AGENT_NAME: 'env-only-device',
    EDGEPACK_AGENT_BENCH_RUNS: '5',
    EDGEPACK_AGENT_LOG_LEVEL: 'warn',
  });
  try {
    const started = await agent.event('started');
    assert.equal(started.profile, 'raspberry-pi-5');
    const identity = JSON.parse(await readFile(join(dataDir, 'identity.json'), 'utf8'));
    assert.equal(identity.deviceId, started.deviceId);
    const device = await until('device online', async () => {
      const r = await orch.api('GET', `/v1/devices/${started.deviceId}`);
      return r.body.device?.status === 'online' ? r.body.device : null;
    });
    assert.equal(device.name, 'env-only-device');
    assert.equal(device.profile, 'raspberry-pi-5');
    // At warn, the info lines an agent always writes (enrolled, connected) are held back.
    const quiet = agent.stderr().trim().split('\n').filter(Boolean).map((l) => JSON.parse(l) as { level: number; msg: string });
    assert.ok(quiet.every((l) => l.level >= 40), JSON.stringify(quiet));
  } finally {
    await agent.kill();
  }
  // Restarted from the same data dir at info: JSON lines, the agent's name, the info lines are back.
  const again = startProcess(AGENT_CLI(), [], { EDGEPACK_AGENT_DATA_DIR: dataDir, EDGEPACK_AGENT_LOG_LEVEL: 'info' });
  try {
    await again.event('started');
    await until('connected logged', async () => again.stderr().includes('"msg":"connected"'));
    const logs = again.stderr().trim().split('\n').map((l) => JSON.parse(l) as { level: number; msg: string; name: string });
    assert.ok(logs.every((l) => l.name === 'edgepack-agent' && typeof l.level === 'number'));
    assert.ok(logs.some((l) => l.level === 30 && l.msg === 'connected'));
  } finally {
    await again.kill();
  }
});

test('a flag wins over its variable; a bad variable is refused naming it', async () => {
  const flagWins = startProcess(AGENT_CLI(), ['--log-level', 'error', '--data-dir', join(dir.path, 'unused')], { EDGEPACK_AGENT_LOG_LEVEL: 'verbose' });
  assert.equal(await flagWins.exited, 2, 'not enrolled: exits 2 after parsing, so the bad variable was overridden');
  assert.match(flagWins.stderr(), /not enrolled yet/);
  const bad = startProcess(AGENT_CLI(), ['--data-dir', join(dir.path, 'unused')], { EDGEPACK_AGENT_BENCH_RUNS: 'many' });
  assert.equal(await bad.exited, 2);
  assert.match(bad.stderr(), /EDGEPACK_AGENT_BENCH_RUNS must be a positive integer, got "many"/);
});

test('--help lists every flag with its variable, and --version prints the package version on both commands', async () => {
  const help = startProcess(AGENT_CLI(), ['--help']);
  assert.equal(await help.exited, 0);
  await until('help printed', async () => help.stdout().includes('--version'), 5000, 20);
  const { AGENT_OPTIONS } = await import('@edgepack/agent/config.js');
  const text = help.stdout();
  for (const o of AGENT_OPTIONS) {
    assert.ok(text.includes(`--${o.flag}`), `--${o.flag} in help`);
    assert.ok(text.includes(o.env), `${o.env} in help`);
  }
  const agentPkg = JSON.parse(await readFile(new URL('../../../agent/package.json', import.meta.url), 'utf8'));
  const orchPkg = JSON.parse(await readFile(new URL('../../../orchestrator/package.json', import.meta.url), 'utf8'));
  for (const [cli, args, version] of [[AGENT_CLI(), ['--version'], agentPkg.version], [ORCHESTRATOR_CLI(), ['--version'], orchPkg.version]] as const) {
    const p = startProcess(cli, [...args]);
    assert.equal(await p.exited, 0);
    await until('version printed', async () => p.stdout().trim() !== '', 5000, 20);
    assert.equal(p.stdout().trim(), version);
  }
});
