/**
 * Fleet use cases: enrollment tokens, enrollment, device changes and revocation. Callable by the
 * HTTP API and later a dashboard; route handlers only translate HTTP.
 */
import type { Profile } from '@edgepack/firmware-profiles';
import { EdgepackError, PROTOCOL_VERSION, parseEnrollmentToken, type EnrollRequest, type EnrollResponse } from '@edgepack/protocol';
import { matchProfile } from '../core/profile-match.js';
import type { Page, PageQuery, Store } from '../db/store.js';
import { createEnrollmentToken, hashEnrollmentToken } from '../enrollment-tokens.js';
import { newId } from '../ids.js';
import type { DeviceRecord } from '../records.js';

/** What a revocation does beyond the database: the device's live session and retained desired state go. */
export interface DeviceSessions {
  clearDesired(deviceId: string): Promise<void>;
  disconnect(deviceId: string): void;
}

/** Rollouts hear of fleet changes (late joiners, revocations). */
export interface FleetListener {
  onDeviceChanged(deviceId: string): void;
  onDeviceRevoked(deviceId: string): void;
}

export class DeviceService {
  constructor(private readonly deps: {
    store: Store; profiles: readonly Profile[]; now: () => Date;
    config: { enrollmentTokenTtlSec: number; heartbeatSec: number; publicHost: string };
    signingPublicKey: string; mqttPort: () => number;
    listener?: FleetListener; sessions?: DeviceSessions;
    /** The root a device pins at enrollment (trust-chain.ts); absent where devices do not enroll through the chain. */
    trustedRoot?: () => unknown;
    /**
     * TLS facts enrollment hands out: the CA devices pin, and the plain MQTT port for devices
     * enrolling over plain HTTP (--allow-plaintext; null without it). Absent in tests that build
     * the app without TLS: enrollment then answers plain `mqtt` on `mqttPort`.
     */
    tls?: { caCertificate: () => string; caFingerprint: () => string; plainMqttPort: () => number | null };
  }) {}

  /** A single-use token; with TLS it pins the CA (`enr_…#sha256:…`). */
  createEnrollmentToken(ttlSec?: number): { token: string; expiresAt: string; caFingerprint?: string } {
    return createEnrollmentToken(this.deps.store, this.deps.now(), ttlSec ?? this.deps.config.enrollmentTokenTtlSec, this.deps.tls?.caFingerprint());
  }

  /** `overTls`: whether the request came over TLS, which decides the MQTT the device is told to use. */
  enroll(body: EnrollRequest, channel: { overTls: boolean }): EnrollResponse {
    const { store, now, profiles, tls } = this.deps;
    // Only the secret before '#' counts; a client that sends the whole pinned token is fine.
    let tokenHash: string;
    try {
      tokenHash = hashEnrollmentToken(parseEnrollmentToken(body.token).secret);
    } catch {
      throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token is not known');
    }
    const token = store.getEnrollmentToken(tokenHash);
    if (!token) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token is not known');
    if (token.usedAt) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token was already used');
    if (Date.parse(token.expiresAt) <= now().getTime()) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', `enrollment token expired at ${token.expiresAt}`);

    let profileId: string;
    if (body.profile) {
      if (!profiles.some((p) => p.id === body.profile)) {
        throw new EdgepackError('PROFILE_NOT_FOUND', `unknown profile ${body.profile}; known: ${profiles.map((p) => p.id).join(', ')}`);
      }
      profileId = body.profile;
    } else {
      const m = matchProfile(body.facts, profiles);
      if (!m.ok) throw new EdgepackError('PROFILE_NO_MATCH', `${m.reason}; pass --profile to choose one`);
      profileId = m.profile.id;
    }
    const id = newId('dev');
    const at = now().toISOString();
    store.transaction(() => {
      if (!store.consumeEnrollmentToken(tokenHash, id, at)) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token was already used');
      store.insertDevice({ id, name: body.name ?? id, profile: profileId, publicKey: body.publicKey, tags: [], facts: body.facts, createdAt: at });
    });
    this.deps.listener?.onDeviceChanged(id);
    // Over TLS a device gets MQTTS and the CA to pin; over plain HTTP (--allow-plaintext) the plain
    // broker, as nothing it was told can be trusted more.
    const host = this.deps.config.publicHost;
    const plainMqttPort = tls?.plainMqttPort() ?? null;
    const mqtt: EnrollResponse['mqtt'] = !tls
      ? { host, port: this.deps.mqttPort() }
      : channel.overTls || plainMqttPort === null
        ? { host, port: this.deps.mqttPort(), protocol: 'mqtts' }
        : { host, port: plainMqttPort, protocol: 'mqtt' };
    return {
      v: PROTOCOL_VERSION, deviceId: id, name: body.name ?? id, profile: profileId, orchestratorPublicKey: this.deps.signingPublicKey,
      mqtt, heartbeatSec: this.deps.config.heartbeatSec,
      ...(tls ? { tls: { caCertificate: tls.caCertificate(), caFingerprint: tls.caFingerprint() } } : {}),
      // The root the device pins: from here on it trusts bundles only through this chain.
      ...(this.deps.trustedRoot ? { trustedRoot: this.deps.trustedRoot() as EnrollResponse['trustedRoot'] } : {}),
    };
  }

  list(filter: { profile?: string; tag?: string; status?: 'online' | 'offline' }, q: PageQuery): Page<DeviceRecord> {
    return this.deps.store.pageDevices(filter, q);
  }

  /** An enrolled, unrevoked device. */
  get(id: string): DeviceRecord {
    const d = this.deps.store.getDevice(id);
    if (!d || d.revokedAt) throw new EdgepackError('DEVICE_NOT_FOUND', `device ${id} not found`);
    return d;
  }

  /** Sets tags (deduplicated, sorted) or the name. New tags may bring the device into a continuous rollout. */
  update(id: string, change: { tags?: string[]; name?: string }): DeviceRecord {
    const d = this.get(id);
    if (change.tags) this.deps.store.setDeviceTags(d.id, [...new Set(change.tags)].sort());
    if (change.name) this.deps.store.setDeviceName(d.id, change.name);
    if (change.tags) this.deps.listener?.onDeviceChanged(d.id);
    return this.deps.store.getDevice(d.id)!;
  }

  /** Revokes a device: its credential stops working, its session is dropped, its rollouts let it go. */
  async revoke(id: string): Promise<void> {
    const d = this.get(id);
    this.deps.store.revokeDevice(d.id, this.deps.now().toISOString());
    this.deps.listener?.onDeviceRevoked(d.id);
    await this.deps.sessions?.clearDesired(d.id);
    this.deps.sessions?.disconnect(d.id);
  }
}
