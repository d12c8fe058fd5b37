/**
 * Every limit on the orchestrator's two doors (HTTP and MQTT), with its default, in one place:
 * the README's threat model lists these, and tests shorten the time-based ones. A limit is a
 * number here, never a literal at the place it is enforced.
 */

/** After `maxFailures` failures within `windowMs`, a key is refused for `blockMs`, doubling on each repeat up to `maxBlockMs`. */
export interface FailureLimits {
  maxFailures: number;
  windowMs: number;
  blockMs: number;
  maxBlockMs: number;
}

export interface HttpLimits {
  /** POST /v1/enroll per client IP per minute (@fastify/rate-limit). */
  enrollPerMinute: number;
  /** Requests per API token (or device) per minute, on every authenticated route (@fastify/rate-limit). */
  requestsPerMinutePerToken: number;
  /** Failed authentications (bad, expired or revoked tokens, bad device credentials, wrong enrollment tokens) per client IP. */
  authFailures: FailureLimits;
  /** JSON bodies: the deepest nesting of objects and arrays. */
  maxJsonDepth: number;
  /** The query string, in bytes. */
  maxQueryBytes: number;
  /** One summary log line per interval for repeated refusals (failed authentication, rate limits). */
  logDigestMs: number;
}

export interface MqttLimits {
  /** Inbound packets over this are cut off at their fixed header (packet-size-guard.ts). */
  maxPacketBytes: number;
  /** Bytes queued towards one client (not yet taken by the kernel); over this the client is disconnected. */
  maxQueuedBytes: number;
  /** Chunks requested by one device and not yet sent; requests beyond it are refused with a notice. */
  maxChunksQueued: number;
  /** Chunks sent to one device and not yet acknowledged (QoS 1 inflight). */
  maxChunksInflight: number;
  /** A device whose chunk queue makes no progress (no acknowledgement, no drain) for this long is disconnected. */
  queueStallMs: number;
  /** A connection that sends no CONNECT within this is closed. */
  connectTimeoutMs: number;
  /** The broker holds every client to at most this keepalive (MQTT 3.1.1 §3.1.2.10); 0 ("none") counts as this. */
  maxKeepaliveSec: number;
  /** Topic levels in a PUBLISH topic or SUBSCRIBE filter. */
  maxTopicLevels: number;
  /** Characters in a topic or filter. */
  maxTopicLength: number;
  /** Inbound QoS 2 messages awaiting PUBREL per client. */
  maxInflightInbound: number;
  /** Open connections, authenticated or not. */
  maxConnections: number;
  /** Failed CONNECTs per client IP (refused before checking) and per device id (refusals delayed). */
  authFailures: FailureLimits;
  /** The longest a failed CONNECT's refusal is held back for a device id under backoff. */
  maxRefusalDelayMs: number;
  logDigestMs: number;
}

export interface Limits {
  http: HttpLimits;
  mqtt: MqttLimits;
}

export const DEFAULT_LIMITS: Limits = {
  http: {
    enrollPerMinute: 120,
    requestsPerMinutePerToken: 3000,
    authFailures: { maxFailures: 10, windowMs: 60_000, blockMs: 60_000, maxBlockMs: 15 * 60_000 },
    maxJsonDepth: 32,
    maxQueryBytes: 2048,
    logDigestMs: 10_000,
  },
  mqtt: {
    maxPacketBytes: 4 * 1024 * 1024,
    maxQueuedBytes: 8 * 1024 * 1024,
    maxChunksQueued: 128,
    maxChunksInflight: 64,
    queueStallMs: 10_000,
    connectTimeoutMs: 10_000,
    maxKeepaliveSec: 300,
    maxTopicLevels: 8,
    maxTopicLength: 256,
    maxInflightInbound: 16,
    maxConnections: 10_000,
    authFailures: { maxFailures: 10, windowMs: 60_000, blockMs: 30_000, maxBlockMs: 15 * 60_000 },
    maxRefusalDelayMs: 5000,
    logDigestMs: 10_000,
  },
};

export type LimitOverrides = { http?: Partial<HttpLimits>; mqtt?: Partial<MqttLimits> };

/** The defaults with `overrides` laid over them, one level deep per door. */
export function resolveLimits(overrides: LimitOverrides = {}): Limits {
  return { http: { ...DEFAULT_LIMITS.http, ...overrides.http }, mqtt: { ...DEFAULT_LIMITS.mqtt, ...overrides.mqtt } };
}
