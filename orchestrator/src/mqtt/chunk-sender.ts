import { CHUNK_SIZE, DeviceTopic, deviceTopic, encodeChunkFrame } from '@edgepack/protocol';
import type { Aedes, AedesPublishPacket, Client } from 'aedes';
import type { BlobStore } from '../blob-store.js';
import type { MqttLimits } from '../limits.js';
import type { Logger } from '../logger.js';
import type { ChunkFrameCache } from './chunk-frame-cache.js';
import { GuardedConnection } from './packet-size-guard.js';

interface Wanted {
  bundleId: string;
  sha256: string;
  fileLength: number;
  index: number;
}

/** One device's chunk queue: what it asked for and has not been sent, and what it has not acknowledged. */
interface DeviceQueue {
  client: Client;
  pending: Wanted[];
  keys: Set<string>;
  unacked: number;
  /** When the queue last moved (a chunk sent, acknowledged or drained); a queue stuck longer than queueStallMs is cut. */
  lastProgress: number;
  running: boolean;
  wake?: () => void;
}

export type Enqueued = { ok: true; queued: number } | { ok: false; queued: number };

/**
 * Sends bundle chunks to devices, each device from its own queue, paced by that device alone:
 * - at most `maxChunksQueued` chunks wait per device; a request beyond that is refused (the
 *   gateway answers it with a CHUNK_REQUESTS_LIMITED notice) rather than queued without end;
 * - at most `maxChunksInflight` chunks are sent and not yet acknowledged (QoS 1 PUBACK), and
 *   none is sent while the device's socket queue (GuardedConnection.queuedBytes) holds more
 *   than a window's worth;
 * - a device whose queue makes no progress for `queueStallMs` is disconnected: it is not
 *   reading, and what it asked for is dropped (the agent asks again when it reconnects).
 * No device's queue is ever awaited by anything shared: the broker's delivery path, other
 * devices' messages and the API go on while one device stalls (finding 1 of the security issue).
 */
export class ChunkSender {
  private readonly queues = new Map<string, DeviceQueue>();

  constructor(private readonly deps: {
    aedes: Aedes; blobs: BlobStore; log: Logger; now: () => Date; limits: MqttLimits;
    /** Frames are read and encoded once for every device that asks (chunk-frame-cache.ts). */
    frames: ChunkFrameCache;
    /** A chunk could not be read (a missing blob, say): the device's queue is dropped and the gateway tells it. */
    onError: (deviceId: string, bundleId: string, err: unknown) => void;
  }) {
    // PUBACK of a chunk (§3.4): one fewer in flight for that device.
    deps.aedes.on('ack', (packet, client) => {
      const q = client && this.queues.get(client.id);
      if (!q || q.client !== client || !packet || (packet as AedesPublishPacket).topic !== deviceTopic(client.id, DeviceTopic.chunk)) return;
      q.unacked = Math.max(0, q.unacked - 1);
      this.progress(q);
    });
    deps.aedes.on('clientDisconnect', (client) => {
      const q = this.queues.get(client.id);
      if (q?.client === client) this.drop(client.id, q);
    });
  }

  /** Queues chunks [from, to) of one file for `client`; refuses all of them when the device's queue would overflow. */
  enqueue(client: Client, file: { bundleId: string; sha256: string; fileLength: number }, from: number, to: number): Enqueued {
    let q = this.queues.get(client.id);
    if (!q || q.client !== client) {
      if (q) this.drop(client.id, q);
      q = { client, pending: [], keys: new Set(), unacked: 0, lastProgress: this.deps.now().getTime(), running: false };
      this.queues.set(client.id, q);
    }
    const fresh: Wanted[] = [];
    for (let index = from; index < to; index++) {
      const key = `${file.bundleId}/${file.sha256}/${index}`;
      if (!q.keys.has(key)) fresh.push({ ...file, index });
    }
    if (q.pending.length + fresh.length > this.deps.limits.maxChunksQueued) return { ok: false, queued: q.pending.length };
    for (const w of fresh) {
      q.pending.push(w);
      q.keys.add(`${w.bundleId}/${w.sha256}/${w.index}`);
    }
    if (!q.running) void this.run(client.id, q);
    return { ok: true, queued: q.pending.length };
  }

  /** Chunks waiting for a device (for tests and figures). */
  queued(deviceId: string): number {
    return this.queues.get(deviceId)?.pending.length ?? 0;
  }

  private progress(q: DeviceQueue): void {
    q.lastProgress = this.deps.now().getTime();
    q.wake?.();
  }

  private drop(deviceId: string, q: DeviceQueue): void {
    q.pending = [];
    q.keys.clear();
    q.wake?.();
    if (this.queues.get(deviceId) === q) this.queues.delete(deviceId);
  }

  private connection(q: DeviceQueue): GuardedConnection | undefined {
    const conn = (q.client as unknown as { conn?: unknown }).conn;
    return conn instanceof GuardedConnection ? conn : undefined;
  }

  /** Whether the device can take another chunk now, given what is in flight and queued on its socket. */
  private ready(q: DeviceQueue, acked: boolean): boolean {
    const { maxChunksInflight } = this.deps.limits;
    const queuedBytes = this.connection(q)?.queuedBytes ?? 0;
    if (queuedBytes > maxChunksInflight * CHUNK_SIZE) return false;
    return !acked || q.unacked < maxChunksInflight;
  }

  /** Waits for an acknowledgement, a drained socket or the stall deadline, whichever comes first. */
  private waitForProgress(q: DeviceQueue): Promise<void> {
    return new Promise((resolve) => {
      const conn = this.connection(q);
      const done = () => {
        clearTimeout(timer);
        conn?.off('queue-drained', onDrain);
        q.wake = undefined;
        resolve();
      };
      const onDrain = () => { q.lastProgress = this.deps.now().getTime(); done(); };
      const left = Math.max(1, q.lastProgress + this.deps.limits.queueStallMs - this.deps.now().getTime());
      const timer = setTimeout(done, left);
      conn?.once('queue-drained', onDrain);
      q.wake = done;
    });
  }

  private async run(deviceId: string, q: DeviceQueue): Promise<void> {
    const { aedes, blobs, log, limits } = this.deps;
    q.running = true;
    let current: Wanted | undefined;
    const topic = deviceTopic(deviceId, DeviceTopic.chunk);
    try {
      while (q.pending.length > 0) {
        const client = q.client;
        if (client.closed || (aedes as unknown as { clients: Record<string, Client> }).clients[deviceId] !== client) return this.drop(deviceId, q);
        // QoS 1 subscriptions acknowledge each chunk; a QoS 0 one is paced by its socket alone.
        const subs = (client as unknown as { subscriptions: Record<string, { qos: number } | undefined> }).subscriptions;
        const acked = (subs[topic]?.qos ?? 0) > 0;
        if (!this.ready(q, acked)) {
          if (this.deps.now().getTime() - q.lastProgress >= limits.queueStallMs) {
            log.warn({ deviceId, queued: q.pending.length, unacked: q.unacked, queuedBytes: this.connection(q)?.queuedBytes ?? null, stallMs: limits.queueStallMs },
              'device disconnected: its queue stayed full (it does not read what it asked for)');
            this.drop(deviceId, q);
            client.close();
            return;
          }
          await this.waitForProgress(q);
          continue;
        }
        const w = q.pending.shift()!;
        current = w;
        q.keys.delete(`${w.bundleId}/${w.sha256}/${w.index}`);
        const frame = await this.deps.frames.get(`${w.bundleId}/${w.sha256}/${w.index}`, async () => {
          const bytes = await blobs.readRange(w.sha256, w.index * CHUNK_SIZE, Math.min(CHUNK_SIZE, w.fileLength - w.index * CHUNK_SIZE));
          return encodeChunkFrame({ bundleId: w.bundleId, sha256: w.sha256, index: w.index, fileLength: w.fileLength, bytes });
        });
        if (acked) q.unacked++;
        this.progress(q);
        await new Promise<void>((resolve) => {
          aedes.publish({ cmd: 'publish', topic, payload: frame, qos: 1, retain: false, dup: false }, () => resolve());
        });
      }
    } catch (err) {
      this.drop(deviceId, q);
      this.deps.onError(deviceId, current?.bundleId ?? '', err);
    } finally {
      q.running = false;
    }
  }

}
