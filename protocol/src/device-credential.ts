import { signBytes, verifyBytes } from './signing.js';

/**
 * A device proves who it is with its own ed25519 key: the credential is a timestamp and a
 * signature over "edgepack-device-auth|<channel>|<deviceId>|<timestamp>". It is the MQTT
 * password and the HTTP credential for bundle downloads. No shared secret is ever stored on
 * the orchestrator, so a stolen database leaks nothing that lets anyone impersonate a device.
 *
 * The channel is signed so a credential seen on one channel cannot be replayed on the other,
 * and the window is short and mostly backwards: a clock a little fast is tolerated, a
 * credential minted for the future is not. Replay within the window on the same channel is
 * possible without TLS; see the README's security notes.
 */
export type CredentialChannel = 'mqtt' | 'http';
export const CREDENTIAL_MAX_AGE_MS = 5 * 60 * 1000;
export const CREDENTIAL_MAX_FUTURE_MS = 60 * 1000;

function payload(channel: CredentialChannel, deviceId: string, timestampMs: number): Uint8Array {
  return new TextEncoder().encode(`edgepack-device-auth|${channel}|${deviceId}|${timestampMs}`);
}

export function createDeviceCredential(deviceId: string, secretKey: string, now: Date, channel: CredentialChannel = 'mqtt'): string {
  const ts = now.getTime();
  return `${ts}.${signBytes(payload(channel, deviceId, ts), secretKey)}`;
}

/** `issuedAtMs` is the credential's own timestamp: the broker ends a session a set time after it (see the session policy). */
export type CredentialCheck = { ok: true; issuedAtMs: number } | { ok: false; code: 'CREDENTIAL_MALFORMED' | 'CREDENTIAL_STALE' | 'CREDENTIAL_INVALID'; reason: string };

export function checkDeviceCredential(deviceId: string, credential: string, publicKey: string, now: Date, channel: CredentialChannel = 'mqtt'): CredentialCheck {
  const dot = credential.indexOf('.');
  const ts = Number(credential.slice(0, dot));
  if (dot <= 0 || !Number.isSafeInteger(ts)) return { ok: false, code: 'CREDENTIAL_MALFORMED', reason: 'credential is not <timestamp>.<signature>' };
  const age = now.getTime() - ts;
  if (age > CREDENTIAL_MAX_AGE_MS || -age > CREDENTIAL_MAX_FUTURE_MS) {
    return { ok: false, code: 'CREDENTIAL_STALE', reason: `credential timestamp is ${Math.round(age / 1000)}s from the server clock (allowed: ${CREDENTIAL_MAX_AGE_MS / 1000}s old, ${CREDENTIAL_MAX_FUTURE_MS / 1000}s ahead)` };
  }
  if (!verifyBytes(payload(channel, deviceId, ts), credential.slice(dot + 1), publicKey)) return { ok: false, code: 'CREDENTIAL_INVALID', reason: 'credential signature does not verify' };
  return { ok: true, issuedAtMs: ts };
}
