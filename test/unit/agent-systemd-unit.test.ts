// The agent's systemd unit: the directives a device install relies on are there, and
// systemd's own parser accepts every line (systemd-analyze verify warns on unknown keys).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { repoRoot } from '../support/paths.js';

const UNIT = () => join(repoRoot(), 'agent/edgepack-agent.service');

function directives(text: string): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith('[')) continue;
    const eq = line.indexOf('=');
    const key = line.slice(0, eq);
    out.set(key, [...(out.get(key) ?? []), line.slice(eq + 1)]);
  }
  return out;
}

test('the unit restarts always, keeps state in StateDirectory, reads an EnvironmentFile and is hardened', async () => {
  const d = directives(await readFile(UNIT(), 'utf8'));
  const want: Record<string, string> = {
    Restart: 'always', StateDirectory: 'edgepack-agent', NoNewPrivileges: 'yes', ProtectSystem: 'strict', ProtectHome: 'yes', PrivateTmp: 'yes',
  };
  for (const [k, v] of Object.entries(want)) assert.deepEqual(d.get(k), [v], k);
  assert.ok(d.get('EnvironmentFile')?.[0]?.startsWith('-/etc/edgepack/'), 'an optional EnvironmentFile');
  assert.ok(d.get('Environment')?.some((e) => e === 'EDGEPACK_AGENT_DATA_DIR=/var/lib/edgepack-agent'), 'the data dir is the state dir');
  assert.match(d.get('ExecStart')?.[0] ?? '', /edgepack-agent$/);
});

const ANALYZE = ['/usr/bin/systemd-analyze', '/bin/systemd-analyze'].find((p) => existsSync(p));

test('systemd-analyze verify accepts every line of the unit', { skip: ANALYZE ? false : 'systemd-analyze is not installed' }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'edgepack-unit-'));
  try {
    // Point ExecStart at this checkout's committed bin, which exists whether or not the agent is installed.
    const text = (await readFile(UNIT(), 'utf8')).replace(/^ExecStart=.*$/m, `ExecStart=${join(repoRoot(), 'agent/bin/edgepack-agent.js')}`);
    const file = join(dir, 'edgepack-agent.service');
    await writeFile(file, text);
    const r = spawnSync(ANALYZE!, ['verify', file], { encoding: 'utf8', env: { ...process.env, SYSTEMD_LOG_LEVEL: 'warning' } });
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stderr.trim(), '', `systemd-analyze complained:\n${r.stderr}`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
