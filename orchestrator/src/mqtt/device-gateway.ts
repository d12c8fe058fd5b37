import {
  CHUNK_SIZE, ChunkRequestSchema, DeviceTopic, HeartbeatSchema, PROTOCOL_VERSION, PresenceSchema, StatusReportSchema, Validator,
  deviceTopic, encodeChunkFrame, errorMessage, parseDeviceTopic, type ErrorCode, type Heartbeat, type Notice, type StatusReport,
} from '@edgepack/protocol';
import type { Aedes, AedesPublishPacket, Client } from 'aedes';
import type { BlobStore } from '../blob-store.js';
import type { Store } from '../db/store.js';
import type { Logger } from '../logger.js';
import type { DesiredPublisher } from '../services/desired-states.js';
import { ChunkFrameCache } from './chunk-frame-cache.js';

const MAX_CHUNK_REQUESTS_SERVED = 32;

/** At most `limit` holders at once; the rest wait in order. */
class Semaphore {
  private free: number;
  private readonly waiting: (() => void)[] = [];
  constructor(limit: number) { this.free = limit; }
  acquire(): Promise<() => void> {
    const release = () => {
      const next = this.waiting.shift();
      if (next) next();
      else this.free++;
    };
    if (this.free > 0) {
      this.free--;
      return Promise.resolve(release);
    }
    return new Promise((resolve) => this.waiting.push(() => resolve(release)));
  }
}

/** What the gateway hands on of what devices say (services/rollouts.ts RolloutService). */
export interface DeviceEvents {
  /** Returns why the report was refused, if it was. */
  onStatus(deviceId: string, report: StatusReport): string | null;
  onHeartbeat(deviceId: string, hb: Heartbeat): void;
  onPresence(deviceId: string, online: boolean): void;
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
  events?: DeviceEvents;
  readonly frames = new ChunkFrameCache();
  /**
   * Chunk requests served at once. A wave of 1,000 devices asks for its chunks together; served
   * all at once, their tens of thousands of frames fill every turn of the event loop, and an API
   * request waits behind them. Served a few dozen at a time, the same bytes go out as fast (the
   * sockets are the limit) and a turn stays short.
   */
  private readonly serving = new Semaphore(MAX_CHUNK_REQUESTS_SERVED);

  constructor(private readonly deps: { aedes: Aedes; store: Store; blobs: BlobStore; log: Logger; now: () => Date }) {
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
          const why = this.events?.onStatus(client.id, r.value);
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
          const release = await this.serving.acquire();
          try {
            await this.serveChunks(client.id, r.value.bundleId, r.value.sha256, r.value.index, r.value.count);
          } catch (err) {
            log.error({ deviceId: client.id, bundleId: r.value.bundleId, err }, 'serving chunks failed');
            this.notice(client.id, 'INTERNAL_ERROR', `could not read bundle ${r.value.bundleId}: ${errorMessage(err)}`, packet.topic, r.value.bundleId);
          } finally {
            release();
          }
          return;
        }
        default:
          return;
      }
    } catch (err) {
      log.error({ deviceId: client.id, topic: packet.topic, err }, 'device message handler failed');
      this.notice(client.id, 'INTERNAL_ERROR', `could not handle message: ${errorMessage(err)}`, packet.topic);
    }
  }

  private refuse(deviceId: string, code: ErrorCode, reason: string, topic: string): void {
    this.deps.log.warn({ deviceId, topic, code }, `invalid device message: ${reason}`);
    this.notice(deviceId, code, reason, topic);
  }

  /** Sends chunks only of bundles this device was told to install, and only their listed files. */
  private async serveChunks(deviceId: string, bundleId: string, sha256: string, index: number, count: number): Promise<void> {
    const { store, blobs } = this.deps;
    const bundle = store.getBundle(bundleId);
    if (!bundle || !store.isBundleAssigned(deviceId, bundleId)) return this.notice(deviceId, 'BUNDLE_NOT_ASSIGNED', `bundle ${bundleId} is not assigned to this device`, undefined, bundleId);
    const file = bundle.manifest.files.find((f) => f.sha256 === sha256);
    if (!file) return this.notice(deviceId, 'FILE_NOT_IN_BUNDLE', `file ${sha256} is not part of bundle ${bundleId}`, undefined, bundleId);
    const total = Math.max(1, Math.ceil(file.length / CHUNK_SIZE));
    if (index >= total) return this.notice(deviceId, 'CHUNK_OUT_OF_RANGE', `chunk ${index} is past the last chunk ${total - 1} of ${sha256}`, undefined, bundleId);
    const topic = deviceTopic(deviceId, DeviceTopic.chunk);
    for (let i = index; i < Math.min(total, index + count); i++) {
      const frame = await this.frames.get(`${bundleId}/${sha256}/${i}`, async () => {
        const bytes = await blobs.readRange(sha256, i * CHUNK_SIZE, Math.min(CHUNK_SIZE, file.length - i * CHUNK_SIZE));
        return encodeChunkFrame({ bundleId, sha256, index: i, fileLength: file.length, bytes });
      });
      await this.publish(topic, frame, false);
    }
  }
}
