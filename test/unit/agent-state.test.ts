// state.json under concurrent writes and after corruption, on real files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile, writeFile, mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { loadState, saveState, StateStore, type AgentState } from '@edgepack/agent/agent-state.js';
import { writeFileAtomic } from '@edgepack/agent/durable-file.js';
import { tempDir } from '../support/processes.js';

function stateWith(seq: number): AgentState {
  // Sizes differ a lot between writes, so an interleaved write would leave a torn tail.
  return { lastSeq: seq, action: null, queued: null, lastBenchmark: null, recent: [], padding: 'x'.repeat((seq * 7919) % 20_000) } as AgentState;
}

test('concurrent atomic writes to one file all succeed and leave one whole version', async () => {
  const dir = await tempDir('agent-state');
  try {
    const file = join(dir.path, 'state.json');
    const results = await Promise.allSettled(Array.from({ length: 60 }, (_, i) => writeFileAtomic(file, JSON.stringify(stateWith(i + 1)))));
    assert.deepEqual(results.filter((r) => r.status === 'rejected').map((r) => String((r as PromiseRejectedResult).reason)), []);
    const parsed = JSON.parse(await readFile(file, 'utf8')) as AgentState & { padding: string };
    assert.equal(parsed.padding, (stateWith(parsed.lastSeq) as unknown as { padding: string }).padding);
    assert.deepEqual((await readdir(dir.path)).filter((f) => f !== 'state.json'), [], 'no temp files left behind');
  } finally {
    await dir.remove();
  }
});

test('saves through the StateStore are applied in call order: the last one wins, and the file always parses', async () => {
  const dir = await tempDir('agent-state');
  try {
    const store = new StateStore(dir.path);
    const state = stateWith(1);
    const saves: Promise<void>[] = [];
    let readsOk = 0;
    for (let i = 1; i <= 80; i++) {
      state.lastSeq = i;
      (state as unknown as { padding: string }).padding = (stateWith(i) as unknown as { padding: string }).padding;
      saves.push(store.save(state)); // the same object, mutated between calls, as the agent does
      // Once a first version is on disk, every read below must find a whole file, whatever the
      // saves still queued are doing (each one replaces the file by rename).
      if (i === 1) await saves[0];
      if (i % 10 === 0) {
        const text = await readFile(join(dir.path, 'state.json'), 'utf8').catch(() => null);
        if (text !== null) { JSON.parse(text); readsOk++; }
      }
    }
    await Promise.all(saves);
    assert.equal(readsOk, 8, 'every read found a whole, parseable file');
    const loaded = await loadState(dir.path);
    assert.equal(loaded.lastSeq, 80);
  } finally {
    await dir.remove();
  }
});

test('a state.json written before Deployment was renamed Action loads: its `deployment` becomes `action`, and the next save writes only `action`', async () => {
  const dir = await tempDir('agent-state');
  try {
    const old = {
      lastSeq: 7, queued: null, lastBenchmark: null, recent: [],
      deployment: { rolloutId: 'rol_old', seq: 7, bundle: { manifest: { bundleId: 'bdl_1' }, signature: 's' }, phase: 'benchmarking', hadPrevious: true, updatedAt: '2026-01-01T00:00:00.000Z' },
    };
    await writeFile(join(dir.path, 'state.json'), JSON.stringify(old));
    const s = await loadState(dir.path);
    assert.equal(s.lastSeq, 7);
    assert.equal(s.action?.rolloutId, 'rol_old');
    assert.equal(s.action?.phase, 'benchmarking');
    assert.ok(!('deployment' in s));
    await saveState(dir.path, s);
    const written = JSON.parse(await readFile(join(dir.path, 'state.json'), 'utf8'));
    assert.deepEqual(Object.keys(written).sort(), ['action', 'lastBenchmark', 'lastSeq', 'queued', 'recent']);
    // A malformed old record is refused like a malformed new one.
    await writeFile(join(dir.path, 'state.json'), JSON.stringify({ ...old, deployment: { rolloutId: 3 } }));
    assert.equal((await loadState(dir.path)).lastSeq, 0);
  } finally {
    await dir.remove();
  }
});

test('a garbage state.json is moved aside and loading starts from an empty state', async () => {
  const dir = await tempDir('agent-state');
  try {
    await writeFile(join(dir.path, 'state.json'), '{"lastSeq": 12, "deployment": {"rolloutId": "r", "se');
    const logged: string[] = [];
    const log = { error: (_o: object, m?: string) => { logged.push(m ?? ''); }, warn() {}, info() {}, debug() {} };
    const s = await loadState(dir.path, log);
    assert.equal(s.lastSeq, 0);
    assert.equal(s.action, null);
    assert.equal(s.queued, null);
    const files = await readdir(dir.path);
    assert.ok(!files.includes('state.json'));
    const aside = files.filter((f) => f.startsWith('state.json.corrupt-'));
    assert.equal(aside.length, 1, files.join(', '));
    assert.match(await readFile(join(dir.path, aside[0]!), 'utf8'), /"lastSeq": 12/);
    assert.equal(logged.length, 1);
    // The next save works as on a fresh device.
    await saveState(dir.path, { ...s, lastSeq: 3 });
    assert.equal((await loadState(dir.path)).lastSeq, 3);
  } finally {
    await dir.remove();
  }
});

test('valid JSON of the wrong shape, and a state.json that is not a file, are treated the same way', async () => {
  const dir = await tempDir('agent-state');
  try {
    await writeFile(join(dir.path, 'state.json'), '[1,2,3]');
    assert.equal((await loadState(dir.path)).lastSeq, 0);
    await mkdir(join(dir.path, 'state.json')); // EISDIR on read
    assert.equal((await loadState(dir.path)).lastSeq, 0);
    assert.equal((await readdir(dir.path)).filter((f) => f.startsWith('state.json.corrupt-')).length, 2);
  } finally {
    await dir.remove();
  }
});

test('the simulator\'s devices-state.json from before the rename loads too: each device\'s `deployment` becomes its `action`', async () => {
  const { FleetStore } = await import('@edgepack/agent/sim/fleet-store.js');
  const dir = await tempDir('sim-state');
  try {
    const identity = { deviceId: 'dev_simold', name: 'sim-0001', profile: 'x86-64-gateway', server: 'http://x', publicKey: 'p', secretKey: 's', orchestratorPublicKey: 'o', mqtt: { host: 'h', port: 1 }, heartbeatSec: 15, enrolledAt: '2026-01-01T00:00:00Z' };
    await writeFile(join(dir.path, 'identities.jsonl'), `${JSON.stringify({ index: 1, identity })}\n`);
    const action = { rolloutId: 'rol_sim', seq: 2, bundleId: 'bdl_x', phase: 'done', hadPrevious: false, updatedAt: '2026-01-01T00:00:00Z' };
    await writeFile(join(dir.path, 'devices-state.json'), JSON.stringify({ version: 1, devices: { dev_simold: { lastSeq: 2, activeBundleId: 'bdl_x', previousBundleId: null, held: [], lastBenchmark: null, deployment: action, queued: null, recent: [] } } }));
    const silent = { error() {}, warn() {}, info() {}, debug() {} };
    const [d] = await new FleetStore(dir.path, silent).load();
    assert.equal(d!.state.action?.rolloutId, 'rol_sim');
    assert.ok(!('deployment' in d!.state));
  } finally {
    await dir.remove();
  }
});
