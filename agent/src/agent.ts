import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import mqtt, { type MqttClient } from 'mqtt';
import {
  DesiredStateSchema, DeviceTopic, NoticeSchema, PROTOCOL_VERSION, Validator, createChunkDecoder, createDeviceCredential,
  createManifestVerifier, deviceTopic, errorCode, errorMessage, verifyFileIntegrity,
  type BenchmarkResult, type DesiredState, type Heartbeat, type StatusReport,
} from '@edgepack/protocol';
import { loadState, saveState, type AgentState, type Deployment } from './agent-state.js';
import { benchmarkInChild } from './benchmark.js';
import { BundleSlots, sha256File } from './bundle-slots.js';
import { ChunkDownload } from './chunk-download.js';
import type { Identity } from './identity.js';
import type { Logger } from './logger.js';
import { isTerminal, nextPhase, reportedState, type UpdateEvent } from './update-machine.js';

export interface AgentOptions {
  dataDir: string;
  identity: Identity;
  log: Logger;
  agentVersion: string;
  benchmarkTimeoutMs?: number;
  /** Overrides the manifest's run counts (e.g. for quick demos). */
  benchmarkRuns?: number;
  /** A transfer that makes no progress for this long is asked again. */
  stallMs?: number;
  /** Test-only fault injection; see `fault()`. */
  faults?: string[];
}

class StepError extends Error {
  constructor(readonly code: string, message: string, readonly result?: BenchmarkResult) { super(message); }
}

/**
 * The device agent. MQTT and files are its edges; the flow itself is the transition table in
 * update-machine.ts. Every phase change is persisted before it is acted on and then reported.
 */
export class Agent {
  private state!: AgentState;
  private client?: MqttClient;
  private readonly slots: BundleSlots;
  private readonly verify = createManifestVerifier();
  private readonly desiredValidator = new Validator('desired state', DesiredStateSchema);
  private readonly noticeValidator = new Validator('notice', NoticeSchema);
  private readonly decodeChunk = createChunkDecoder();
  private download?: ChunkDownload;
  private running?: Promise<void>;
  private timers: NodeJS.Timeout[] = [];
  private stopped = false;
  private backoffMs = 1000;
  private readonly startedAt = Date.now();

  constructor(private readonly o: AgentOptions) {
    this.slots = new BundleSlots(o.dataDir);
  }

  private get id(): Identity { return this.o.identity; }
  private topic(kind: Parameters<typeof deviceTopic>[1]): string { return deviceTopic(this.id.deviceId, kind); }

  async start(): Promise<void> {
    this.state = await loadState(this.o.dataDir);
    this.activeBundleId = (await this.slots.readActive())?.bundleId ?? null;
    this.connect();
    this.timers.push(setInterval(() => this.heartbeat(), this.id.heartbeatSec * 1000));
    this.timers.push(setInterval(() => this.watchTransfer(), Math.max(1000, (this.o.stallMs ?? 10_000) / 2)));
    const d = this.state.deployment;
    if (d && !isTerminal(d.phase)) {
      this.o.log.info({ bundleId: d.bundle.manifest.bundleId, phase: d.phase }, 'resuming deployment after restart');
      this.kick();
    } else {
      await this.slots.collectGarbage();
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    this.download?.fail(new StepError('AGENT_STOPPING', 'agent is stopping'));
    await new Promise<void>((resolve) => (this.client ? this.client.end(false, {}, () => resolve()) : resolve()));
  }

  // ---------------------------------------------------------------- MQTT edge

  private connect(): void {
    if (this.stopped) return;
    const { deviceId } = this.id;
    const client = mqtt.connect({
      host: this.id.mqtt.host,
      port: this.id.mqtt.port,
      protocol: 'mqtt',
      clientId: deviceId,
      username: deviceId,
      // The credential is signed fresh for each connection; it is only valid for minutes.
      password: createDeviceCredential(deviceId, this.id.secretKey, new Date()),
      clean: false,
      keepalive: Math.max(5, this.id.heartbeatSec),
      reconnectPeriod: 0, // our own loop below re-signs the credential and backs off
      connectTimeout: 10_000,
      will: { topic: this.topic(DeviceTopic.presence), payload: Buffer.from(JSON.stringify({ v: PROTOCOL_VERSION, online: false })), qos: 1, retain: false },
    });
    this.client = client;
    client.on('connect', () => {
      this.backoffMs = 1000;
      this.o.log.info({ deviceId }, 'connected');
      client.subscribe([this.topic(DeviceTopic.desired), this.topic(DeviceTopic.chunk), this.topic(DeviceTopic.notice)], { qos: 1 }, (err) => {
        if (err) this.o.log.warn({ err: err.message }, 'subscribe failed');
      });
      this.publish(DeviceTopic.presence, { v: PROTOCOL_VERSION, online: true });
      this.heartbeat();
      const d = this.state.deployment;
      if (d) this.report(d); // the orchestrator may have missed it while we were away
      this.download?.ask();
    });
    client.on('message', (topic, payload) => this.onMessage(topic, payload));
    client.on('error', (err) => this.o.log.warn({ err: err.message }, 'mqtt error'));
    client.on('close', () => {
      if (this.stopped || this.client !== client) return;
      this.client = undefined;
      client.removeAllListeners();
      client.on('error', () => undefined);
      client.end(true);
      const delay = Math.round(this.backoffMs * (0.5 + Math.random() / 2));
      this.backoffMs = Math.min(30_000, this.backoffMs * 2);
      this.o.log.info({ delayMs: delay }, 'disconnected; reconnecting');
      const t = setTimeout(() => this.connect(), delay);
      this.timers.push(t);
    });
  }

  /**
   * Publishes only on a live connection. While disconnected nothing is queued: heartbeats are
   * periodic anyway, and the deployment state is re-reported on every (re)connect.
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
      if (topic === this.topic(DeviceTopic.desired)) return void this.onDesired(payload).catch((err) => this.o.log.error({ err: errorMessage(err) }, 'desired state handling failed'));
      if (topic === this.topic(DeviceTopic.notice)) {
        const n = this.noticeValidator.parse(payload);
        if (!n.ok) return this.o.log.warn({ reason: n.reason }, 'invalid notice');
        this.o.log.warn({ code: n.value.code, topic: n.value.topic }, `orchestrator notice: ${n.value.message}`);
        if (this.download && ['BUNDLE_NOT_ASSIGNED', 'FILE_NOT_IN_BUNDLE', 'CHUNK_OUT_OF_RANGE'].includes(n.value.code)) {
          this.download.fail(new StepError(n.value.code, n.value.message));
        }
      }
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
    const hb: Heartbeat = {
      v: PROTOCOL_VERSION, deviceId: this.id.deviceId, uptimeSec: Math.round((Date.now() - this.startedAt) / 1000),
      activeBundle: this.activeBundleId, lastBenchmark: this.state?.lastBenchmark ?? null, agentVersion: this.o.agentVersion, at: new Date().toISOString(),
    };
    this.publish(DeviceTopic.heartbeat, hb);
  }

  private activeBundleId: string | null = null;

  private watchTransfer(): void {
    if (this.download && this.download.stalledFor() > (this.o.stallMs ?? 10_000) && this.client?.connected) {
      this.o.log.info({ file: this.download.file.path }, 'transfer stalled; asking again');
      this.download.ask();
    }
  }

  // ---------------------------------------------------------------- desired state

  private async onDesired(payload: Buffer): Promise<void> {
    if (payload.length === 0) return; // retained message cleared
    const parsed = this.desiredValidator.parse(payload, 4 << 20);
    if (!parsed.ok) return this.o.log.warn({ code: parsed.code }, `desired state refused: ${parsed.reason}`);
    const desired = parsed.value;
    if (desired.deviceId !== this.id.deviceId) return this.o.log.warn({ deviceId: desired.deviceId }, 'desired state for another device ignored');
    if (desired.seq <= this.state.lastSeq) {
      // A redelivery (retained on reconnect, or QoS 1 duplicate): just repeat where we are.
      const d = this.state.deployment;
      if (d && d.rolloutId === desired.rolloutId) this.report(d);
      return;
    }
    this.state.lastSeq = desired.seq;
    if (this.running) {
      this.state.queued = desired;
      await this.persist();
      this.o.log.info({ rolloutId: desired.rolloutId }, 'deployment queued behind the running one');
      return;
    }
    await this.begin(desired);
  }

  private async begin(desired: DesiredState): Promise<void> {
    const manifest = desired.bundle.manifest;
    const active = await this.slots.readActive();
    this.activeBundleId = active?.bundleId ?? null;
    const d: Deployment = { rolloutId: desired.rolloutId, seq: desired.seq, bundle: desired.bundle, phase: 'downloading', hadPrevious: !!active, updatedAt: new Date().toISOString() };
    this.state.queued = null;
    // Refuse a bundle we can never trust before fetching a byte of it.
    try {
      this.verify(desired.bundle, { trustedPublicKey: this.id.orchestratorPublicKey, expectedProfile: this.id.profile, now: new Date() });
    } catch (err) {
      return this.finishEarly(d, 'failed', errorCode(err) ?? 'VERIFY_FAILED', errorMessage(err));
    }
    if (active?.bundleId === manifest.bundleId) {
      return this.finishEarly({ ...d, ...(this.state.lastBenchmark ? { result: this.state.lastBenchmark } : {}) }, 'done');
    }
    this.state.deployment = d;
    await this.persist();
    this.report(d);
    this.kick();
  }

  private async finishEarly(d: Deployment, phase: 'failed' | 'done', code?: string, reason?: string): Promise<void> {
    const done: Deployment = { ...d, phase, ...(code ? { code } : {}), ...(reason ? { reason } : {}), updatedAt: new Date().toISOString() };
    this.state.deployment = done;
    await this.persist();
    this.report(done);
    if (code) this.o.log.warn({ bundleId: d.bundle.manifest.bundleId, code }, `deployment refused: ${reason}`);
  }

  /** Drives the current deployment to a terminal phase, then starts any queued one. */
  private kick(): void {
    if (this.running) return;
    this.running = (async () => {
      try {
        while (this.state.deployment && !isTerminal(this.state.deployment.phase) && !this.stopped) await this.step(this.state.deployment);
      } finally {
        this.running = undefined;
      }
      if (this.stopped) return;
      await this.slots.collectGarbage().catch(() => undefined);
      // Downloads only feed an install; once the deployment is over they are dead weight.
      await rm(join(this.o.dataDir, 'downloads'), { recursive: true, force: true }).catch(() => undefined);
      const q = this.state.queued;
      if (q) await this.begin(q);
    })().catch((err) => this.o.log.error({ err: errorMessage(err) }, 'deployment loop crashed'));
  }

  private async transition(d: Deployment, event: UpdateEvent, extra: Partial<Deployment> = {}): Promise<void> {
    const next: Deployment = { ...d, ...extra, phase: nextPhase(d.phase, event), updatedAt: new Date().toISOString() };
    this.state.deployment = next;
    if (next.phase === 'done' && next.result) this.state.lastBenchmark = next.result;
    try {
      await this.persist();
    } catch (err) {
      // A full disk must not silence the device: report anyway. After a restart the older
      // persisted phase is redone, which every phase allows.
      this.o.log.error({ err: errorMessage(err) }, 'could not persist the deployment state');
    }
    this.fault(`kill-after-${next.phase}`);
    if (reportedState(next.phase) !== reportedState(d.phase) || isTerminal(next.phase)) this.report(next);
    this.o.log.info({ bundleId: d.bundle.manifest.bundleId, from: d.phase, to: next.phase, code: next.code }, next.reason ?? 'transition');
  }

  private async step(d: Deployment): Promise<void> {
    const manifest = d.bundle.manifest;
    const downloads = join(this.o.dataDir, 'downloads');
    try {
      switch (d.phase) {
        case 'downloading':
          for (const file of manifest.files) {
            this.download = new ChunkDownload(manifest.bundleId, file, downloads, (index, count) =>
              this.publish(DeviceTopic.chunkRequest, { v: PROTOCOL_VERSION, bundleId: manifest.bundleId, sha256: file.sha256, index, count }));
            try { await this.download.run(); } finally { this.download = undefined; }
          }
          return this.transition(d, 'downloaded');
        case 'verifying':
          this.verify(d.bundle, { trustedPublicKey: this.id.orchestratorPublicKey, expectedProfile: this.id.profile, now: new Date() });
          for (const file of manifest.files) verifyFileIntegrity(file, await sha256File(ChunkDownload.finalPath(downloads, file.sha256)));
          return this.transition(d, 'verified');
        case 'installing':
          this.fault('kill-before-install');
          await this.slots.install(manifest, (sha) => ChunkDownload.finalPath(downloads, sha), () => this.fault('kill-during-install'));
          return this.transition(d, 'installed');
        case 'benchmarking': {
          const result = await this.benchmark(d);
          return this.transition(d, 'accepted', { result });
        }
        case 'committing':
          await this.slots.activate({ bundleId: manifest.bundleId, manifest, activatedAt: new Date().toISOString() });
          this.activeBundleId = manifest.bundleId;
          return this.transition(d, 'committed');
        case 'rolling_back':
          await this.slots.discard(manifest.bundleId);
          return this.transition(d, 'rolled_back');
        default:
          return;
      }
    } catch (err) {
      if (this.stopped) return;
      const raw = err instanceof StepError ? err.code : errorCode(err) ?? 'STEP_FAILED';
      const diskFull = raw === 'ENOSPC' || raw === 'EDQUOT';
      const code = diskFull ? 'DISK_FULL' : raw;
      const reason = diskFull ? `${d.phase}: no space left in ${this.o.dataDir} (${errorMessage(err)})` : `${d.phase}: ${errorMessage(err)}`;
      const result = err instanceof StepError && err.result ? { result: err.result } : {};
      await this.transition(d, 'error', { code, reason, ...result });
      if (d.phase === 'downloading' || d.phase === 'verifying' || d.phase === 'installing') {
        await this.slots.discard(manifest.bundleId).catch(() => undefined);
      }
    }
  }

  private async benchmark(d: Deployment): Promise<BenchmarkResult> {
    const m = d.bundle.manifest;
    const runs = this.o.benchmarkRuns ?? m.acceptance.runs ?? 20;
    const result = await benchmarkInChild({
      bundleDir: this.slots.dir(m.bundleId), manifest: m, warmupRuns: Math.min(runs, m.acceptance.warmupRuns ?? 3), runs, providers: m.runtime.executionProviders,
    }, this.o.benchmarkTimeoutMs ?? 300_000);
    if (!result.golden.passed) {
      throw new StepError('GOLDEN_MISMATCH', `golden samples differ by up to ${result.golden.maxAbsError}, allowed ${m.golden.maxAbsError}`, result);
    }
    const budget = m.acceptance.p95LatencyMs;
    if (budget !== undefined && result.latencyMs.p95 > budget) {
      throw new StepError('LATENCY_BUDGET_EXCEEDED', `p95 latency ${result.latencyMs.p95} ms is over the profile's ${budget} ms budget`, result);
    }
    return result;
  }

  private report(d: Deployment): void {
    let state = reportedState(d.phase);
    // Nothing to roll back to on a first install: say failed, not rolled_back.
    if (state === 'rolled_back' && !d.hadPrevious) state = 'failed';
    const r: StatusReport = {
      v: PROTOCOL_VERSION, deviceId: this.id.deviceId, rolloutId: d.rolloutId, bundleId: d.bundle.manifest.bundleId, state,
      ...(d.code ? { code: d.code } : {}), ...(d.reason ? { reason: d.reason.slice(0, 4000) } : {}), ...(d.result ? { result: d.result } : {}),
      at: d.updatedAt,
    };
    this.publish(DeviceTopic.status, r);
  }

  private persist(): Promise<void> {
    return saveState(this.o.dataDir, this.state);
  }

  /** Test-only fault injection: the agent SIGKILLs itself at a named point, like a power cut. */
  private fault(point: string): void {
    if (this.o.faults?.includes(point)) {
      this.o.log.warn({ point }, 'fault injection: killing this process');
      process.kill(process.pid, 'SIGKILL');
    }
  }
}
