// ed25519 through node:crypto, checked against tweetnacl as the oracle: the same keys, the
// same signatures (ed25519 is deterministic, RFC 8032 §5.1.6), in both directions.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import nacl from 'tweetnacl';
import { PublicKeyCache, generateKeyPair, keyId, signBytes, verifyBytes } from '@edgepack/protocol';

const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const message = (n: number) => new TextEncoder().encode(`edgepack test message ${n}`);

test('a node:crypto key pair is a valid tweetnacl key pair, and signatures match byte for byte', () => {
  for (let i = 0; i < 20; i++) {
    const kp = generateKeyPair();
    const secret = Buffer.from(kp.secretKey, 'base64');
    assert.equal(secret.length, 64);
    assert.deepEqual(b64(nacl.sign.keyPair.fromSecretKey(secret).publicKey), kp.publicKey);
    const sig = signBytes(message(i), kp.secretKey);
    assert.equal(sig, b64(nacl.sign.detached(message(i), secret)));
    assert.ok(nacl.sign.detached.verify(message(i), Buffer.from(sig, 'base64'), Buffer.from(kp.publicKey, 'base64')));
  }
});

test('keys and signatures made by tweetnacl verify through node:crypto; any change refuses', () => {
  const kp = nacl.sign.keyPair();
  const pub = b64(kp.publicKey);
  const sig = nacl.sign.detached(message(1), kp.secretKey);
  assert.equal(verifyBytes(message(1), b64(sig), pub), true);
  assert.equal(verifyBytes(message(2), b64(sig), pub), false, 'another message');
  const flipped = Uint8Array.from(sig);
  flipped[10]! ^= 1;
  assert.equal(verifyBytes(message(1), b64(flipped), pub), false, 'a flipped signature bit');
  assert.equal(verifyBytes(message(1), b64(sig), b64(nacl.sign.keyPair().publicKey)), false, 'another key');
});

test('malformed keys and signatures do not verify and do not throw', () => {
  const kp = generateKeyPair();
  const sig = signBytes(message(1), kp.secretKey);
  for (const [s, k] of [['', kp.publicKey], [sig, ''], ['not base64 !!', kp.publicKey], [sig.slice(0, 20), kp.publicKey], [sig, kp.publicKey.slice(0, 20)], [sig, b64(new Uint8Array(32))]]) {
    assert.equal(verifyBytes(message(1), s!, k!), false);
  }
  assert.throws(() => signBytes(message(1), 'short'));
});

test('keyId is the first 8 bytes of the public key\'s SHA-512, as before', () => {
  const kp = nacl.sign.keyPair();
  assert.equal(keyId(b64(kp.publicKey)), Buffer.from(nacl.hash(kp.publicKey).subarray(0, 8)).toString('hex'));
});

test('a PublicKeyCache gives the same answers as loading each key, and stays within its bound', () => {
  const cache = new PublicKeyCache(2);
  const keys = [generateKeyPair(), generateKeyPair(), generateKeyPair()];
  const msg = new TextEncoder().encode('status');
  for (let round = 0; round < 2; round++) {
    for (const [i, k] of keys.entries()) {
      const sig = signBytes(msg, k.secretKey);
      assert.equal(verifyBytes(msg, sig, k.publicKey, cache), true);
      // Another key's signature never verifies, cached or not.
      assert.equal(verifyBytes(msg, sig, keys[(i + 1) % keys.length]!.publicKey, cache), false);
      assert.equal(verifyBytes(msg, sig, 'not a key', cache), false);
    }
  }
  assert.ok((cache as unknown as { keys: Map<string, unknown> }).keys.size <= 2);
});
