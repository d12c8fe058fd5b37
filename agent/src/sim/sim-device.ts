import mqtt, { type MqttClient } from 'mqtt';
import {
  DeviceTopic, PROTOCOL_VERSION, deviceTopic, errorCode, errorMessage, pinnedKeyRoot, signStatusReport, signTrialReport, verifyFileIntegrity,
  type BenchmarkResult, type DecodedChunk, type DesiredState, type DesiredStateSchema, type DeviceTopicKind, type NoticeSchema,
  type SignedManifest, type SignedRoot, type TrialCandidateResult, type TrustVerifier, type Validator,
} from '@edgepack/protocol';
import { RECENT_LIMIT } from '../agent-state.js';
import { ChunkTransfer, HashingChunkSink, noticeRefusesTransfer, stalledAfterRefusal } from '../chunk-transfer.js';
import { answerOldDesired, classifyDesired, parseDesired } from '../desired-check.js';
import { acceptanceFailure, heartbeatMessage, reportsTransition, statusReport } from '../device-reports.js';
import { deviceClientOptions, deviceSubscriptions, presence, reconnectDelay, rememberTlsSession } from '../device-session.js';
import type { Logger } from '../logger.js';
import { combineRounds } from '../trial/trial-rounds.js';
import {
  failTrial, findTrial, finishTrial, interruptedAfterRestart, isTrial, rememberTrial, startTrial, trialsToReport, trialCandidates, trialReport, trialRequestProblem, type TrialRecord,
} from '../trial/trial-state.js';
import { isTerminal, nextPhase, reportedState, type UpdateEvent } from '../update-machine.js';
import { HELD_LIMIT, type HeldBundle, type SimAction, type StoredDevice } from './fleet-store.js';
import { baselineFigures, synthesizeBenchmark, unitHash, type LatencyFigures, type SpeedFactors } from './synthetic-benchmark.js';

/** Codes a real agent can only hit before anything is installed: injected there, they end in failed, never rolled_back. */
const EARLY_CODES: Record<string, 'downloading' | 'verifying'> = {
  DOWNLOAD_STALLED: 'downloading', FILE_HASH_MISMATCH: 'downloading', FILE_LENGTH_MISMATCH: 'downloading', DISK_FULL: 'downloading',
  SIGNATURE_INVALID: 'verifying', MANIFEST_EXPIRED: 'verifying', MANIFEST_INVALID: 'verifying', PROFILE_MISMATCH: 'verifying',
};

/** What every device of a fleet shares: compiled validators, settings, the clock and the fleet's counters. */
export interface FleetContext {
  log: Logger;
  now: () => Date;
  agentVersion: string;
  startedAtMs: number;
  desiredValidator: Validator<typeof DesiredStateSchema>;
  noticeValidator: Validator<typeof NoticeSchema>;
  /** Bundles and desired states are verified through each device's trusted root, as the agent does. */
  trustVerifier: TrustVerifier;
  decodeChunk: (frame: Uint8Array) => DecodedChunk;
  settings: {
    seed: string;
    failRate: number;
    failCode: string;
    p95Factor: number;
    speed: SpeedFactors;
    stallMs: number;
    maxStallAsks: number;
    /** Broker to use instead of the enrolled one. */
    mqtt?: { host: string; port: number; protocol: 'mqtt' | 'mqtts' };
    /** Offer the last TLS session again on reconnect (default true); off to measure full handshakes. */
    tlsResume: boolean;
  };
  /** Bounds the connects awaiting CONNACK; resolves with the function that frees the slot. */
  connectSlot: () => Promise<() => void>;
  changed: () => void;
  counters: { bytesReceived: number; chunks: number; reports: number; connects: number; connectFailures: number };
  onSubscribed: (device: SimDevice) => void;
}

class StepError extends Error {
  constructor(readonly code: string, message: string, readonly result?: BenchmarkResult) { super(message); }
}

/**
 * One virtual device. It is the agent's flow without the disk and the runtime: the same MQTT
 * session, desired-state checks, chunk transfer, phase table (update-machine.ts) and reports,
 * with the benchmark made up by synthesizeBenchmark. All of its timing (heartbeats, stall
 * checks) is driven by the fleet's one shared tick.
 */
export class SimDevice {
  private client?: MqttClient;
  private stopped = false;
  private backoffMs = 1000;
  private transfer?: ChunkTransfer;
  private running?: Promise<void>;
  private cancel?: StepError;
  private control: Promise<void> = Promise.resolve();
  private reconnectTimer?: NodeJS.Timeout;
  private lastHeartbeatMs = 0;
  private tlsSession?: Buffer;
  /** sha256 → what arrived, for the verifying step of the action in progress. */
  private digests = new Map<string, { sha256: string; length: number }>();
  connected = false;
  subscribed = false;
  connectedAtMs?: number;

  /** The highest root verified so far; see the agent's loadTrust and updateTrust. */
  private trust: SignedRoot;

  constructor(readonly rec: StoredDevice, private readonly ctx: FleetContext) {
    const { identity } = rec;
    let base: SignedRoot;
    try {
      base = identity.trustedRoot ? ctx.trustVerifier.parseRoot(identity.trustedRoot) : pinnedKeyRoot(identity.orchestratorPublicKey);
    } catch {
      base = pinnedKeyRoot(identity.orchestratorPublicKey);
    }
    const walked = rec.state.trustedRoot;
    this.trust = walked && walked.signed.version > base.signed.version ? walked : base;
  }

  get id(): string { return this.rec.identity.deviceId; }
  get state() { return this.rec.state; }

  private topic(kind: DeviceTopicKind): string { return deviceTopic(this.id, kind); }

  /** What the fleet summary counts this device as: the reported state of its action, or idle. */
  get reportedState(): string {
    if (this.state.trial?.state === 'running') return 'trialing';
    const d = this.state.action;
    if (!d) return 'idle';
    const s = reportedState(d.phase);
    return s === 'rolled_back' && !d.hadPrevious ? 'failed' : s;
  }

  start(): void {
    // As the agent: a trial still running when the simulator stopped was interrupted.
    const now = this.ctx.now();
    const trials = [this.state.trial ?? null, ...(this.state.recentTrials ?? [])].map((t) => interruptedAfterRestart(t, now));
    if (trials.some((t, i) => t !== [this.state.trial ?? null, ...(this.state.recentTrials ?? [])][i])) {
      this.state.trial = trials[0] ?? null;
      this.state.recentTrials = trials.slice(1).filter((t): t is TrialRecord => t !== null);
      this.ctx.changed();
    }
    const d = this.state.action;
    if (d && !isTerminal(d.phase) && d.desired) {
      // Nothing of a transfer survives a restart here (no part files): redo it from the start.
      this.ctx.log.debug({ deviceId: this.id, bundleId: d.bundleId, phase: d.phase }, 'redoing the action cut short by the last stop');
      this.state.action = { ...d, phase: 'downloading' };
      this.kick();
    } else if (d && !isTerminal(d.phase)) {
      this.state.action = null; // from an older state file without the desired state: let redelivery bring it back
    } else if (this.state.queued) {
      void this.serially(() => this.startQueued());
    }
    void this.connect();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.reconnectTimer) clearTimeout(this.reconnectTimer);
    this.transfer?.fail(new StepError('AGENT_STOPPING', 'simulator is stopping'));
    const c = this.client;
    if (c) {
      // A clean DISCONNECT when up (no last will: the orchestrator marks it offline itself); a
      // connect still in flight is just dropped. Bounded, so one stuck socket cannot hold up the fleet's exit.
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        new Promise<void>((resolve) => c.end(!this.connected, {}, () => resolve())),
        new Promise<void>((resolve) => { timer = setTimeout(resolve, 2000); timer.unref(); }),
      ]);
      clearTimeout(timer);
    }
    this.connected = false;
    this.subscribed = false;
  }

  // ---------------------------------------------------------------- MQTT edge

  private async connect(): Promise<void> {
    if (this.stopped) return;
    const release = await this.ctx.connectSlot();
    let released = false;
    const free = () => { if (!released) { released = true; release(); } };
    if (this.stopped) return free();
    this.ctx.counters.connects++;
    const { identity } = this.rec;
    const client = mqtt.connect(deviceClientOptions(identity, this.ctx.now(), this.ctx.settings.mqtt ?? identity.mqtt, this.ctx.settings.tlsResume ? this.tlsSession : undefined));
    this.client = client;
    if (this.ctx.settings.tlsResume) rememberTlsSession(client, (session) => { this.tlsSession = session; });
    client.on('connect', () => {
      free();
      this.backoffMs = 1000;
      this.connected = true;
      this.connectedAtMs = Date.now();
      client.subscribe(deviceSubscriptions(this.id), { qos: 1 }, (err) => {
        if (err) return this.ctx.log.warn({ deviceId: this.id, err: err.message }, 'subscribe failed');
        if (!this.subscribed) { this.subscribed = true; this.ctx.onSubscribed(this); }
      });
      this.publish(DeviceTopic.presence, presence(true));
      this.heartbeat();
      // The orchestrator may have missed these while we were away; it ignores repeats.
      const d = this.state.action;
      for (const r of [...this.state.recent].reverse()) if (r.rolloutId !== d?.rolloutId) this.report(r);
      if (d) this.report(d);
      for (const t of trialsToReport(this.state.trial ?? null, this.state.recentTrials ?? [])) this.reportTrial(t);
      this.transfer?.ask();
    });
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('error', (err) => this.ctx.log.debug({ deviceId: this.id, err: err.message }, 'mqtt error'));
    client.on('close', () => {
      free();
      if (this.client !== client) return;
      const wasConnected = this.connected;
      this.connected = false;
      this.subscribed = false;
      if (this.stopped) return;
      if (!wasConnected) this.ctx.counters.connectFailures++;
      this.client = undefined;
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      const { delayMs, nextBackoffMs } = reconnectDelay(this.backoffMs, Math.random());
      this.backoffMs = nextBackoffMs;
      this.ctx.log.debug({ deviceId: this.id, delayMs }, 'disconnected; reconnecting');
      this.reconnectTimer = setTimeout(() => { void this.connect(); }, delayMs);
    });
  }

  private publish(kind: DeviceTopicKind, message: object): void {
    const c = this.client;
    if (!c?.connected) return;
    try {
      c.publish(this.topic(kind), JSON.stringify(message), { qos: 1 });
    } catch (err) {
      this.ctx.log.warn({ deviceId: this.id, kind, err: errorMessage(err) }, 'publish failed');
    }
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      if (topic === this.topic(DeviceTopic.chunk)) {
        this.ctx.counters.bytesReceived += payload.length;
        this.ctx.counters.chunks++;
        const c = this.ctx.decodeChunk(payload);
        if (!c.ok) return this.ctx.log.warn({ deviceId: this.id, code: c.code }, `chunk dropped: ${c.reason}`);
        void this.transfer?.accept(c.header, c.bytes);
        return;
      }
      if (topic === this.topic(DeviceTopic.desired)) return void this.serially(() => this.onDesired(payload));
      if (topic === this.topic(DeviceTopic.notice)) {
        const n = this.ctx.noticeValidator.parse(payload);
        if (!n.ok) return this.ctx.log.warn({ deviceId: this.id, reason: n.reason }, 'invalid notice');
        this.ctx.log.debug({ deviceId: this.id, code: n.value.code, bundleId: n.value.bundleId }, `orchestrator notice: ${n.value.message}`);
        const t = this.transfer;
        // Advice only, as for the agent: it ends the transfer if the transfer also stalls.
        if (t && noticeRefusesTransfer(n.value, t.bundleId)) t.advise(n.value);
      }
    } catch (err) {
      this.ctx.log.error({ deviceId: this.id, topic, err: errorMessage(err) }, 'message handler failed');
    }
  }

  /** Called by the fleet's shared tick: heartbeats when due, stall checks of a transfer. */
  tick(nowMs: number): void {
    if (!this.client?.connected) return;
    if (nowMs - this.lastHeartbeatMs >= this.rec.identity.heartbeatSec * 1000) this.heartbeat();
    const t = this.transfer;
    if (!t) return;
    const { stallMs, maxStallAsks } = this.ctx.settings;
    const check = t.checkStall(stallMs, maxStallAsks);
    if (check === 'exhausted') {
      t.fail(new StepError('DOWNLOAD_STALLED', `no data for ${t.file.path} of bundle ${t.bundleId} after ${maxStallAsks} requests ${stallMs} ms apart`));
    } else if (check === 'refused') {
      t.fail(new StepError('DOWNLOAD_STALLED', stalledAfterRefusal(t, stallMs, t.advisedRefusal!)));
    }
  }

  private heartbeat(): void {
    this.lastHeartbeatMs = Date.now();
    this.publish(DeviceTopic.heartbeat, heartbeatMessage({
      deviceId: this.id, uptimeSec: Math.round((Date.now() - this.ctx.startedAtMs) / 1000), activeBundle: this.state.activeBundleId,
      lastBenchmark: this.state.lastBenchmark, agentVersion: this.ctx.agentVersion, at: this.ctx.now(),
    }));
  }

  private serially(fn: () => Promise<void>): Promise<void> {
    this.control = this.control.then(fn).catch((err) => this.ctx.log.error({ deviceId: this.id, err: errorMessage(err) }, 'desired state handling failed'));
    return this.control;
  }

  // ---------------------------------------------------------------- desired state

  private async onDesired(payload: Buffer): Promise<void> {
    const parsed = parseDesired(payload, { validator: this.ctx.desiredValidator, deviceId: this.id });
    if (parsed.kind === 'cleared') return;
    if (parsed.kind === 'refused') return this.ctx.log.warn({ deviceId: this.id, ...parsed.fields }, parsed.reason);
    if (parsed.desired.roots?.length) {
      // As the agent: walk the roots first, keep the highest one (saved with the device's state).
      const walk = this.ctx.trustVerifier.walkChain(this.trust, parsed.desired.roots);
      if (walk.walked.length > 0) {
        this.trust = walk.root;
        this.state.trustedRoot = walk.root;
        this.ctx.changed();
      }
    }
    const check = classifyDesired(parsed.desired, {
      verify: (desired) => this.ctx.trustVerifier.verifyDesired(this.trust, desired, this.ctx.now()), lastSeq: this.state.lastSeq, rootVersion: this.trust.signed.version,
    });
    if (check.kind === 'refused') return this.ctx.log.warn({ deviceId: this.id, ...check.fields }, check.reason);
    if (check.kind === 'old') {
      if (isTrial(check.desired)) {
        const known = findTrial(check.desired.seq, this.state.trial ?? null, this.state.recentTrials ?? []);
        if (known) this.reportTrial(known);
        else if (this.state.queued?.seq !== check.desired.seq) this.supersede(check.desired, null);
        return;
      }
      const answer = answerOldDesired(check.desired, { current: this.state.action, queued: this.state.queued, recent: this.state.recent });
      if (answer.kind === 'report') this.report(answer.action);
      else if (answer.kind === 'supersede') this.supersede(check.desired, null);
      return;
    }
    const desired = check.desired;
    this.state.lastSeq = desired.seq;
    const replaced = this.state.queued;
    this.state.queued = desired;
    if (replaced) this.supersede(replaced, desired);
    this.ctx.changed();
    if (!this.running && !this.stopped) return this.startQueued();
    if (this.trialRunning) {
      // As the agent: a trial installs nothing, so a newer desired state stops it at once.
      this.cancel = new StepError('TRIAL_SUPERSEDED', `replaced by rollout ${desired.rolloutId} (seq ${desired.seq}) during the trial`);
      this.transfer?.fail(this.cancel);
    } else if (this.state.action?.phase === 'downloading') {
      // As the agent: nothing of this one is installed yet, so the newer one replaces it.
      this.cancel = new StepError('SUPERSEDED', `replaced by rollout ${desired.rolloutId} (seq ${desired.seq}) before it was downloaded`);
      this.transfer?.fail(this.cancel);
    }
  }

  private supersede(old: DesiredState, by: DesiredState | null): void {
    const reason = by ? `replaced by rollout ${by.rolloutId} (seq ${by.seq}) before it started` : `a newer desired state (seq ${this.state.lastSeq}) was already handled`;
    if (isTrial(old)) return this.noteTrial(failTrial(old, 'TRIAL_SUPERSEDED', reason, this.ctx.now()));
    const d: SimAction = {
      rolloutId: old.rolloutId, seq: old.seq, bundleId: old.bundle.manifest.bundleId, phase: 'failed', code: 'SUPERSEDED', reason,
      hadPrevious: false, updatedAt: this.ctx.now().toISOString(),
    };
    this.remember(d);
    this.report(d);
    this.ctx.changed();
  }

  private remember(d: SimAction): void {
    const { desired: _, ...kept } = d;
    this.state.recent = [kept, ...this.state.recent.filter((r) => r.rolloutId !== d.rolloutId)].slice(0, RECENT_LIMIT);
  }

  private async startQueued(): Promise<void> {
    const q = this.state.queued;
    if (!q || this.running || this.stopped) return;
    this.begin(q);
  }

  private begin(desired: DesiredState): void {
    if (isTrial(desired)) return this.beginTrial(desired);
    const m = desired.bundle.manifest;
    const d: SimAction = {
      rolloutId: desired.rolloutId, seq: desired.seq, bundleId: m.bundleId, phase: 'downloading',
      hadPrevious: this.state.activeBundleId !== null, updatedAt: this.ctx.now().toISOString(), desired,
    };
    if (this.state.action && this.state.action.rolloutId !== d.rolloutId) this.remember(this.state.action);
    this.state.queued = null;
    // Refuse a bundle we can never trust before fetching a byte of it.
    try {
      this.verifyBundle(desired.bundle);
    } catch (err) {
      return this.finishEarly(d, 'failed', errorCode(err) ?? 'VERIFY_FAILED', errorMessage(err));
    }
    if (this.state.activeBundleId === m.bundleId) {
      return this.finishEarly({ ...d, ...(this.state.lastBenchmark ? { result: this.state.lastBenchmark } : {}) }, 'done');
    }
    this.state.action = d;
    this.ctx.changed();
    this.report(d);
    this.kick();
  }

  private finishEarly(d: SimAction, phase: 'failed' | 'done', code?: string, reason?: string): void {
    const { desired: _, ...rest } = d;
    const done: SimAction = { ...rest, phase, ...(code ? { code } : {}), ...(reason ? { reason } : {}), updatedAt: this.ctx.now().toISOString() };
    this.state.action = done;
    this.ctx.changed();
    this.report(done);
    if (code) this.ctx.log.warn({ deviceId: this.id, bundleId: d.bundleId, code }, `action refused: ${reason}`);
  }

  private verifyBundle(bundle: SignedManifest): void {
    this.ctx.trustVerifier.verifyBundle(this.trust, bundle, { expectedProfile: this.rec.identity.profile, now: this.ctx.now() });
  }

  private kick(): void {
    if (this.running) return;
    this.cancel = undefined;
    this.running = (async () => {
      while (this.state.action && !isTerminal(this.state.action.phase) && !this.stopped) await this.step(this.state.action);
    })().catch((err) => this.ctx.log.error({ deviceId: this.id, err: errorMessage(err) }, 'action loop crashed')).finally(() => {
      this.running = undefined;
      this.cancel = undefined;
      this.digests.clear();
      if (!this.stopped) void this.serially(() => this.startQueued());
    });
  }

  private transition(d: SimAction, event: UpdateEvent, extra: Partial<SimAction> = {}): void {
    const next: SimAction = { ...d, ...extra, phase: nextPhase(d.phase, event), updatedAt: this.ctx.now().toISOString() };
    if (isTerminal(next.phase)) { delete next.desired; delete next.reference; }
    this.state.action = next;
    this.ctx.changed();
    if (reportsTransition(d.phase, next.phase)) this.report(next);
  }

  /** Whether this (device, bundle) pair draws an injected failure: never for a bundle the device already had active. */
  private injects(bundleId: string): boolean {
    const { failRate, seed } = this.ctx.settings;
    if (failRate <= 0 || this.state.held.some((h) => h.bundleId === bundleId)) return false;
    return unitHash(seed, 'fail', this.id, bundleId) < failRate;
  }

  private async step(d: SimAction): Promise<void> {
    const desired = d.desired!;
    const m = desired.bundle.manifest;
    const { failCode } = this.ctx.settings;
    const early = this.injects(m.bundleId) ? EARLY_CODES[failCode] : undefined;
    try {
      switch (d.phase) {
        case 'downloading':
          if (early === 'downloading') throw new StepError(failCode, `injected failure ${failCode} while downloading`);
          // Going back to the previous bundle needs no download: its slot is kept.
          if (m.bundleId !== this.state.previousBundleId) {
            for (const file of m.files) {
              if (this.cancel) throw this.cancel;
              const sink = new HashingChunkSink();
              const t = new ChunkTransfer(m.bundleId, file, sink, (index, count) =>
                this.publish(DeviceTopic.chunkRequest, { v: PROTOCOL_VERSION, bundleId: m.bundleId, sha256: file.sha256, index, count }));
              this.transfer = t;
              try { await t.run(); } finally { if (this.transfer === t) this.transfer = undefined; }
              this.digests.set(file.sha256, await sink.digest());
            }
          }
          return this.transition(d, 'downloaded');
        case 'verifying':
          if (early === 'verifying') throw new StepError(failCode, `injected failure ${failCode} while verifying`);
          this.verifyBundle(desired.bundle);
          if (m.bundleId !== this.state.previousBundleId) {
            for (const file of m.files) {
              const got = this.digests.get(file.sha256);
              if (!got) throw new StepError('STEP_FAILED', `${file.path} of bundle ${m.bundleId} was not downloaded`);
              verifyFileIntegrity(file, got);
            }
          }
          return this.transition(d, 'verified');
        case 'installing':
          return this.transition(d, 'installed');
        case 'benchmarking': {
          const inject = !early && this.injects(m.bundleId) ? failCode : undefined;
          const { result, reference } = this.benchmark(desired, inject);
          // The agent's own acceptance rule decides, so a --p95-factor that breaks the budget fails for real.
          const refusal = acceptanceFailure(m, result);
          if (refusal) throw new StepError(refusal.code, refusal.message, result);
          if (inject) {
            // Golden and latency failures carry their figures, as the agent's do; other codes none.
            const withResult = inject === 'GOLDEN_MISMATCH' || inject === 'LATENCY_BUDGET_EXCEEDED';
            throw new StepError(inject, `injected failure ${inject} while benchmarking`, withResult ? result : undefined);
          }
          return this.transition(d, 'accepted', { result, reference });
        }
        case 'committing':
          this.activate(desired, d);
          return this.transition(d, 'committed');
        case 'rolling_back':
          // The active pointer never moved to the new bundle: nothing to restore.
          return this.transition(d, 'rolled_back');
        default:
          return;
      }
    } catch (err) {
      if (this.stopped) return;
      const code = err instanceof StepError ? err.code : errorCode(err) ?? 'STEP_FAILED';
      const result = err instanceof StepError && err.result ? { result: err.result } : {};
      this.transition(d, 'error', { code, reason: `${d.phase}: ${errorMessage(err)}`, ...result });
    }
  }

  /**
   * The made-up benchmark: a bundle the device had before gets its old figures again; a new
   * one gets the active bundle's figures × --p95-factor (× the --speed of its precision).
   */
  private benchmark(desired: DesiredState, inject: string | undefined): { result: BenchmarkResult; reference: LatencyFigures } {
    const m = desired.bundle.manifest;
    const known = this.state.held.find((h) => h.bundleId === m.bundleId);
    if (known) return { result: known.result, reference: known.reference };
    const active = this.state.held.find((h) => h.bundleId === this.state.activeBundleId);
    const reference = active?.reference ?? baselineFigures(m.acceptance.p95LatencyMs, unitHash(this.ctx.settings.seed, 'baseline', this.id));
    const acceptanceCode = inject === 'GOLDEN_MISMATCH' || inject === 'LATENCY_BUDGET_EXCEEDED' ? inject : undefined;
    // The first bundle sets the baseline; from then on each new one is the active one's figures × --p95-factor.
    const factor = active ? this.ctx.settings.p95Factor : 1;
    return synthesizeBenchmark({ manifest: m, reference, factor, speed: this.ctx.settings.speed, ...(acceptanceCode ? { inject: acceptanceCode } : {}) });
  }

  private activate(desired: DesiredState, d: SimAction): void {
    const m = desired.bundle.manifest;
    const s = this.state;
    const known = s.held.find((h) => h.bundleId === m.bundleId);
    const entry: HeldBundle = known ?? { bundleId: m.bundleId, precision: m.precision, reference: d.reference!, result: d.result!, activatedAt: this.ctx.now().toISOString() };
    if (s.activeBundleId !== m.bundleId) {
      s.previousBundleId = s.activeBundleId;
      s.activeBundleId = m.bundleId;
    }
    s.lastBenchmark = entry.result;
    const keep = new Set([s.activeBundleId, s.previousBundleId]);
    const rest = s.held.filter((h) => h.bundleId !== m.bundleId);
    s.held = [entry, ...rest.filter((h, i) => i < HELD_LIMIT - 1 || keep.has(h.bundleId))];
  }

  // ---------------------------------------------------------------- trials

  private trialRunning = false;

  /** Makes `t` the latest trial record (saved with the device's state) and reports it. */
  private noteTrial(t: TrialRecord): void {
    Object.assign(this.state, rememberTrial(this.state.trial ?? null, this.state.recentTrials ?? [], t));
    this.ctx.changed();
    this.reportTrial(t);
  }

  private beginTrial(desired: DesiredState): void {
    this.state.queued = null;
    const problem = trialRequestProblem(desired);
    if (problem) return this.noteTrial(failTrial(desired, 'TRIAL_INVALID', problem, this.ctx.now()));
    const started = startTrial(desired, this.ctx.now());
    this.noteTrial(started);
    this.cancel = undefined;
    this.trialRunning = true;
    this.running = (async () => {
      let end: TrialRecord;
      try {
        end = finishTrial(started, await this.runTrial(desired), this.ctx.now());
      } catch (err) {
        if (this.stopped) return; // left running: reported TRIAL_INTERRUPTED when the simulator starts again
        end = failTrial(started, err instanceof StepError ? err.code : errorCode(err) ?? 'STEP_FAILED', errorMessage(err), this.ctx.now());
      }
      this.noteTrial(end);
    })().catch((err) => this.ctx.log.error({ deviceId: this.id, err: errorMessage(err) }, 'trial crashed')).finally(() => {
      this.running = undefined;
      this.trialRunning = false;
      this.cancel = undefined;
      if (!this.stopped) void this.serially(() => this.startQueued());
    });
  }

  /**
   * The agent's trial without the disk and the runtime: every candidate's manifest and files are
   * checked for real (signature through the trusted root, every byte's hash, as sim installs do),
   * then the figures are made up: the device's fp32 figures × the --speed factor of the
   * candidate's precision, the same in every round. Injected failures (--fail-rate/--fail-code)
   * hit the non-reference candidates only, so the fp32 fallback stays measurable.
   */
  private async runTrial(desired: DesiredState): Promise<TrialCandidateResult[]> {
    const checkpoint = () => { if (this.cancel) throw this.cancel; if (this.stopped) throw new StepError('AGENT_STOPPING', 'simulator is stopping'); };
    const active = this.state.held.find((h) => h.bundleId === this.state.activeBundleId);
    const fp32 = active?.reference ?? baselineFigures(desired.bundle.manifest.acceptance.p95LatencyMs, unitHash(this.ctx.settings.seed, 'baseline', this.id));
    const { failCode } = this.ctx.settings;
    const reference = desired.trial!.referenceBundleId;
    const out: TrialCandidateResult[] = [];
    for (const c of trialCandidates(desired)) {
      checkpoint();
      const m = c.manifest;
      const r: TrialCandidateResult = { bundleId: m.bundleId, precision: m.precision };
      out.push(r);
      const inject = m.bundleId !== reference && this.injects(m.bundleId) ? failCode : undefined;
      try {
        if (inject && EARLY_CODES[inject]) throw new StepError(inject, `injected failure ${inject} while ${EARLY_CODES[inject]}`);
        this.verifyBundle(c);
        // A bundle still in a slot (the active or previous one) needs no download.
        if (m.bundleId !== this.state.activeBundleId && m.bundleId !== this.state.previousBundleId) {
          for (const file of m.files) {
            checkpoint();
            const sink = new HashingChunkSink();
            const t = new ChunkTransfer(m.bundleId, file, sink, (index, count) =>
              this.publish(DeviceTopic.chunkRequest, { v: PROTOCOL_VERSION, bundleId: m.bundleId, sha256: file.sha256, index, count }));
            this.transfer = t;
            try { await t.run(); } finally { if (this.transfer === t) this.transfer = undefined; }
            verifyFileIntegrity(file, await sink.digest());
          }
        }
      } catch (err) {
        if (err === this.cancel || this.stopped) throw err;
        r.code = err instanceof StepError ? err.code : errorCode(err) ?? 'STEP_FAILED';
        r.reason = errorMessage(err);
        continue;
      }
      if (inject && inject !== 'GOLDEN_MISMATCH' && inject !== 'LATENCY_BUDGET_EXCEEDED') {
        r.code = inject;
        r.reason = `injected failure ${inject} while benchmarking`;
        continue;
      }
      const acceptanceInject = inject === 'GOLDEN_MISMATCH' || inject === 'LATENCY_BUDGET_EXCEEDED' ? inject : undefined;
      const { result } = synthesizeBenchmark({ manifest: m, reference: fp32, factor: 1, speed: this.ctx.settings.speed, ...(acceptanceInject ? { inject: acceptanceInject } : {}) });
      r.result = combineRounds(Array.from({ length: desired.trial!.rounds }, () => result));
      const samples = m.golden.count;
      if (!r.result.golden.passed) {
        r.code = 'GOLDEN_MISMATCH';
        r.reason = `golden samples differ by up to ${r.result.golden.maxAbsError}, allowed ${m.golden.maxAbsError}`;
        r.agreement = { top1: 0.5, maxAbsError: r.result.golden.maxAbsError, samples };
      } else {
        r.agreement = m.bundleId === reference ? { top1: 1, maxAbsError: 0, samples } : { top1: 1, maxAbsError: m.golden.maxAbsError / 10, samples };
      }
    }
    checkpoint();
    return out;
  }

  private reportTrial(t: TrialRecord): void {
    this.ctx.counters.reports++;
    this.publish(DeviceTopic.trialReport, signTrialReport(trialReport(this.id, t), this.rec.identity.secretKey));
  }

  private report(d: SimAction): void {
    this.ctx.counters.reports++;
    this.publish(DeviceTopic.status, signStatusReport(statusReport(this.id, d), this.rec.identity.secretKey));
  }
}
