import { PROTOCOL_VERSION, type DesiredState, type SignedManifest, type TrialCandidateResult, type TrialReport } from '@edgepack/protocol';

/**
 * A trial the device is running or has reported, as persisted in state.json (agent) or the
 * device state (simulator). Written before each transition (Mender style): `running` before the
 * first byte is fetched, `done`/`failed` before the report goes out. A `running` record found at
 * start-up means the process died during the trial: see `interruptedAfterRestart`.
 */
export interface TrialRecord {
  seq: number;
  rolloutId: string;
  state: 'running' | 'done' | 'failed';
  code?: string;
  reason?: string;
  results: TrialCandidateResult[];
  updatedAt: string;
}

/** How many finished trials besides the latest are kept, to answer redeliveries and be re-reported on reconnect. */
export const RECENT_TRIALS_LIMIT = 8;

/** Whether a desired state asks for a trial (an absent kind is an install). */
export function isTrial(d: Pick<DesiredState, 'kind'>): boolean {
  return d.kind === 'trial';
}

/**
 * Pure: what does not hold together in a trial request whose signature checked out, or null.
 * The schema bounds sizes; this checks the rest: a trial part present, the reference among the
 * candidates and equal to `bundle` (the reference is what `bundle` carries), no candidate twice.
 */
export function trialRequestProblem(d: DesiredState): string | null {
  const t = d.trial;
  if (!t) return 'a desired state of kind trial carries no trial';
  const ids = t.candidates.map((c) => c.manifest?.bundleId);
  if (ids.some((id) => typeof id !== 'string')) return 'a trial candidate has no bundle id';
  if (new Set(ids).size !== ids.length) return `a trial names a candidate twice (${ids.join(', ')})`;
  if (!ids.includes(t.referenceBundleId)) return `the reference ${t.referenceBundleId} is not among the candidates (${ids.join(', ')})`;
  if (d.bundle.manifest.bundleId !== t.referenceBundleId) return `bundle ${d.bundle.manifest.bundleId} is not the reference ${t.referenceBundleId}`;
  return null;
}

/** The candidates in the order the rounds run them (the request's order). */
export function trialCandidates(d: DesiredState): SignedManifest[] {
  return d.trial ? [...d.trial.candidates] : [];
}

// ------------------------------------------------------------------ transitions (pure)

export function startTrial(d: Pick<DesiredState, 'seq' | 'rolloutId'>, now: Date): TrialRecord {
  return { seq: d.seq, rolloutId: d.rolloutId, state: 'running', results: [], updatedAt: now.toISOString() };
}

export function finishTrial(t: TrialRecord, results: TrialCandidateResult[], now: Date): TrialRecord {
  if (t.state !== 'running') throw new Error(`trial ${t.seq} is ${t.state}, not running`);
  return { seq: t.seq, rolloutId: t.rolloutId, state: 'done', results, updatedAt: now.toISOString() };
}

/** The trial as a whole stopped (superseded, interrupted, disk full, invalid); results measured so far are kept. */
export function failTrial(t: Pick<TrialRecord, 'seq' | 'rolloutId'> & { state?: TrialRecord['state']; results?: TrialCandidateResult[] }, code: string, reason: string, now: Date): TrialRecord {
  if (t.state && t.state !== 'running') throw new Error(`trial ${t.seq} is ${t.state}, not running`);
  return { seq: t.seq, rolloutId: t.rolloutId, state: 'failed', code, reason: reason.slice(0, 4000), results: t.results ?? [], updatedAt: now.toISOString() };
}

/** At start-up: a trial still `running` was cut short by a kill or a restart; anything else is as it was. */
export function interruptedAfterRestart(t: TrialRecord | null, now: Date): TrialRecord | null {
  if (!t || t.state !== 'running') return t;
  return failTrial(t, 'TRIAL_INTERRUPTED', `the device stopped during trial ${t.seq}; its active model was left as it was`, now);
}

/** The latest trial becomes `next`; the one it replaces joins the recent ones (newest first, bounded). */
export function rememberTrial(latest: TrialRecord | null, recent: readonly TrialRecord[], next: TrialRecord): { trial: TrialRecord; recentTrials: TrialRecord[] } {
  const older = latest && latest.seq !== next.seq ? [latest, ...recent] : [...recent];
  return { trial: next, recentTrials: older.filter((r) => r.seq !== next.seq).slice(0, RECENT_TRIALS_LIMIT) };
}

/**
 * What to re-report on (re)connect, oldest first: the latest record of each rollout only. An
 * older trial of a rollout that has a newer one (interrupted, then sent again) is settled news,
 * and must not arrive after, and be mistaken for the outcome of, the one that replaced it.
 */
export function trialsToReport(latest: TrialRecord | null, recent: readonly TrialRecord[]): TrialRecord[] {
  const seen = new Set<string>();
  const out: TrialRecord[] = [];
  for (const t of [latest, ...recent]) {
    if (!t || seen.has(t.rolloutId)) continue;
    seen.add(t.rolloutId);
    out.push(t);
  }
  return out.reverse();
}

/** A trial desired state at or below lastSeq: the record that answers it, if the device ran it (never run again). */
export function findTrial(seq: number, latest: TrialRecord | null, recent: readonly TrialRecord[]): TrialRecord | undefined {
  if (latest?.seq === seq) return latest;
  return recent.find((r) => r.seq === seq);
}

/** The unsigned report of a trial record; sign it with signTrialReport. */
export function trialReport(deviceId: string, t: TrialRecord): Omit<TrialReport, 'signature'> {
  return {
    v: PROTOCOL_VERSION, deviceId, rolloutId: t.rolloutId, seq: t.seq, state: t.state,
    ...(t.code ? { code: t.code } : {}), ...(t.reason ? { reason: t.reason.slice(0, 4000) } : {}),
    results: t.results.map((r) => ({ ...r, ...(r.reason ? { reason: r.reason.slice(0, 4000) } : {}) })),
    at: t.updatedAt,
  };
}

/** Shape check of a persisted record; a malformed one is dropped rather than trusted. */
export function isTrialRecord(v: unknown): v is TrialRecord {
  if (typeof v !== 'object' || v === null) return false;
  const r = v as Record<string, unknown>;
  return typeof r.seq === 'number' && typeof r.rolloutId === 'string' && ['running', 'done', 'failed'].includes(r.state as string) && Array.isArray(r.results);
}
