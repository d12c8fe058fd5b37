/**
 * SQL of staged rollouts: the rollout's plan and engine state, its waves (rollout_groups), its
 * members, its events, and the device fields the engine reads. Callers deal in the records of
 * records.ts and the snapshot of core/rollout-snapshot.ts; nothing here decides anything.
 *
 * A snapshot of a rollout is four queries whatever its size (rollout, waves, members, member
 * devices), plus one for the build's bundles and, for continuous membership, one for the
 * candidates: no query per member.
 */
import type { BenchmarkResult } from '@edgepack/protocol';
import type { RolloutDeviceView, RolloutSnapshot, TrialProfile, TrialSnapshot, ChosenVariant } from '../core/rollout-snapshot.js';
import type { VariantChoice } from '../core/variant-choice.js';
import type {
  BuildCandidateRecord, PauseReason, RolloutEvent, RolloutMember, RolloutPlan, RolloutState, RolloutStatus, RolloutTarget, TrialResultRecord, WaveRecord,
} from '../records.js';
import type Database from 'better-sqlite3';
import type { Db } from './database.js';

type Row = Record<string, unknown>;
type Stmt = Database.Statement<unknown[]>;
const json = <T>(text: unknown, fallback: T): T => (typeof text === 'string' ? (JSON.parse(text) as T) : fallback);
const num = (v: unknown): number | null => (v === null || v === undefined ? null : Number(v));

/** RolloutMember field → rollout_members column. `late` is stored as 0/1. */
const MEMBER_COLUMNS = {
  rolloutId: 'rollout_id', deviceId: 'device_id', profile: 'profile', wave: 'wave', order: 'ord', bundleId: 'bundle_id', step: 'step',
  phase: 'phase', code: 'code', reason: 'reason', joinedAt: 'joined_ms', late: 'late', attempts: 'attempts', dispatchedAt: 'dispatched_ms',
  firstDispatchedAt: 'first_dispatched_ms', previousBundle: 'previous_bundle', baselineP95Ms: 'baseline_p95_ms', retryAt: 'retry_ms',
  withdrawnAt: 'withdrawn_ms', unreached: 'unreached', reportState: 'report_state', reportCode: 'report_code', reportReason: 'report_reason',
  reportDeviceAt: 'report_device_ms', startedAt: 'started_ms', activeAt: 'active_ms', endedAt: 'ended_ms', p95Ms: 'p95_ms',
  finishedAt: 'finished_ms', rollbackState: 'rollback_state', rollbackDispatchedAt: 'rollback_dispatched_ms',
  rollbackReportAt: 'rollback_report_ms', rollbackCode: 'rollback_code',
  trialState: 'trial_state', trialAt: 'trial_ms', trialEndedAt: 'trial_ended_ms', trialCode: 'trial_code', trialReason: 'trial_reason',
} as const satisfies Record<keyof RolloutMember, string>;
const MEMBER_FIELDS = Object.keys(MEMBER_COLUMNS) as (keyof RolloutMember)[];

function toMember(r: Row): RolloutMember {
  const m: Record<string, unknown> = {};
  for (const f of MEMBER_FIELDS) m[f] = r[MEMBER_COLUMNS[f]] ?? null;
  m.late = r.late === 1;
  return m as unknown as RolloutMember;
}

function memberValue(field: keyof RolloutMember, v: unknown): unknown {
  if (field === 'late') return v ? 1 : 0;
  return v ?? null;
}

/** RolloutDeviceView field → devices column (tags and the two flags are converted). */
function toDeviceView(r: Row): RolloutDeviceView {
  const bench = r.benchmark_bundle !== null && r.benchmark_bundle !== undefined && r.benchmark_p95_ms !== null && r.benchmark_p95_ms !== undefined
    ? { bundleId: r.benchmark_bundle as string, p95Ms: r.benchmark_p95_ms as number } : null;
  return {
    id: r.id as string,
    profile: r.profile as string,
    tags: json(r.tags, [] as string[]),
    online: r.status === 'online' && r.revoked_at === null,
    onlineSince: num(r.online_since_ms),
    lastSeenAt: num(r.last_seen_ms),
    activeBundle: (r.active_bundle as string | null) ?? null,
    activeBundleSince: num(r.active_bundle_since_ms),
    deviceClockAt: num(r.device_clock_ms),
    lastHeartbeatAt: num(r.last_heartbeat_ms),
    benchmark: bench,
    pinned: r.pinned === 1,
    revoked: r.revoked_at !== null && r.revoked_at !== undefined,
    desiredRolloutId: (r.desired_rollout as string | null) ?? null,
  };
}

const DEVICE_VIEW_COLUMNS = 'd.id, d.profile, d.tags, d.status, d.revoked_at, d.online_since_ms, d.last_seen_ms, d.active_bundle, d.active_bundle_since_ms, d.device_clock_ms, d.last_heartbeat_ms, d.benchmark_bundle, d.benchmark_p95_ms, d.pinned, d.desired_rollout';

/** Device view fields the engine's folds write (core/rollout-reports.ts), as columns. */
const DEVICE_PATCH_COLUMNS: Partial<Record<keyof RolloutDeviceView, string>> = {
  onlineSince: 'online_since_ms', lastSeenAt: 'last_seen_ms', activeBundle: 'active_bundle', activeBundleSince: 'active_bundle_since_ms',
  deviceClockAt: 'device_clock_ms', lastHeartbeatAt: 'last_heartbeat_ms',
};

function toState(r: Row): RolloutState {
  return {
    id: r.id as string,
    status: r.status as RolloutStatus,
    pause: json<PauseReason | null>(r.pause, null),
    createdAt: num(r.created_ms) ?? Date.parse(r.created_at as string),
    startedAt: num(r.started_ms),
    resumedAt: num(r.resumed_ms),
    finishedAt: num(r.finished_ms),
    overrides: json(r.overrides, []),
    rollback: json(r.rollback, null),
  };
}

function toWave(r: Row): WaveRecord {
  return {
    position: r.position as number, name: (r.name as string | null) ?? `wave-${(r.position as number) + 1}`,
    status: r.status === 'open' || r.status === 'passed' ? r.status : 'pending',
    openedAt: num(r.opened_ms), passedAt: num(r.passed_ms), approvedAt: num(r.approved_ms), tail: r.tail === 1,
  };
}

/** A staged rollout as stored: its plan and its engine state. */
export interface StagedRollout {
  id: string;
  buildId: string;
  stream: string;
  target: RolloutTarget;
  plan: RolloutPlan;
  state: RolloutState;
  createdAt: string;
}

/** A device's latest desired state: the intent (written with the decision) and the signed message, once published. */
export interface DesiredIntent {
  deviceId: string;
  seq: number;
  rolloutId: string;
  /** null: the desired state was taken back without naming a bundle (nothing to republish). */
  bundleId: string | null;
  signed: string | null;
  signedSeq: number | null;
  /** Present when the intent is a trial (issue 10). */
  trial?: DesiredTrialIntent;
  /** keyId of the online key that signed `signed`. */
  signedKey: string | null;
}

/** A trial desired state's own part, kept with the intent so it can be signed again after a restart. */
export interface DesiredTrialIntent {
  candidates: string[];
  referenceBundleId: string;
  rounds: number;
}

/** A choice as stored (variant_choices), with the rollout that made it. */
export interface StoredChoice {
  rolloutId: string;
  buildId: string;
  profile: string;
  bundleId: string;
  precision: string;
  cause: string;
  chosenAt: number;
  choice: VariantChoice;
}

export interface EventPageQuery {
  limit: number;
  afterSeq?: number;
  kind?: string;
  deviceId?: string;
}

export class RolloutStore {
  private readonly cache = new Map<string, Stmt>();
  constructor(readonly db: Db) {}

  private stmt(sql: string): Stmt {
    let s = this.cache.get(sql);
    if (!s) this.cache.set(sql, (s = this.db.prepare(sql)));
    return s;
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // ------------------------------------------------------------------ create

  /** Inserts a rollout, its waves and its members in one transaction (open flags as holdsStream says). */
  insertRollout(r: StagedRollout, waves: readonly WaveRecord[], members: readonly RolloutMember[], open: (m: RolloutMember) => boolean): void {
    this.transaction(() => {
      this.stmt(`INSERT INTO rollouts (id, build_id, status, target, created_at, plan, stream, pause, created_ms, started_ms, resumed_ms, finished_ms, overrides, rollback)
        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(
        r.id, r.buildId, r.state.status, JSON.stringify(r.target), r.createdAt, JSON.stringify(r.plan), r.stream,
        r.state.pause ? JSON.stringify(r.state.pause) : null, r.state.createdAt, r.state.startedAt, r.state.resumedAt, r.state.finishedAt,
        JSON.stringify(r.state.overrides), r.state.rollback ? JSON.stringify(r.state.rollback) : null,
      );
      for (const w of waves) this.insertWave(r.id, w);
      for (const m of members) this.insertMember(m, r.stream, open(m));
    });
  }

  insertWave(rolloutId: string, w: WaveRecord): void {
    this.stmt('INSERT INTO rollout_groups (rollout_id, position, status, name, opened_ms, passed_ms, approved_ms, tail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(rolloutId, w.position, w.status, w.name, w.openedAt, w.passedAt, w.approvedAt, w.tail ? 1 : 0);
  }

  insertMember(m: RolloutMember, stream: string, open: boolean): void {
    const cols = MEMBER_FIELDS.map((f) => MEMBER_COLUMNS[f]);
    this.stmt(`INSERT INTO rollout_members (stream, open, ${cols.join(', ')}) VALUES (?, ?, ${cols.map(() => '?').join(', ')})`)
      .run(stream, open ? 1 : 0, ...MEMBER_FIELDS.map((f) => memberValue(f, m[f])));
  }

  // ------------------------------------------------------------------ read

  getStaged(id: string): StagedRollout | undefined {
    const r = this.stmt('SELECT * FROM rollouts WHERE id = ? AND plan IS NOT NULL').get(id) as Row | undefined;
    if (!r) return undefined;
    return {
      id: r.id as string, buildId: r.build_id as string, stream: r.stream as string, target: json(r.target, {}), plan: json(r.plan, {} as RolloutPlan),
      state: toState(r), createdAt: r.created_at as string,
    };
  }

  waves(rolloutId: string): WaveRecord[] {
    return (this.stmt('SELECT * FROM rollout_groups WHERE rollout_id = ? ORDER BY position').all(rolloutId) as Row[]).map(toWave);
  }

  members(rolloutId: string): RolloutMember[] {
    return (this.stmt('SELECT * FROM rollout_members WHERE rollout_id = ? ORDER BY ord').all(rolloutId) as Row[]).map(toMember);
  }

  /** What the devices measured, by device: only members that reported figures, and only those columns. */
  resultsOf(rolloutId: string): Map<string, { result: BenchmarkResult | null; rollbackResult: BenchmarkResult | null }> {
    const rows = this.stmt('SELECT device_id, result, rollback_result FROM rollout_members WHERE rollout_id = ? AND (result IS NOT NULL OR rollback_result IS NOT NULL)').all(rolloutId) as Row[];
    return new Map(rows.map((r) => [r.device_id as string, { result: json(r.result, null), rollbackResult: json(r.rollback_result, null) }]));
  }

  member(rolloutId: string, deviceId: string): RolloutMember | undefined {
    const r = this.stmt('SELECT * FROM rollout_members WHERE rollout_id = ? AND device_id = ?').get(rolloutId, deviceId) as Row | undefined;
    return r && toMember(r);
  }

  deviceView(id: string): RolloutDeviceView | undefined {
    const r = this.stmt(`SELECT ${DEVICE_VIEW_COLUMNS} FROM devices d WHERE d.id = ?`).get(id) as Row | undefined;
    return r && toDeviceView(r);
  }

  /** The devices of every member of a rollout, in one query. */
  memberDevices(rolloutId: string): RolloutDeviceView[] {
    return (this.stmt(`SELECT ${DEVICE_VIEW_COLUMNS} FROM devices d JOIN rollout_members m ON m.device_id = d.id WHERE m.rollout_id = ?`).all(rolloutId) as Row[]).map(toDeviceView);
  }

  /** Enrolled devices that are not members of the rollout (candidates are filtered by target in the caller). */
  nonMemberDevices(rolloutId: string): RolloutDeviceView[] {
    return (this.stmt(`SELECT ${DEVICE_VIEW_COLUMNS} FROM devices d WHERE d.revoked_at IS NULL
      AND NOT EXISTS (SELECT 1 FROM rollout_members m WHERE m.rollout_id = ? AND m.device_id = d.id)`).all(rolloutId) as Row[]).map(toDeviceView);
  }

  /** Unrevoked devices, as the engine sees them (for resolving a target). */
  allDeviceViews(): RolloutDeviceView[] {
    return (this.stmt(`SELECT ${DEVICE_VIEW_COLUMNS} FROM devices d WHERE d.revoked_at IS NULL ORDER BY d.id`).all() as Row[]).map(toDeviceView);
  }

  bundleExists(id: string): boolean {
    return !!this.stmt('SELECT 1 FROM bundles WHERE id = ?').get(id);
  }

  /** profile → bundle of the build's built artifacts. */
  buildBundles(buildId: string): Record<string, string> {
    const out: Record<string, string> = {};
    for (const r of this.stmt("SELECT profile, bundle_id FROM artifacts WHERE build_id = ? AND status = 'built' AND bundle_id IS NOT NULL").all(buildId) as Row[]) {
      out[r.profile as string] = r.bundle_id as string;
    }
    return out;
  }

  /** Everything decide() reads, in a handful of queries. */
  snapshot(r: StagedRollout, candidates: (nonMembers: RolloutDeviceView[]) => RolloutDeviceView[]): RolloutSnapshot {
    const members = this.members(r.id);
    const devices: Record<string, RolloutDeviceView> = {};
    for (const d of this.memberDevices(r.id)) devices[d.id] = d;
    let cand: string[] = [];
    if (r.plan.membership === 'continuous') {
      const list = candidates(this.nonMemberDevices(r.id));
      for (const d of list) devices[d.id] = d;
      cand = list.map((d) => d.id);
    }
    const trial = this.trialSnapshot(r.id, r.buildId);
    return { rollout: r.state, waves: this.waves(r.id), members, devices, candidates: cand, bundles: this.buildBundles(r.buildId), ...(trial ? { trial } : {}) };
  }

  // ------------------------------------------------------------------ device builds (issue 10)

  /** The candidates a device build kept, by profile, in order; empty for a host build. */
  buildCandidates(buildId: string): BuildCandidateRecord[] {
    return (this.stmt('SELECT * FROM build_candidates WHERE build_id = ? ORDER BY profile, position').all(buildId) as Row[]).map((r) => ({
      buildId: r.build_id as string, profile: r.profile as string, position: r.position as number, bundleId: r.bundle_id as string,
      format: r.format as string, precision: r.precision as string, hostPick: r.host_pick === 1, reference: r.reference === 1,
      reason: r.reason as string, metrics: json(r.metrics, {}),
    }));
  }

  /** Stored trial results of these bundles (one per profile, bundle and device). */
  trialResults(bundleIds: readonly string[]): TrialResultRecord[] {
    if (bundleIds.length === 0) return [];
    const rows = this.db.prepare(`SELECT * FROM trial_results WHERE bundle_id IN (${bundleIds.map(() => '?').join(', ')}) ORDER BY profile, bundle_id, device_id`).all(...bundleIds) as Row[];
    return rows.map((r) => ({
      profile: r.profile as string, bundleId: r.bundle_id as string, deviceId: r.device_id as string, rolloutId: r.rollout_id as string,
      precision: r.precision as string, result: json(r.result, null), agreement: json(r.agreement, null),
      code: (r.code as string | null) ?? null, reason: (r.reason as string | null) ?? null, measuredAt: r.measured_ms as number,
    }));
  }

  /** Keeps a device's figures for a candidate; a newer measurement replaces an older one of the same device. */
  upsertTrialResult(t: TrialResultRecord): void {
    this.stmt(`INSERT INTO trial_results (profile, bundle_id, device_id, rollout_id, precision, result, agreement, code, reason, measured_ms)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (profile, bundle_id, device_id) DO UPDATE SET rollout_id = excluded.rollout_id, precision = excluded.precision, result = excluded.result,
        agreement = excluded.agreement, code = excluded.code, reason = excluded.reason, measured_ms = excluded.measured_ms`)
      .run(t.profile, t.bundleId, t.deviceId, t.rolloutId, t.precision, t.result ? JSON.stringify(t.result) : null, t.agreement ? JSON.stringify(t.agreement) : null,
        t.code, t.reason, t.measuredAt);
  }

  /** Choices made, of one rollout or of every rollout of a build (oldest first). */
  choices(by: { rolloutId: string } | { buildId: string }): StoredChoice[] {
    const rows = ('rolloutId' in by
      ? this.stmt('SELECT * FROM variant_choices WHERE rollout_id = ? ORDER BY profile').all(by.rolloutId)
      : this.stmt('SELECT * FROM variant_choices WHERE build_id = ? ORDER BY chosen_ms, rollout_id, profile').all(by.buildId)) as Row[];
    return rows.map((r) => ({
      rolloutId: r.rollout_id as string, buildId: r.build_id as string, profile: r.profile as string, bundleId: r.bundle_id as string,
      precision: r.precision as string, cause: r.cause as string, chosenAt: r.chosen_ms as number, choice: json(r.data, {} as VariantChoice),
    }));
  }

  /** Records a choice and gives it to every member of the profile still without a bundle (inside the decision's transaction). */
  recordChoice(rolloutId: string, buildId: string, choice: VariantChoice, at: number): void {
    this.stmt(`INSERT INTO variant_choices (rollout_id, build_id, profile, bundle_id, precision, cause, chosen_ms, data) VALUES (?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (rollout_id, profile) DO NOTHING`).run(rolloutId, buildId, choice.profile, choice.bundleId, choice.precision, choice.cause, at, JSON.stringify(choice));
    this.stmt("UPDATE rollout_members SET bundle_id = ? WHERE rollout_id = ? AND profile = ? AND bundle_id IS NULL AND phase = 'waiting'")
      .run(choice.bundleId, rolloutId, choice.profile);
  }

  /** A trial lets the device fetch its candidates' bytes (store.isBundleAssigned reads these). */
  grantTrial(deviceId: string, rolloutId: string, bundleIds: readonly string[], at: number): void {
    const s = this.stmt('INSERT OR IGNORE INTO trial_grants (device_id, bundle_id, rollout_id, granted_ms) VALUES (?, ?, ?, ?)');
    for (const b of bundleIds) s.run(deviceId, b, rolloutId, at);
  }

  /** What decide() needs of a device build; undefined for a host build. */
  trialSnapshot(rolloutId: string, buildId: string): TrialSnapshot | undefined {
    const cands = this.buildCandidates(buildId);
    if (cands.length === 0) return undefined;
    const profiles: Record<string, TrialProfile> = {};
    const budgets = new Map<string, number | null>();
    for (const c of cands) {
      let p = profiles[c.profile];
      if (!p) profiles[c.profile] = p = { candidates: [], referenceBundleId: '', hostPick: null, budgetP95Ms: null };
      p.candidates.push({ bundleId: c.bundleId, precision: c.precision, format: c.format, reference: c.reference });
      if (c.reference) {
        p.referenceBundleId = c.bundleId;
        if (!budgets.has(c.profile)) {
          const m = this.stmt('SELECT manifest FROM bundles WHERE id = ?').get(c.bundleId) as Row | undefined;
          const budget = m ? (json<{ acceptance?: { p95LatencyMs?: number } }>(m.manifest, {}).acceptance?.p95LatencyMs ?? null) : null;
          budgets.set(c.profile, budget);
          p.budgetP95Ms = budget;
        }
      }
      if (c.hostPick) p.hostPick = { bundleId: c.bundleId, precision: c.precision };
    }
    const choices: Record<string, ChosenVariant> = {};
    for (const c of this.choices({ rolloutId })) choices[c.profile] = { choice: c.choice, chosenAt: c.chosenAt };
    return { profiles, results: this.trialResults(cands.map((c) => c.bundleId)), choices };
  }

  /** Open members of other rollouts of `stream` on these devices (for the conflict rule). */
  openMembersOfStream(stream: string, exceptRolloutId: string): { member: RolloutMember; status: RolloutStatus }[] {
    return (this.stmt(`SELECT m.*, r.status AS rollout_status FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id
      WHERE m.stream = ? AND m.open = 1 AND m.rollout_id <> ?`).all(stream, exceptRolloutId) as Row[])
      .map((row) => ({ member: toMember(row), status: row.rollout_status as RolloutStatus }));
  }

  /**
   * Rollouts an open member of this device belongs to (decide runs for them when the device
   * reports), oldest first: rollouts of other streams waiting for the same device then dispatch
   * in the order they were made, and the newest desired state is the newest rollout's.
   */
  openRolloutsOfDevice(deviceId: string): string[] {
    return (this.stmt(`SELECT m.rollout_id FROM rollout_members m JOIN rollouts r ON r.id = m.rollout_id
      WHERE m.device_id = ? AND m.open = 1 ORDER BY r.created_at, r.id`).all(deviceId) as Row[]).map((r) => r.rollout_id as string);
  }

  /** Staged rollouts decide() still has work in: not finished, or finished with members still holding their stream. */
  activeRolloutIds(): string[] {
    return (this.stmt(`SELECT id FROM rollouts r WHERE r.plan IS NOT NULL AND (r.status IN ('scheduled', 'running', 'paused', 'rolling_back')
      OR EXISTS (SELECT 1 FROM rollout_members m WHERE m.rollout_id = r.id AND m.open = 1)) ORDER BY r.created_at, r.id`).all() as Row[]).map((r) => r.id as string);
  }

  /** Staged rollouts with continuous membership that are not finished: late joiners may join them. */
  continuousRolloutIds(): string[] {
    return (this.stmt(`SELECT id FROM rollouts WHERE plan IS NOT NULL AND json_extract(plan, '$.membership') = 'continuous'
      AND status IN ('scheduled', 'running', 'paused')`).all() as Row[]).map((r) => r.id as string);
  }

  // ------------------------------------------------------------------ write (inside the caller's transaction)

  updateRollout(id: string, p: Partial<RolloutState>): void {
    const sets: string[] = [];
    const args: unknown[] = [];
    const set = (col: string, v: unknown) => { sets.push(`${col} = ?`); args.push(v); };
    if (p.status !== undefined) set('status', p.status);
    if (p.pause !== undefined) set('pause', p.pause ? JSON.stringify(p.pause) : null);
    if (p.startedAt !== undefined) set('started_ms', p.startedAt);
    if (p.resumedAt !== undefined) set('resumed_ms', p.resumedAt);
    if (p.finishedAt !== undefined) {
      set('finished_ms', p.finishedAt);
      set('finished_at', p.finishedAt === null ? null : new Date(p.finishedAt).toISOString());
    }
    if (p.overrides !== undefined) set('overrides', JSON.stringify(p.overrides));
    if (p.rollback !== undefined) set('rollback', p.rollback ? JSON.stringify(p.rollback) : null);
    if (!sets.length) return;
    this.stmt(`UPDATE rollouts SET ${sets.join(', ')} WHERE id = ?`).run(...args, id);
  }

  updateWave(rolloutId: string, position: number, p: Partial<WaveRecord>): void {
    const cols: [keyof WaveRecord, string][] = [['status', 'status'], ['name', 'name'], ['openedAt', 'opened_ms'], ['passedAt', 'passed_ms'], ['approvedAt', 'approved_ms']];
    const sets: string[] = [];
    const args: unknown[] = [];
    for (const [f, c] of cols) if (p[f] !== undefined) { sets.push(`${c} = ?`); args.push(p[f]); }
    if (p.tail !== undefined) { sets.push('tail = ?'); args.push(p.tail ? 1 : 0); }
    if (!sets.length) return;
    this.stmt(`UPDATE rollout_groups SET ${sets.join(', ')} WHERE rollout_id = ? AND position = ?`).run(...args, rolloutId, position);
  }

  /** Writes the patched fields of one member and its open flag. */
  updateMember(rolloutId: string, deviceId: string, p: Partial<RolloutMember>, open: boolean): void {
    const fields = (Object.keys(p) as (keyof RolloutMember)[]).filter((f) => f in MEMBER_COLUMNS && f !== 'rolloutId' && f !== 'deviceId').sort();
    const sql = `UPDATE rollout_members SET open = ?${fields.map((f) => `, ${MEMBER_COLUMNS[f]} = ?`).join('')} WHERE rollout_id = ? AND device_id = ?`;
    this.stmt(sql).run(open ? 1 : 0, ...fields.map((f) => memberValue(f, p[f])), rolloutId, deviceId);
  }

  setMemberResult(rolloutId: string, deviceId: string, which: 'install' | 'rollback', result: BenchmarkResult): void {
    this.stmt(`UPDATE rollout_members SET ${which === 'install' ? 'result' : 'rollback_result'} = ? WHERE rollout_id = ? AND device_id = ?`)
      .run(JSON.stringify(result), rolloutId, deviceId);
  }

  /** Writes the folded fields of a device (from a report, heartbeat or presence), keeping the API's text columns in step. */
  patchDevice(id: string, p: Partial<RolloutDeviceView>): void {
    const sets: string[] = [];
    const args: unknown[] = [];
    for (const [f, c] of Object.entries(DEVICE_PATCH_COLUMNS) as [keyof RolloutDeviceView, string][]) {
      if (p[f] !== undefined) { sets.push(`${c} = ?`); args.push(p[f]); }
    }
    if (p.online !== undefined) { sets.push('status = ?'); args.push(p.online ? 'online' : 'offline'); }
    if (p.lastSeenAt !== undefined && p.lastSeenAt !== null) { sets.push('last_seen = ?'); args.push(new Date(p.lastSeenAt).toISOString()); }
    if (p.benchmark !== undefined) {
      sets.push('benchmark_bundle = ?', 'benchmark_p95_ms = ?');
      args.push(p.benchmark?.bundleId ?? null, p.benchmark?.p95Ms ?? null);
    }
    if (!sets.length) return;
    this.stmt(`UPDATE devices SET ${sets.join(', ')} WHERE id = ?`).run(...args, id);
  }

  /** Re-derives every member's open flag after the rollout's status changed. */
  setOpenFlags(rolloutId: string, members: readonly RolloutMember[], open: (m: RolloutMember) => boolean): void {
    const s = this.stmt('UPDATE rollout_members SET open = ? WHERE rollout_id = ? AND device_id = ? AND open <> ?');
    for (const m of members) { const o = open(m) ? 1 : 0; s.run(o, rolloutId, m.deviceId, o); }
  }

  /** Appends events with the rollout's next seqs. */
  appendEvents(rolloutId: string, at: string, events: readonly { kind: string; deviceId: string | null; data: unknown }[]): void {
    if (!events.length) return;
    const r = this.stmt('UPDATE rollouts SET event_seq = event_seq + ? WHERE id = ? RETURNING event_seq').get(events.length, rolloutId) as Row;
    let seq = (r.event_seq as number) - events.length;
    const ins = this.stmt('INSERT INTO rollout_events (rollout_id, seq, at, kind, device_id, data) VALUES (?, ?, ?, ?, ?, ?)');
    for (const e of events) ins.run(rolloutId, ++seq, at, e.kind, e.deviceId, JSON.stringify(e.data));
  }

  pageEvents(rolloutId: string, q: EventPageQuery): { items: RolloutEvent[]; nextSeq: number | null } {
    const where = ['rollout_id = ?', 'seq > ?'];
    const args: unknown[] = [rolloutId, q.afterSeq ?? 0];
    if (q.kind !== undefined) { where.push('kind = ?'); args.push(q.kind); }
    if (q.deviceId !== undefined) { where.push('device_id = ?'); args.push(q.deviceId); }
    const rows = this.db.prepare(`SELECT * FROM rollout_events WHERE ${where.join(' AND ')} ORDER BY seq LIMIT ?`).all(...args, q.limit + 1) as Row[];
    const items = rows.slice(0, q.limit).map((r) => ({
      rolloutId: r.rollout_id as string, seq: r.seq as number, at: r.at as string, kind: r.kind as string,
      deviceId: (r.device_id as string | null) ?? null, data: json(r.data, {}),
    }));
    return { items, nextSeq: rows.length > q.limit ? items[items.length - 1]!.seq : null };
  }

  /** All events of some kinds (tests and the bench count dispatches with it). */
  countEvents(rolloutId: string, kind: string): number {
    return (this.stmt('SELECT COUNT(*) AS n FROM rollout_events WHERE rollout_id = ? AND kind = ?').get(rolloutId, kind) as Row).n as number;
  }

  // ------------------------------------------------------------------ desired states

  /**
   * Hands out the device's next desired seq and records it as the device's intent, inside the
   * decision's transaction: the IO that follows only carries out what is written here.
   */
  allocateDesired(deviceId: string, rolloutId: string, bundleId: string | null, trial: DesiredTrialIntent | null = null): number {
    const r = this.stmt(`UPDATE devices SET desired_seq = desired_seq + 1, desired_intent_seq = desired_seq + 1, desired_rollout = ?, desired_bundle = ?, desired_trial = ?
      WHERE id = ? RETURNING desired_seq`).get(rolloutId, bundleId, trial ? JSON.stringify(trial) : null, deviceId) as Row | undefined;
    if (!r) throw new Error(`device ${deviceId} is gone`);
    return r.desired_seq as number;
  }

  desiredIntent(deviceId: string): DesiredIntent | undefined {
    const r = this.stmt('SELECT id, desired_intent_seq, desired_rollout, desired_bundle, desired_signed, desired_signed_seq, desired_signed_key, desired_trial FROM devices WHERE id = ? AND desired_intent_seq IS NOT NULL')
      .get(deviceId) as Row | undefined;
    return r && toIntent(r);
  }

  /** Every unrevoked device's latest desired state (republishing after a restart). */
  desiredIntents(): DesiredIntent[] {
    return (this.stmt(`SELECT id, desired_intent_seq, desired_rollout, desired_bundle, desired_signed, desired_signed_seq, desired_signed_key, desired_trial FROM devices
      WHERE revoked_at IS NULL AND desired_intent_seq IS NOT NULL AND desired_bundle IS NOT NULL`).all() as Row[]).map(toIntent);
  }

  /** Keeps the signed message of intent `seq`, unless a newer intent replaced it meanwhile; returns whether it is still current. */
  storeSigned(deviceId: string, seq: number, signed: string, keyId: string | null): boolean {
    return this.stmt('UPDATE devices SET desired_signed = ?, desired_signed_seq = ?, desired_signed_key = ? WHERE id = ? AND desired_intent_seq = ?')
      .run(signed, seq, keyId, deviceId, seq).changes === 1;
  }

}

function toIntent(r: Row): DesiredIntent {
  return {
    deviceId: r.id as string, seq: r.desired_intent_seq as number, rolloutId: r.desired_rollout as string, bundleId: (r.desired_bundle as string | null) ?? null,
    signed: (r.desired_signed as string | null) ?? null, signedSeq: num(r.desired_signed_seq), signedKey: (r.desired_signed_key as string | null) ?? null,
    ...(typeof r.desired_trial === 'string' ? { trial: json<DesiredTrialIntent>(r.desired_trial, { candidates: [], referenceBundleId: '', rounds: 1 }) } : {}),
  };
}

