/**
 * The orchestrator's record types, one per noun (after hawkBit: Device, Model, Build, Artifact,
 * Bundle, Rollout, RolloutGroup, Action). Plain data, no behaviour: core/ decides over these,
 * db/ stores them, http/ renders views of them. This module imports nothing but wire types
 * from protocol/, so the core can depend on it without reaching the database.
 */
import type { BenchmarkResult, DeviceFacts, DeviceState, Heartbeat, Manifest, TensorSpec } from '@edgepack/protocol';

export interface DeviceRecord {
  id: string;
  name: string;
  profile: string;
  publicKey: string;
  tags: string[];
  facts: DeviceFacts;
  status: 'online' | 'offline';
  activeBundle: string | null;
  lastSeen: string | null;
  lastHeartbeat: Heartbeat | null;
  desiredSeq: number;
  createdAt: string;
  revokedAt: string | null;
}

export interface ModelRecord {
  id: string;
  name: string;
  version: string;
  sha256: string;
  sizeBytes: number;
  format: 'onnx' | 'tflite';
  opset: number | null;
  inputs: TensorSpec[];
  outputs: TensorSpec[];
  details: Record<string, unknown>;
  createdAt: string;
}

export type BuildStatus = 'queued' | 'running' | 'succeeded' | 'failed';
export type ArtifactStatus = 'pending' | 'built' | 'skipped' | 'failed';

export interface ArtifactRecord {
  profile: string;
  status: ArtifactStatus;
  format: string | null;
  precision: string | null;
  bundleId: string | null;
  sizeBytes: number | null;
  reason: string | null;
  details: Record<string, unknown>;
}

/** Per-build choices an operator can make; absent fields fall back to the profile's. */
export interface BuildOptions {
  acceptance?: { p95LatencyMs?: number };
  /** Dataset ids used for calibration and evaluation. */
  datasets?: { calibration?: string; evaluation?: string; labels?: string };
}

export type DatasetKind = 'calibration' | 'evaluation' | 'labels';

export interface DatasetRecord {
  id: string;
  modelId: string;
  kind: DatasetKind;
  sha256: string;
  sizeBytes: number;
  dtype: string;
  shape: number[];
  createdAt: string;
}

export interface BuildProgress {
  step: string;
  done: number;
  total: number;
}

export interface BuildRecord {
  id: string;
  modelId: string;
  options: BuildOptions;
  status: BuildStatus;
  profiles: string[];
  error: string | null;
  progress: BuildProgress | null;
  createdAt: string;
  finishedAt: string | null;
  artifacts: ArtifactRecord[];
}

export interface BundleRecord {
  id: string;
  buildId: string;
  profile: string;
  manifest: Manifest;
  signature: string;
  createdAt: string;
}

export type RolloutStatus = 'running' | 'succeeded' | 'failed';

export interface RolloutTarget {
  deviceIds?: string[];
  tags?: string[];
  profiles?: string[];
}

export interface RolloutRecord {
  id: string;
  buildId: string;
  status: RolloutStatus;
  target: RolloutTarget;
  createdAt: string;
  finishedAt: string | null;
}

export interface ActionRecord {
  rolloutId: string;
  deviceId: string;
  groupPosition: number;
  bundleId: string | null;
  state: DeviceState;
  code: string | null;
  reason: string | null;
  result: BenchmarkResult | null;
  updatedAt: string;
}
