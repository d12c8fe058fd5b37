import { Duplex } from 'node:stream';
import type { Socket } from 'node:net';

/**
 * Follows MQTT framing (fixed header byte, then the Remaining Length varint of MQTT 3.1.1
 * §2.2.3, then that many bytes) and refuses a packet larger than `maxPacketBytes` as soon as
 * its length is known. Aedes has no packet-size limit of its own, and would buffer a 200 MB
 * CONNECT from an unauthenticated client.
 */
export class PacketSizeGuard {
  private state: 'header' | 'length' | 'body' = 'header';
  private value = 0;
  private multiplier = 1;
  private lengthBytes = 0;
  private remaining = 0;

  constructor(readonly maxPacketBytes: number) {}

  /** Consumes bytes; returns null while the stream is acceptable, or why it is refused. */
  feed(chunk: Uint8Array): string | null {
    let i = 0;
    while (i < chunk.length) {
      if (this.state === 'header') {
        i++;
        this.state = 'length';
        this.value = 0;
        this.multiplier = 1;
        this.lengthBytes = 0;
      } else if (this.state === 'length') {
        const b = chunk[i++]!;
        this.value += (b & 0x7f) * this.multiplier;
        this.multiplier *= 128;
        this.lengthBytes++;
        // §2.2.3: at most four length bytes.
        if (this.lengthBytes > 4 || (this.lengthBytes === 4 && b & 0x80)) return 'malformed Remaining Length';
        if (b & 0x80) continue;
        if (this.value > this.maxPacketBytes) return `packet of ${this.value} bytes is over the ${this.maxPacketBytes}-byte limit`;
        this.remaining = this.value;
        this.state = this.remaining === 0 ? 'header' : 'body';
      } else {
        const take = Math.min(this.remaining, chunk.length - i);
        i += take;
        this.remaining -= take;
        if (this.remaining === 0) this.state = 'header';
      }
    }
    return null;
  }
}

/**
 * The socket as Aedes sees it: every inbound byte passes a PacketSizeGuard first, and outbound
 * writes never make Aedes wait for this one client.
 *
 * Why the second half: Aedes delivers a message to each subscriber and waits for that client's
 * socket to drain before it calls the delivery done; while it waits, the delivery holds one of
 * the broker's shared delivery slots (mqemitter's concurrency). A client that stops reading its
 * socket therefore held slots until they ran out, and then nobody's messages moved: heartbeats,
 * notices, desired states for every device (finding 1 of the security issue). Here a write is
 * handed to the socket and acknowledged at once; the bytes wait in this client's own queue,
 * which is capped: a client whose queue grows past `maxQueuedBytes` is not reading, and is
 * disconnected. What must not pile up to the cap (bundle chunks) is paced by the sender
 * (chunk-sender.ts), which watches `queuedBytes` and the 'queue-drained' event.
 */
export class GuardedConnection extends Duplex {
  private readonly guard: PacketSizeGuard;

  constructor(
    private readonly socket: Socket,
    private readonly o: { maxPacketBytes: number; maxQueuedBytes: number; onRefused: (reason: string) => void },
  ) {
    // A large own buffer, so that Duplex itself never reports back-pressure to Aedes either.
    super({ writableHighWaterMark: o.maxQueuedBytes });
    this.guard = new PacketSizeGuard(o.maxPacketBytes);
    socket.on('data', (chunk: Buffer) => {
      const refused = this.guard.feed(chunk);
      if (refused) return this.refuse(refused);
      if (!this.push(chunk)) socket.pause();
    });
    socket.on('end', () => this.push(null));
    socket.on('close', () => { if (!this.destroyed) this.destroy(); });
    socket.on('error', (err) => this.destroy(err));
    socket.on('drain', () => this.emit('queue-drained'));
  }

  /** Bytes written to this client that the kernel has not taken yet. */
  get queuedBytes(): number {
    return this.socket.writableLength;
  }

  get remoteAddress(): string | undefined {
    return this.socket.remoteAddress;
  }

  override _read(): void {
    this.socket.resume();
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) return cb(new Error('connection closed'));
    this.socket.write(chunk);
    if (this.socket.writableLength > this.o.maxQueuedBytes) {
      this.refuse(`${this.socket.writableLength} bytes queued to a client that does not read, over the ${this.o.maxQueuedBytes}-byte limit`);
      return cb(new Error('client queue full'));
    }
    cb();
  }

  /**
   * mqtt-packet corks the stream and writes a packet as several small buffers (header, length,
   * topic, payload); corked, they arrive here together and go to the corked socket, which hands
   * them to the kernel as one writev, without copying a payload. Without this, every piece was a
   * socket write of its own: the largest cost of a reconnect storm.
   */
  override _writev(chunks: { chunk: Buffer; encoding: BufferEncoding }[], cb: (err?: Error | null) => void): void {
    if (this.socket.destroyed) return cb(new Error('connection closed'));
    this.socket.cork();
    for (const c of chunks) this.socket.write(c.chunk);
    this.socket.uncork();
    if (this.socket.writableLength > this.o.maxQueuedBytes) {
      this.refuse(`${this.socket.writableLength} bytes queued to a client that does not read, over the ${this.o.maxQueuedBytes}-byte limit`);
      return cb(new Error('client queue full'));
    }
    cb();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.socket.end();
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    this.socket.destroy(err ?? undefined);
    cb(err);
  }

  private refuse(reason: string): void {
    this.o.onRefused(reason);
    this.socket.destroy();
    this.destroy();
  }
}
