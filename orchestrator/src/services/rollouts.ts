/**
 * Rollout use cases, callable by the HTTP API, the cron tick, the device gateway and later a
 * dashboard: create, command, read (get, list, events), and what devices say (status reports,
 * heartbeats, presence) folded into the rollout's rows. Decisions are core/'s; the engine
 * (rollout-engine.ts) carries them out; this module is the glue between the two and the edges.
 */
import { EdgepackError, type BenchmarkResult, type Heartbeat, type StatusReport, type TrialReport } from '@edgepack/protocol';
import { applyStatusReport, rolloutStatus } from '../core/action-transition.js';
import { handleCommand, type RolloutCommand } from '../core/rollout-commands.js';
import { classify, type MemberCategory } from '../core/rollout-counting.js';
import { RolloutWork, wavePlanAt } from '../core/rollout-decide.js';
import type { WaveVerdict } from '../core/rollout-gates.js';
import { matchesTarget } from '../core/rollout-member.js';
import { PlanNormalizer } from '../core/rollout-plan-normalize.js';
import type { RolloutRequest } from '../core/rollout-request.js';
import { foldHeartbeat, foldPresence, foldStatusReport } from '../core/rollout-reports.js';
import { foldTrialReport } from '../core/rollout-trials.js';
import type { ChosenVariant, RolloutDeviceView } from '../core/rollout-snapshot.js';
import { holdsStream, openMemberRef, resolveConflicts, supersedeDecisions, type OpenMemberRef } from '../core/rollout-supersede.js';
import { assignWaves } from '../core/rollout-waves.js';
import type { EventPageQuery, RolloutStore, StagedRollout, StoredChoice } from '../db/rollout-store.js';
import type { Page, PageQuery, Store } from '../db/store.js';
import { newId } from '../ids.js';
import type { Logger } from '../logger.js';
import type {
  ActionRecord, BuildCandidateRecord, RolloutEvent, RolloutMember, RolloutPlan, RolloutRecord, RolloutState, RolloutStatus, WavePlan, WaveRecord,
} from '../records.js';
import type { DesiredSend, DesiredStates } from './desired-states.js';
import type { RolloutEngine } from './rollout-engine.js';
import type { WriteBehind } from './write-behind.js';

/** One wave as GET /v1/rollouts/:id shows it: its row, its plan, and its gate's verdict now. */
export interface WaveDetail {
  record: WaveRecord;
  plan: WavePlan;
  verdict: WaveVerdict;
}

/** One member as GET /v1/rollouts/:id shows it. */
export interface MemberDetail {
  member: RolloutMember;
  /** What it counts as right now (core/rollout-counting.ts). */
  category: MemberCategory;
  device: RolloutDeviceView | undefined;
  result: BenchmarkResult | null;
  rollbackResult: BenchmarkResult | null;
}

export type RolloutDetail =
  | {
    kind: 'staged'; summary: RolloutRecord; plan: RolloutPlan; state: RolloutState; waves: WaveDetail[]; members: MemberDetail[];
    /** A device build (issue 10): the choices made so far, by profile order; absent for a host build. */
    choices?: ChosenVariant[];
  }
  /** A one-wave rollout made before waves existed: its actions as they were. */
  | { kind: 'legacy'; summary: RolloutRecord; actions: ActionRecord[] };

/** A device online and seen this recently needs no presence write. */
const PRESENCE_QUIET_MS = 2000;

export class RolloutService {
  private readonly normalizer = new PlanNormalizer();
  private continuousPoke: NodeJS.Immediate | undefined;

  constructor(private readonly deps: {
    store: Store; rollouts: RolloutStore; engine: RolloutEngine; desired: DesiredStates; log: Logger; now: () => Date;
    /** Device facts are written once per turn of the event loop (write-behind.ts). */
    writes: WriteBehind;
  }) {}

  // ------------------------------------------------------------------ create

  /**
   * Creates a staged rollout from a POST /v1/rollouts body (already checked against
   * RolloutRequestSchema at the HTTP door; checked again here for callers that are not HTTP).
   * Inserted as scheduled; its first round (decide) starts it before this returns.
   */
  async create(body: unknown): Promise<RolloutDetail> {
    const { store, rollouts, engine, now } = this.deps;
    const at = now();
    // The shape first, naming the field; the context (the build's model, the profiles in the
    // target) only sizes defaults, so a placeholder does for this check.
    const shaped = this.normalizer.normalize(body, { modelId: '', targetProfiles: [], now: at });
    if (!shaped.ok) throw new EdgepackError('ROLLOUT_PLAN_INVALID', shaped.message);
    const request = body as RolloutRequest;
    const build = store.getBuild(request.buildId);
    if (!build) throw new EdgepackError('BUILD_NOT_FOUND', `build ${request.buildId} not found`);
    if (build.status === 'queued' || build.status === 'running') throw new EdgepackError('BUILD_NOT_READY', `build ${build.id} is still ${build.status}`);

    this.deps.writes.flush(); // the devices as they reported themselves up to now
    const devices = rollouts.allDeviceViews();
    // A device build (issue 10): profiles with candidates have their bundle chosen by the canary's trials.
    const pending = new Set(build.selection === 'device' ? rollouts.buildCandidates(build.id).map((c) => c.profile) : []);
    const bundles = pending.size ? {} : rollouts.buildBundles(build.id);
    const hasBundle = (profile: string) => pending.has(profile) || bundles[profile] !== undefined;
    const chosen = devices.filter((d) => matchesTarget(d, request.target));
    const plan = this.normalizer.normalize(body, {
      modelId: build.modelId, targetProfiles: [...new Set(chosen.filter((d) => hasBundle(d.profile)).map((d) => d.profile))].sort(), now: at,
    });
    if (!plan.ok) throw new EdgepackError('ROLLOUT_PLAN_INVALID', plan.message);
    const p = plan.plan;
    if (p.target.deviceIds) {
      const known = new Set(devices.map((d) => d.id));
      const unknown = p.target.deviceIds.filter((id) => !known.has(id));
      if (unknown.length) throw new EdgepackError('DEVICE_NOT_FOUND', `unknown or revoked device ids: ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? ', …' : ''}`);
    }
    // A continuous rollout may start empty: devices that enroll later join it.
    if (chosen.length === 0 && p.membership === 'snapshot') throw new EdgepackError('ROLLOUT_NO_TARGETS', 'the target selects no devices');

    const open = rollouts.openMembersOfStream(p.stream, '');
    const refs = open.map((o) => openMemberRef(o.member, o.status)).filter((x): x is OpenMemberRef => x !== null);
    const conflicts = resolveConflicts(chosen.map((d) => d.id), refs, p.supersede);
    if (!conflicts.ok) throw new EdgepackError('ROLLOUT_CONFLICT', conflicts.message, { devices: conflicts.devices.map((c) => c.deviceId) });

    const id = newId('rol');
    const busy = new Map(conflicts.leftOut.map((c) => [c.deviceId, c.rolloutId]));
    const a = assignWaves({ rolloutId: id, plan: p, devices: chosen, bundles, now: at.getTime(), busy, pending });
    const state: RolloutState = { id, status: 'scheduled', pause: null, createdAt: at.getTime(), startedAt: null, resumedAt: null, finishedAt: null, overrides: [], rollback: null };
    const staged: StagedRollout = { id, buildId: build.id, stream: p.stream, target: p.target, plan: p, state, createdAt: at.toISOString() };

    // Taking over from older rollouts and inserting this one is one transaction: the partial
    // unique index never sees two open members of one device and stream.
    const sends: DesiredSend[] = [];
    engine.transaction(() => {
      const byRollout = new Map<string, Set<string>>();
      for (const c of conflicts.takeOver) byRollout.set(c.rolloutId, (byRollout.get(c.rolloutId) ?? new Set()).add(c.deviceId));
      for (const [oldId, ids] of byRollout) {
        const old = engine.staged(oldId)!;
        const snap = engine.snapshot(old);
        const ds = supersedeDecisions(snap.members, old.state.status, ids, id);
        sends.push(...engine.write(old, snap, ds, at, [{ kind: 'superseded', deviceId: null, data: { by: id, devices: [...ids] } }]));
      }
      rollouts.insertRollout(staged, a.waves, a.members, (m) => holdsStream(m, 'scheduled'));
      rollouts.appendEvents(id, at.toISOString(), [{
        kind: 'create', deviceId: null,
        data: { sizes: a.sizes, members: a.members.length, skipped: a.members.filter((m) => m.phase === 'skipped').length, tookOver: conflicts.takeOver.length, leftOut: conflicts.leftOut.length, plan: p },
      }]);
    });
    await this.deps.desired.send(sends);
    for (const oldId of new Set(conflicts.takeOver.map((c) => c.rolloutId))) engine.poke(oldId);
    await engine.runRound(id);
    return this.get(id);
  }

  // ------------------------------------------------------------------ commands

  /** pause / resume / approve / cancel / rollback: recorded as an event whether carried out or refused (409). */
  async command(id: string, cmd: RolloutCommand): Promise<RolloutDetail> {
    const { rollouts, engine, now } = this.deps;
    const r = engine.staged(id);
    if (!r) {
      if (this.deps.store.getRollout(id)) throw new EdgepackError('ROLLOUT_FINISHED', `rollout ${id} is a one-wave rollout made before waves; it takes no commands`);
      throw new EdgepackError('ROLLOUT_NOT_FOUND', `rollout ${id} not found`);
    }
    const at = now();
    const snap = engine.snapshot(r);
    // A resume re-checks the gates, the live one included.
    const res = handleCommand(r.plan, engine.withLive(r, snap), cmd, at);
    const kind = `command:${cmd.kind}`;
    if (!res.ok) {
      rollouts.transaction(() => rollouts.appendEvents(id, at.toISOString(), [{
        kind, deviceId: null, data: { command: cmd, result: 'refused', code: res.code, message: res.message, ...(res.breaches ? { breaches: res.breaches } : {}) },
      }]));
      throw new EdgepackError(res.code, res.message, res.breaches ? { breaches: res.breaches } : undefined);
    }
    const decisions = engine.guardTakenOver(r, snap, res.decisions, (s) => {
      const again = handleCommand(r.plan, engine.withLive(r, s), cmd, at);
      return again.ok ? again.decisions : [];
    });
    const sends = engine.transaction(() => engine.write(r, snap, decisions, at, [{
      kind, deviceId: null, data: { command: cmd, result: decisions.length ? 'done' : 'already in effect', decisions: decisions.length },
    }]));
    await this.deps.desired.send(sends);
    // Carry on from the new state at once (a resume dispatches, an approve opens the wave).
    await engine.runRound(id);
    return this.get(id);
  }

  // ------------------------------------------------------------------ reads

  get(id: string): RolloutDetail {
    const { store, rollouts, engine, now } = this.deps;
    // The kept snapshot already holds the reports of this turn; their figures are still queued
    // (write-behind). Written first, so a member shown ended also shows what it measured.
    this.deps.writes.flush();
    const summary = store.getRollout(id);
    if (!summary) throw new EdgepackError('ROLLOUT_NOT_FOUND', `rollout ${id} not found`);
    const r = engine.staged(id);
    if (!r) return { kind: 'legacy', summary, actions: store.listActions(id) };
    // The view shows the live gate's figures as decide() sees them.
    const snap = engine.withLive(r, engine.snapshot(r));
    const work = new RolloutWork(r.plan, snap, now().getTime());
    const verdicts = work.verdicts();
    const results = rollouts.resultsOf(id);
    // verdicts() judges every wave that has a row, members or not.
    const waves = snap.waves.map((w): WaveDetail => ({ record: w, plan: wavePlanAt(r.plan, w.position), verdict: verdicts.get(w.position)! }));
    const members = snap.members.map((m): MemberDetail => ({
      member: m, category: classify(m, snap.devices[m.deviceId]), device: snap.devices[m.deviceId],
      result: results.get(m.deviceId)?.result ?? null, rollbackResult: results.get(m.deviceId)?.rollbackResult ?? null,
    }));
    const choices = snap.trial ? Object.keys(snap.trial.choices).sort().map((p) => snap.trial!.choices[p]!) : undefined;
    return { kind: 'staged', summary, plan: r.plan, state: snap.rollout, waves, members, ...(choices ? { choices } : {}) };
  }

  /** A build's kept candidates (a device build) and every choice its rollouts made, oldest first (GET /v1/builds/:id). */
  variantsOfBuild(buildId: string): { candidates: BuildCandidateRecord[]; choices: StoredChoice[] } {
    return { candidates: this.deps.rollouts.buildCandidates(buildId), choices: this.deps.rollouts.choices({ buildId }) };
  }

  list(filter: { buildId?: string; status?: RolloutStatus }, q: PageQuery): Page<RolloutRecord> {
    return this.deps.store.pageRollouts(filter, q);
  }

  events(id: string, q: EventPageQuery): { items: RolloutEvent[]; nextSeq: number | null } {
    if (!this.deps.store.getRollout(id)) throw new EdgepackError('ROLLOUT_NOT_FOUND', `rollout ${id} not found`);
    return this.deps.rollouts.pageEvents(id, q);
  }

  // ------------------------------------------------------------------ what devices say

  /** A validated status report from `deviceId`; returns why it was refused, if it was (answered with a notice). */
  onStatus(deviceId: string, report: StatusReport): string | null {
    const { engine, writes, now, log } = this.deps;
    if (report.deviceId !== deviceId) return `report names device ${report.deviceId} but came from ${deviceId}`;
    const at = now().getTime();
    // The kept member: the database's row with every change committed or queued so far.
    const member = engine.member(report.rolloutId, deviceId);
    if (!member) return this.onLegacyStatus(deviceId, report);
    const r = engine.staged(report.rolloutId)!;
    const d = writes.deviceView(deviceId);
    const f = foldStatusReport(member, d, report, at);
    // Every report also says the device is there (and keeps the offline sweep off it).
    const devicePatch: Partial<RolloutDeviceView> = { ...(d && !d.online ? foldPresence(d, true, at) : {}), lastSeenAt: at, ...f.device };
    writes.patchDevice(deviceId, devicePatch);
    engine.devicePatched(deviceId, devicePatch);
    if (f.kind === 'apply') {
      const open = holdsStream({ ...member, ...f.member }, r.state.status);
      const result = report.result;
      const which = report.bundleId === member.bundleId ? 'install' : 'rollback';
      writes.defer(() => {
        this.deps.rollouts.updateMember(r.id, deviceId, f.member, open);
        if (result) this.deps.rollouts.setMemberResult(r.id, deviceId, which, result);
      });
      engine.memberPatched(r.id, deviceId, f.member);
    } else {
      log.debug({ deviceId, rolloutId: report.rolloutId, state: report.state }, `status not folded: ${f.reason}`);
    }
    engine.poke(r.id);
    return null;
  }

  /**
   * A validated, signed trial report from `deviceId` (issue 10). `running` marks the member's
   * trial started; `done` stores each candidate's figures (per profile, bundle and device, with
   * this rollout) and ends the trial; `failed` ends it without figures (the device is then left
   * out of its profile's choice). Reports for a trial not under way (late, duplicate, after a
   * timeout) change nothing. Returns why the report was refused, if it was.
   */
  onTrialReport(deviceId: string, report: TrialReport): string | null {
    const { engine, rollouts, writes, now, log } = this.deps;
    if (report.deviceId !== deviceId) return `trial report names device ${report.deviceId} but came from ${deviceId}`;
    const member = engine.member(report.rolloutId, deviceId);
    if (!member) return `no member of rollout ${report.rolloutId} on this device`;
    const r = engine.staged(report.rolloutId)!;
    const at = now().getTime();
    const d = writes.deviceView(deviceId);
    const devicePatch: Partial<RolloutDeviceView> = { ...(d && !d.online ? foldPresence(d, true, at) : {}), lastSeenAt: at };
    writes.patchDevice(deviceId, devicePatch);
    engine.devicePatched(deviceId, devicePatch);
    const precisionOf = new Map(rollouts.buildCandidates(r.buildId).filter((c) => c.profile === member.profile).map((c) => [c.bundleId, c.precision]));
    const f = foldTrialReport(member, report, precisionOf, at);
    if (f.kind === 'ignore') {
      log.debug({ deviceId, rolloutId: r.id, state: report.state }, `trial report not folded: ${f.reason}`);
      return null;
    }
    const open = holdsStream({ ...member, ...f.member }, r.state.status);
    writes.flush();
    rollouts.transaction(() => {
      rollouts.updateMember(r.id, deviceId, f.member, open);
      for (const t of f.results) rollouts.upsertTrialResult(t);
    });
    // The stored results are part of the snapshot: read it again at the next round.
    engine.reload(r.id);
    engine.poke(r.id);
    return null;
  }

  /** Reports on one-wave rollouts made before waves: folded into their actions as before, so they still finish. */
  private onLegacyStatus(deviceId: string, report: StatusReport): string | null {
    const { store, now } = this.deps;
    const action = store.getAction(report.rolloutId, deviceId);
    if (!action) return `no action for rollout ${report.rolloutId} on this device`;
    const decision = applyStatusReport(action, report, now().toISOString());
    if (decision.kind === 'ignore') return null;
    store.transaction(() => {
      store.upsertAction(decision.next);
      if (decision.next.state === 'active') store.setActiveBundle(deviceId, decision.next.bundleId);
      const status = rolloutStatus(store.listActions(report.rolloutId));
      const current = store.getRollout(report.rolloutId);
      if (current && current.status !== status) store.setRolloutStatus(report.rolloutId, status, status === 'running' ? null : now().toISOString());
    });
    return null;
  }

  onHeartbeat(deviceId: string, hb: Heartbeat): void {
    const { rollouts, store, engine, writes, now } = this.deps;
    const at = now();
    const d = writes.deviceView(deviceId);
    if (!d || d.revoked) return;
    const wasOnline = d.online;
    const patch = foldHeartbeat(d, hb, at.getTime());
    writes.patchDevice(deviceId, patch);
    writes.defer(() => store.setLastHeartbeat(deviceId, hb));
    engine.devicePatched(deviceId, patch);
    for (const id of rollouts.openRolloutsOfDevice(deviceId)) engine.poke(id);
    if (!wasOnline) this.pokeContinuous();
  }

  /** Presence: the device's own online message, the broker's last will, a clean disconnect, or the offline sweep. */
  onPresence(deviceId: string, online: boolean): void {
    const { rollouts, engine, writes, now } = this.deps;
    const d = writes.deviceView(deviceId);
    if (!d || d.revoked) return;
    const at = now().getTime();
    // A connect says so twice (the broker's clientReady, then the device's own presence message):
    // an online device seen a moment ago has nothing new to write.
    if (online && d.online && d.lastSeenAt !== null && at - d.lastSeenAt < PRESENCE_QUIET_MS) return;
    const patch = foldPresence(d, online, at);
    if (Object.keys(patch).length === 0) return;
    writes.patchDevice(deviceId, patch);
    engine.devicePatched(deviceId, patch);
    if (patch.online === undefined) return; // only lastSeenAt moved: nothing for the engine
    for (const id of rollouts.openRolloutsOfDevice(deviceId)) engine.poke(id);
    if (online) this.pokeContinuous();
  }

  /** The cron sweep: devices online but silent since `cutoff` go offline. Returns their ids. */
  sweepOffline(cutoff: string): string[] {
    this.deps.writes.flush(); // a heartbeat still queued is a sign of life
    const ids = this.deps.store.markStaleOffline(cutoff);
    this.onMarkedOffline(ids);
    return ids;
  }

  /** Devices the cron sweep marked offline after missed heartbeats. */
  onMarkedOffline(deviceIds: readonly string[]): void {
    for (const id of deviceIds) {
      this.deps.engine.devicePatched(id, { online: false });
      for (const r of this.deps.rollouts.openRolloutsOfDevice(id)) this.deps.engine.poke(r);
    }
  }

  /** A revoked device reports nothing more: its rollouts cancel what it had (decide: DEVICE_REVOKED). */
  onDeviceRevoked(deviceId: string): void {
    const { rollouts, store, engine } = this.deps;
    engine.devicePatched(deviceId, { revoked: true, online: false });
    for (const id of rollouts.openRolloutsOfDevice(deviceId)) engine.poke(id);
    // One-wave rollouts: close the device's open actions as before.
    const at = this.deps.now().toISOString();
    for (const a of store.openActionsForDevice(deviceId)) {
      store.upsertAction({ ...a, state: 'failed', code: 'DEVICE_REVOKED', reason: 'the device was revoked', updatedAt: at });
      const status = rolloutStatus(store.listActions(a.rolloutId));
      if (store.getRollout(a.rolloutId)?.status !== status) store.setRolloutStatus(a.rolloutId, status, status === 'running' ? null : at);
    }
  }

  /** A device enrolled or changed tags: continuous rollouts may take it in. */
  onDeviceChanged(): void {
    this.pokeContinuous();
  }

  /** Once per turn of the event loop, however many devices came online in it (a reconnect storm is a thousand). */
  private pokeContinuous(): void {
    this.deps.engine.candidatesChanged();
    if (this.continuousPoke) return;
    this.continuousPoke = setImmediate(() => {
      this.continuousPoke = undefined;
      if (this.deps.engine.isClosed) return; // shutting down: the database may be gone
      for (const id of this.deps.rollouts.continuousRolloutIds()) this.deps.engine.poke(id);
    });
  }

  /** The tick (cron): every rollout with work left gets a round (coalesced with report-driven ones). */
  tick(): number {
    const ids = this.deps.rollouts.activeRolloutIds();
    this.deps.engine.retain(new Set(ids));
    for (const id of ids) this.deps.engine.poke(id);
    return ids.length;
  }

  /**
   * After a (re)start: every device's latest desired state goes out again (the broker's retained
   * store starts empty), then every rollout with work left gets a round from what the database holds.
   */
  async resume(): Promise<{ republished: number; signed: number; rollouts: number }> {
    const r = await this.deps.desired.republishAll();
    const rollouts = this.tick();
    return { ...r, rollouts };
  }
}
