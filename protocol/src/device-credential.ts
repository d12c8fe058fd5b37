import { signBytes, verifyBytes } from './signing.js';

/**
 * A device proves who it is with its own ed25519 key: the credential is a timestamp and a
 * signature over "edgepack-device-auth|<deviceId>|<timestamp>". It is used as the MQTT
 * password and as the HTTP bearer for bundle downloads. No shared secret is ever stored on
 * the orchestrator, and a stolen database leaks nothing that lets anyone impersonate a device.
 */
export const CREDENTIAL_MAX_SKEW_MS = 10 * 60 * 1000;

function payload(deviceId: string, timestampMs: number): Uint8Array {
  return new TextEncoder().encode(`edgepack-device-auth|${deviceId}|${timestampMs}`);
}

export function createDeviceCredential(deviceId: string, secretKey: string, now: Date): string {
  const ts = now.getTime();
  return `${ts}.${signBytes(payload(deviceId, ts), secretKey)}`;
}

export type CredentialCheck = { ok: true } | { ok: false; code: 'CREDENTIAL_MALFORMED' | 'CREDENTIAL_STALE' | 'CREDENTIAL_INVALID'; reason: string };

export function checkDeviceCredential(deviceId: string, credential: string, publicKey: string, now: Date, maxSkewMs = CREDENTIAL_MAX_SKEW_MS): CredentialCheck {
  const dot = credential.indexOf('.');
  const ts = Number(credential.slice(0, dot));
  if (dot <= 0 || !Number.isSafeInteger(ts)) return { ok: false, code: 'CREDENTIAL_MALFORMED', reason: 'credential is not <timestamp>.<signature>' };
  if (Math.abs(now.getTime() - ts) > maxSkewMs) return { ok: false, code: 'CREDENTIAL_STALE', reason: `credential timestamp is more than ${maxSkewMs / 1000}s from the server clock` };
  if (!verifyBytes(payload(deviceId, ts), credential.slice(dot + 1), publicKey)) return { ok: false, code: 'CREDENTIAL_INVALID', reason: 'credential signature does not verify' };
  return { ok: true };
}
