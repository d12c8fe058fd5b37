import { seedFromString } from './seeded-random.js';

/**
 * How long an MQTT session may live. A device signs a fresh credential for every connection;
 * the broker checks it once, at CONNECT. Without a limit a session opened with a credential (a
 * replayed one, or one of a device since compromised) would last as long as the socket. So a
 * session ends `maxAgeMs` after its credential was signed, and the device reconnects with a new
 * one, proving again that it holds its key.
 *
 * Up to a tenth earlier, by a jitter drawn from the device id and the credential time: devices
 * that all connected at once (after a restart) are not all cut off at the same instant again.
 * Pure: the same inputs give the same deadline.
 */
export function sessionDeadline(credentialIssuedAtMs: number, maxAgeMs: number, deviceId: string): number {
  const jitter = maxAgeMs >= 10 ? (seedFromString(`${deviceId}|${credentialIssuedAtMs}`) % Math.floor(maxAgeMs / 10)) : 0;
  return credentialIssuedAtMs + maxAgeMs - jitter;
}

/** How often the broker looks for sessions past their deadline: a few times per max age, at most every 30 s. */
export function sessionSweepEveryMs(maxAgeMs: number): number {
  return Math.max(250, Math.min(30_000, Math.floor(maxAgeMs / 4)));
}
