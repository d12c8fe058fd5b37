/**
 * Filling the waves at the start of a rollout. A shuffle seeded with the rollout id picks the
 * devices (the same rollout always gets the same waves, also after a restart), and each wave
 * takes its share of every profile, so the canary already meets each kind of hardware.
 */
import type { EpochMs, RolloutMember, RolloutPlan, WavePlan, WaveRecord } from '../records.js';
import { newMember } from './rollout-member.js';
import type { RolloutDeviceView } from './rollout-snapshot.js';
import { seededRandom, seededShuffle, seedFromString } from './seeded-random.js';

/**
 * Devices per wave for `eligible` devices: a count, or a percent of all eligible devices at
 * start (rounded up, so a wave with a share is never empty while devices remain), each capped
 * by what the waves before left; the last wave takes the remainder whatever its size says.
 */
export function waveSizes(waves: readonly Pick<WavePlan, 'size'>[], eligible: number): number[] {
  let left = eligible;
  return waves.map((w, i) => {
    const want = i === waves.length - 1 ? left : 'count' in w.size ? w.size.count : Math.ceil((w.size.percent / 100) * eligible - 1e-9);
    const n = Math.min(left, Math.max(0, want));
    left -= n;
    return n;
  });
}

/**
 * Splits `size` over profiles with `left[p]` devices remaining: in proportion to what each has
 * left, by largest remainder (ties to the profile that sorts first), so the mix of every wave
 * follows the mix of the fleet. Then, when the wave has room for one of each, a profile that got
 * none takes one from the profile that got most, so every profile is met in every wave.
 */
export function shareOverProfiles(size: number, left: ReadonlyMap<string, number>): Map<string, number> {
  const profiles = [...left.keys()].filter((p) => left.get(p)! > 0).sort();
  const out = new Map(profiles.map((p) => [p, 0]));
  const pool = profiles.reduce((s, p) => s + left.get(p)!, 0);
  const n = Math.min(size, pool);
  if (n <= 0) return out;
  const quotas = profiles.map((p) => ({ p, q: (n * left.get(p)!) / pool }));
  let given = 0;
  for (const { p, q } of quotas) {
    out.set(p, Math.floor(q));
    given += Math.floor(q);
  }
  const byRemainder = [...quotas].sort((a, b) => (b.q - Math.floor(b.q)) - (a.q - Math.floor(a.q)) || (a.p < b.p ? -1 : 1));
  for (const { p } of byRemainder) {
    if (given >= n) break;
    if (out.get(p)! < left.get(p)!) {
      out.set(p, out.get(p)! + 1);
      given++;
    }
  }
  if (n >= profiles.length) {
    for (const p of profiles) {
      if (out.get(p)! > 0) continue;
      const donor = profiles.reduce((best, q) => (out.get(q)! > out.get(best)! ? q : best), profiles[0]!);
      out.set(donor, out.get(donor)! - 1);
      out.set(p, 1);
    }
  }
  return out;
}

export interface WaveAssignment {
  waves: WaveRecord[];
  /** Every targeted device: waiting, or skipped with its reason (skipped ones are recorded with wave 0 and never count). */
  members: RolloutMember[];
  /** Eligible devices per wave. */
  sizes: number[];
}

/**
 * Assigns the targeted devices to waves. `devices` is the target at start (already resolved);
 * `bundles` maps profile → bundle id. Deterministic in (rolloutId, plan, devices, bundles): input
 * order does not matter. The canary takes online devices first within each profile, so that it
 * can be judged soon; everything else is in shuffled order.
 */
export function assignWaves(input: {
  rolloutId: string; plan: Pick<RolloutPlan, 'waves'>; devices: readonly RolloutDeviceView[]; bundles: Readonly<Record<string, string>>; now: EpochMs;
  /** Devices started in another rollout of the stream (deviceId → rollout id), from resolveConflicts' leftOut: skipped. */
  busy?: ReadonlyMap<string, string>;
  /** Profiles whose bundle is chosen later (a device build's, issue 10): their members wait with bundleId null. */
  pending?: ReadonlySet<string>;
}): WaveAssignment {
  const { rolloutId, plan, bundles, now } = input;
  const sorted = [...input.devices].sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  const skipped: RolloutMember[] = [];
  const byProfile = new Map<string, RolloutDeviceView[]>();
  for (const d of sorted) {
    const busyIn = input.busy?.get(d.id);
    const m = newMember({ rolloutId, device: d, wave: 0, order: 0, bundleId: bundles[d.profile] ?? null, joinedAt: now, late: false, ...(busyIn ? { busyIn } : {}), pending: input.pending?.has(d.profile) ?? false });
    if (m.phase === 'skipped') skipped.push(m);
    else byProfile.set(d.profile, [...(byProfile.get(d.profile) ?? []), d]);
  }
  const random = seededRandom(seedFromString(rolloutId));
  const queues = new Map<string, RolloutDeviceView[]>();
  for (const p of [...byProfile.keys()].sort()) queues.set(p, seededShuffle(byProfile.get(p)!, random));

  const eligible = [...queues.values()].reduce((s, q) => s + q.length, 0);
  const sizes = waveSizes(plan.waves, eligible);
  const members: RolloutMember[] = [];
  let order = 0;
  sizes.forEach((size, wave) => {
    const left = new Map([...queues].map(([p, q]) => [p, q.length]));
    const share = shareOverProfiles(size, left);
    const picked = new Map<string, RolloutDeviceView[]>();
    for (const [p, n] of share) {
      const q = queues.get(p)!;
      let take: RolloutDeviceView[];
      if (wave === 0) {
        const online = q.filter((d) => d.online && !d.revoked);
        const first = online.slice(0, n);
        const chosen = new Set(first.map((d) => d.id));
        for (const d of q) if (first.length < n && !chosen.has(d.id)) { first.push(d); chosen.add(d.id); }
        take = first;
        queues.set(p, q.filter((d) => !chosen.has(d.id)));
      } else {
        take = q.slice(0, n);
        queues.set(p, q.slice(n));
      }
      picked.set(p, take);
    }
    // Interleave profiles in dispatch order, so a rate limit does not send all of one profile first.
    const lists = [...picked.keys()].sort().map((p) => picked.get(p)!);
    for (let i = 0; lists.some((l) => i < l.length); i++) {
      for (const l of lists) {
        const d = l[i];
        if (d) members.push(newMember({ rolloutId, device: d, wave, order: order++, bundleId: bundles[d.profile] ?? null, joinedAt: now, late: false, pending: input.pending?.has(d.profile) ?? false }));
      }
    }
  });
  for (const m of skipped) members.push({ ...m, order: order++ });
  const waves: WaveRecord[] = plan.waves.map((w, position) => ({ position, name: w.name, status: 'pending', openedAt: null, passedAt: null, approvedAt: null, tail: false }));
  return { waves, members, sizes };
}
