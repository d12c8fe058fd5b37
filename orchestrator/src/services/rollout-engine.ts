/**
 * The executor of core/rollout-decide.ts: builds a rollout's snapshot from the database, asks
 * decide() what to do, writes every decision's patch and event in one transaction, and only then
 * does the IO (signed desired states). The same round runs on a status report, a heartbeat or a
 * presence change of a member's device, on the tick, on a command and after a restart: decide()
 * picks up from whatever the database holds.
 *
 * Rounds are coalesced per rollout: pokes mark a rollout dirty, and a dirty rollout runs at most
 * once per `coalesceMs` (a wave of 1,000 devices reporting at once costs a few rounds, not
 * thousands). Rounds of all rollouts run one at a time; their database part is synchronous, so
 * nothing interleaves between reading the snapshot and writing the decisions.
 *
 * Snapshots are kept in memory between rounds, written through: the database stays the truth
 * (every change is written there first), and each change to a member or a device is applied to
 * the kept snapshot as it is committed (decisions by the engine, folded reports, heartbeats and
 * presence by the service). Reading 1,000 members and their devices back for every round costs
 * tens of milliseconds; keeping them costs nothing. A kept snapshot is read again from the
 * database after RELOAD_MS anyway, and after a restart there is none.
 */
import { decide } from '../core/rollout-decide.js';
import { applyDecisions, patchOf, type Decision } from '../core/rollout-decisions.js';
import { matchesTarget } from '../core/rollout-member.js';
import type { LiveHealth, RolloutDeviceView, RolloutSnapshot } from '../core/rollout-snapshot.js';
import { holdsStream } from '../core/rollout-supersede.js';
import type { StagedRollout, RolloutStore } from '../db/rollout-store.js';
import type { Logger } from '../logger.js';
import type { LiveQuery } from '../telemetry/live-health.js';
import type { RolloutMember } from '../records.js';
import type { DesiredSend, DesiredStates } from './desired-states.js';
import type { WriteBehind } from './write-behind.js';

/** An event the executor writes besides the decisions themselves (commands, creation). */
export interface ExtraEvent {
  kind: string;
  deviceId: string | null;
  data: Record<string, unknown>;
}

/** Live inference figures per member device (telemetry/live-health.ts LiveHealthSource). */
export interface LiveFigures {
  /** Per device: its figures on the previous bundle and on the new one, oldest first. `key` names the set for caching. */
  figures(key: string, queries: readonly LiveQuery[]): Map<string, LiveHealth[]>;
}

/** Whether any wave of the plan gates on live health (a plan without `gate.live` reads no telemetry). */
function gatesOnLive(plan: StagedRollout['plan']): boolean {
  return plan.waves.some((w) => w.gate.live !== undefined);
}

/** A kept snapshot is reloaded from the database after this long, whatever happened. */
const RELOAD_MS = 60_000;

/**
 * Desired states a round sends at most (dispatches and rollback dispatches); the round after
 * follows at once with the rest. Opening a wave of 1,000 would otherwise write and sign 1,000
 * in one go, holding up everything else (API requests included) for that long. Trimming the
 * tail is safe: dispatches are the last decisions of a round, and fewer is just a smaller budget.
 */
export const MAX_SENDS_PER_ROUND = 100;

interface Kept {
  staged: StagedRollout;
  snap: RolloutSnapshot;
  /** deviceId → index into snap.members. */
  index: Map<string, number>;
  loadedAt: number;
  /** Continuous membership: the candidates must be read again (a device enrolled, changed tags or came online). */
  candidatesStale: boolean;
}

function indexOf(snap: RolloutSnapshot): Map<string, number> {
  return new Map(snap.members.map((m, i) => [m.deviceId, i]));
}

function deviceOf(d: Decision): string | null {
  if ('deviceId' in d) return d.deviceId;
  if (d.kind === 'add-member') return d.member.deviceId;
  return null;
}

export class RolloutEngine {
  private readonly dirty = new Set<string>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;
  private closed = false;
  private readonly kept = new Map<string, Kept>();
  /** Snapshots written inside the transaction under way, kept once it commits. */
  private staging: Map<string, { staged: StagedRollout; snap: RolloutSnapshot }> | null = null;
  private stagedSends: DesiredSend[] = [];
  /** Rounds run so far (for logs and tests). */
  rounds = 0;
  /** Snapshots read from the database so far (tests check that rounds reuse them). */
  loads = 0;

  constructor(private readonly deps: {
    rollouts: RolloutStore; desired: DesiredStates; log: Logger; now: () => Date;
    /** Least time between two rounds of one rollout driven by reports (default 100 ms). */
    coalesceMs?: number;
    /** Device facts still to be written: written before any decision, and before a snapshot is read back. */
    writes?: WriteBehind;
    /** Live inference figures, for plans with a live gate; absent: live gates see no figures and judge nothing. */
    live?: LiveFigures;
  }) {}

  /**
   * The snapshot decide() sees: with each member device's live figures when the plan gates on
   * them. A copy: the kept snapshot holds database facts only, and live figures change between
   * rounds without any write (they come from telemetry windows).
   */
  withLive(r: StagedRollout, snap: RolloutSnapshot): RolloutSnapshot {
    const live = this.deps.live;
    if (!live || !gatesOnLive(r.plan)) return snap;
    const queries: LiveQuery[] = [];
    for (const m of snap.members) {
      if (m.bundleId === null || (m.activeAt === null && m.firstDispatchedAt === null)) continue;
      queries.push({ deviceId: m.deviceId, bundleId: m.bundleId, previousBundle: m.previousBundle, activeAt: m.activeAt, firstDispatchedAt: m.firstDispatchedAt });
    }
    let figures: Map<string, LiveHealth[]>;
    try {
      figures = live.figures(r.id, queries);
    } catch (err) {
      // A failed read leaves the live gate without figures this round (it judges nothing); the other gates go on.
      this.deps.log.error({ rolloutId: r.id, err }, 'reading live health for the rollout gate failed');
      return snap;
    }
    if (figures.size === 0) return snap;
    const devices = { ...snap.devices };
    for (const [id, list] of figures) {
      const d = devices[id];
      if (d) devices[id] = { ...d, live: list };
    }
    return { ...snap, devices };
  }

  private get coalesceMs(): number { return this.deps.coalesceMs ?? 100; }

  get isClosed(): boolean { return this.closed; }

  /** Asks for a round of `rolloutId` soon. */
  poke(rolloutId: string): void {
    if (this.closed) return;
    this.dirty.add(rolloutId);
    this.schedule();
  }

  private schedule(): void {
    if (this.timer || this.flushing || this.closed || this.dirty.size === 0) return;
    this.timer = setTimeout(() => { this.timer = undefined; void this.flush(); }, this.coalesceMs);
  }

  private async flush(): Promise<void> {
    if (this.flushing) return;
    const ids = [...this.dirty];
    this.dirty.clear();
    this.flushing = (async () => {
      for (const id of ids) {
        if (this.closed) return;
        try {
          await this.runRound(id);
        } catch (err) {
          this.deps.log.error({ rolloutId: id, err }, 'rollout round failed; the next tick tries again');
        }
      }
    })();
    await this.flushing;
    this.flushing = undefined;
    // Pokes that came in meanwhile wait coalesceMs: at most one round per rollout per interval.
    this.schedule();
  }

  /** Resolves once no round is running or due and every desired state asked for is sent. */
  async idle(): Promise<void> {
    for (let i = 0; i < 100 && (this.flushing || this.timer || this.dirty.size); i++) {
      if (this.timer) { clearTimeout(this.timer); this.timer = undefined; void this.flush(); }
      await this.flushing;
    }
    await this.deps.desired.idle();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    await this.flushing;
    await this.deps.desired.idle();
    this.deps.writes?.flush();
  }

  /** One round now: decide, write, then send. */
  async runRound(rolloutId: string): Promise<Decision[]> {
    const k = this.keep(rolloutId);
    if (!k) return [];
    const { staged: r, snap } = k;
    const now = this.deps.now();
    let decisions = decide(r.plan, this.withLive(r, snap), now);
    if (decisions.length === 0) return decisions;
    this.rounds++;
    decisions = this.guardTakenOver(r, snap, decisions, (s) => decide(r.plan, this.withLive(r, s), now));
    let sent = 0;
    const trimmed = decisions.filter((d) => (d.kind !== 'dispatch' && d.kind !== 'rollback-dispatch' && d.kind !== 'trial-dispatch') || ++sent <= MAX_SENDS_PER_ROUND);
    if (trimmed.length < decisions.length) {
      decisions = trimmed;
      // The rest in the next round, without waiting for a report or the tick.
      this.dirty.add(rolloutId);
    }
    const sends = this.transaction(() => this.write(r, snap, decisions, now, []));
    await this.deps.desired.send(sends);
    return decisions;
  }

  /** The kept snapshot of a staged rollout, read from the database when there is none (or it is old). */
  private keep(rolloutId: string): Kept | undefined {
    let k = this.kept.get(rolloutId);
    const now = Date.now();
    if (k && now - k.loadedAt > RELOAD_MS) k = undefined;
    if (!k) {
      this.deps.writes?.flush();
      const staged = this.deps.rollouts.getStaged(rolloutId);
      if (!staged) {
        this.kept.delete(rolloutId);
        return undefined;
      }
      const snap = this.readSnapshot(staged);
      this.loads++;
      k = { staged, snap, index: indexOf(snap), loadedAt: now, candidatesStale: false };
      this.kept.set(rolloutId, k);
    } else if (k.candidatesStale && k.staged.plan.membership === 'continuous') {
      const cands = this.candidates(k.staged, this.deps.rollouts.nonMemberDevices(rolloutId));
      for (const d of cands) k.snap.devices[d.id] = d;
      k.snap = { ...k.snap, candidates: cands.map((d) => d.id) };
      k.candidatesStale = false;
    }
    return k;
  }

  /** A member as kept (the database's row with every committed change), or undefined. */
  member(rolloutId: string, deviceId: string): RolloutMember | undefined {
    const k = this.keep(rolloutId);
    const i = k?.index.get(deviceId);
    return i === undefined ? undefined : k!.snap.members[i];
  }

  /** The staged rollout (plan and engine state) as kept, or read. */
  staged(rolloutId: string): StagedRollout | undefined {
    return this.keep(rolloutId)?.staged;
  }

  /** The rollout's snapshot as decide() sees it now (for commands and views: do not keep it across an await). */
  snapshot(r: StagedRollout): RolloutSnapshot {
    return this.keep(r.id)?.snap ?? this.readSnapshot(r);
  }

  private readSnapshot(r: StagedRollout): RolloutSnapshot {
    return this.deps.rollouts.snapshot(r, (nonMembers) => this.candidates(r, nonMembers));
  }

  /** Continuous membership: target devices that are members of no open rollout of the stream. */
  private candidates(r: StagedRollout, nonMembers: RolloutDeviceView[]): RolloutDeviceView[] {
    const busy = new Set(this.deps.rollouts.openMembersOfStream(r.stream, r.id).map((o) => o.member.deviceId));
    return nonMembers.filter((d) => !busy.has(d.id) && matchesTarget(d, r.target));
  }

  /**
   * Runs `fn` (which calls write()) in one database transaction; the snapshots and sends it
   * produced are kept only once it has committed. Returns what to send.
   */
  transaction<T>(fn: () => T): T {
    if (this.staging) return fn(); // nested: the outer one commits
    this.deps.writes?.flush();
    this.staging = new Map();
    this.stagedSends = [];
    try {
      const out = this.deps.rollouts.transaction(fn);
      for (const [id, x] of this.staging) {
        const k = this.kept.get(id);
        const members = x.snap.members.length;
        if (k) {
          k.staged = x.staged;
          if (k.snap.members.length !== members) k.index = indexOf(x.snap);
          k.snap = x.snap;
        }
      }
      // Who was sent what: a device's newest desired state is now this rollout's.
      for (const send of this.stagedSends) this.devicePatched(send.deviceId, { desiredRolloutId: send.rolloutId });
      return out;
    } catch (err) {
      for (const id of this.staging.keys()) this.kept.delete(id);
      throw err;
    } finally {
      this.staging = null;
      this.stagedSends = [];
    }
  }

  /** A committed change to one member (a folded report): the kept snapshot follows. */
  memberPatched(rolloutId: string, deviceId: string, patch: Partial<RolloutMember>): void {
    const k = this.kept.get(rolloutId);
    const i = k?.index.get(deviceId);
    if (!k || i === undefined) return;
    k.snap.members[i] = { ...k.snap.members[i]!, ...patch };
  }

  /** A committed change to a device (a report, heartbeat, presence, revocation): every kept snapshot holding it follows. */
  devicePatched(deviceId: string, patch: Partial<RolloutDeviceView>): void {
    if (Object.keys(patch).length === 0) return;
    for (const k of this.kept.values()) {
      const d = k.snap.devices[deviceId];
      if (d) k.snap.devices[deviceId] = { ...d, ...patch };
    }
  }

  /** A device enrolled, changed tags or came online: continuous rollouts read their candidates again. */
  candidatesChanged(): void {
    for (const k of this.kept.values()) if (k.staged.plan.membership === 'continuous') k.candidatesStale = true;
  }

  /** Keeps only the snapshots of `active` rollouts (the tick's list): a finished rollout is read again if it is ever needed. */
  retain(active: ReadonlySet<string>): void {
    for (const id of this.kept.keys()) if (!active.has(id)) this.kept.delete(id);
  }

  /** One rollout's kept snapshot is read again at its next round (a trial report stored results it does not follow). */
  reload(rolloutId: string): void {
    this.kept.delete(rolloutId);
  }

  /** Something changed that the kept snapshots cannot follow: read them all again. */
  forget(): void {
    this.kept.clear();
  }

  /**
   * A rollback reopens the members it returns. One whose device another rollout of the stream
   * has taken over since (after this rollout had finished with it) is left to that rollout: it
   * is marked superseded first, and the round is decided again without it.
   */
  guardTakenOver(r: StagedRollout, snap: RolloutSnapshot, decisions: Decision[], again: (s: RolloutSnapshot) => Decision[]): Decision[] {
    if (!decisions.some((d) => d.kind === 'start-rollback')) return decisions;
    const held = new Set(this.deps.rollouts.openMembersOfStream(r.stream, r.id).map((o) => o.member.deviceId));
    const marks: Decision[] = snap.members
      .filter((m) => m.firstDispatchedAt !== null && m.rollbackState === null && held.has(m.deviceId))
      .map((m) => ({ kind: 'mark-rollback', deviceId: m.deviceId, outcome: 'superseded', code: 'SUPERSEDED', reason: 'another rollout of the stream runs on the device now' }));
    if (marks.length === 0) return decisions;
    const now = this.deps.now();
    return [...marks, ...again(applyDecisions(snap, marks, now.getTime()))];
  }

  /**
   * Writes `decisions` (taken on `snap`) and their events, and records the desired states they
   * need: to be called inside a transaction. Returns what to send once it has committed.
   */
  write(r: StagedRollout, snap: RolloutSnapshot, decisions: readonly Decision[], now: Date, extra: readonly ExtraEvent[]): DesiredSend[] {
    const { rollouts } = this.deps;
    const t = now.getTime();
    const after = applyDecisions(snap, decisions, t);
    const finalMember = new Map<string, RolloutMember>(after.members.map((m) => [m.deviceId, m]));
    const status = after.rollout.status;
    const open = (m: RolloutMember) => holdsStream(m, status);
    const sends: DesiredSend[] = [];
    /** The desired-state seq each IO decision was given, for its event. */
    const seqs = new Map<Decision, number>();
    const before = new Map(snap.members.map((m) => [m.deviceId, m]));
    for (const d of decisions) {
      const p = patchOf(d, t);
      if (p.rollout) rollouts.updateRollout(r.id, p.rollout);
      if (p.wave) {
        if (p.wave.insert && !snap.waves.some((w) => w.position === p.wave!.position)) rollouts.insertWave(r.id, p.wave.insert);
        else rollouts.updateWave(r.id, p.wave.position, p.wave.patch);
      }
      if (p.insertMember && !before.has(p.insertMember.deviceId)) {
        rollouts.insertMember(p.insertMember, r.stream, open(finalMember.get(p.insertMember.deviceId) ?? p.insertMember));
      }
      if (p.member) rollouts.updateMember(r.id, p.member.deviceId, p.member.patch, open(finalMember.get(p.member.deviceId)!));
      if (p.choice) rollouts.recordChoice(r.id, r.buildId, p.choice.choice, t);
      const send = this.desiredFor(r, before, d);
      if (send) {
        sends.push(send);
        seqs.set(d, send.seq);
      }
    }
    if (status !== snap.rollout.status) rollouts.setOpenFlags(r.id, after.members, open);
    // Keep what the database now holds, once the transaction commits.
    const added = new Set(after.members.length !== snap.members.length ? after.members.map((m) => m.deviceId) : []);
    const next = added.size ? { ...after, candidates: after.candidates.filter((id) => !added.has(id)) } : after;
    if (this.staging) {
      this.staging.set(r.id, { staged: { ...r, state: after.rollout }, snap: next });
      this.stagedSends.push(...sends);
    }
    rollouts.appendEvents(r.id, now.toISOString(), [
      ...extra,
      ...decisions.map((d) => ({
        kind: d.kind, deviceId: deviceOf(d),
        data: { ...(d as unknown as Record<string, unknown>), ...(seqs.has(d) ? { desiredSeq: seqs.get(d) } : {}) },
      })),
    ]);
    return sends;
  }

  /** The desired state a decision needs, with its seq handed out now (inside the decision's transaction). */
  private desiredFor(r: StagedRollout, members: ReadonlyMap<string, RolloutMember>, d: Decision): DesiredSend | null {
    const { rollouts } = this.deps;
    switch (d.kind) {
      case 'dispatch':
      case 'rollback-dispatch':
        return { deviceId: d.deviceId, rolloutId: r.id, bundleId: d.bundleId, seq: rollouts.allocateDesired(d.deviceId, r.id, d.bundleId) };
      case 'trial-dispatch': {
        // The trial's desired state names the reference as its bundle (the wire contract) and
        // grants the device every candidate's bytes.
        const trial = { candidates: d.candidates, referenceBundleId: d.referenceBundleId, rounds: d.rounds };
        rollouts.grantTrial(d.deviceId, r.id, d.candidates, this.deps.now().getTime());
        return { deviceId: d.deviceId, rolloutId: r.id, bundleId: d.referenceBundleId, trial, seq: rollouts.allocateDesired(d.deviceId, r.id, d.referenceBundleId, trial) };
      }
      case 'withdraw': {
        // Only what this rollout told the device can be taken back: if another rollout's desired
        // state is the device's latest, that one stands.
        const intent = rollouts.desiredIntent(d.deviceId);
        const member = members.get(d.deviceId);
        if (!intent || intent.rolloutId !== r.id || intent.bundleId !== member?.bundleId) return null;
        // A newer desired state naming what the device runs: the agent answers active at once and
        // drops a download in progress. Clearing the retained message would not reach a
        // persistent session's queue.
        // A bundle we never built (installed by hand, say) cannot be named: the retained message is cleared instead.
        const device: RolloutDeviceView | undefined = rollouts.deviceView(d.deviceId);
        const active = device?.activeBundle && rollouts.bundleExists(device.activeBundle) ? device.activeBundle : null;
        return { deviceId: d.deviceId, rolloutId: r.id, bundleId: active, seq: rollouts.allocateDesired(d.deviceId, r.id, active) };
      }
      default:
        return null;
    }
  }
}
