import { test } from 'node:test';
import assert from 'node:assert/strict';
import { PacketSizeGuard } from '@edgepack/orchestrator/mqtt/packet-size-guard.js';

/** MQTT Remaining Length encoding (3.1.1 §2.2.3). */
function varint(n: number): number[] {
  const out: number[] = [];
  do {
    let b = n % 128;
    n = Math.floor(n / 128);
    if (n > 0) b |= 0x80;
    out.push(b);
  } while (n > 0);
  return out;
}

function packet(type: number, bodyLength: number): Uint8Array {
  return Uint8Array.from([type, ...varint(bodyLength), ...new Array(bodyLength).fill(7)]);
}

test('packets within the limit pass, whole or split at every byte boundary', () => {
  const stream = Uint8Array.from([...packet(0x10, 30), ...packet(0x30, 200), ...packet(0xc0, 0), ...packet(0x30, 1000)]);
  const whole = new PacketSizeGuard(1000);
  assert.equal(whole.feed(stream), null);
  for (let cut = 1; cut < stream.length; cut += 7) {
    const g = new PacketSizeGuard(1000);
    assert.equal(g.feed(stream.subarray(0, cut)), null);
    assert.equal(g.feed(stream.subarray(cut)), null);
  }
});

test('a packet announcing more than the limit is refused as soon as its length is read', () => {
  const g = new PacketSizeGuard(1000);
  assert.equal(g.feed(Uint8Array.from(packet(0x30, 10))), null);
  // Only the header of a 200 MB CONNECT: refused before any body arrives.
  const reason = g.feed(Uint8Array.from([0x10, ...varint(200 * 1024 * 1024)]));
  assert.match(reason ?? '', /209715200 bytes is over the 1000-byte limit/);
});

test('a Remaining Length longer than four bytes is malformed', () => {
  const g = new PacketSizeGuard(1 << 30);
  assert.match(g.feed(Uint8Array.from([0x30, 0xff, 0xff, 0xff, 0xff, 0x01])) ?? '', /malformed/);
});

test('GuardedConnection on a real socket: what a reader reads passes through untouched; a packet over the limit destroys the socket at its header', async () => {
  const { createServer, connect } = await import('node:net');
  const { GuardedConnection } = await import('@edgepack/orchestrator/mqtt/packet-size-guard.js');
  const refused: string[] = [];
  const got: Buffer[] = [];
  const closed: Promise<void>[] = [];
  const server = createServer((socket) => {
    const s = new GuardedConnection(socket, { maxPacketBytes: 1024, maxQueuedBytes: 1 << 20, onRefused: (why: string) => refused.push(why) });
    closed.push(new Promise((resolve) => s.on('close', () => resolve())));
    // The way Aedes reads: read() on 'readable'.
    s.on('readable', () => { for (let b = s.read() as Buffer | null; b; b = s.read() as Buffer | null) got.push(b); });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as { port: number }).port;
  try {
    const send = (bytes: number[]) => new Promise<void>((resolve) => {
      const c = connect(port, '127.0.0.1', () => c.end(Buffer.from(bytes)));
      c.on('close', () => resolve());
      c.on('error', () => resolve());
    });
    // PINGREQ then a small PUBLISH: both whole.
    await send([0xc0, 0x00, 0x30, 0x03, 0x00, 0x01, 0x61]);
    await closed[0];
    assert.deepEqual([...Buffer.concat(got)], [0xc0, 0x00, 0x30, 0x03, 0x00, 0x01, 0x61]);
    assert.deepEqual(refused, []);
    got.length = 0;
    // A CONNECT announcing 200 MB: refused from its first four bytes, nothing handed on.
    await send([0x10, 0x80, 0x80, 0x80, 0x64, 0x00, 0x04]);
    await closed[1];
    assert.equal(refused.length, 1);
    assert.match(refused[0]!, /209715200 bytes is over the 1024-byte limit/);
    assert.equal(got.length, 0);
  } finally {
    server.close();
  }
});
