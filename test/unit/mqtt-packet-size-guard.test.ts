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
