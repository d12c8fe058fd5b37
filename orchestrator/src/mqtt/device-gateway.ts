import {
  CHUNK_SIZE, ChunkRequestSchema, DeviceTopic, HeartbeatSchema, PROTOCOL_VERSION, PresenceSchema, StatusReportSchema, Validator,
  catalogueCode, deviceTopic, parseDeviceTopic, verifyStatusReport, type DesiredState, type ErrorCode, type Notice,
} from '@edgepack/protocol';
import type { Aedes, AedesPublishPacket, Client } from 'aedes';
import type { BlobStore } from '../blob-store.js';
import type { Store } from '../db/store.js';
import { resolveLimits, type MqttLimits } from '../limits.js';
import { LogDigest } from '../log-digest.js';
import type { Logger } from '../logger.js';
import type { DesiredPublisher, RolloutService } from '../rollout-service.js';
import { ChunkSender } from './chunk-sender.js';

/** Where telemetry batches go (telemetry/ingest.ts TelemetryIngest): it validates, commits, acks and answers refusals itself. */
export interface TelemetrySink {
  receive(deviceId: string, payload: Buffer): void;
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
  rollouts?: RolloutService;
  telemetry?: TelemetrySink;
  private readonly chunks: ChunkSender;
  private readonly digest: LogDigest;
  /** When each device was last told its chunk requests are over the limit: one such notice a second, however many requests. */
  private readonly limitedNoticeAt = new Map<string, number>();

  constructor(private readonly deps: { aedes: Aedes; store: Store; blobs: BlobStore; log: Logger; now: () => Date; limits?: MqttLimits }) {
    const limits = deps.limits ?? resolveLimits().mqtt;
    this.digest = new LogDigest(deps.log, limits.logDigestMs);
    this.chunks = new ChunkSender({
      aedes: deps.aedes, blobs: deps.blobs, log: deps.log, now: deps.now, limits,
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
    deps.aedes.on('clientDisconnect', (client) => this.guard('clientDisconnect', () => this.markOffline(client.id)));
    deps.aedes.on('clientReady', (client) => this.guard('clientReady', () => {
      if (deps.store.getDevice(client.id)) deps.store.markSeen(client.id, deps.now().toISOString());
    }));
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

  publishDesired(deviceId: string, desired: DesiredState): Promise<void> {
    return this.publish(deviceTopic(deviceId, DeviceTopic.desired), JSON.stringify(desired), true);
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

  private markOffline(deviceId: string): void {
    if (this.deps.store.getDevice(deviceId)) this.deps.store.markOffline(deviceId);
  }

  private async onDevicePublish(client: Client, packet: AedesPublishPacket): Promise<void> {
    const { log, store, now } = this.deps;
    const t = parseDeviceTopic(packet.topic);
    if (!t || t.deviceId !== client.id) return; // the authorizer already refused these
    const payload = packet.payload as Buffer;
    try {
      switch (t.kind) {
        case DeviceTopic.status: {
          const r = this.status.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          // ---- tls branch (issue 12, finding 3): a report counts only if the device's own key signed it.
          const signer = store.getDevice(client.id)?.publicKey;
          if (!signer || !verifyStatusReport(r.value, signer)) return this.refuse(client.id, 'STATUS_SIGNATURE_INVALID', r.value.signature ? 'status report signature does not verify with this device\'s enrolled key' : 'status report is not signed by the device', packet.topic);
          // ----
          const why = this.rollouts?.onStatus(client.id, r.value);
          if (why) this.notice(client.id, 'STATUS_REFUSED', why, packet.topic);
          store.markSeen(client.id, now().toISOString());
          return;
        }
        case DeviceTopic.heartbeat: {
          const r = this.heartbeat.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          store.recordHeartbeat(client.id, r.value, now().toISOString());
          return;
        }
        case DeviceTopic.presence: {
          const r = this.presence.parse(payload);
          if (!r.ok) return this.refuse(client.id, r.code, r.reason, packet.topic);
          if (r.value.online) store.markSeen(client.id, now().toISOString());
          else store.markOffline(client.id);
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
