import { test } from 'node:test';
import assert from 'node:assert/strict';
import { assignWaves, shareOverProfiles, waveSizes } from '@edgepack/orchestrator/core/rollout-waves.js';
import { matchesTarget } from '@edgepack/orchestrator/core/rollout-member.js';
import { seededRandom, seededShuffle, seedFromString } from '@edgepack/orchestrator/core/seeded-random.js';
import { bundlesFor, device, fleet, newBundle, oldBundle, planOf, T0 } from '../support/rollout-fleet.js';

const PROFILES = ['jetson', 'pi4', 'pi5'];

test('waveSizes: counts, percents of the target at start (rounded up), the last takes the remainder', () => {
  const w = (...sizes: ({ count: number } | { percent: number })[]) => sizes.map((size) => ({ size }));
  assert.deepEqual(waveSizes(w({ count: 3 }, { percent: 10 }, { percent: 50 }, { percent: 100 }), 1000), [3, 100, 500, 397]);
  assert.deepEqual(waveSizes(w({ count: 3 }, { percent: 10 }, { percent: 50 }, { percent: 100 }), 5), [3, 1, 1, 0]);
  assert.deepEqual(waveSizes(w({ count: 3 }, { percent: 10 }, { percent: 50 }, { percent: 100 }), 2), [2, 0, 0, 0]);
  // the last wave takes the remainder whatever its size says
  assert.deepEqual(waveSizes(w({ percent: 10 }, { count: 1 }), 100), [10, 90]);
  assert.deepEqual(waveSizes(w({ percent: 1 }, { percent: 10 }, { percent: 100 }), 1000), [10, 100, 890]);
  assert.deepEqual(waveSizes(w({ count: 5 }), 3), [3]);
  assert.deepEqual(waveSizes(w({ count: 5 }, { percent: 100 }), 0), [0, 0]);
});

test('shareOverProfiles: one of each when there is room, the rest in proportion, by largest remainder', () => {
  const m = (o: Record<string, number>) => new Map(Object.entries(o));
  assert.deepEqual(Object.fromEntries(shareOverProfiles(3, m({ a: 900, b: 90, c: 10 }))), { a: 1, b: 1, c: 1 });
  assert.deepEqual(Object.fromEntries(shareOverProfiles(100, m({ a: 900, b: 90, c: 10 }))), { a: 90, b: 9, c: 1 });
  assert.deepEqual(Object.fromEntries(shareOverProfiles(100, m({ a: 899, b: 89, c: 9 }))), { a: 90, b: 9, c: 1 });
  assert.deepEqual(Object.fromEntries(shareOverProfiles(2, m({ a: 900, b: 90, c: 10 }))), { a: 2, b: 0, c: 0 });
  assert.deepEqual(Object.fromEntries(shareOverProfiles(4, m({ a: 1, b: 1, c: 1 }))), { a: 1, b: 1, c: 1 }, 'capped by what is left');
  assert.deepEqual(Object.fromEntries(shareOverProfiles(2, m({ a: 5, b: 5 }))), { a: 1, b: 1 });
  assert.deepEqual(Object.fromEntries(shareOverProfiles(3, m({ a: 5, b: 5 }))), { a: 2, b: 1 }, 'ties go to the profile that sorts first');
  assert.deepEqual(Object.fromEntries(shareOverProfiles(5, m({ a: 0, b: 7 }))), { b: 5 });
});

test('seeded shuffle: the same seed gives the same order, another seed another order', () => {
  const items = Array.from({ length: 50 }, (_, i) => i);
  const a = seededShuffle(items, seededRandom(seedFromString('rol_a')));
  assert.deepEqual(seededShuffle(items, seededRandom(seedFromString('rol_a'))), a);
  assert.notDeepEqual(seededShuffle(items, seededRandom(seedFromString('rol_b'))), a);
  assert.deepEqual([...a].sort((x, y) => x - y), items, 'a permutation');
  assert.notEqual(seedFromString('rol_a'), seedFromString('rol_b'));
});

test('waves are filled by a shuffle seeded with the rollout id: same id same waves, whatever the input order', () => {
  const devices = fleet(300, PROFILES);
  const plan = planOf({}, PROFILES);
  const a = assignWaves({ rolloutId: 'rol_1', plan, devices, bundles: bundlesFor(PROFILES), now: T0 });
  const b = assignWaves({ rolloutId: 'rol_1', plan, devices: [...devices].reverse(), bundles: bundlesFor(PROFILES), now: T0 });
  const c = assignWaves({ rolloutId: 'rol_2', plan, devices, bundles: bundlesFor(PROFILES), now: T0 });
  const waveOf = (x: typeof a) => Object.fromEntries(x.members.map((m) => [m.deviceId, [m.wave, m.order]]));
  assert.deepEqual(waveOf(a), waveOf(b));
  assert.notDeepEqual(waveOf(a), waveOf(c));
  // not simply the first devices by id
  const canary = a.members.filter((m) => m.wave === 0).map((m) => m.deviceId);
  assert.notDeepEqual(canary, ['dev-0000', 'dev-0001', 'dev-0002']);
  // orders are unique and wave-major
  const orders = a.members.map((m) => m.order);
  assert.equal(new Set(orders).size, orders.length);
  for (let i = 1; i < a.members.length; i++) assert.ok(a.members[i]!.wave >= a.members[i - 1]!.wave || a.members[i]!.phase === 'skipped');
});

test('every wave, the canary included, has its share of each profile', () => {
  // 900 pi4, 90 pi5, 10 jetson
  const devices = [...fleet(900, ['pi4']), ...fleet(90, ['pi5']).map((d) => ({ ...d, id: `p5-${d.id}` })), ...fleet(10, ['jetson']).map((d) => ({ ...d, id: `j-${d.id}` }))];
  const plan = planOf({}, PROFILES);
  const a = assignWaves({ rolloutId: 'rol_x', plan, devices, bundles: bundlesFor(PROFILES), now: T0 });
  assert.deepEqual(a.sizes, [3, 100, 500, 397]);
  const per = (wave: number) => {
    const out: Record<string, number> = {};
    for (const m of a.members) if (m.wave === wave) out[m.profile] = (out[m.profile] ?? 0) + 1;
    return out;
  };
  assert.deepEqual(per(0), { jetson: 1, pi4: 1, pi5: 1 }, 'the canary meets every profile');
  assert.deepEqual(per(1), { jetson: 1, pi4: 90, pi5: 9 });
  const w2 = per(2);
  assert.ok(Math.abs(w2.pi4! / 500 - 0.9) < 0.02 && w2.pi5! >= 40 && w2.jetson! >= 1, JSON.stringify(w2));
  const total = (p: string) => a.members.filter((m) => m.profile === p).length;
  assert.equal(total('pi4'), 900);
  assert.equal(total('jetson'), 10);
  // profiles interleave in dispatch order within a wave
  const wave1 = a.members.filter((m) => m.wave === 1).map((m) => m.profile);
  assert.deepEqual(wave1.slice(0, 3).sort(), ['jetson', 'pi4', 'pi5']);
});

test('the canary takes online devices first, so that it can be judged soon', () => {
  const devices = fleet(20, ['pi4'], (i) => ({ online: i >= 15 }));
  const plan = planOf({});
  const a = assignWaves({ rolloutId: 'rol_y', plan, devices, bundles: bundlesFor(['pi4']), now: T0 });
  const canary = a.members.filter((m) => m.wave === 0);
  assert.equal(canary.length, 3);
  for (const m of canary) assert.ok(Number(m.deviceId.slice(4)) >= 15, `${m.deviceId} is offline`);
  // with too few online devices the canary is filled up with offline ones
  const b = assignWaves({ rolloutId: 'rol_y', plan, devices: fleet(20, ['pi4'], (i) => ({ online: i === 0 })), bundles: bundlesFor(['pi4']), now: T0 });
  assert.ok(b.members.filter((m) => m.wave === 0).some((m) => m.deviceId === 'dev-0000'));
  assert.equal(b.members.filter((m) => m.wave === 0).length, 3);
});

test('skipped at the start: already on the bundle, pinned, no bundle for the profile; they take no wave slot', () => {
  const devices = [
    device('on-it', 'pi4', { activeBundle: newBundle('pi4') }),
    device('pinned', 'pi4', { pinned: true }),
    device('esp', 'esp32'),
    ...fleet(10, ['pi4']),
  ];
  const a = assignWaves({ rolloutId: 'r', plan: planOf({ waves: [{ size: { count: 2 } }, { size: { percent: 100 } }] }), devices, bundles: bundlesFor(['pi4']), now: T0 });
  const by = Object.fromEntries(a.members.map((m) => [m.deviceId, m]));
  assert.equal(by['on-it']!.phase, 'skipped');
  assert.equal(by['on-it']!.code, 'ALREADY_ACTIVE');
  assert.equal(by['pinned']!.code, 'PINNED');
  assert.equal(by['esp']!.code, 'NO_ARTIFACT');
  assert.equal(by['esp']!.bundleId, null);
  assert.deepEqual(a.sizes, [2, 8]);
  assert.equal(a.members.filter((m) => m.phase === 'waiting').length, 10);
  assert.equal(by['dev-0000']!.bundleId, newBundle('pi4'));
  assert.equal(by['dev-0000']!.previousBundle, null, 'previous bundle is recorded at dispatch, not before');
  void oldBundle;
  // a device started in another rollout of the stream is skipped too
  const busy = assignWaves({ rolloutId: 'r', plan: planOf({}), devices: fleet(4), bundles: bundlesFor(['pi4']), now: T0, busy: new Map([['dev-0001', 'rol_old']]) });
  const m = busy.members.find((x) => x.deviceId === 'dev-0001')!;
  assert.equal(m.code, 'STARTED_IN_OTHER_ROLLOUT');
  assert.ok(m.reason!.includes('rol_old'));
});

test('target criteria narrow each other', () => {
  const d = device('a', 'pi4', { tags: ['lab', 'floor1'] });
  assert.equal(matchesTarget(d, {}), true);
  assert.equal(matchesTarget(d, { tags: ['lab'] }), true);
  assert.equal(matchesTarget(d, { tags: ['lab', 'roof'] }), false);
  assert.equal(matchesTarget(d, { profiles: ['pi5'] }), false);
  assert.equal(matchesTarget(d, { deviceIds: ['a'], tags: ['floor1'], profiles: ['pi4'] }), true);
  assert.equal(matchesTarget(d, { deviceIds: ['b'] }), false);
});
