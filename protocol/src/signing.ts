import nacl from 'tweetnacl';
import { canonicalBytes } from './canonical-json.js';

/** ed25519 keys and signatures travel as base64 strings. */
export interface KeyPair {
  publicKey: string;
  secretKey: string;
}

export function generateKeyPair(): KeyPair {
  const kp = nacl.sign.keyPair();
  return { publicKey: toBase64(kp.publicKey), secretKey: toBase64(kp.secretKey) };
}

export function signBytes(bytes: Uint8Array, secretKey: string): string {
  return toBase64(nacl.sign.detached(bytes, fromBase64(secretKey, nacl.sign.secretKeyLength)));
}

/** Never throws: a malformed key or signature simply does not verify. */
export function verifyBytes(bytes: Uint8Array, signature: string, publicKey: string): boolean {
  try {
    const sig = fromBase64(signature, nacl.sign.signatureLength);
    const key = fromBase64(publicKey, nacl.sign.publicKeyLength);
    return nacl.sign.detached.verify(bytes, sig, key);
  } catch {
    return false;
  }
}

export function signCanonical(value: unknown, secretKey: string): string {
  return signBytes(canonicalBytes(value), secretKey);
}

export function verifyCanonical(value: unknown, signature: string, publicKey: string): boolean {
  let bytes: Uint8Array;
  try {
    bytes = canonicalBytes(value);
  } catch {
    return false;
  }
  return verifyBytes(bytes, signature, publicKey);
}

/** Short, stable name for a public key, used in logs and the manifest's `keyId`. */
export function keyId(publicKey: string): string {
  const digest = nacl.hash(Buffer.from(publicKey, 'base64'));
  return Buffer.from(digest.subarray(0, 8)).toString('hex');
}

function toBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes).toString('base64');
}

function fromBase64(text: string, expectedLength: number): Uint8Array {
  const bytes = new Uint8Array(Buffer.from(text, 'base64'));
  if (bytes.length !== expectedLength) throw new Error(`expected ${expectedLength} bytes, got ${bytes.length}`);
  return bytes;
}
