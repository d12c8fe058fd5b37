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
 * Guards a socket in place: every chunk Aedes reads from it (Aedes reads with `read()` on
 * 'readable', MQTT 3.1.1 packets in whatever pieces TCP delivers) goes through a
 * PacketSizeGuard first, and a refused stream is destroyed before Aedes sees the chunk.
 *
 * In place rather than as a stream wrapped around the socket: a wrapper costs a Duplex (two
 * stream states) per connection and a hop for every write, which a reconnect storm of 1,000
 * devices paid a thousand times over, and it kept Aedes' corked packets from reaching the socket
 * as one writev.
 */
export function guardSocket(socket: Socket, maxPacketBytes: number, onRefused: (reason: string) => void): Socket {
  const guard = new PacketSizeGuard(maxPacketBytes);
  const read = socket.read;
  socket.read = function guardedRead(this: Socket, size?: number) {
    const chunk: unknown = read.call(this, size);
    if (chunk instanceof Uint8Array) {
      const refused = guard.feed(chunk);
      if (refused) {
        onRefused(refused);
        socket.destroy();
        return null;
      }
    }
    return chunk;
  };
  return socket;
}
