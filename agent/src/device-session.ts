import type { IClientOptions } from 'mqtt';
import { DEVICE_SUBSCRIBE_KINDS, DeviceTopic, PROTOCOL_VERSION, createDeviceCredential, deviceTopic, type Presence } from '@edgepack/protocol';
import type { Identity } from './identity.js';

/**
 * How a device holds its MQTT session, shared by the agent and the fleet simulator so a
 * simulated device looks to the broker exactly like a real one.
 */
export function deviceClientOptions(identity: Identity, now: Date, server: { host: string; port: number } = identity.mqtt): IClientOptions {
  const { deviceId } = identity;
  return {
    host: server.host,
    port: server.port,
    protocol: 'mqtt',
    // The broker requires client id = username = device id (a persistent session belongs to it).
    clientId: deviceId,
    username: deviceId,
    // The credential is signed fresh for each connection; it is only valid for minutes.
    password: createDeviceCredential(deviceId, identity.secretKey, now),
    // A persistent session (MQTT 3.1.1 §3.1.2.4): QoS 1 messages sent while away are kept for us.
    clean: false,
    keepalive: Math.max(5, identity.heartbeatSec),
    reconnectPeriod: 0, // the caller's own loop re-signs the credential and backs off
    connectTimeout: 10_000,
    // Published by the broker when the connection dies without a DISCONNECT (§3.1.2.5).
    will: { topic: deviceTopic(deviceId, DeviceTopic.presence), payload: Buffer.from(JSON.stringify(presence(false))), qos: 1, retain: false },
  };
}

/** The topics a device subscribes to: only what the orchestrator sends it. */
export function deviceSubscriptions(deviceId: string): string[] {
  return DEVICE_SUBSCRIBE_KINDS.map((k) => deviceTopic(deviceId, k));
}

export function presence(online: boolean): Presence {
  return { v: PROTOCOL_VERSION, online };
}

/** Reconnect delay: full backoff with jitter, so a fleet that lost the broker together does not come back in lockstep. */
export function reconnectDelay(backoffMs: number, random: number): { delayMs: number; nextBackoffMs: number } {
  return { delayMs: Math.round(backoffMs * (0.5 + random / 2)), nextBackoffMs: Math.min(30_000, backoffMs * 2) };
}
