import { Type, type Static } from '@sinclair/typebox';
import { SignedManifestSchema } from './manifest.js';
import { TRUST_LIMITS } from './trust-metadata.js';
import { PROTOCOL_VERSION } from './version.js';

/** Every message carries the protocol version; receivers accept any v with the same major. */
const v = Type.Integer({ minimum: 1, maximum: PROTOCOL_VERSION });

export const DEVICE_STATES = ['pending', 'downloading', 'verifying', 'installing', 'benchmarking', 'active', 'failed', 'rolled_back'] as const;
export const DeviceStateSchema = Type.Union(DEVICE_STATES.map((s) => Type.Literal(s)));
export type DeviceState = Static<typeof DeviceStateSchema>;
export const TERMINAL_DEVICE_STATES: readonly DeviceState[] = ['active', 'failed', 'rolled_back'];

export const DeviceFactsSchema = Type.Object({
  arch: Type.String(),
  platform: Type.String(),
  cpuModel: Type.String(),
  cores: Type.Integer({ minimum: 0 }),
  ramBytes: Type.Integer({ minimum: 0 }),
  cpuFlags: Type.Array(Type.String()),
  accelerators: Type.Array(Type.String()),
  runtimes: Type.Record(Type.String(), Type.Object({ version: Type.String(), executionProviders: Type.Array(Type.String()) })),
  agentVersion: Type.String(),
});
export type DeviceFacts = Static<typeof DeviceFactsSchema>;

export const BenchmarkResultSchema = Type.Object({
  runtime: Type.String(),
  providers: Type.Array(Type.String()),
  loadMs: Type.Number(),
  warmupRuns: Type.Integer(),
  runs: Type.Integer(),
  latencyMs: Type.Object({ p50: Type.Number(), p90: Type.Number(), p95: Type.Number(), p99: Type.Number() }),
  throughputPerSec: Type.Number(),
  peakRssBytes: Type.Integer(),
  golden: Type.Object({ passed: Type.Boolean(), maxAbsError: Type.Number(), samples: Type.Integer() }),
});
export type BenchmarkResult = Static<typeof BenchmarkResultSchema>;

// --- HTTP enrollment (device → orchestrator, authenticated by a single-use token) ---

export const EnrollRequestSchema = Type.Object({
  v,
  token: Type.String({ minLength: 1, maxLength: 256 }),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
  /** The device's ed25519 public key: 32 bytes, base64. */
  publicKey: Type.String({ pattern: '^[A-Za-z0-9+/]{43}=$' }),
  facts: DeviceFactsSchema,
  profile: Type.Optional(Type.String({ minLength: 1, maxLength: 64 })),
});
export type EnrollRequest = Static<typeof EnrollRequestSchema>;

export const EnrollResponseSchema = Type.Object({
  v,
  deviceId: Type.String(),
  name: Type.String(),
  profile: Type.String(),
  orchestratorPublicKey: Type.String(),
  /**
   * Where the device's MQTT session goes. `protocol` is `mqtts` when the device enrolled over
   * TLS (it then connects with the CA in `tls` as its only trust anchor); absent means plain
   * `mqtt`, as from orchestrators older than TLS.
   */
  mqtt: Type.Object({ host: Type.String(), port: Type.Integer(), protocol: Type.Optional(Type.Union([Type.Literal('mqtt'), Type.Literal('mqtts')])) }),
  heartbeatSec: Type.Integer({ minimum: 1 }),
  /**
   * The CA certificate (PEM) the orchestrator's HTTPS and MQTTS certificates chain to, and its
   * fingerprint. The agent keeps it only if its fingerprint is the one it already pinned for the
   * enrollment connection; from then on it is the device's only trust anchor.
   */
  tls: Type.Optional(Type.Object({
    caCertificate: Type.String({ minLength: 1, maxLength: 16384 }),
    caFingerprint: Type.String({ pattern: '^sha256:[0-9a-f]{64}$' }),
  })),
  /**
   * The root (trust-metadata.ts) the device pins: its keys decide which later roots and which
   * bundle keys the device will ever trust. Checked by the agent with TrustVerifier.verifyInitialRoot.
   */
  trustedRoot: Type.Optional(Type.Unknown()),
});
export type EnrollResponse = Static<typeof EnrollResponseSchema>;

// --- MQTT: orchestrator → device ---

/** Bounds of a trial request, checked by the schema on both sides. */
export const TRIAL_LIMITS = { maxCandidates: 8, maxRounds: 20 } as const;

/** Retained on the device's `desired` topic, so a device that reconnects converges. */
export const DesiredStateSchema = Type.Object({
  v,
  deviceId: Type.String(),
  /** Increases with every new desired state for this device; older ones are ignored. */
  seq: Type.Integer({ minimum: 1 }),
  rolloutId: Type.String(),
  bundle: SignedManifestSchema,
  issuedAt: Type.String(),
  /**
   * ed25519 by the orchestrator over the envelope (see desired-signature.ts): without it anyone
   * able to publish on the topic could replay an older signed bundle or jump `seq` ahead.
   */
  signature: Type.String({ minLength: 1 }),
  /**
   * The orchestrator's chain of roots (trust-metadata.ts), oldest first. Not covered by the
   * envelope: each root is self-authenticating through the chain, and the device walks it
   * (TrustVerifier.walkChain) before it checks the envelope, like TUF updates the root first.
   * Items are checked one by one there, so one bad root gets its own error code.
   */
  roots: Type.Optional(Type.Array(Type.Unknown(), { maxItems: TRUST_LIMITS.maxChainLength })),
  /**
   * What the device is asked to do (absent: `install`, as before trials existed).
   * - `install`: make `bundle` the active model (the update flow, update-machine.ts).
   * - `trial`: measure every bundle of `trial.candidates` in a scratch slot — download, verify,
   *   benchmark in `trial.rounds` interleaved rounds, run the golden samples and compare outputs
   *   with the reference candidate's on the device — report a TrialReport, then remove the scratch
   *   slot. A trial never changes the active model. `bundle` is the reference candidate (fp32).
   */
  kind: Type.Optional(Type.Union([Type.Literal('install'), Type.Literal('trial')])),
  trial: Type.Optional(Type.Object({
    /** Every candidate to measure, the reference included, in the order the rounds run them. */
    candidates: Type.Array(SignedManifestSchema, { minItems: 1, maxItems: TRIAL_LIMITS.maxCandidates }),
    /** Rounds of one benchmark run per candidate each (A B C, A B C, …): the device's noise hits every candidate alike. */
    rounds: Type.Integer({ minimum: 1, maximum: TRIAL_LIMITS.maxRounds }),
    /** The bundle whose outputs are the reference for agreement (the fp32 candidate; also `bundle`). */
    referenceBundleId: Type.String(),
  })),
});
export type DesiredState = Static<typeof DesiredStateSchema>;

/** How a candidate's outputs on the device compare with the reference candidate's on the same golden inputs. */
export const TrialAgreementSchema = Type.Object({
  /** Share of golden samples whose top-1 class equals the reference's (1 for the reference itself). */
  top1: Type.Number({ minimum: 0, maximum: 1 }),
  maxAbsError: Type.Number({ minimum: 0 }),
  samples: Type.Integer({ minimum: 0 }),
});
export type TrialAgreement = Static<typeof TrialAgreementSchema>;

/** One candidate's figures in a trial: the install benchmark's (load, latency, throughput, RSS, golden) and agreement with the reference. */
export const TrialCandidateResultSchema = Type.Object({
  bundleId: Type.String(),
  /** The manifest's precision name (fp32, fp16, int8-dynamic, int8-static, int8). */
  precision: Type.String(),
  /** Present when the candidate was measured; latency figures are the median over rounds of each round's figure. */
  result: Type.Optional(BenchmarkResultSchema),
  agreement: Type.Optional(TrialAgreementSchema),
  /** Why this candidate was not measured, or failed its golden check (a catalogue code). */
  code: Type.Optional(Type.String()),
  reason: Type.Optional(Type.String({ maxLength: 4096 })),
});
export type TrialCandidateResult = Static<typeof TrialCandidateResultSchema>;

/**
 * Device → orchestrator on its `trial-report` topic: the outcome of the trial desired state with
 * this `seq`. `running` once the trial starts (so a kill -9 is told apart from a device that
 * never got it), then one `done` (every candidate has a result or a code) or `failed` (the trial
 * as a whole stopped: TRIAL_INTERRUPTED after a restart, TRIAL_SUPERSEDED by a newer desired
 * state, DISK_FULL, …). Signed by the device key like a status report (trial-report-signature.ts).
 */
export const TrialReportSchema = Type.Object({
  v,
  deviceId: Type.String(),
  rolloutId: Type.String(),
  seq: Type.Integer({ minimum: 1 }),
  state: Type.Union([Type.Literal('running'), Type.Literal('done'), Type.Literal('failed')]),
  code: Type.Optional(Type.String()),
  reason: Type.Optional(Type.String({ maxLength: 4096 })),
  results: Type.Array(TrialCandidateResultSchema, { maxItems: TRIAL_LIMITS.maxCandidates }),
  at: Type.String(),
  signature: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
});
export type TrialReport = Static<typeof TrialReportSchema>;

/** Answer to an invalid or refused message, so a device learns why instead of waiting. */
export const NoticeSchema = Type.Object({
  v,
  /**
   * A code from the error catalogue (error-catalogue.ts). Any string is accepted on the wire, so
   * an agent older than the orchestrator still reads a notice with a code it does not know.
   */
  code: Type.String(),
  message: Type.String(),
  topic: Type.Optional(Type.String()),
  /** The bundle a refusal is about, so a late notice cannot fail an unrelated transfer. */
  bundleId: Type.Optional(Type.String()),
});
export type Notice = Static<typeof NoticeSchema>;

/** Header of a binary chunk frame; see chunk-frame.ts for the framing. */
export const ChunkHeaderSchema = Type.Object({
  v,
  bundleId: Type.String(),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  index: Type.Integer({ minimum: 0 }),
  total: Type.Integer({ minimum: 1 }),
  offset: Type.Integer({ minimum: 0 }),
  length: Type.Integer({ minimum: 0 }),
  chunkSha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  fileLength: Type.Integer({ minimum: 0 }),
});
export type ChunkHeader = Static<typeof ChunkHeaderSchema>;

// --- MQTT: device → orchestrator ---

export const StatusReportSchema = Type.Object({
  v,
  deviceId: Type.String(),
  rolloutId: Type.String(),
  bundleId: Type.String(),
  state: DeviceStateSchema,
  /** Why an action failed: a code from the error catalogue (accepted as any string, as in notices). */
  code: Type.Optional(Type.String()),
  reason: Type.Optional(Type.String({ maxLength: 4096 })),
  result: Type.Optional(BenchmarkResultSchema),
  at: Type.String(),
  /**
   * ed25519 by the device's own key over the rest of the report (status-signature.ts). Optional
   * on the wire so an unsigned report still parses and is refused with its own code
   * (STATUS_SIGNATURE_INVALID) rather than as a malformed message.
   */
  signature: Type.Optional(Type.String({ minLength: 1, maxLength: 256 })),
});
export type StatusReport = Static<typeof StatusReportSchema>;

export const HeartbeatSchema = Type.Object({
  v,
  deviceId: Type.String(),
  uptimeSec: Type.Number({ minimum: 0 }),
  activeBundle: Type.Union([Type.String(), Type.Null()]),
  lastBenchmark: Type.Optional(Type.Union([BenchmarkResultSchema, Type.Null()])),
  agentVersion: Type.String(),
  at: Type.String(),
});
export type Heartbeat = Static<typeof HeartbeatSchema>;

/** Asks for `count` chunks of one bundle file starting at `index`; the answer is one chunk frame each. */
export const ChunkRequestSchema = Type.Object({
  v,
  bundleId: Type.String(),
  sha256: Type.String({ pattern: '^[0-9a-f]{64}$' }),
  index: Type.Integer({ minimum: 0 }),
  count: Type.Integer({ minimum: 1, maximum: 64 }),
});
export type ChunkRequest = Static<typeof ChunkRequestSchema>;

/** Published by the device on connect (online) and by the broker as its last will (offline). */
export const PresenceSchema = Type.Object({ v, online: Type.Boolean() });
export type Presence = Static<typeof PresenceSchema>;

export const CHUNK_SIZE = 64 * 1024;
