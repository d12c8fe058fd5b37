/**
 * decide(plan, snapshot, now) → Decision[]: the whole rollout engine as one pure function, in
 * the style of balena-supervisor's step planner. The executor calls it on every status report,
 * heartbeat or presence change of a member's device and on a 1–5 s tick, applies the
 * decisions (core/rollout-decisions.ts patchOf), and calls it again later. The same snapshot
 * always gives the same decisions; a snapshot with the decisions applied gives none of them
 * again, so a restart from the database picks up where things stood.
 *
 * One call is O(members): one pass to settle members, one to count them, one to dispatch.
 *
 * In order:
 *   1. schedule: startAt (scheduled → running), endAt (pause or cancel);
 *   2. members: unreached → withdrawn; failed → retry later or failed; no end within
 *      inProgressSec → failed; baked → succeeded; reverted after commit → failed;
 *   3. gates over every opened wave: a breach pauses or rolls back (onBreach); the open wave
 *      passing opens the next (or waits for approval, or finishes); short of quorum after
 *      quorumSec pauses;
 *   4. late joiners (continuous) join the open wave once the canary passed, or the tail wave;
 *   5. trials (a device build, issue 10: core/rollout-trials.ts): the canary trials each
 *      profile's candidates, then the profile's variant is chosen and its members get it;
 *   6. dispatch waiting members of opened waves, within maxInFlight, maxPerMinute and, for a
 *      device's first start, the schedule's windows.
 * A rollout rolling back (or rolled back, while devices that were offline come back) only
 * returns touched devices to their previous bundles.
 */
import type { EpochMs, GateBreach, GatePolicy, RolloutMember, RolloutPlan, RolloutState, WavePlan, WaveRecord } from '../records.js';
import {
  ackExpired, attemptFailed, bakeDone, classify, inProgressExpired, isOffline, isUnreached, replacedAfterCommit, revertedAfterCommit,
  SETTLED, type MemberCategory,
} from './rollout-counting.js';
import { patchOf, takesChoice, waveFigures, type Decision } from './rollout-decisions.js';
import { GroupTally, judgeWave, type WaveVerdict } from './rollout-gates.js';
import { isTerminal, isTouched, newMember, skipReason } from './rollout-member.js';
import { ACK_TIMEOUT, backoffMs, IN_PROGRESS_TIMEOUT, retryVerdict } from './rollout-retry.js';
import { schedulePhase, windowState, type WindowState } from './rollout-schedule.js';
import type { ChosenVariant, RolloutDeviceView, RolloutSnapshot } from './rollout-snapshot.js';
import { trialStep } from './rollout-trials.js';

export function decide(plan: RolloutPlan, snapshot: RolloutSnapshot, now: Date): Decision[] {
  const w = new RolloutWork(plan, snapshot, now.getTime());
  w.run();
  return w.out;
}

/** The wave plan that governs a wave position (the tail wave follows the last planned wave). */
export function wavePlanAt(plan: RolloutPlan, position: number): WavePlan {
  return plan.waves[Math.min(position, plan.waves.length - 1)]!;
}

/**
 * A working copy of one snapshot: decisions are applied to it as they are taken, so that later
 * steps of the same call see them (a member withdrawn in step 2 is not counted as dispatched in
 * step 3). Shared with handleCommand.
 */
export class RolloutWork {
  readonly out: Decision[] = [];
  rollout: RolloutState;
  readonly waves: WaveRecord[];
  readonly members: RolloutMember[];
  /** The device of members[i], looked up once per call (keyed lookups in a 1,000-key record add up). */
  private readonly devs: (RolloutDeviceView | undefined)[];
  private readonly index = new Map<string, number>();
  private windowCache: WindowState | undefined;
  private verdictCache: Map<number, WaveVerdict> | undefined;
  /** Variant choices made so far (a device build), by profile. */
  readonly choices = new Map<string, ChosenVariant>();

  constructor(readonly plan: RolloutPlan, readonly snap: RolloutSnapshot, readonly now: EpochMs) {
    this.rollout = snap.rollout;
    this.waves = [...snap.waves].sort((a, b) => a.position - b.position);
    let sorted = true;
    for (let i = 1; i < snap.members.length; i++) if (snap.members[i - 1]!.order > snap.members[i]!.order) { sorted = false; break; }
    this.members = sorted ? snap.members.slice() : [...snap.members].sort((a, b) => a.order - b.order || (a.deviceId < b.deviceId ? -1 : 1));
    this.members.forEach((m, i) => this.index.set(m.deviceId, i));
    this.devs = this.members.map((m) => snap.devices[m.deviceId]);
    for (const [p, c] of Object.entries(snap.trial?.choices ?? {})) this.choices.set(p, c);
  }

  device(id: string): RolloutDeviceView | undefined {
    return this.snap.devices[id];
  }

  member(deviceId: string): RolloutMember | undefined {
    const i = this.index.get(deviceId);
    return i === undefined ? undefined : this.members[i];
  }

  /** Records a decision and applies its patch to the working copy. */
  emit(d: Decision): void {
    this.out.push(d);
    const p = patchOf(d, this.now);
    if (p.rollout) this.rollout = { ...this.rollout, ...p.rollout };
    if (p.wave) {
      const i = this.waves.findIndex((x) => x.position === p.wave!.position);
      if (i >= 0) this.waves[i] = { ...this.waves[i]!, ...p.wave.patch };
      else if (p.wave.insert) this.waves.push(p.wave.insert);
    }
    if (p.member) {
      const i = this.index.get(p.member.deviceId);
      if (i !== undefined) this.members[i] = { ...this.members[i]!, ...p.member.patch };
    }
    if (p.insertMember && !this.index.has(p.insertMember.deviceId)) {
      this.index.set(p.insertMember.deviceId, this.members.length);
      this.members.push(p.insertMember);
      this.devs.push(this.snap.devices[p.insertMember.deviceId]);
    }
    if (p.choice) {
      const { profile, bundleId } = p.choice;
      for (let i = 0; i < this.members.length; i++) if (takesChoice(this.members[i]!, profile)) this.members[i] = { ...this.members[i]!, bundleId };
      this.choices.set(profile, { choice: p.choice.choice, chosenAt: this.now });
    }
    if (p.member || p.insertMember || p.choice) this.verdictCache = undefined;
  }

  run(): void {
    switch (this.rollout.status) {
      case 'scheduled':
        return this.scheduled();
      case 'running': case 'paused': case 'cancelled':
        return this.forward();
      case 'rolling_back': case 'rolled_back':
        return this.rollbackStep();
      case 'succeeded': case 'failed':
        return;
    }
  }

  // ------------------------------------------------------------------ schedule

  private scheduled(): void {
    const phase = schedulePhase(this.plan.schedule, this.now);
    if (phase === 'before-start') return;
    if (phase === 'ended') {
      if (this.plan.schedule.endBehavior === 'cancel') return this.cancelAll('SCHEDULE_ENDED', `endAt ${this.plan.schedule.endAt} passed before the rollout started`);
      return this.emit({ kind: 'pause', reason: { code: 'SCHEDULE_ENDED', message: `endAt ${this.plan.schedule.endAt} passed before the rollout started`, wave: null, at: this.now } });
    }
    this.emit({ kind: 'start', startAt: this.plan.schedule.startAt });
    this.forward();
  }

  /** Cancel: members not started leave (withdrawn if dispatched); started ones finish. */
  cancelAll(code: 'CANCELLED' | 'SCHEDULE_ENDED', message: string): void {
    let withdrawn = 0, left = 0, running = 0;
    for (const m of [...this.members]) {
      if (m.phase === 'waiting') {
        this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code, reason: message });
        left++;
      } else if (m.phase === 'dispatched' && m.startedAt === null && m.activeAt === null) {
        this.emit({ kind: 'withdraw', deviceId: m.deviceId, code: 'CANCELLED', reason: message, outcome: 'cancelled', dispatchedAt: m.dispatchedAt, unreached: m.unreached });
        withdrawn++;
      } else if (m.phase === 'dispatched') running++;
    }
    this.emit({ kind: 'finish', status: 'cancelled', message, figures: { cancelled: left, withdrawn, stillRunning: running } });
  }

  // ------------------------------------------------------------------ forward

  private forward(): void {
    const sched = schedulePhase(this.plan.schedule, this.now);
    if (sched === 'ended' && (this.rollout.status === 'running' || this.rollout.status === 'paused')) {
      const message = `endAt ${this.plan.schedule.endAt} passed`;
      if (this.plan.schedule.endBehavior === 'cancel') this.cancelAll('SCHEDULE_ENDED', message);
      else if (this.rollout.status === 'running') this.emit({ kind: 'pause', reason: { code: 'SCHEDULE_ENDED', message, wave: this.frontier(), at: this.now } });
    }
    this.settleMembers();
    if (this.rollout.status !== 'running') return;
    if (this.gates()) return;
    if (this.rollout.status !== 'running') return;
    this.lateJoiners();
    trialStep(this);
    this.dispatch();
  }

  /** Step 2: what each member's facts mean now. */
  private settleMembers(): void {
    const status = this.rollout.status;
    const retries = status === 'running' || status === 'paused';
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[i]!;
      if (m.phase !== 'waiting' && m.phase !== 'dispatched' && m.phase !== 'succeeded') continue;
      const d = this.devs[i];
      if (!d || d.revoked) {
        if (m.phase !== 'succeeded') this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code: 'DEVICE_REVOKED', reason: 'the device was revoked or removed' });
        continue;
      }
      if (m.phase === 'succeeded') {
        if (status !== 'cancelled' && revertedAfterCommit(m, d)) this.failReverted(m, d);
        continue;
      }
      if (m.phase !== 'dispatched') continue;
      if (ackExpired(m, this.plan, this.now)) {
        this.emit({
          kind: 'withdraw', deviceId: m.deviceId, code: 'ACK_TIMEOUT', outcome: status === 'cancelled' ? 'cancelled' : 'waiting', dispatchedAt: m.dispatchedAt, unreached: m.unreached + 1,
          reason: `no report within ${this.plan.timeouts.ackSec} s of the dispatch; back to waiting, never a failure`,
        });
      } else if (attemptFailed(m) && m.reportCode === 'SUPERSEDED') {
        // Another desired state (another stream's rollout on this device) replaced ours before it
        // started: not a failure of this bundle, and sending it again would fight the other one.
        this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code: 'SUPERSEDED', reason: m.reportReason ?? 'the device took a newer desired state before starting this one' });
      } else if (attemptFailed(m)) {
        this.endAttempt(m, m.reportCode ?? 'FAILED', m.reportReason ?? `the device reported ${m.reportState}`, m.endedAt ?? this.now, retries);
      } else if (inProgressExpired(m, this.plan, this.now)) {
        this.endAttempt(m, IN_PROGRESS_TIMEOUT, `started ${Math.round((this.now - m.startedAt!) / 1000)} s ago and has not ended (limit ${this.plan.timeouts.inProgressSec} s)`,
          m.startedAt! + this.plan.timeouts.inProgressSec * 1000, retries);
      } else if (m.activeAt !== null) {
        if (revertedAfterCommit(m, d)) this.failReverted(m, d);
        else if (replacedAfterCommit(m, d)) {
          this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code: 'REPLACED', reason: `the device now runs ${d.activeBundle}, put there by something else` });
        } else if (bakeDone(m, d, wavePlanAt(this.plan, m.wave).bakeSec)) {
          this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'succeeded', code: null, reason: `active, and heartbeats showed ${m.bundleId} for ${wavePlanAt(this.plan, m.wave).bakeSec} s` });
        } else if (status === 'cancelled' && isOffline(d)) {
          this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'lost', code: 'LOST', reason: 'went silent during bake after the rollout was cancelled' });
        }
      }
    }
  }

  private failReverted(m: RolloutMember, d: RolloutDeviceView): void {
    this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'failed', code: 'REVERTED_AFTER_COMMIT', reason: `went active, then its heartbeat showed ${d.activeBundle ?? 'no bundle'} again` });
  }

  /** A failed attempt: retry later if the code allows and attempts remain, else the member failed. */
  private endAttempt(m: RolloutMember, code: string, reason: string, endedAt: EpochMs, retries: boolean): void {
    const v = retryVerdict(this.plan.retry, code, m.attempts);
    if (retries && v.retry) {
      this.emit({ kind: 'retry-later', deviceId: m.deviceId, code, attemptsDone: m.attempts, nextAttempt: v.attempt, retryAt: endedAt + v.delayMs, backoffSec: v.delayMs / 1000 });
      return;
    }
    const why = v.retry ? 'no retries once the rollout is cancelled' : v.why === 'attempts-exhausted' ? `after ${m.attempts} of ${this.plan.retry.maxAttempts} attempts` : `${code} is not retried`;
    this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'failed', code, reason: `${reason} (${why})` });
  }

  // ------------------------------------------------------------------ gates

  /** Highest opened wave (open or passed), or -1. */
  frontier(): number {
    let f = -1;
    for (const w of this.waves) if (w.status !== 'pending' && w.position > f) f = w.position;
    return f;
  }

  private waveAt(position: number): WaveRecord | undefined {
    return this.waves.find((w) => w.position === position);
  }

  /** Verdicts of every wave that has members or is opened, from one pass over the members. */
  verdicts(): Map<number, WaveVerdict> {
    if (this.verdictCache) return this.verdictCache;
    const whole = new Map<number, GroupTally>();
    const byProfile = new Map<number, Map<string, GroupTally>>();
    const policyOf = (wave: number): GatePolicy => wavePlanAt(this.plan, wave).gate;
    for (let i = 0; i < this.members.length; i++) {
      const m = this.members[i]!;
      const d = this.devs[i];
      const cat = classify(m, d);
      let t = whole.get(m.wave);
      if (!t) whole.set(m.wave, (t = new GroupTally(m.wave, null)));
      t.add(m, cat, d, policyOf(m.wave).live);
      let perWave = byProfile.get(m.wave);
      if (!perWave) byProfile.set(m.wave, (perWave = new Map()));
      let p = perWave.get(m.profile);
      if (!p) perWave.set(m.profile, (p = new GroupTally(m.wave, m.profile)));
      p.add(m, cat, d, policyOf(m.wave).live);
    }
    for (const w of this.waves) if (!whole.has(w.position)) whole.set(w.position, new GroupTally(w.position, null));
    const out = new Map<number, WaveVerdict>();
    for (const [wave, t] of whole) out.set(wave, judgeWave(wave, t, [...(byProfile.get(wave)?.values() ?? [])], policyOf(wave)));
    this.verdictCache = out;
    return out;
  }

  /** Breaches on opened waves that no override covers (an override holds while the figure does not grow). */
  activeBreaches(): GateBreach[] {
    const out: GateBreach[] = [];
    const f = this.frontier();
    for (const [wave, v] of this.verdicts()) {
      if (wave > f) continue;
      for (const b of v.breaches) {
        const o = this.rollout.overrides.find((x) => x.wave === b.wave && x.profile === b.profile && x.rule === b.rule);
        if (!o || b.value > o.value) out.push(b);
      }
    }
    return out;
  }

  /** Step 3. Returns true when the rollout stopped (breach). */
  private gates(): boolean {
    const breaches = this.activeBreaches();
    if (breaches.length) {
      const first = this.verdicts().get(breaches[0]!.wave)!;
      if (this.plan.onBreach === 'rollback') {
        this.emit({ kind: 'start-rollback', cause: 'breach', breaches });
        this.rollbackStep();
      } else {
        this.emit({
          kind: 'pause',
          reason: { code: 'BREACH', message: breaches.map((b) => b.message).join('; '), wave: breaches[0]!.wave, at: this.now, breaches, figures: first.whole.figures },
        });
      }
      return true;
    }
    // Each planned wave takes at most two rounds (open, pass): empty waves pass at once.
    for (let guard = 0; guard <= 2 * this.plan.waves.length + 2 && this.rollout.status === 'running'; guard++) {
      const open = this.waves.filter((w) => w.status === 'open' && !w.tail).sort((a, b) => b.position - a.position)[0];
      if (open) {
        const v = this.verdicts().get(open.position)!;
        const overridden = this.rollout.overrides.some((o) => o.wave === open.position);
        // A wave forced past a breach is not held back again by the success ratio that breach implies.
        const pass = v.pass || (overridden && v.unmetConditions.every((c) => c === 'minSuccessRatio'));
        if (!pass) {
          this.quorum(open, v);
          return false;
        }
        this.emit({ kind: 'wave-passed', wave: open.position, figures: waveFigures(v) });
        continue;
      }
      const f = this.frontier();
      const next = f + 1;
      if (next < this.plan.waves.length) {
        const rec = this.waveAt(next);
        if (this.plan.waves[next]!.requireApproval && !rec?.approvedAt) {
          this.emit({ kind: 'await-approval', wave: next, name: this.plan.waves[next]!.name });
          return false;
        }
        this.emit({ kind: 'open-wave', wave: next, name: this.plan.waves[next]!.name, cause: rec?.approvedAt ? 'approved' : next === 0 ? 'start' : 'previous-passed', tail: false, members: this.countIn(next) });
        continue;
      }
      // Every planned wave passed.
      if (this.plan.membership === 'continuous') {
        if (!this.waveAt(this.plan.waves.length)) {
          this.emit({ kind: 'open-wave', wave: this.plan.waves.length, name: 'tail', cause: 'tail', tail: true, members: 0 });
        }
        return false;
      }
      this.finishIfSettled();
      return false;
    }
    return false;
  }

  private countIn(wave: number): number {
    let n = 0;
    for (const m of this.members) if (m.wave === wave && m.phase !== 'skipped') n++;
    return n;
  }

  /** Short of quorum (or settled without passing) after quorumSec: pause with the figures. */
  private quorum(open: WaveRecord, v: WaveVerdict): void {
    const win = this.window();
    if (!win.open) return; // waiting for a window is expected, not a lack of quorum
    const from = Math.max(open.openedAt ?? this.now, this.rollout.resumedAt ?? Number.NEGATIVE_INFINITY, win.openedAt);
    if (this.now - from < this.plan.timeouts.quorumSec * 1000) return;
    const groups = [v.whole, ...v.profiles];
    const short = groups.filter((g) => g.figures.finished < g.figures.minExecuted);
    if (short.length) {
      const msg = short.map((g) => `${g.figures.profile ?? 'wave'}: ${g.figures.finished} of ${g.figures.minExecuted} finished`).join('; ');
      this.emit({ kind: 'pause', reason: { code: 'QUORUM', message: `wave ${open.position} short of quorum after ${this.plan.timeouts.quorumSec} s (${msg})`, wave: open.position, at: this.now, figures: v.whole.figures } });
    } else if (groups.every((g) => g.settled)) {
      this.emit({ kind: 'pause', reason: { code: 'GATE_UNMET', message: `wave ${open.position} settled without passing: ${v.unmet.join('; ')}`, wave: open.position, at: this.now, figures: v.whole.figures } });
    }
  }

  /** Snapshot membership, every planned wave passed: finish once nothing is in flight, closing who was never reached. */
  private finishIfSettled(): void {
    const cats = new Map<string, MemberCategory>();
    for (const m of this.members) {
      const c = classify(m, this.device(m.deviceId));
      if (!SETTLED.has(c)) return;
      cats.set(m.deviceId, c);
    }
    const figures: Record<string, number> = {};
    for (const c of cats.values()) figures[c] = (figures[c] ?? 0) + 1;
    for (const m of [...this.members]) {
      const c = cats.get(m.deviceId);
      if (c === 'waiting_offline' || c === 'unreached') {
        this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code: 'NOT_REACHED', reason: 'offline or unanswering until every wave had passed' });
      } else if (c === 'lost' && m.phase === 'dispatched') {
        this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'lost', code: 'LOST', reason: 'went silent during bake and had not come back when the rollout finished' });
      }
    }
    this.emit({ kind: 'finish', status: 'succeeded', message: 'every wave passed', figures });
  }

  // ------------------------------------------------------------------ late joiners

  private lateJoiners(): void {
    if (this.plan.membership !== 'continuous' || this.snap.candidates.length === 0) return;
    if (this.waveAt(0)?.status !== 'passed') return; // only once the canary has passed
    const open = this.waves.filter((w) => w.status === 'open').sort((a, b) => (a.tail ? 1 : 0) - (b.tail ? 1 : 0) || b.position - a.position)[0];
    if (!open) return;
    let order = this.members.reduce((mx, m) => Math.max(mx, m.order), -1);
    for (const id of [...this.snap.candidates].sort()) {
      if (this.index.has(id)) continue;
      const d = this.device(id);
      if (!d || d.revoked) continue;
      // A device build: the profile's chosen variant (a profile not chosen yet waits for its choice).
      const pending = this.snap.trial?.profiles[d.profile] !== undefined;
      const bundleId = pending ? this.choices.get(d.profile)?.choice.bundleId ?? null : this.snap.bundles[d.profile] ?? null;
      const member = newMember({ rolloutId: this.rollout.id, device: d, wave: open.position, order: ++order, bundleId, joinedAt: this.now, late: true, pending });
      this.emit({ kind: 'add-member', member });
    }
  }

  // ------------------------------------------------------------------ dispatch

  window(): WindowState {
    return (this.windowCache ??= windowState(this.plan.schedule.windows, this.now));
  }

  private dispatch(): void {
    const f = this.frontier();
    if (f < 0) return;
    let inFlight = 0, lastMinute = 0;
    for (const m of this.members) {
      if (m.phase === 'dispatched' && m.activeAt === null) inFlight++;
      if (m.dispatchedAt !== null && this.now - m.dispatchedAt < 60_000) lastMinute++;
    }
    let budget = Math.min(this.plan.rate.maxInFlight - inFlight, this.plan.rate.maxPerMinute - lastMinute);
    for (let i = 0; i < this.members.length && budget > 0; i++) {
      const m = this.members[i]!;
      if (m.phase !== 'waiting' || m.wave > f || m.bundleId === null) continue;
      const d = this.devs[i];
      if (isOffline(d) || !d) continue;
      if (m.retryAt !== null && this.now < m.retryAt) continue;
      if (isUnreached(m)) {
        const again = (this.plan.retry.retryOn.includes(ACK_TIMEOUT) && this.now >= m.withdrawnAt! + backoffMs(this.plan.retry, m.unreached)) ||
          (d.onlineSince !== null && d.onlineSince > m.withdrawnAt!);
        if (!again) continue;
      }
      if (m.firstDispatchedAt === null) {
        const skip = skipReason(d, m.bundleId);
        if (skip) {
          this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'skipped', code: skip.code, reason: skip.reason });
          continue;
        }
      }
      // Windows gate a device's first start only: retries of a started install may go on outside them.
      if (m.attempts === 0 && !this.window().open) continue;
      const first = m.firstDispatchedAt === null;
      const baseline = first && d.benchmark && d.activeBundle !== null && d.benchmark.bundleId === d.activeBundle ? d.benchmark.p95Ms : null;
      this.emit({
        kind: 'dispatch', deviceId: m.deviceId, wave: m.wave, bundleId: m.bundleId, attempt: m.attempts + 1,
        cause: first ? 'first' : m.attempts > 0 ? 'retry' : 'redispatch',
        previousBundle: first ? d.activeBundle : m.previousBundle, baselineP95Ms: first ? baseline : m.baselineP95Ms,
      });
      budget--;
    }
  }

  // ------------------------------------------------------------------ rollback

  /** Returns every touched member to its previous bundle; devices offline now get it when they return. */
  rollbackStep(): void {
    const rollingBack = this.rollout.status === 'rolling_back';
    let done = 0, failed = 0, impossible = 0, superseded = 0, awaiting = 0, inFlight = 0;
    for (const m0 of [...this.members]) {
      let m = m0;
      if (!isTouched(m)) {
        if (rollingBack && !isTerminal(m)) this.emit({ kind: 'mark-member', deviceId: m.deviceId, outcome: 'cancelled', code: 'ROLLED_BACK', reason: 'the rollout was rolled back before this device was dispatched' });
        continue;
      }
      const d = this.device(m.deviceId);
      if (m.rollbackState === null && m.previousBundle === null) {
        this.emit({ kind: 'mark-rollback', deviceId: m.deviceId, outcome: 'impossible', code: 'NO_PREVIOUS_BUNDLE', reason: 'the device ran no bundle before this rollout' });
        m = this.member(m.deviceId)!;
      }
      if (m.rollbackState === null && d && d.activeBundle === m.previousBundle && m.phase !== 'dispatched') {
        this.emit({ kind: 'mark-rollback', deviceId: m.deviceId, outcome: 'done', code: 'ALREADY_ON_PREVIOUS', reason: `the device already runs ${m.previousBundle} and has nothing under way` });
        m = this.member(m.deviceId)!;
      }
      let unanswered = false;
      if (m.rollbackState === 'dispatched' && d && m.rollbackDispatchedAt !== null) {
        const answered = m.rollbackReportAt !== null && m.rollbackReportAt >= m.rollbackDispatchedAt;
        unanswered = !answered && this.now - m.rollbackDispatchedAt >= this.plan.timeouts.ackSec * 1000;
        if (d.activeBundle === m.previousBundle && d.activeBundleSince !== null && d.activeBundleSince >= m.rollbackDispatchedAt) {
          this.emit({ kind: 'mark-rollback', deviceId: m.deviceId, outcome: 'done', code: null, reason: `heartbeat shows ${m.previousBundle} again` });
        } else if (unanswered && !isOffline(d) && d.onlineSince !== null && d.onlineSince > m.rollbackDispatchedAt) {
          // Unanswered and reconnected since: send it again (the retained desired state should
          // have reached it, but a new seq costs nothing). Unanswered without a reconnect, it
          // waits like an offline device instead of being sent the same thing every ackSec.
          this.emit({ kind: 'mark-rollback', deviceId: m.deviceId, outcome: 'resend', code: ACK_TIMEOUT, reason: `no answer within ${this.plan.timeouts.ackSec} s of the rollback, and it reconnected since` });
        }
        m = this.member(m.deviceId)!;
      }
      if (m.rollbackState === null && d && !isOffline(d)) {
        this.emit({ kind: 'rollback-dispatch', deviceId: m.deviceId, bundleId: m.previousBundle!, fromBundle: d.activeBundle });
        m = this.member(m.deviceId)!;
      }
      switch (m.rollbackState) {
        case 'done': done++; break;
        case 'failed': failed++; break;
        case 'impossible': impossible++; break;
        case 'superseded': superseded++; break;
        case 'dispatched': if (isOffline(d) || unanswered) awaiting++; else inFlight++; break;
        case null: awaiting++; break;
      }
    }
    if (rollingBack && inFlight === 0) {
      this.emit({
        kind: 'finish', status: 'rolled_back',
        message: awaiting ? `every reachable device is back on its previous bundle; ${awaiting} offline get it when they return` : 'every touched device is back on its previous bundle',
        figures: { done, failed, impossible, superseded, awaitingReturn: awaiting },
      });
    }
  }
}
