import {
  CHUNK_SIZE, ChunkRequestSchema, DeviceTopic, HeartbeatSchema, PROTOCOL_VERSION, PresenceSchema, StatusReportSchema, TrialReportSchema, Validator,
  PublicKeyCache, catalogueCode, deviceTopic, parseDeviceTopic, verifyStatusReport, verifyTrialReport, type ErrorCode, type Heartbeat, type Notice, type StatusReport,
  type TrialReport,
} from '@edgepack/protocol';
import type { Aedes, AedesPublishPacket, Client } from 'aedes';
import type { BlobStore } from '../blob-store.js';
import type { Store } from '../db/store.js';
import { resolveLimits, type MqttLimits } from '../limits.js';
import { LogDigest } from '../log-digest.js';
import type { Logger } from '../logger.js';
import type { DesiredPublisher } from '../services/desired-states.js';
import { ChunkFrameCache } from './chunk-frame-cache.js';
import { ChunkSender } from './chunk-sender.js';

/** Where telemetry batches go (telemetry/ingest.ts TelemetryIngest): it validates, commits, acks and answers refusals itself. */
export interface TelemetrySink {
  receive(deviceId: string, payload: Buffer): void;
}

/** What the gateway hands on of what devices say (services/rollouts.ts RolloutService). */
export interface DeviceEvents {
  /** Returns why the report was refused, if it was. */
  onStatus(deviceId: string, report: StatusReport): string | null;
  onHeartbeat(deviceId: string, hb: Heartbeat): void;
  onPresence(deviceId: string, online: boolean): void;
  /** A trial's outcome (issue 10); returns why the report was refused, if it was. */
  onTrialReport?(deviceId: string, report: TrialReport): string | null;
}

/**
 * Everything the orchestrator says to and hears from devices over MQTT. One handler per
 * device topic; every payload is validated and an invalid one is answered on the device's
 * notice topic, never allowed to throw into the broker.
 */
export class DeviceGateway implements DesiredPublisher {
  private readonly status = new Validator('status report', StatusReportSchema);
  private readonly heartbeat = new Validator('heartbeat', HeartbeatSchema);
  private readonly chunkRequest = new Validator('chunk request', ChunkRequestSchema);
  private readonly presence = new Validator('presence', PresenceSchema);
  private readonly trialReport = new Validator('trial report', TrialReportSchema);
  /** Device keys as loaded for verification: every status and trial report is checked against its device's key. */
  private readonly keys = new PublicKeyCache();
  events?: DeviceEvents;
  /** Encoded chunk frames, shared by every device's queue: a wave reads and hashes each frame once. */
  readonly frames = new ChunkFrameCache();
  telemetry?: TelemetrySink;
  private readonly chunks: ChunkSender;
  private readonly digest: LogDigest;
  /** When each device was last told its chunk requests are over the limit: one such notice a second, however many requests. */
  private readonly limitedNoticeAt = new Map<string, number>();

  constructor(private readonly deps: { aedes: Aedes; store: Store; blobs: BlobStore; log: Logger; now: () => Date; limits?: MqttLimits }) {
    const limits = deps.limits ?? resolveLimits().mqtt;
    this.digest = new LogDigest(deps.log, limits.logDigestMs);
    this.chunks = new ChunkSender({
      aedes: deps.aedes, blobs: deps.blobs, log: deps.log, now: deps.now, limits, frames: this.frames,
      onError: (deviceId, bundleId, err) => {
        deps.log.error({ deviceId, bundleId, err }, 'serving chunks failed');
        // The notice carries our code and our words only: never a path or a library's message.
        this.notice(deviceId, catalogueCode(err, 'INTERNAL_ERROR'), `could not read bundle ${bundleId} on the orchestrator; its log has the details`, undefined, bundleId);
      },
    });
    deps.aedes.on('clientDisconnect', (client) => this.limitedNoticeAt.delete(client.id));
    deps.aedes.on('closed', () => this.digest.close());
    deps.aedes.on('publish', (packet, client) => {
      if (client) void this.onDevicePublish(client, packet);
    });
    // A clean DISCONNECT sends no will (MQTT 3.1.1 §3.14.4), so mark the device offline here too.
    deps.aedes.on('clientDisconnect', (client) => this.guard('clientDisconnect', () => {
      // A session taken over by a newer connection of the same device (§3.1.4) is not the device going away.
      const current = (deps.aedes as unknown as { clients: Record<string, Client | undefined> }).clients[client.id];
      if (current && current !== client) return;
      this.events?.onPresence(client.id, false);
    }));
    deps.aedes.on('clientReady', (client) => this.guard('clientReady', () => this.events?.onPresence(client.id, true)));
  }

  /** Broker events run outside any request: a failure here (a full disk, say) is logged, never thrown into Aedes. */
  private guard(event: string, fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.deps.log.error({ event, err }, 'broker event handler failed');
    }
  }

  private publish(topic: string, payload: Buffer | string, retain: boolean): Promise<void> {
    return new Promise((resolve, reject) => {
      this.deps.aedes.publish(
        { cmd: 'publish', topic, payload: typeof payload === 'string' ? Buffer.from(payload) : payload, qos: 1, retain, dup: false },
        (err) => (err ? reject(err) : resolve()),
      );
    });
  }

  /** `desired` is the signed message as text: published byte for byte (a republish after a restart is the same message). */
  publishDesired(deviceId: string, desired: string): Promise<void> {
    return this.publish(deviceTopic(deviceId, DeviceTopic.desired), desired, true);
  }

  /** An empty retained payload deletes the retained message (MQTT 3.1.1 §3.3.1.3). */
  clearDesired(deviceId: string): Promise<void> {
    return this.publish(deviceTopic(deviceId, DeviceTopic.desired), Buffer.alloc(0), true);
  }

  /** Notices carry catalogue codes only (the wire schema takes any string, so older agents accept newer codes). */
  private notice(deviceId: string, code: ErrorCode, message: string, topic?: string, bundleId?: string): void {
    const n: Notice = { v: PROTOCOL_VERSION, code, message, ...(topic ? { topic } : {}), ...(bundleId ? { bundleId } : {}) };
    this.publish(deviceTopic(deviceId, DeviceTopic.notice), JSON.stringify(n), false).catch(() => undefined);
  }

  private async onDevicePublish(client: Client, packet: AedesPublishPacket): Promise<void> {
    const { log } = this.deps;
    const t = parseDeviceTopic(packet.topic);
    if (!t || t.deviceId !== client.id) return; // the authorizer already refused these
    const payload = packet.payload as Buffer;
    try {
      switch (t.kind) {
        case DeviceTopic.status: {
          const r = this.status.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          // A report counts only if the device's own key signed it (security issue, finding 3).
          const signer = this.deps.store.getDeviceKey(client.id)?.publicKey;
          if (!signer || !verifyStatusReport(r.value, signer, this.keys)) return this.refuse(client.id, 'STATUS_SIGNATURE_INVALID', r.value.signature ? 'status report signature does not verify with this device\'s enrolled key' : 'status report is not signed by the device', packet.topic);
          const why = this.events?.onStatus(client.id, r.value);
          if (why) this.notice(client.id, 'STATUS_REFUSED', why, packet.topic);
          return;
        }
        case DeviceTopic.trialReport: {
          const r = this.trialReport.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          // Figures choose what the whole fleet gets: only the device's own key vouches for them.
          const signer = this.deps.store.getDeviceKey(client.id)?.publicKey;
          if (!signer || !verifyTrialReport(r.value, signer, this.keys)) return this.refuse(client.id, 'STATUS_SIGNATURE_INVALID', r.value.signature ? 'trial report signature does not verify with this device\'s enrolled key' : 'trial report is not signed by the device', packet.topic);
          const why = this.events?.onTrialReport?.(client.id, r.value);
          if (why) this.notice(client.id, 'STATUS_REFUSED', why, packet.topic);
          return;
        }
        case DeviceTopic.heartbeat: {
          const r = this.heartbeat.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          this.events?.onHeartbeat(client.id, r.value);
          return;
        }
        case DeviceTopic.presence: {
          const r = this.presence.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          this.events?.onPresence(client.id, r.value.online);
          return;
        }
        case DeviceTopic.chunkRequest: {
          const r = this.chunkRequest.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          this.serveChunks(client, r.value.bundleId, r.value.sha256, r.value.index, r.value.count);
          return;
        }
        case DeviceTopic.telemetry:
          this.telemetry?.receive(client.id, payload);
          return;
        default:
          return;
      }
    } catch (err) {
      log.error({ deviceId: client.id, topic: packet.topic, err }, 'device message handler failed');
      this.notice(client.id, 'INTERNAL_ERROR', 'could not handle the message on the orchestrator; its log has the details', packet.topic);
    }
  }

  private refuse(deviceId: string, code: ErrorCode, reason: string, topic: string): void {
    this.deps.log.warn({ deviceId, topic, code }, `invalid device message: ${reason}`);
    this.notice(deviceId, code, reason, topic);
  }

  /**
   * Queues chunks only of bundles this device was told to install, and only their listed files.
   * Never awaited: each device's chunks go out from its own queue (chunk-sender.ts), so one slow
   * device never holds up this handler, the broker, or anyone else's messages.
   */
  private serveChunks(client: Client, bundleId: string, sha256: string, index: number, count: number): void {
    const { store } = this.deps;
    const deviceId = client.id;
    const bundle = store.getBundle(bundleId);
    if (!bundle || !store.isBundleAssigned(deviceId, bundleId)) return this.notice(deviceId, 'BUNDLE_NOT_ASSIGNED', `bundle ${bundleId} is not assigned to this device`, undefined, bundleId);
    const file = bundle.manifest.files.find((f) => f.sha256 === sha256);
    if (!file) return this.notice(deviceId, 'FILE_NOT_IN_BUNDLE', `file ${sha256} is not part of bundle ${bundleId}`, undefined, bundleId);
    const total = Math.max(1, Math.ceil(file.length / CHUNK_SIZE));
    if (index >= total) return this.notice(deviceId, 'CHUNK_OUT_OF_RANGE', `chunk ${index} is past the last chunk ${total - 1} of ${sha256}`, undefined, bundleId);
    const q = this.chunks.enqueue(client, { bundleId, sha256, fileLength: file.length }, index, Math.min(total, index + count));
    if (q.ok) return;
    this.digest.note(`chunks-limited:${deviceId}`, 'chunk requests refused: over the per-device queue limit', { deviceId, queued: q.queued }, deviceId);
    const now = this.deps.now().getTime();
    if (now - (this.limitedNoticeAt.get(deviceId) ?? 0) >= 1000) {
      this.limitedNoticeAt.set(deviceId, now);
      this.notice(deviceId, 'CHUNK_REQUESTS_LIMITED', `${q.queued} chunks are already queued for this device; ask again when they have arrived`, undefined, bundleId);
    }
  }
}
