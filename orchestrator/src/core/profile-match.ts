import type { Profile } from '@edgepack/firmware-profiles';
import type { DeviceFacts } from '@edgepack/protocol';

export type ProfileMatch =
  | { ok: true; profile: Profile; score: number; candidates: string[] }
  | { ok: false; reason: string };

/**
 * Picks the profile whose match rules all hold for the device's facts. When several hold,
 * the one that states the most facts wins (a Pi 5 rule that also demands asimddp beats the
 * generic Pi 4 rule). Ties go to the profile listed first, which keeps the result stable.
 */
export function matchProfile(facts: DeviceFacts, profiles: readonly Profile[]): ProfileMatch {
  const scored: { profile: Profile; score: number }[] = [];
  const misses: string[] = [];
  for (const profile of profiles) {
    const r = scoreProfile(facts, profile);
    if (r.ok) scored.push({ profile, score: r.score });
    else misses.push(`${profile.id}: ${r.reason}`);
  }
  if (scored.length === 0) return { ok: false, reason: `no profile matches arch=${facts.arch} ram=${facts.ramBytes} accelerators=[${facts.accelerators.join(',')}] (${misses.join('; ')})` };
  scored.sort((a, b) => b.score - a.score);
  return { ok: true, profile: scored[0]!.profile, score: scored[0]!.score, candidates: scored.map((s) => s.profile.id) };
}

function scoreProfile(facts: DeviceFacts, profile: Profile): { ok: true; score: number } | { ok: false; reason: string } {
  const m = profile.match;
  let score = 1;
  if (!m.arch.includes(facts.arch as Profile['arch'])) return { ok: false, reason: `arch ${facts.arch} not in [${m.arch.join(',')}]` };
  if (m.cpuFlags) {
    const flags = new Set(facts.cpuFlags.map((f) => f.toLowerCase()));
    const missing = m.cpuFlags.filter((f) => !flags.has(f.toLowerCase()));
    if (missing.length) return { ok: false, reason: `missing cpu flags ${missing.join(',')}` };
    score += m.cpuFlags.length;
  }
  if (m.cpuModelPattern) {
    if (!new RegExp(m.cpuModelPattern, 'i').test(facts.cpuModel)) return { ok: false, reason: `cpu model ${facts.cpuModel} does not match /${m.cpuModelPattern}/` };
    score += 1;
  }
  if (m.minRamBytes !== undefined) {
    if (facts.ramBytes < m.minRamBytes) return { ok: false, reason: `ram ${facts.ramBytes} < ${m.minRamBytes}` };
    score += 1;
  }
  if (m.maxRamBytes !== undefined) {
    if (facts.ramBytes > m.maxRamBytes) return { ok: false, reason: `ram ${facts.ramBytes} > ${m.maxRamBytes}` };
    score += 1;
  }
  if (m.accelerators) {
    const have = new Set(facts.accelerators.map((a) => a.toLowerCase()));
    const missing = m.accelerators.filter((a) => !have.has(a.toLowerCase()));
    if (missing.length) return { ok: false, reason: `missing accelerators ${missing.join(',')}` };
    // An accelerator decides what a device is far more than CPU flags or RAM do: a Jetson with
    // NEON and 8 GB must not tie with the generic Pi rule.
    score += 10 * m.accelerators.length;
  }
  return { ok: true, score };
}
