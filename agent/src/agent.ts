import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import {
  DesiredStateSchema, DeviceTopic, EdgepackError, NoticeSchema, PROTOCOL_VERSION, parseDeviceTopic, TrustVerifier, Validator, catalogueCode, createChunkDecoder,
  deviceTopic, errorCode, errorMessage, isErrorCode, pinnedKeyRoot, signStatusReport, signTrialReport, verifyFileIntegrity,
  type BenchmarkResult, type BundleFile, type DesiredState, type ErrorCode, type SignedManifest, type SignedRoot,
} from '@edgepack/protocol';
import { loadState, RECENT_LIMIT, StateStore, type AgentState, type Action } from './agent-state.js';
import { benchmarkInChild, benchmarkOutcomeInChild } from './benchmark.js';
import { BundleSlots, sha256File, type ActiveRecord } from './bundle-slots.js';
import { ChunkDownload } from './chunk-download.js';
import { DeviceLink } from './device-link.js';
import { noticeRefusesTransfer, stalledAfterRefusal } from './chunk-transfer.js';
import { answerOldDesired, classifyDesired, parseDesired } from './desired-check.js';
import { acceptanceFailure, heartbeatMessage, reportsTransition, statusReport } from './device-reports.js';
import { deviceClientOptions, deviceSubscriptions, presence, reconnectDelay, rememberTlsSession } from './device-session.js';
import { loadTrustedRoot, saveTrustedRoot, type Identity } from './identity.js';
import type { Logger } from './logger.js';
import { ScratchSlot } from './trial/scratch-slot.js';
import { TrialStop, runTrial } from './trial/trial-run.js';
import {
  failTrial, findTrial, finishTrial, interruptedAfterRestart, isTrial, rememberTrial, startTrial, trialsToReport, trialReport, trialRequestProblem, type TrialRecord,
} from './trial/trial-state.js';
import { isTerminal, nextPhase, type UpdateEvent } from './update-machine.js';

export interface AgentOptions {
  dataDir: string;
  identity: Identity;
  log: Logger;
  agentVersion: string;
  benchmarkTimeoutMs?: number;
  /** Overrides the manifest's run counts (e.g. for quick demos). */
  benchmarkRuns?: number;
  /** A transfer that makes no progress for this long is asked again (default 10 s). */
  stallMs?: number;
  /** Re-asks in a row without a chunk before the download fails with DOWNLOAD_STALLED (default 6). */
  maxStallAsks?: number;
  /**
   * The least average rate a download must keep over each minute (default 1024 bytes/s; 0: no
   * floor). Each chunk arriving within the stall timeout is not enough: whoever holds the broker
   * could trickle one chunk per timeout and hold an update back for days (TUF's slow retrieval).
   */
  minDownloadBytesPerSec?: number;
  /** The window that rate is measured over (default 60 s). */
  downloadRateWindowMs?: number;
  /** Test-only fault injection; see `fault()`. */
  faults?: string[];
  /**
   * Told which bundle is active: once at start, after every commit and after every rollback
   * (null: none). Awaited after a commit, before the device reports the bundle active, so that
   * "active" means "serving" for the inference service (see serving/). Errors are logged only.
   */
  onActiveChanged?: (active: ActiveRecord | null) => Promise<void> | void;
}

/** A step's failure with the catalogue code it is reported under, and the figures measured, if any. */
class StepError extends EdgepackError {
  constructor(code: ErrorCode, message: string, readonly result?: BenchmarkResult) { super(code, message); }
}

/**
 * The device agent. MQTT and files are its edges; the flow itself is the transition table in
 * update-machine.ts. Every phase change is persisted before it is acted on and then reported.
 *
 * A desired state of kind `trial` is not an install: it runs on the same one-at-a-time chain
 * (`running`), but through trial/ (runTrial, a scratch slot of its own), and it never moves the
 * active pointer, the install slots or the serving service. Between the two kinds the rule is the
 * installs' own: the newer seq wins — a newer desired state stops a trial at once (reported
 * failed, TRIAL_SUPERSEDED) and stops an install still downloading; an install past downloading
 * finishes first (its bundle is already in a slot), and the trial then runs.
 */
export class Agent {
  private state!: AgentState;
  private client?: MqttClient;
  private readonly slots: BundleSlots;
  /** Bundles and desired states are verified through the root chain; see trust-verify.ts. */
  private readonly trustVerifier = new TrustVerifier();
  /** The highest root verified so far (persisted in trust.json): the only source of trusted bundle keys. */
  private trust!: SignedRoot;
  private readonly desiredValidator = new Validator('desired state', DesiredStateSchema);
  private readonly noticeValidator = new Validator('notice', NoticeSchema);
  private readonly decodeChunk = createChunkDecoder();
  private download?: ChunkDownload;
  private running?: Promise<void>;
  /** Set to stop the current download because a newer desired state replaces it. */
  private cancelDownload?: StepError;
  /** Desired states, and starting queued actions, are handled strictly one at a time on this chain. */
  private control: Promise<void> = Promise.resolve();
  private readonly store: StateStore;
  /** The MQTT connection as other device services (telemetry) use it. */
  readonly link: DeviceLink;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private backoffMs = 1000;
  /** The last TLS session the broker gave us, offered again on reconnect (see rememberTlsSession). */
  private tlsSession?: Buffer;
  private readonly startedAt = Date.now();
  /** The trial scratch slot: never one of the install slots. */
  private readonly scratch: ScratchSlot;
  /** Whether `running` is a trial (rather than the install loop). */
  private trialRunning = false;
  /** Set to stop the trial in progress (a newer desired state). */
  private trialStop?: TrialStop;

  constructor(private readonly o: AgentOptions) {
    this.slots = new BundleSlots(o.dataDir);
    this.scratch = new ScratchSlot(o.dataDir);
    this.store = new StateStore(o.dataDir);
    this.link = new DeviceLink(o.identity.deviceId);
  }

  private get stallMs(): number { return this.o.stallMs ?? 10_000; }

  private get id(): Identity { return this.o.identity; }
  private topic(kind: Parameters<typeof deviceTopic>[1]): string { return deviceTopic(this.id.deviceId, kind); }

  async start(): Promise<void> {
    this.state = await loadState(this.o.dataDir, this.o.log);
    await this.recoverTrial();
    this.trust = await this.loadTrust();
    const active = await this.slots.readActive();
    this.activeBundleId = active?.bundleId ?? null;
    // Not awaited: loading a model for serving must not hold up connecting.
    void this.announceActive(active);
    const d = this.state.action;
    if (d && !isTerminal(d.phase)) {
      // A queued desired state, if any, starts when this one is over (see kick).
      this.o.log.info({ bundleId: d.bundle.manifest.bundleId, phase: d.phase }, 'resuming action after restart');
      this.kick();
    } else {
      await this.slots.collectGarbage();
      // Its seq is already in lastSeq, so its redelivery would be ignored: start it from here.
      if (this.state.queued) {
        this.o.log.info({ rolloutId: this.state.queued.rolloutId }, 'starting the action queued before the restart');
        void this.serially('queued action', () => this.startQueued());
      }
    }
    this.connect();
    this.timers.push(setInterval(() => this.heartbeat(), this.id.heartbeatSec * 1000));
    this.timers.push(setInterval(() => this.watchTransfer(), Math.max(50, Math.min(5000, this.stallMs / 2))));
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.download?.fail(new StepError('AGENT_STOPPING', 'agent is stopping'));
    this.link.attach(undefined);
    await new Promise<void>((resolve) => (this.client ? this.client.end(false, {}, () => resolve()) : resolve()));
  }

  // ---------------------------------------------------------------- MQTT edge

  private connect(): void {
    if (this.stopped) return;
    const { deviceId } = this.id;
    // Credential, persistent session and last will: see device-session.ts. Our own loop below reconnects.
    const client = mqtt.connect(deviceClientOptions(this.id, new Date(), this.id.mqtt, this.tlsSession));
    this.client = client;
    rememberTlsSession(client, (session) => { this.tlsSession = session; });
    client.on('connect', () => {
      this.backoffMs = 1000;
      this.o.log.info({ deviceId }, 'connected');
      client.subscribe(deviceSubscriptions(deviceId), { qos: 1 }, (err) => {
        if (err) this.o.log.warn({ err: err.message }, 'subscribe failed');
        else if (this.client === client) this.link.attach(client);
      });
      this.publish(DeviceTopic.presence, presence(true));
      this.heartbeat();
      // The orchestrator may have missed these while we were away; it ignores repeats.
      const d = this.state.action;
      for (const r of [...this.state.recent].reverse()) if (r.rolloutId !== d?.rolloutId) this.report(r);
      if (d) this.report(d);
      for (const t of trialsToReport(this.state.trial ?? null, this.state.recentTrials ?? [])) this.reportTrial(t);
      this.download?.ask();
    });
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('error', (err) => this.o.log.warn({ err: err.message }, 'mqtt error'));
    client.on('close', () => {
      if (this.stopped || this.client !== client) return;
      this.client = undefined;
      this.link.attach(undefined);
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      const { delayMs: delay, nextBackoffMs } = reconnectDelay(this.backoffMs, Math.random());
      this.backoffMs = nextBackoffMs;
      this.o.log.info({ delayMs: delay }, 'disconnected; reconnecting');
      const t = setTimeout(() => this.connect(), delay);
      this.timers.push(t);
    });
  }

  /**
   * Publishes only on a live connection. While disconnected nothing is queued: heartbeats are
   * periodic anyway, and the action state is re-reported on every (re)connect.
   */
  private publish(kind: Parameters<typeof deviceTopic>[1], message: object): void {
    const c = this.client;
    if (!c?.connected) return;
    try {
      c.publish(this.topic(kind), JSON.stringify(message), { qos: 1 });
    } catch (err) {
      this.o.log.warn({ kind, err: errorMessage(err) }, 'publish failed');
    }
  }

  private onMessage(topic: string, payload: Buffer): void {
    try {
      if (topic === this.topic(DeviceTopic.chunk)) return this.onChunk(payload);
      // One at a time: after a reconnect a persistent-session redelivery and the retained
      // message arrive together, and each must see the state the previous one left.
      if (topic === this.topic(DeviceTopic.desired)) return void this.serially('desired state handling', () => this.onDesired(payload));
      if (topic === this.topic(DeviceTopic.notice)) {
        const n = this.noticeValidator.parse(payload);
        if (!n.ok) return this.o.log.warn({ reason: n.reason }, 'invalid notice');
        const { code, message, bundleId } = n.value;
        this.o.log.warn({ code, topic: n.value.topic, bundleId }, `orchestrator notice (unsigned, advisory): ${message}`);
        const dl = this.download;
        // Notices are unsigned: a refusal of this very transfer is only advice, which ends it if
        // it also stalls (ChunkTransfer.advise). The code arrived over the wire: a newer
        // orchestrator may send one this agent does not know.
        if (dl && isErrorCode(code) && noticeRefusesTransfer(n.value, dl.bundleId)) dl.advise({ code, message });
        return;
      }
      // Anything else of this device's (e.g. telemetry acks) belongs to the device services.
      const t = parseDeviceTopic(topic);
      if (t && t.deviceId === this.id.deviceId) this.link.deliver(t.kind, payload);
    } catch (err) {
      // Nothing a broker delivers may take the agent down.
      this.o.log.error({ topic, err: errorMessage(err) }, 'message handler failed');
    }
  }

  private onChunk(payload: Buffer): void {
    const c = this.decodeChunk(payload);
    if (!c.ok) return this.o.log.warn({ code: c.code }, `chunk dropped: ${c.reason}`);
    void this.download?.accept(c.header, c.bytes);
  }

  private heartbeat(): void {
    this.publish(DeviceTopic.heartbeat, heartbeatMessage({
      deviceId: this.id.deviceId, uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      activeBundle: this.activeBundleId, lastBenchmark: this.state?.lastBenchmark ?? null, agentVersion: this.o.agentVersion, at: new Date(),
    }));
  }

  private activeBundleId: string | null = null;

  /** Re-asks a transfer that made no progress; gives up after `maxStallAsks` re-asks in a row brought nothing. */
  private watchTransfer(): void {
    const dl = this.download;
    if (!dl || !this.client?.connected) return;
    const maxAsks = this.o.maxStallAsks ?? 6;
    const floor = { minBytesPerSec: this.o.minDownloadBytesPerSec ?? 1024, windowMs: this.o.downloadRateWindowMs ?? 60_000 };
    const check = dl.checkStall(this.stallMs, maxAsks, floor);
    if (check === 'too-slow') {
      dl.fail(new StepError('DOWNLOAD_TOO_SLOW', `${dl.file.path} of bundle ${dl.bundleId} came at ${Math.round(dl.lastWindowRate ?? 0)} bytes/s over the last ${floor.windowMs} ms, under the ${floor.minBytesPerSec} bytes/s floor`));
    } else if (check === 'reasked') {
      this.o.log.info({ file: dl.file.path, reask: dl.reasks, of: maxAsks }, 'transfer stalled; asking again');
    } else if (check === 'exhausted') {
      dl.fail(new StepError('DOWNLOAD_STALLED', `no data for ${dl.file.path} of bundle ${dl.bundleId} after ${maxAsks} requests ${this.stallMs} ms apart`));
    } else if (check === 'refused') {
      dl.fail(new StepError('DOWNLOAD_STALLED', stalledAfterRefusal(dl, this.stallMs, dl.advisedRefusal!)));
    }
  }

  /** Runs `fn` after everything already on the control chain; a failure is logged and does not break the chain. */
  private serially(what: string, fn: () => Promise<void>): Promise<void> {
    this.control = this.control.then(fn).catch((err) => this.o.log.error({ err: errorMessage(err) }, `${what} failed`));
    return this.control;
  }

  // ---------------------------------------------------------------- trust

  /** The enrollment root, or the higher one persisted since; a device from before roots existed trusts its pinned key. */
  private async loadTrust(): Promise<SignedRoot> {
    const { log } = this.o;
    let base: SignedRoot;
    try {
      base = this.id.trustedRoot ? this.trustVerifier.parseRoot(this.id.trustedRoot) : pinnedKeyRoot(this.id.orchestratorPublicKey);
    } catch (err) {
      log.error({ code: errorCode(err) }, `identity.json holds an unusable root (${errorMessage(err)}); trusting only the pinned orchestrator key`);
      base = pinnedKeyRoot(this.id.orchestratorPublicKey);
    }
    if (!this.id.trustedRoot) log.warn({}, 'enrolled before trust metadata: trusting the pinned orchestrator key until a root it vouches for arrives');
    let persisted: SignedRoot | null = null;
    try {
      const bytes = await loadTrustedRoot(this.o.dataDir);
      if (bytes) persisted = this.trustVerifier.parseRoot(bytes);
    } catch (err) {
      // Written only after verification, so a bad one is damage, not an attack: fall back and walk again.
      log.error({ code: errorCode(err) }, `trust.json is unusable (${errorMessage(err)}); starting from the enrollment root`);
    }
    const trust = persisted && persisted.signed.version > base.signed.version ? persisted : base;
    log.info({ rootVersion: trust.signed.version, bundleKeys: trust.signed.roles.bundles.keyids, expires: trust.signed.expires }, 'trusted root');
    return trust;
  }

  /** Walks the roots a desired state carries (TUF §5.3), persisting the new highest root before it is used. */
  private async updateTrust(roots: readonly unknown[]): Promise<void> {
    const walk = this.trustVerifier.walkChain(this.trust, roots);
    if (walk.walked.length > 0) {
      try {
        await saveTrustedRoot(this.o.dataDir, walk.root);
      } catch (err) {
        // Still trusted in memory; after a restart the device walks the chain again.
        this.o.log.error({ err: errorMessage(err) }, 'could not persist the trusted root');
      }
      this.trust = walk.root;
      this.o.log.info({ walked: walk.walked, rootVersion: walk.root.signed.version, bundleKeys: walk.root.signed.roles.bundles.keyids }, 'trusted root updated');
    }
    if (walk.error) this.o.log.warn({ code: walk.error.code, rootVersion: this.trust.signed.version }, `root chain not followed further: ${walk.error.message}`);
  }

  private verifyBundle(bundle: SignedManifest): void {
    this.trustVerifier.verifyBundle(this.trust, bundle, { expectedProfile: this.id.profile, now: new Date() });
  }

  // ---------------------------------------------------------------- desired state

  private async onDesired(payload: Buffer): Promise<void> {
    // Shape and addressee; then roots, as TUF updates the root before anything it vouches for (a
    // rotated online key is only known once the root delegating to it has been walked to); then
    // the envelope signature through that root, before the seq counts. See desired-check.ts.
    const parsed = parseDesired(payload, { validator: this.desiredValidator, deviceId: this.id.deviceId });
    if (parsed.kind === 'cleared') return;
    if (parsed.kind === 'refused') return this.o.log.warn(parsed.fields, parsed.reason);
    if (parsed.desired.roots?.length) await this.updateTrust(parsed.desired.roots);
    const check = classifyDesired(parsed.desired, {
      verify: (desired) => this.trustVerifier.verifyDesired(this.trust, desired, new Date()), lastSeq: this.state.lastSeq, rootVersion: this.trust.signed.version,
    });
    if (check.kind === 'refused') return this.o.log.warn(check.fields, check.reason);
    if (check.kind === 'old') return this.onOldDesired(check.desired);
    const desired = check.desired;
    this.state.lastSeq = desired.seq;
    const replaced = this.state.queued;
    this.state.queued = desired;
    if (replaced) this.supersede(replaced, desired);
    const d = this.state.action;
    if (!this.running && !this.stopped) {
      await this.startQueued(); // persists lastSeq along with the new action
      return;
    }
    await this.persist();
    if (!this.running) return; // stopping: the queued one starts after the restart
    if (this.trialRunning) {
      // A trial measures, it installs nothing: the newer desired state needs no wait for it.
      this.trialStop = new TrialStop('TRIAL_SUPERSEDED', `replaced by rollout ${desired.rolloutId} (seq ${desired.seq}) during the trial`);
      this.download?.fail(this.trialStop);
      this.o.log.info({ rolloutId: desired.rolloutId, seq: desired.seq }, 'newer desired state stops the trial in progress');
    } else if (d && d.phase === 'downloading') {
      // The orchestrator serves only a device's latest bundle, and nothing of this one is
      // installed yet: stop it (reported as SUPERSEDED) and let the newer one start.
      this.cancelDownload = new StepError('SUPERSEDED', `replaced by rollout ${desired.rolloutId} (seq ${desired.seq}) before it was downloaded`);
      this.download?.fail(this.cancelDownload);
      this.o.log.info({ rolloutId: desired.rolloutId, superseded: d.rolloutId }, 'newer desired state replaces the download in progress');
    } else {
      this.o.log.info({ rolloutId: desired.rolloutId }, 'action queued behind the running one');
    }
  }

  /** A desired state at or below lastSeq: a redelivery to repeat an answer to, or an older one that will never run. */
  private async onOldDesired(desired: DesiredState): Promise<void> {
    if (isTrial(desired)) return this.onOldTrial(desired);
    const answer = answerOldDesired(desired, { current: this.state.action, queued: this.state.queued, recent: this.state.recent });
    if (answer.kind === 'report') return this.report(answer.action);
    if (answer.kind === 'wait') return; // waits its turn
    // E.g. redelivered after a newer one (persistent session plus retained message): answer
    // it, or its rollout would wait for this device forever.
    this.supersede(desired, null);
    await this.persist();
  }

  /** Records and reports `old` as failed with SUPERSEDED: a newer desired state replaced it before it started. */
  private supersede(old: DesiredState, by: DesiredState | null): void {
    if (isTrial(old)) {
      const why = by ? `replaced by rollout ${by.rolloutId} (seq ${by.seq}) before the trial started` : `a newer desired state (seq ${this.state.lastSeq}) was already handled`;
      return this.noteTrial(failTrial(old, 'TRIAL_SUPERSEDED', why, new Date()));
    }
    const reason = by ? `replaced by rollout ${by.rolloutId} (seq ${by.seq}) before it started` : `a newer desired state (seq ${this.state.lastSeq}) was already handled`;
    const d: Action = { rolloutId: old.rolloutId, seq: old.seq, bundle: old.bundle, phase: 'failed', code: 'SUPERSEDED', reason, hadPrevious: false, updatedAt: new Date().toISOString() };
    this.remember(d);
    this.report(d);
    this.o.log.info({ rolloutId: old.rolloutId, seq: old.seq }, `desired state superseded: ${reason}`);
  }

  private remember(d: Action): void {
    this.state.recent = [d, ...this.state.recent.filter((r) => r.rolloutId !== d.rolloutId)].slice(0, RECENT_LIMIT);
  }

  /** Starts the queued desired state unless an action is running; only ever called on the control chain. */
  private async startQueued(): Promise<void> {
    const q = this.state.queued;
    if (!q || this.running || this.stopped) return;
    await this.begin(q);
  }

  private async begin(desired: DesiredState): Promise<void> {
    if (isTrial(desired)) return this.beginTrial(desired);
    const manifest = desired.bundle.manifest;
    const active = await this.slots.readActive();
    this.activeBundleId = active?.bundleId ?? null;
    const d: Action = { rolloutId: desired.rolloutId, seq: desired.seq, bundle: desired.bundle, phase: 'downloading', hadPrevious: !!active, updatedAt: new Date().toISOString() };
    if (this.state.action && this.state.action.rolloutId !== d.rolloutId) this.remember(this.state.action);
    this.state.queued = null;
    // Refuse a bundle we can never trust before fetching a byte of it.
    try {
      this.verifyBundle(desired.bundle);
    } catch (err) {
      return this.finishEarly(d, 'failed', catalogueCode(err, 'VERIFY_FAILED'), errorMessage(err));
    }
    if (active?.bundleId === manifest.bundleId) {
      return this.finishEarly({ ...d, ...(this.state.lastBenchmark ? { result: this.state.lastBenchmark } : {}) }, 'done');
    }
    this.state.action = d;
    await this.persist();
    this.report(d);
    this.kick();
  }

  private async finishEarly(d: Action, phase: 'failed' | 'done', code?: ErrorCode, reason?: string): Promise<void> {
    const done: Action = { ...d, phase, ...(code ? { code } : {}), ...(reason ? { reason } : {}), updatedAt: new Date().toISOString() };
    this.state.action = done;
    await this.persist();
    this.report(done);
    if (code) this.o.log.warn({ bundleId: d.bundle.manifest.bundleId, code }, `action refused: ${reason}`);
  }

  /** Drives the current action to a terminal phase, then starts any queued one. */
  private kick(): void {
    if (this.running) return;
    this.cancelDownload = undefined;
    this.running = (async () => {
      while (this.state.action && !isTerminal(this.state.action.phase) && !this.stopped) await this.step(this.state.action);
      if (this.stopped) return;
      await this.slots.collectGarbage().catch(() => undefined);
      // Downloads only feed an install; once the action is over they are dead weight.
      await rm(join(this.o.dataDir, 'downloads'), { recursive: true, force: true }).catch(() => undefined);
    })().catch((err) => this.o.log.error({ err: errorMessage(err) }, 'action loop crashed')).finally(() => {
      this.running = undefined;
      this.cancelDownload = undefined;
      // On the control chain, so it cannot interleave with a desired state being handled.
      if (!this.stopped) void this.serially('queued action', () => this.startQueued());
    });
  }

  private async transition(d: Action, event: UpdateEvent, extra: Partial<Action> = {}): Promise<void> {
    const next: Action = { ...d, ...extra, phase: nextPhase(d.phase, event), updatedAt: new Date().toISOString() };
    this.state.action = next;
    if (next.phase === 'done' && next.result) this.state.lastBenchmark = next.result;
    try {
      await this.persist();
    } catch (err) {
      // A full disk must not silence the device: report anyway. After a restart the older
      // persisted phase is redone, which every phase allows.
      this.o.log.error({ err: errorMessage(err) }, 'could not persist the action state');
    }
    this.fault(`kill-after-${next.phase}`);
    if (reportsTransition(d.phase, next.phase)) this.report(next);
    this.o.log.info({ bundleId: d.bundle.manifest.bundleId, from: d.phase, to: next.phase, code: next.code }, next.reason ?? 'transition');
  }

  private async step(d: Action): Promise<void> {
    const manifest = d.bundle.manifest;
    const downloads = join(this.o.dataDir, 'downloads');
    try {
      switch (d.phase) {
        case 'downloading':
          // A bundle still in its slot (the previous one, which a fleet rollback sends back)
          // needs no download: it is checked in place in the verifying step instead.
          if (await this.slots.isInstalled(manifest.bundleId)) {
            this.o.log.info({ bundleId: manifest.bundleId }, 'bundle already in its slot: no download');
            return this.transition(d, 'downloaded');
          }
          for (const file of manifest.files) {
            if (this.cancelDownload) throw this.cancelDownload;
            const dl = new ChunkDownload(manifest.bundleId, file, downloads, (index, count) =>
              this.publish(DeviceTopic.chunkRequest, { v: PROTOCOL_VERSION, bundleId: manifest.bundleId, sha256: file.sha256, index, count }));
            this.download = dl;
            try { await dl.run(); } finally { if (this.download === dl) this.download = undefined; }
          }
          return this.transition(d, 'downloaded');
        case 'verifying': {
          // The manifest signature through the trusted root, then every file's length and hash:
          // the downloaded files, or the files in the slot for a bundle that was kept.
          this.verifyBundle(d.bundle);
          const inSlot = await this.slots.isInstalled(manifest.bundleId);
          for (const file of manifest.files) {
            const path = inSlot ? join(this.slots.dir(manifest.bundleId), file.path) : ChunkDownload.finalPath(downloads, file.sha256);
            verifyFileIntegrity(file, await sha256File(path));
          }
          return this.transition(d, 'verified');
        }
        case 'installing':
          this.fault('kill-before-install');
          await this.slots.install(manifest, (sha) => ChunkDownload.finalPath(downloads, sha), () => this.fault('kill-during-install'));
          return this.transition(d, 'installed');
        case 'benchmarking': {
          const result = await this.benchmark(d);
          return this.transition(d, 'accepted', { result });
        }
        case 'committing':
          await this.slots.activate({ bundleId: manifest.bundleId, manifest, activatedAt: new Date().toISOString() }, () => this.fault('fail-after-activate'));
          this.activeBundleId = manifest.bundleId;
          await this.announceActive({ bundleId: manifest.bundleId, manifest, activatedAt: new Date().toISOString() });
          return this.transition(d, 'committed');
        case 'rolling_back': {
          // A commit can fail after active.json already names the new bundle: put the previous
          // one back first, or the device would report rolled_back while running the new one.
          const active = await this.slots.revertActivation(manifest.bundleId, d.hadPrevious);
          this.activeBundleId = active?.bundleId ?? null;
          await this.announceActive(active);
          await this.slots.discard(manifest.bundleId);
          return this.transition(d, 'rolled_back');
        }
        default:
          return;
      }
    } catch (err) {
      if (this.stopped) return;
      // Reports carry catalogue codes only; a Node or library code (ENOENT, say) stays in the reason.
      const raw = errorCode(err);
      const diskFull = raw === 'ENOSPC' || raw === 'EDQUOT';
      const code: ErrorCode = diskFull ? 'DISK_FULL' : catalogueCode(err, 'STEP_FAILED');
      const foreign = raw && !isErrorCode(raw) ? `[${raw}] ` : '';
      const reason = diskFull ? `${d.phase}: no space left in ${this.o.dataDir} (${errorMessage(err)})` : `${d.phase}: ${foreign}${errorMessage(err)}`;
      const result = err instanceof StepError && err.result ? { result: err.result } : {};
      await this.transition(d, 'error', { code, reason, ...result });
      if (d.phase === 'downloading' || d.phase === 'verifying' || d.phase === 'installing') {
        await this.slots.discard(manifest.bundleId).catch(() => undefined);
      }
    }
  }

  private async benchmark(d: Action): Promise<BenchmarkResult> {
    const m = d.bundle.manifest;
    const runs = this.o.benchmarkRuns ?? m.acceptance.runs ?? 20;
    const result = await benchmarkInChild({
      bundleDir: this.slots.dir(m.bundleId), manifest: m, warmupRuns: Math.min(runs, m.acceptance.warmupRuns ?? 3), runs, providers: m.runtime.executionProviders,
    }, this.o.benchmarkTimeoutMs ?? 300_000);
    const refusal = acceptanceFailure(m, result);
    if (refusal) throw new StepError(refusal.code, refusal.message, result);
    return result;
  }

  // ---------------------------------------------------------------- trials

  /**
   * At start-up: a trial still `running` in state.json was cut short (kill -9, power cut, a
   * stop): it becomes failed TRIAL_INTERRUPTED (reported on connect) and its scratch slot goes.
   * The active model was never touched, so there is nothing else to undo.
   */
  private async recoverTrial(): Promise<void> {
    const now = new Date();
    const before = [this.state.trial ?? null, ...(this.state.recentTrials ?? [])];
    const after = before.map((t) => interruptedAfterRestart(t, now));
    if (after.some((t, i) => t !== before[i])) {
      for (const t of after) if (t?.code === 'TRIAL_INTERRUPTED' && !before.includes(t)) this.o.log.warn({ seq: t.seq, rolloutId: t.rolloutId }, 'a trial was interrupted by the last stop; reporting it failed');
      this.state.trial = after[0] ?? null;
      this.state.recentTrials = after.slice(1).filter((t): t is TrialRecord => t !== null);
      await this.persist().catch((err) => this.o.log.error({ err: errorMessage(err) }, 'could not persist the interrupted trial'));
    }
    await this.scratch.remove().catch((err) => this.o.log.warn({ err: errorMessage(err) }, 'could not remove the trial scratch slot'));
  }

  /** A trial desired state at or below lastSeq: its report again if it ran (it is never run twice), else superseded. */
  private async onOldTrial(desired: DesiredState): Promise<void> {
    const known = findTrial(desired.seq, this.state.trial ?? null, this.state.recentTrials ?? []);
    if (known) return this.reportTrial(known);
    if (this.state.queued?.seq === desired.seq) return; // waits its turn
    this.supersede(desired, null);
    await this.persist();
  }

  /** Makes `t` the latest trial record and reports it (persisting is the caller's). */
  private noteTrial(t: TrialRecord): void {
    Object.assign(this.state, rememberTrial(this.state.trial ?? null, this.state.recentTrials ?? [], t));
    this.reportTrial(t);
    if (t.code) this.o.log.warn({ seq: t.seq, rolloutId: t.rolloutId, code: t.code }, `trial ${t.state}: ${t.reason ?? ''}`);
  }

  /** Records `t` as the latest trial, saved before it is reported (a full disk is logged; the report still goes out). */
  private async recordTrial(t: TrialRecord): Promise<boolean> {
    Object.assign(this.state, rememberTrial(this.state.trial ?? null, this.state.recentTrials ?? [], t));
    let saved = true;
    try {
      await this.persist();
    } catch (err) {
      saved = false;
      this.o.log.error({ seq: t.seq, err: errorMessage(err) }, 'could not persist the trial state');
    }
    return saved;
  }

  /** Starts a trial (only ever on the control chain, with nothing running). */
  private async beginTrial(desired: DesiredState): Promise<void> {
    this.state.queued = null;
    const problem = trialRequestProblem(desired);
    if (problem) {
      const t = failTrial(desired, 'TRIAL_INVALID', problem, new Date());
      await this.recordTrial(t);
      return this.noteTrial(t);
    }
    const started = startTrial(desired, new Date());
    // "In progress" is saved before anything is fetched: after a kill -9 the restart finds it.
    if (!(await this.recordTrial(started))) {
      const t = failTrial(started, 'DISK_FULL', `could not record the trial as started in ${this.o.dataDir}; not started`, new Date());
      await this.recordTrial(t);
      return this.noteTrial(t);
    }
    this.noteTrial(started);
    this.o.log.info({ seq: desired.seq, rolloutId: desired.rolloutId, candidates: desired.trial!.candidates.map((c) => c.manifest.bundleId), rounds: desired.trial!.rounds }, 'trial started');
    this.trialStop = undefined;
    this.trialRunning = true;
    this.running = this.runTrialToEnd(desired, started).catch((err) => this.o.log.error({ err: errorMessage(err) }, 'trial crashed')).finally(() => {
      this.running = undefined;
      this.trialRunning = false;
      this.trialStop = undefined;
      if (!this.stopped) void this.serially('queued action', () => this.startQueued());
    });
  }

  private async runTrialToEnd(desired: DesiredState, started: TrialRecord): Promise<void> {
    let end: TrialRecord;
    try {
      await this.scratch.remove();
      const results = await runTrial(desired, {
        scratch: this.scratch,
        verifyBundle: (b) => this.verifyBundle(b),
        installedDir: async (id) => ((await this.slots.isInstalled(id)) ? this.slots.dir(id) : null),
        download: (bundleId, file, dir) => this.fetchFile(bundleId, file, dir),
        downloadedPath: (dir, sha) => ChunkDownload.finalPath(dir, sha),
        benchmark: (job) => benchmarkOutcomeInChild(job, this.o.benchmarkTimeoutMs ?? 300_000),
        checkpoint: () => {
          if (this.trialStop) throw this.trialStop;
          if (this.stopped) throw new TrialStop('AGENT_STOPPING', 'agent is stopping');
        },
        ...(this.o.benchmarkRuns ? { runs: this.o.benchmarkRuns } : {}),
      });
      end = finishTrial(started, results, new Date());
    } catch (err) {
      await this.scratch.remove().catch(() => undefined);
      // Stopping: left `running` on disk, so the next start reports it TRIAL_INTERRUPTED.
      if (this.stopped) return;
      const raw = errorCode(err);
      const code: ErrorCode = err instanceof TrialStop ? err.code as ErrorCode : raw === 'ENOSPC' || raw === 'EDQUOT' ? 'DISK_FULL' : catalogueCode(err, 'STEP_FAILED');
      end = failTrial(started, code, errorMessage(err), new Date());
    }
    await this.scratch.remove().catch((err) => this.o.log.warn({ err: errorMessage(err) }, 'could not remove the trial scratch slot'));
    await this.recordTrial(end);
    this.noteTrial(end);
    this.o.log.info({ seq: end.seq, state: end.state, code: end.code, results: end.results.map((r) => ({ bundleId: r.bundleId, p95: r.result?.latencyMs.p95, code: r.code })) }, 'trial over');
  }

  /** One file of a trial candidate, through the same chunk transfer (and stall watch) as an install's. */
  private async fetchFile(bundleId: string, file: BundleFile, dir: string): Promise<void> {
    if (this.trialStop) throw this.trialStop;
    const dl = new ChunkDownload(bundleId, file, dir, (index, count) =>
      this.publish(DeviceTopic.chunkRequest, { v: PROTOCOL_VERSION, bundleId, sha256: file.sha256, index, count }));
    this.download = dl;
    try { await dl.run(); } finally { if (this.download === dl) this.download = undefined; }
  }

  private reportTrial(t: TrialRecord): void {
    this.publish(DeviceTopic.trialReport, signTrialReport(trialReport(this.id.deviceId, t), this.id.secretKey));
  }

  private report(d: Action): void {
    // Failed vs rolled_back, and what the report carries: see statusReport. Signed with the
    // device key, so the orchestrator takes it as this device's word and nobody else's.
    this.publish(DeviceTopic.status, signStatusReport(statusReport(this.id.deviceId, { ...d, bundleId: d.bundle.manifest.bundleId }), this.id.secretKey));
  }

  /** Every state write goes through the one StateStore queue, in call order. */
  private persist(): Promise<void> {
    return this.store.save(this.state);
  }

  /** Tells the onActiveChanged listener; its failure must not fail the action step. */
  private async announceActive(active: ActiveRecord | null): Promise<void> {
    if (!this.o.onActiveChanged) return;
    try {
      await this.o.onActiveChanged(active);
    } catch (err) {
      this.o.log.error({ bundleId: active?.bundleId ?? null, err: errorMessage(err) }, 'active-bundle listener failed');
    }
  }
  /**
   * Test-only fault injection. `kill-*` points: the agent SIGKILLs itself, like a power cut.
   * `fail-*` points: the step in progress throws, like an I/O error.
   */
  private fault(point: string): void {
    if (!this.o.faults?.includes(point)) return;
    if (point.startsWith('fail-')) {
      this.o.log.warn({ point }, 'fault injection: failing this step');
      throw new StepError('FAULT_INJECTED', `injected fault at ${point}`);
    }
    this.o.log.warn({ point }, 'fault injection: killing this process');
    process.kill(process.pid, 'SIGKILL');
  }
}
