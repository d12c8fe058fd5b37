// Test helpers for the rollout engine: fixtures, and a small in-memory executor that carries
// out decide()'s decisions and plays devices that answer like the agent does (downloading …
// active, or failed/rolled_back with a code, heartbeats every 15 s on the device's own clock).
// It stands in for the database and the broker, not for the engine: every decision comes from
// the real decide(), every report goes through the real folding functions.
import assert from 'node:assert/strict';
import { PROTOCOL_VERSION, type BenchmarkResult, type DeviceState, type Heartbeat, type StatusReport } from '@edgepack/protocol';
import { decide } from '@edgepack/orchestrator/core/rollout-decide.js';
import { applyDecisions, type Decision } from '@edgepack/orchestrator/core/rollout-decisions.js';
import { normalizePlan } from '@edgepack/orchestrator/core/rollout-plan-normalize.js';
import { foldHeartbeat, foldStatusReport } from '@edgepack/orchestrator/core/rollout-reports.js';
import type { RolloutDeviceView, RolloutSnapshot } from '@edgepack/orchestrator/core/rollout-snapshot.js';
import { assignWaves } from '@edgepack/orchestrator/core/rollout-waves.js';
import { handleCommand, type RolloutCommand } from '@edgepack/orchestrator/core/rollout-commands.js';
import type { RolloutMember, RolloutPlan, RolloutState } from '@edgepack/orchestrator/records.js';

export const T0 = Date.parse('2026-06-01T00:00:00.000Z');
export const SEC = 1000;
export const MIN = 60 * SEC;

export const newBundle = (profile: string) => `new-${profile}`;
export const oldBundle = (profile: string) => `old-${profile}`;

export function device(id: string, profile = 'pi4', over: Partial<RolloutDeviceView> = {}): RolloutDeviceView {
  return {
    id, profile, tags: ['lab'], online: true, onlineSince: T0 - 3600 * SEC, lastSeenAt: T0, activeBundle: oldBundle(profile),
    activeBundleSince: T0 - 86400 * SEC, deviceClockAt: T0 - 60 * SEC, lastHeartbeatAt: T0 - 60 * SEC,
    benchmark: { bundleId: oldBundle(profile), p95Ms: 10 }, pinned: false, revoked: false, ...over,
  };
}

export function fleet(n: number, profiles: readonly string[] = ['pi4'], over: (i: number) => Partial<RolloutDeviceView> = () => ({})): RolloutDeviceView[] {
  return Array.from({ length: n }, (_, i) => device(`dev-${String(i).padStart(4, '0')}`, profiles[i % profiles.length]!, over(i)));
}

export function bundlesFor(profiles: readonly string[]): Record<string, string> {
  return Object.fromEntries(profiles.map((p) => [p, newBundle(p)]));
}

/** A normalized plan from a request body (buildId and target filled in). */
export function planOf(body: Record<string, unknown> = {}, targetProfiles: readonly string[] = ['pi4'], now = T0): RolloutPlan {
  const r = normalizePlan({ buildId: 'bld_1', target: {}, ...body }, { modelId: 'mdl_1', targetProfiles, now: new Date(now) });
  assert.ok(r.ok, r.ok ? '' : `${r.field}: ${r.message}`);
  return r.plan;
}

export function rolloutState(over: Partial<RolloutState> = {}): RolloutState {
  return { id: 'rol_test', status: 'scheduled', pause: null, createdAt: T0, startedAt: null, resumedAt: null, finishedAt: null, overrides: [], rollback: null, ...over };
}

/** A rollout as created: waves assigned, status scheduled (decide starts it). */
export function snapshotOf(plan: RolloutPlan, devices: readonly RolloutDeviceView[], opts: { id?: string; now?: number; candidates?: RolloutDeviceView[] } = {}): RolloutSnapshot {
  const id = opts.id ?? 'rol_test';
  const profiles = [...new Set(devices.map((d) => d.profile))];
  const a = assignWaves({ rolloutId: id, plan, devices, bundles: bundlesFor(profiles), now: opts.now ?? T0 });
  const all = [...devices, ...(opts.candidates ?? [])];
  return {
    rollout: rolloutState({ id, createdAt: opts.now ?? T0 }),
    waves: a.waves, members: a.members, devices: Object.fromEntries(all.map((d) => [d.id, { ...d }])),
    candidates: (opts.candidates ?? []).map((d) => d.id), bundles: bundlesFor([...profiles, ...(opts.candidates ?? []).map((d) => d.profile)]),
  };
}

export function result(p95: number, goldenPassed = true): BenchmarkResult {
  return {
    runtime: 'onnxruntime', providers: ['cpu'], loadMs: 5, warmupRuns: 3, runs: 20,
    latencyMs: { p50: p95 * 0.8, p90: p95 * 0.95, p95, p99: p95 * 1.1 }, throughputPerSec: 1000 / p95, peakRssBytes: 1 << 26,
    golden: { passed: goldenPassed, maxAbsError: goldenPassed ? 1e-6 : 0.5, samples: 3 },
  };
}

export function statusReport(m: Pick<RolloutMember, 'rolloutId' | 'deviceId'>, bundleId: string, state: DeviceState, at: number, extra: Partial<StatusReport> = {}): StatusReport {
  return { v: PROTOCOL_VERSION, deviceId: m.deviceId, rolloutId: m.rolloutId, bundleId, state, at: new Date(at).toISOString(), ...extra };
}

export function heartbeat(deviceId: string, activeBundle: string | null, at: number, p95?: number): Heartbeat {
  return {
    v: PROTOCOL_VERSION, deviceId, uptimeSec: 100, activeBundle, agentVersion: '0.1.0', at: new Date(at).toISOString(),
    ...(p95 !== undefined ? { lastBenchmark: result(p95) } : {}),
  };
}

/** Folds a report into the snapshot the way the executor does (member row and device row). */
export function withReport(s: RolloutSnapshot, report: StatusReport, receivedAt: number): RolloutSnapshot {
  const i = s.members.findIndex((m) => m.deviceId === report.deviceId);
  assert.ok(i >= 0, `no member ${report.deviceId}`);
  const f = foldStatusReport(s.members[i]!, s.devices[report.deviceId], report, receivedAt);
  const members = s.members.slice();
  if (f.kind === 'apply') members[i] = { ...members[i]!, ...f.member };
  const devices = { ...s.devices, [report.deviceId]: { ...s.devices[report.deviceId]!, ...f.device } };
  return { ...s, members, devices };
}

export function withHeartbeat(s: RolloutSnapshot, hb: Heartbeat, receivedAt: number): RolloutSnapshot {
  const d = s.devices[hb.deviceId]!;
  return { ...s, devices: { ...s.devices, [hb.deviceId]: { ...d, ...foldHeartbeat(d, hb, receivedAt) } } };
}

export function withDevice(s: RolloutSnapshot, id: string, patch: Partial<RolloutDeviceView>): RolloutSnapshot {
  return { ...s, devices: { ...s.devices, [id]: { ...s.devices[id]!, ...patch } } };
}

export function withMember(s: RolloutSnapshot, id: string, patch: Partial<RolloutMember>): RolloutSnapshot {
  return { ...s, members: s.members.map((m) => (m.deviceId === id ? { ...m, ...patch } : m)) };
}

/** decide, then apply: what the executor's database holds afterwards. */
export function step(plan: RolloutPlan, s: RolloutSnapshot, now: number): { snap: RolloutSnapshot; decisions: Decision[]; t: number } {
  const decisions = decide(plan, s, new Date(now));
  return { snap: applyDecisions(s, decisions, now), decisions, t: now };
}

export function command(plan: RolloutPlan, s: RolloutSnapshot, c: RolloutCommand, now: number): { snap: RolloutSnapshot; decisions: Decision[] } {
  const r = handleCommand(plan, s, c, new Date(now));
  assert.ok(r.ok, r.ok ? '' : `${r.code}: ${r.message}`);
  return { snap: applyDecisions(s, r.decisions, now), decisions: r.decisions };
}

export const ofKind = <K extends Decision['kind']>(ds: readonly Decision[], kind: K) => ds.filter((d): d is Extract<Decision, { kind: K }> => d.kind === kind);
export const memberOf = (s: RolloutSnapshot, id: string) => s.members.find((m) => m.deviceId === id)!;

// ------------------------------------------------------------------------------------------
// The in-memory fleet: devices that behave like agents.

export interface DeviceBehaviour {
  /** Connected but never answers a desired state (heartbeats still come). */
  silent?: boolean;
  /** Fails every install of a bundle it never had active, with this code (GOLDEN_MISMATCH → rolled_back with a result). */
  failCode?: string;
  /** Fails only the first N attempts (transient trouble). */
  failTimes?: number;
  /** p95 on new bundles = p95 on its current bundle × factor. */
  p95Factor?: number;
  /** Commits, then after this many ms reverts to the previous bundle. */
  revertAfterMs?: number;
}

interface Pending { at: number; seq: number; run: () => void }

export class FleetSim {
  snap: RolloutSnapshot;
  now: number;
  readonly log: { at: number; d: Decision }[] = [];
  /** Install dispatches per device (never more than allowed: the tests count them). */
  readonly dispatches = new Map<string, number>();
  readonly rollbacks = new Map<string, number>();
  /** What each device really runs. */
  readonly truth = new Map<string, string | null>();
  private readonly p95 = new Map<string, number>();
  private readonly attempts = new Map<string, number>();
  private queue: Pending[] = [];
  private sorted = true;
  private seq = 0;
  private nextHeartbeat = 0;

  constructor(readonly plan: RolloutPlan, snap: RolloutSnapshot, readonly behaviour: (id: string) => DeviceBehaviour = () => ({}), now = T0) {
    this.snap = { ...snap, devices: { ...snap.devices } };
    this.now = now;
    for (const d of Object.values(snap.devices)) {
      this.truth.set(d.id, d.activeBundle);
      this.p95.set(d.id, d.benchmark?.p95Ms ?? 10);
    }
  }

  get status() { return this.snap.rollout.status; }

  /** One decide → apply → IO round. */
  decideNow(): Decision[] {
    const ds = decide(this.plan, this.snap, new Date(this.now));
    this.apply(ds);
    return ds;
  }

  command(c: RolloutCommand): Decision[] {
    const r = handleCommand(this.plan, this.snap, c, new Date(this.now));
    assert.ok(r.ok, r.ok ? '' : `${r.code}: ${r.message}`);
    this.apply(r.decisions);
    return r.decisions;
  }

  apply(ds: readonly Decision[]): void {
    this.snap = applyDecisions(this.snap, ds, this.now);
    for (const d of ds) {
      this.log.push({ at: this.now, d });
      if (d.kind === 'dispatch') {
        this.dispatches.set(d.deviceId, (this.dispatches.get(d.deviceId) ?? 0) + 1);
        this.playInstall(d.deviceId, d.bundleId);
      } else if (d.kind === 'rollback-dispatch') {
        this.rollbacks.set(d.deviceId, (this.rollbacks.get(d.deviceId) ?? 0) + 1);
        this.playRollback(d.deviceId, d.bundleId);
      }
    }
  }

  private at(delay: number, run: () => void): void {
    this.queue.push({ at: this.now + delay, seq: this.seq++, run });
    this.sorted = false;
  }

  private report(id: string, bundleId: string, state: DeviceState, extra: Partial<StatusReport> = {}): void {
    const i = this.snap.members.findIndex((x) => x.deviceId === id);
    const d = this.snap.devices[id]!;
    if (i < 0 || !d.online) return;
    const m = this.snap.members[i]!;
    // The sim owns its "database": rows are replaced in place, as UPDATEs would.
    const f = foldStatusReport(m, d, statusReport(m, bundleId, state, this.now, extra), this.now);
    if (f.kind === 'apply') this.snap.members[i] = { ...m, ...f.member };
    this.snap.devices[id] = { ...d, ...f.device };
  }

  private playInstall(id: string, bundleId: string): void {
    const b = this.behaviour(id);
    if (b.silent) return;
    const previous = this.truth.get(id) ?? null;
    const n = (this.attempts.get(id) ?? 0) + 1;
    this.attempts.set(id, n);
    const fails = b.failCode !== undefined && (b.failTimes === undefined || n <= b.failTimes);
    const p95 = (this.p95.get(id) ?? 10) * (b.p95Factor ?? 1);
    this.at(1 * SEC, () => this.report(id, bundleId, 'downloading'));
    this.at(3 * SEC, () => this.report(id, bundleId, 'benchmarking'));
    this.at(5 * SEC, () => {
      if (fails) {
        const golden = b.failCode === 'GOLDEN_MISMATCH';
        this.report(id, bundleId, golden && previous ? 'rolled_back' : 'failed', { code: b.failCode!, ...(golden ? { result: result(p95, false) } : {}) });
        return;
      }
      this.truth.set(id, bundleId);
      this.report(id, bundleId, 'active', { result: result(p95) });
      if (b.revertAfterMs !== undefined) this.at(b.revertAfterMs, () => this.truth.set(id, previous));
    });
  }

  private playRollback(id: string, bundleId: string): void {
    if (this.behaviour(id).silent) return;
    this.at(2 * SEC, () => {
      this.truth.set(id, bundleId);
      this.report(id, bundleId, 'active');
    });
  }

  setOnline(id: string, online: boolean): void {
    const d = this.snap.devices[id]!;
    this.snap.devices[id] = { ...d, ...(online ? (d.online ? {} : { online: true, onlineSince: this.now, lastSeenAt: this.now }) : { online: false }) };
  }

  /** Advances the clock to `until` in `tickMs` steps: due device events, heartbeats every 15 s, and a decide per tick. */
  run(untilMs: number, tickMs = 1000, stop?: () => boolean): void {
    while (this.now < untilMs) {
      this.now += tickMs;
      if (!this.sorted) {
        this.queue.sort((a, b) => a.at - b.at || a.seq - b.seq);
        this.sorted = true;
      }
      let due = 0;
      while (due < this.queue.length && this.queue[due]!.at <= this.now) due++;
      if (due) for (const e of this.queue.splice(0, due)) e.run();
      if (this.now >= this.nextHeartbeat) {
        this.nextHeartbeat = this.now + 15 * SEC;
        // Only devices that were sent something: for the others a heartbeat changes nothing the engine reads.
        for (const d of Object.values(this.snap.devices)) {
          if (!d.online || (!this.dispatches.has(d.id) && !this.rollbacks.has(d.id))) continue;
          this.snap.devices[d.id] = { ...d, ...foldHeartbeat(d, heartbeat(d.id, this.truth.get(d.id) ?? null, this.now), this.now) };
        }
      }
      this.decideNow();
      if (stop?.()) return;
    }
  }

  count(phase: RolloutMember['phase']): number {
    return this.snap.members.filter((m) => m.phase === phase).length;
  }

  kinds(kind: Decision['kind']): Decision[] {
    return this.log.filter((e) => e.d.kind === kind).map((e) => e.d);
  }
}
