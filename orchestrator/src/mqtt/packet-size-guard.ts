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

/** The socket as Aedes sees it, with every inbound byte passed through a PacketSizeGuard first. */
export function guardSocket(socket: Socket, maxPacketBytes: number, onRefused: (reason: string) => void): Duplex {
  const guard = new PacketSizeGuard(maxPacketBytes);
  const stream = new Duplex({
    read() { socket.resume(); },
    write(chunk: Buffer, _enc, cb) { socket.write(chunk, cb); },
    // mqtt-packet corks the stream around each packet it writes in pieces (header, topic,
    // payload) and Aedes around batches of packets: hand the batch to the socket corked too, so it
    // leaves in one writev system call instead of one write per piece.
    writev(chunks: { chunk: Buffer }[], cb) {
      socket.cork();
      for (let i = 0; i < chunks.length - 1; i++) socket.write(chunks[i]!.chunk);
      socket.write(chunks[chunks.length - 1]!.chunk, cb);
      socket.uncork();
    },
    final(cb) { socket.end(); cb(); },
    destroy(err, cb) { socket.destroy(err ?? undefined); cb(err); },
  });
  socket.on('data', (chunk: Buffer) => {
    const refused = guard.feed(chunk);
    if (refused) {
      onRefused(refused);
      socket.destroy();
      stream.destroy();
      return;
    }
    if (!stream.push(chunk)) socket.pause();
  });
  socket.on('end', () => stream.push(null));
  socket.on('close', () => { if (!stream.destroyed) stream.destroy(); });
  socket.on('error', (err) => stream.destroy(err));
  socket.on('drain', () => stream.emit('drain'));
  return stream;
}
