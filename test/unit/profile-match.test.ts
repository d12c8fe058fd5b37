import { test } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { defaultProfilesDir, loadProfiles, type Profile } from '@edgepack/firmware-profiles';
import type { DeviceFacts } from '@edgepack/protocol';
import { matchProfile } from '@edgepack/orchestrator/core/profile-match.js';
import { detectFacts } from '@edgepack/agent/facts.js';

const SHIPPED = ['coral-dev-board', 'esp32-s3', 'jetson-orin-nano', 'raspberry-pi-4', 'raspberry-pi-5', 'x86-64-gateway'];
const GiB = 1024 ** 3;

function facts(over: Partial<DeviceFacts>): DeviceFacts {
  return {
    arch: 'arm64', platform: 'linux 6.6.31+rpt-rpi-v8', cpuModel: 'unknown', cores: 4, ramBytes: 4 * GiB,
    cpuFlags: [], accelerators: [], runtimes: { onnxruntime: { version: '1.30.0', executionProviders: ['cpu'] } }, agentVersion: '0.1.0',
    ...over,
  };
}

// Facts as the agent's detectFacts() reports them on each kind of board (flags from /proc/cpuinfo "Features").
const ARM_A72_FLAGS = ['asimd', 'cpuid', 'crc32', 'evtstrm', 'fp'];
const ARM_A76_FLAGS = ['aes', 'asimd', 'asimddp', 'asimdhp', 'asimdrdm', 'atomics', 'cpuid', 'crc32', 'dcpop', 'evtstrm', 'fp', 'fphp', 'lrcpc', 'pmull', 'sha1', 'sha2'];
const DEVICES: Record<string, DeviceFacts> = {
  'x86-64-gateway': facts({
    arch: 'x86_64', platform: 'linux 6.8.0-45-generic', cpuModel: 'AMD EPYC 7B13', cores: 2, ramBytes: 25_276_063_744,
    cpuFlags: ['avx', 'avx2', 'fma', 'sse4_1', 'sse4_2', 'ssse3'], accelerators: [],
  }),
  'raspberry-pi-4': facts({ cpuModel: 'Cortex-A72', ramBytes: 3_978_600_448, cpuFlags: ARM_A72_FLAGS }),
  'raspberry-pi-5': facts({ cpuModel: 'Cortex-A76', ramBytes: 4_241_469_440, cpuFlags: ARM_A76_FLAGS }),
  'jetson-orin-nano': facts({
    platform: 'linux 5.15.136-tegra', cpuModel: 'Cortex-A78AE', cores: 6, ramBytes: 7_990_000_000,
    cpuFlags: [...ARM_A76_FLAGS, 'ilrcpc', 'uscat'], accelerators: ['cuda'],
  }),
  'coral-dev-board': facts({ platform: 'linux 4.14.98-imx', cpuModel: 'Cortex-A53', ramBytes: 1_003_000_000, cpuFlags: ARM_A72_FLAGS, accelerators: ['edgetpu'] }),
  'esp32-s3': facts({ arch: 'xtensa', platform: 'esp-idf 5.2', cpuModel: 'Xtensa LX7', cores: 2, ramBytes: 8 * 1024 * 1024, runtimes: {} }),
};

function codeAndFile(fn: () => unknown): { code?: string; file?: string; message?: string } {
  try {
    fn();
  } catch (err) {
    const e = err as { code?: string; file?: string; message?: string };
    return { code: e.code, file: e.file, message: e.message };
  }
  return {};
}

// --- loadProfiles ---

test('loadProfiles: all six shipped profiles load, validate and are sorted by id', () => {
  const profiles = loadProfiles();
  assert.deepEqual(profiles.map((p) => p.id), SHIPPED);
  for (const p of profiles) {
    assert.ok(p.match.arch.includes(p.arch), `${p.id}: match.arch includes its own arch`);
    assert.ok(p.runtime.executionProviders.length >= 1);
    if (p.runtime.name === 'onnxruntime') assert.deepEqual(p.formats, ['onnx'], p.id);
    else assert.deepEqual(p.formats, ['tflite'], p.id);
  }
});

async function withTempProfiles(files: Record<string, string>, fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-profiles-'));
  try {
    for (const [name, text] of Object.entries(files)) await writeFile(path.join(dir, name), text);
    await fn(dir);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function shipped(id: string): Promise<Record<string, unknown>> {
  return JSON.parse(await readFile(path.join(defaultProfilesDir(), `${id}.json`), 'utf8')) as Record<string, unknown>;
}

test('loadProfiles: a temp dir of valid profiles loads; non-JSON files are ignored', async () => {
  const pi4 = await shipped('raspberry-pi-4');
  await withTempProfiles({ 'raspberry-pi-4.json': JSON.stringify(pi4), 'README.md': '# not a profile' }, (dir) => {
    assert.deepEqual(loadProfiles(dir).map((p) => p.id), ['raspberry-pi-4']);
  });
});

test('loadProfiles: a file that is not JSON fails with PROFILE_INVALID naming the file', async () => {
  const pi4 = await shipped('raspberry-pi-4');
  await withTempProfiles({ 'raspberry-pi-4.json': JSON.stringify(pi4), 'broken.json': '{"id": "broken",' }, (dir) => {
    const r = codeAndFile(() => loadProfiles(dir));
    assert.equal(r.code, 'PROFILE_INVALID');
    assert.equal(r.file, 'broken.json');
  });
});

test('loadProfiles: a schema violation fails with PROFILE_INVALID naming the file', async () => {
  const bad = { ...(await shipped('raspberry-pi-4')), id: 'bad-arch', arch: 'mips' };
  const noMatch = { ...(await shipped('raspberry-pi-4')), id: 'no-match' };
  delete (noMatch as Record<string, unknown>).match;
  const emptyEps = { ...(await shipped('raspberry-pi-4')), id: 'empty-eps', runtime: { name: 'onnxruntime', executionProviders: [] } };
  for (const [name, value] of [['bad-arch.json', bad], ['no-match.json', noMatch], ['empty-eps.json', emptyEps]] as const) {
    await withTempProfiles({ [name]: JSON.stringify(value) }, (dir) => {
      const r = codeAndFile(() => loadProfiles(dir));
      assert.equal(r.code, 'PROFILE_INVALID', name);
      assert.equal(r.file, name);
    });
  }
});

test('loadProfiles: the id must match the file name', async () => {
  const pi4 = await shipped('raspberry-pi-4');
  await withTempProfiles({ 'my-pi.json': JSON.stringify(pi4) }, (dir) => {
    const r = codeAndFile(() => loadProfiles(dir));
    assert.equal(r.code, 'PROFILE_INVALID');
    assert.equal(r.file, 'my-pi.json');
  });
});

test('loadProfiles: a directory without profiles fails with PROFILE_INVALID', async () => {
  await withTempProfiles({ 'notes.txt': 'nothing here' }, (dir) => {
    assert.equal(codeAndFile(() => loadProfiles(dir)).code, 'PROFILE_INVALID');
  });
});

// --- matchProfile ---

const PROFILES = loadProfiles();

for (const [expected, f] of Object.entries(DEVICES)) {
  test(`matchProfile: ${f.cpuModel} (${f.arch}${f.accelerators.length ? ', ' + f.accelerators.join('+') : ''}) → ${expected}`, () => {
    const m = matchProfile(f, PROFILES);
    assert.equal(m.ok, true, m.ok ? '' : m.reason);
    if (m.ok) {
      assert.equal(m.profile.id, expected);
      assert.ok(m.candidates.includes(expected));
      assert.equal(m.candidates[0], expected);
    }
  });
}

test('matchProfile: a Pi 5 also satisfies the Pi 4 rule but wins on the more specific one', () => {
  const m = matchProfile(DEVICES['raspberry-pi-5']!, PROFILES);
  assert.ok(m.ok);
  if (m.ok) assert.deepEqual(m.candidates, ['raspberry-pi-5', 'raspberry-pi-4']);
});

test('matchProfile: a Cortex-A76 with too little RAM for the Pi 5 rule falls back to the Pi 4 profile', () => {
  const m = matchProfile({ ...DEVICES['raspberry-pi-5']!, ramBytes: 1_000_000_000 }, PROFILES);
  assert.ok(m.ok);
  if (m.ok) assert.equal(m.profile.id, 'raspberry-pi-4');
});

test('matchProfile: cpu flags and accelerators compare case-insensitively; the cpu model pattern too', () => {
  const m = matchProfile({ ...DEVICES['raspberry-pi-5']!, cpuFlags: ['ASIMD', 'AsimdDP'], cpuModel: 'BCM2712 rev 1' }, PROFILES);
  assert.ok(m.ok);
  if (m.ok) assert.equal(m.profile.id, 'raspberry-pi-5');
  const j = matchProfile({ ...DEVICES['jetson-orin-nano']!, accelerators: ['CUDA'] }, PROFILES);
  assert.ok(j.ok);
  if (j.ok) assert.equal(j.profile.id, 'jetson-orin-nano');
});

test('matchProfile: an esp32 with more than 16 MB is not an esp32-s3 (maxRamBytes), and no other profile takes it', () => {
  const m = matchProfile({ ...DEVICES['esp32-s3']!, ramBytes: 32 * 1024 * 1024 }, PROFILES);
  assert.equal(m.ok, false);
  if (!m.ok) assert.match(m.reason, /esp32-s3: ram \d+ > \d+/);
});

test('matchProfile: an arm64 board without NEON (asimd) matches nothing and says which facts were missing', () => {
  const m = matchProfile(facts({ cpuModel: 'Cortex-A53', cpuFlags: ['fp'], ramBytes: 2 * GiB }), PROFILES);
  assert.equal(m.ok, false);
  if (!m.ok) {
    assert.match(m.reason, /raspberry-pi-4: missing cpu flags asimd/);
    assert.match(m.reason, /jetson-orin-nano: missing accelerators cuda/);
  }
});

test('matchProfile: a riscv64 device matches no profile, with a reason naming the arch', () => {
  const m = matchProfile(facts({ arch: 'riscv64', cpuModel: 'SiFive U74', ramBytes: 8 * GiB, cpuFlags: [] }), PROFILES);
  assert.equal(m.ok, false);
  if (!m.ok) {
    assert.match(m.reason, /arch=riscv64/);
    for (const id of SHIPPED) assert.ok(m.reason.includes(`${id}: arch riscv64 not in`), `${id} listed in reason`);
  }
});

test('matchProfile: with no profiles at all there is no match', () => {
  assert.equal(matchProfile(DEVICES['x86-64-gateway']!, []).ok, false);
});

test('matchProfile: this machine, as the agent detects it, matches its own profile', { skip: os.arch() !== 'x64' ? 'not an x86_64 host' : false }, () => {
  const here = detectFacts({ onnxruntimeVersion: '1.30.0', executionProviders: ['cpu'], agentVersion: 'test' });
  assert.equal(here.arch, 'x86_64');
  const m = matchProfile(here, PROFILES);
  if (here.ramBytes >= 1073741824) {
    assert.ok(m.ok, m.ok ? '' : m.reason);
    if (m.ok) assert.equal(m.profile.id, 'x86-64-gateway');
  } else {
    assert.equal(m.ok, false);
  }
});

test('matchProfile: the winner does not depend on the order profiles are listed in', () => {
  const orders: Profile[][] = [PROFILES, [...PROFILES].reverse(), [...PROFILES.slice(3), ...PROFILES.slice(0, 3)]];
  for (const [expected, f] of Object.entries(DEVICES)) {
    for (const [i, order] of orders.entries()) {
      const m = matchProfile(f, order);
      assert.equal(m.ok ? m.profile.id : m.reason, expected, `${expected} with profile order #${i}`);
    }
  }
});
