import type { DeviceFacts, DeviceState, Heartbeat, Manifest } from '@edgepack/protocol';
import type { DeviceRecord, ModelRecord, BuildStatus, ArtifactStatus, ArtifactRecord, BuildOptions, DatasetKind, DatasetRecord, BuildCandidateRecord, BuildProgress, BuildRecord, BuildSelection, BundleRecord, RolloutStatus, RolloutTarget, RolloutRecord, ActionRecord } from '../records.js';
import type Database from 'better-sqlite3';
import type { Db } from './database.js';

type Row = Record<string, unknown>;
const json = <T>(text: unknown, fallback: T): T => (typeof text === 'string' ? (JSON.parse(text) as T) : fallback);

function toDevice(r: Row): DeviceRecord {
  return {
    id: r.id as string,
    name: r.name as string,
    profile: r.profile as string,
    publicKey: r.public_key as string,
    tags: json(r.tags, []),
    facts: json(r.facts, {} as DeviceFacts),
    status: r.status as 'online' | 'offline',
    activeBundle: (r.active_bundle as string | null) ?? null,
    lastSeen: (r.last_seen as string | null) ?? null,
    lastHeartbeat: json(r.last_heartbeat, null),
    desiredSeq: r.desired_seq as number,
    createdAt: r.created_at as string,
    revokedAt: (r.revoked_at as string | null) ?? null,
  };
}

function toModel(r: Row): ModelRecord {
  return {
    id: r.id as string, name: r.name as string, version: r.version as string, sha256: r.sha256 as string,
    sizeBytes: r.size_bytes as number, format: r.format as 'onnx' | 'tflite', opset: (r.opset as number | null) ?? null,
    inputs: json(r.inputs, []), outputs: json(r.outputs, []), details: json(r.details, {}), createdAt: r.created_at as string,
  };
}

function toArtifact(r: Row): ArtifactRecord {
  return {
    profile: r.profile as string, status: r.status as ArtifactStatus, format: (r.format as string | null) ?? null,
    precision: (r.precision as string | null) ?? null, bundleId: (r.bundle_id as string | null) ?? null,
    sizeBytes: (r.size_bytes as number | null) ?? null, reason: (r.reason as string | null) ?? null, details: json(r.details, {}),
  };
}

function toAction(r: Row): ActionRecord {
  return {
    rolloutId: r.rollout_id as string, deviceId: r.device_id as string, groupPosition: r.group_position as number,
    bundleId: (r.bundle_id as string | null) ?? null, state: r.state as DeviceState, code: (r.code as string | null) ?? null,
    reason: (r.reason as string | null) ?? null, result: json(r.result, null), updatedAt: r.updated_at as string,
  };
}

function toRollout(r: Row): RolloutRecord {
  return {
    id: r.id as string, buildId: r.build_id as string, status: r.status as RolloutStatus, target: json(r.target, {}),
    createdAt: r.created_at as string, finishedAt: (r.finished_at as string | null) ?? null,
    stream: (r.stream as string | null) ?? null, pause: json(r.pause, null), staged: r.plan !== null && r.plan !== undefined,
  };
}

/** A list page: keyset pagination over (created_at, id), oldest first. */
export interface PageQuery {
  limit: number;
  /** Sort key of the last item of the previous page. */
  after?: { createdAt: string; id: string };
}
export interface Page<T> {
  items: T[];
  /** Sort key of the last item, when more items follow. */
  next: { createdAt: string; id: string } | null;
}

/** All SQL lives here; callers deal in records. */
export class Store {
  private readonly statements = new Map<string, Database.Statement<unknown[]>>();
  constructor(readonly db: Db) {}

  /**
   * A prepared statement per SQL text, compiled once: compiling costs more than running most of
   * these (a reconnect storm looks a device up a thousand times a second).
   */
  private stmt(sql: string): Database.Statement<unknown[]> {
    let s = this.statements.get(sql);
    if (!s) this.statements.set(sql, (s = this.db.prepare(sql)));
    return s;
  }

  /**
   * One page of `table` rows matching `where` (SQL fragments with ? placeholders). Reads one row
   * past the page to learn whether another page follows, so the last page says `next: null`.
   */
  private page<T extends { createdAt: string; id: string }>(table: string, where: [string, ...unknown[]][], q: PageQuery, map: (r: Row) => T): Page<T> {
    const clauses = [...where];
    if (q.after) clauses.push(['(created_at, id) > (?, ?)', q.after.createdAt, q.after.id]);
    const sql = `SELECT * FROM ${table}${clauses.length ? ` WHERE ${clauses.map((c) => c[0]).join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`;
    const rows = this.stmt(sql).all(...clauses.flatMap((c) => c.slice(1)), q.limit + 1) as Row[];
    const items = rows.slice(0, q.limit).map(map);
    const last = items[items.length - 1];
    return { items, next: rows.length > q.limit && last ? { createdAt: last.createdAt, id: last.id } : null };
  }

  transaction<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  // --- enrollment tokens ---
  insertEnrollmentToken(tokenHash: string, createdAt: string, expiresAt: string): void {
    this.stmt('INSERT INTO enrollment_tokens (token_hash, created_at, expires_at) VALUES (?, ?, ?)').run(tokenHash, createdAt, expiresAt);
  }
  getEnrollmentToken(tokenHash: string): { expiresAt: string; usedAt: string | null } | undefined {
    const r = this.stmt('SELECT expires_at, used_at FROM enrollment_tokens WHERE token_hash = ?').get(tokenHash) as Row | undefined;
    return r && { expiresAt: r.expires_at as string, usedAt: (r.used_at as string | null) ?? null };
  }
  /** Marks a token used; returns false if someone else used it first (single use under races). */
  consumeEnrollmentToken(tokenHash: string, deviceId: string, at: string): boolean {
    return this.stmt('UPDATE enrollment_tokens SET used_at = ?, device_id = ? WHERE token_hash = ? AND used_at IS NULL').run(at, deviceId, tokenHash).changes === 1;
  }

  // --- devices ---
  insertDevice(d: Omit<DeviceRecord, 'status' | 'activeBundle' | 'lastSeen' | 'lastHeartbeat' | 'desiredSeq' | 'revokedAt'>): void {
    this.stmt('INSERT INTO devices (id, name, profile, public_key, tags, facts, created_at) VALUES (?, ?, ?, ?, ?, ?, ?)')
      .run(d.id, d.name, d.profile, d.publicKey, JSON.stringify(d.tags), JSON.stringify(d.facts), d.createdAt);
  }
  getDevice(id: string): DeviceRecord | undefined {
    const r = this.stmt('SELECT * FROM devices WHERE id = ?').get(id) as Row | undefined;
    return r && toDevice(r);
  }
  /** What an MQTT CONNECT needs to check a credential, without parsing the rest of the row. */
  getDeviceKey(id: string): { publicKey: string; revoked: boolean } | undefined {
    const r = this.stmt('SELECT public_key, revoked_at FROM devices WHERE id = ?').get(id) as Row | undefined;
    return r && { publicKey: r.public_key as string, revoked: r.revoked_at !== null };
  }
  /** Enrolled (unrevoked) devices; `tag` matches one element of the tags array. */
  pageDevices(filter: { profile?: string; tag?: string; status?: 'online' | 'offline' }, q: PageQuery): Page<DeviceRecord> {
    const where: [string, ...unknown[]][] = [['revoked_at IS NULL']];
    if (filter.profile !== undefined) where.push(['profile = ?', filter.profile]);
    if (filter.status !== undefined) where.push(['status = ?', filter.status]);
    if (filter.tag !== undefined) where.push(['EXISTS (SELECT 1 FROM json_each(devices.tags) WHERE value = ?)', filter.tag]);
    return this.page('devices', where, q, toDevice);
  }
  setDeviceTags(id: string, tags: string[]): void {
    this.stmt('UPDATE devices SET tags = ? WHERE id = ?').run(JSON.stringify(tags), id);
  }
  setDeviceName(id: string, name: string): void {
    this.stmt('UPDATE devices SET name = ? WHERE id = ?').run(name, id);
  }
  revokeDevice(id: string, at: string): void {
    this.stmt("UPDATE devices SET revoked_at = ?, status = 'offline' WHERE id = ?").run(at, id);
  }
  markSeen(id: string, at: string): void {
    this.stmt("UPDATE devices SET status = 'online', last_seen = ? WHERE id = ?").run(at, id);
  }
  recordHeartbeat(id: string, hb: Heartbeat, at: string): void {
    this.stmt("UPDATE devices SET status = 'online', last_seen = ?, last_heartbeat = ?, active_bundle = ? WHERE id = ?")
      .run(at, JSON.stringify(hb), hb.activeBundle, id);
  }
  /** The heartbeat as the device API shows it; the engine's fields are written by RolloutStore.patchDevice. */
  setLastHeartbeat(id: string, hb: Heartbeat): void {
    this.stmt('UPDATE devices SET last_heartbeat = ? WHERE id = ?').run(JSON.stringify(hb), id);
  }
  setActiveBundle(id: string, bundleId: string | null): void {
    this.stmt('UPDATE devices SET active_bundle = ? WHERE id = ?').run(bundleId, id);
  }
  /** Devices online but not heard from since `cutoff`; returns their ids after marking them offline. */
  markStaleOffline(cutoff: string): string[] {
    return this.transaction(() => {
      const ids = (this.stmt("SELECT id FROM devices WHERE status = 'online' AND (last_seen IS NULL OR last_seen < ?)").all(cutoff) as Row[]).map((r) => r.id as string);
      const stmt = this.stmt("UPDATE devices SET status = 'offline' WHERE id = ?");
      for (const id of ids) stmt.run(id);
      return ids;
    });
  }

  // --- models ---
  insertModel(m: ModelRecord): void {
    this.stmt('INSERT INTO models (id, name, version, sha256, size_bytes, format, opset, inputs, outputs, details, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)')
      .run(m.id, m.name, m.version, m.sha256, m.sizeBytes, m.format, m.opset, JSON.stringify(m.inputs), JSON.stringify(m.outputs), JSON.stringify(m.details), m.createdAt);
  }
  getModel(id: string): ModelRecord | undefined {
    const r = this.stmt('SELECT * FROM models WHERE id = ?').get(id) as Row | undefined;
    return r && toModel(r);
  }
  findModel(name: string, version: string): ModelRecord | undefined {
    const r = this.stmt('SELECT * FROM models WHERE name = ? AND version = ?').get(name, version) as Row | undefined;
    return r && toModel(r);
  }
  listModels(): ModelRecord[] {
    return (this.stmt('SELECT * FROM models ORDER BY created_at, id').all() as Row[]).map(toModel);
  }
  pageModels(filter: { name?: string }, q: PageQuery): Page<ModelRecord> {
    return this.page('models', filter.name !== undefined ? [['name = ?', filter.name]] : [], q, toModel);
  }

  // --- builds and artifacts ---
  insertBuild(b: { id: string; modelId: string; profiles: string[]; options: BuildOptions; createdAt: string; selection?: BuildSelection }): void {
    this.transaction(() => {
      this.stmt("INSERT INTO builds (id, model_id, status, profiles, options, created_at, selection) VALUES (?, ?, 'queued', ?, ?, ?, ?)")
        .run(b.id, b.modelId, JSON.stringify(b.profiles), JSON.stringify(b.options), b.createdAt, b.selection ?? 'host');
      const stmt = this.stmt("INSERT INTO artifacts (build_id, profile, status) VALUES (?, ?, 'pending')");
      for (const p of b.profiles) stmt.run(b.id, p);
    });
  }
  setBuildStatus(id: string, status: BuildStatus, error: string | null = null, finishedAt: string | null = null): void {
    this.stmt('UPDATE builds SET status = ?, error = ?, finished_at = ? WHERE id = ?').run(status, error, finishedAt, id);
  }
  updateArtifact(buildId: string, a: ArtifactRecord): void {
    this.stmt('UPDATE artifacts SET status = ?, format = ?, precision = ?, bundle_id = ?, size_bytes = ?, reason = ?, details = ? WHERE build_id = ? AND profile = ?')
      .run(a.status, a.format, a.precision, a.bundleId, a.sizeBytes, a.reason, JSON.stringify(a.details), buildId, a.profile);
  }
  getBuild(id: string): BuildRecord | undefined {
    const r = this.stmt('SELECT * FROM builds WHERE id = ?').get(id) as Row | undefined;
    return r && this.toBuild(r);
  }
  private toBuild(r: Row): BuildRecord {
    const artifacts = (this.stmt('SELECT * FROM artifacts WHERE build_id = ? ORDER BY profile').all(r.id) as Row[]).map(toArtifact);
    return {
      id: r.id as string, modelId: r.model_id as string, options: json(r.options, {}), selection: r.selection === 'device' ? 'device' : 'host', status: r.status as BuildStatus, profiles: json(r.profiles, []),
      error: (r.error as string | null) ?? null, progress: json(r.progress, null), createdAt: r.created_at as string, finishedAt: (r.finished_at as string | null) ?? null, artifacts,
    };
  }
  pageBuilds(filter: { modelId?: string; status?: BuildStatus }, q: PageQuery): Page<BuildRecord> {
    const where: [string, ...unknown[]][] = [];
    if (filter.modelId !== undefined) where.push(['model_id = ?', filter.modelId]);
    if (filter.status !== undefined) where.push(['status = ?', filter.status]);
    return this.page('builds', where, q, (r) => this.toBuild(r));
  }
  setBuildProgress(id: string, progress: BuildProgress): void {
    this.stmt('UPDATE builds SET progress = ? WHERE id = ?').run(JSON.stringify(progress), id);
  }

  // --- datasets ---
  insertDataset(d: DatasetRecord): void {
    this.stmt('INSERT INTO datasets (id, model_id, kind, sha256, size_bytes, dtype, shape, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
      .run(d.id, d.modelId, d.kind, d.sha256, d.sizeBytes, d.dtype, JSON.stringify(d.shape), d.createdAt);
  }
  private toDataset(r: Row): DatasetRecord {
    return {
      id: r.id as string, modelId: r.model_id as string, kind: r.kind as DatasetKind, sha256: r.sha256 as string, sizeBytes: r.size_bytes as number,
      dtype: r.dtype as string, shape: json(r.shape, []), createdAt: r.created_at as string,
    };
  }
  getDataset(id: string): DatasetRecord | undefined {
    const r = this.stmt('SELECT * FROM datasets WHERE id = ?').get(id) as Row | undefined;
    return r && this.toDataset(r);
  }
  listDatasets(modelId: string): DatasetRecord[] {
    return (this.stmt('SELECT * FROM datasets WHERE model_id = ? ORDER BY created_at, id').all(modelId) as Row[]).map((r) => this.toDataset(r));
  }
  pageDatasets(modelId: string, filter: { kind?: DatasetKind }, q: PageQuery): Page<DatasetRecord> {
    const where: [string, ...unknown[]][] = [['model_id = ?', modelId]];
    if (filter.kind !== undefined) where.push(['kind = ?', filter.kind]);
    return this.page('datasets', where, q, (r) => this.toDataset(r));
  }
  latestDataset(modelId: string, kind: DatasetKind): DatasetRecord | undefined {
    const r = this.stmt('SELECT * FROM datasets WHERE model_id = ? AND kind = ? ORDER BY created_at DESC, rowid DESC LIMIT 1').get(modelId, kind) as Row | undefined;
    return r && this.toDataset(r);
  }

  /** Builds left queued or running by a process that died; they are failed on start-up. */
  listUnfinishedBuildIds(): string[] {
    return (this.stmt("SELECT id FROM builds WHERE status IN ('queued', 'running')").all() as Row[]).map((r) => r.id as string);
  }

  /** A candidate a `device` build kept (issue 10); read back by RolloutStore.buildCandidates. */
  insertBuildCandidate(c: BuildCandidateRecord): void {
    this.stmt(`INSERT INTO build_candidates (build_id, profile, position, bundle_id, format, precision, host_pick, reference, reason, metrics)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(c.buildId, c.profile, c.position, c.bundleId, c.format, c.precision, c.hostPick ? 1 : 0, c.reference ? 1 : 0, c.reason, JSON.stringify(c.metrics));
  }

  // --- bundles ---
  insertBundle(b: BundleRecord): void {
    this.stmt('INSERT INTO bundles (id, build_id, profile, manifest, signature, created_at) VALUES (?, ?, ?, ?, ?, ?)')
      .run(b.id, b.buildId, b.profile, JSON.stringify(b.manifest), b.signature, b.createdAt);
  }
  getBundle(id: string): BundleRecord | undefined {
    const r = this.stmt('SELECT * FROM bundles WHERE id = ?').get(id) as Row | undefined;
    return r && {
      id: r.id as string, buildId: r.build_id as string, profile: r.profile as string,
      manifest: JSON.parse(r.manifest as string) as Manifest, signature: r.signature as string, createdAt: r.created_at as string,
    };
  }

  // --- rollouts, groups, actions ---
  /** A one-wave rollout as made before waves (kept for tests of legacy reads). */
  insertRollout(r: Omit<RolloutRecord, 'stream' | 'pause' | 'staged'>, actions: ActionRecord[], groupPositions: number[]): void {
    this.transaction(() => {
      this.stmt('INSERT INTO rollouts (id, build_id, status, target, created_at) VALUES (?, ?, ?, ?, ?)').run(r.id, r.buildId, r.status, JSON.stringify(r.target), r.createdAt);
      const g = this.stmt("INSERT INTO rollout_groups (rollout_id, position, status) VALUES (?, ?, 'running')");
      for (const p of groupPositions) g.run(r.id, p);
      for (const a of actions) this.upsertAction(a);
    });
  }
  getRollout(id: string): RolloutRecord | undefined {
    const r = this.stmt('SELECT * FROM rollouts WHERE id = ?').get(id) as Row | undefined;
    return r && toRollout(r);
  }
  pageRollouts(filter: { buildId?: string; status?: RolloutStatus }, q: PageQuery): Page<RolloutRecord> {
    const where: [string, ...unknown[]][] = [];
    if (filter.buildId !== undefined) where.push(['build_id = ?', filter.buildId]);
    if (filter.status !== undefined) where.push(['status = ?', filter.status]);
    return this.page('rollouts', where, q, toRollout);
  }
  listRollouts(): RolloutRecord[] {
    return (this.stmt('SELECT id FROM rollouts ORDER BY created_at, id').all() as Row[]).map((r) => this.getRollout(r.id as string)!);
  }
  setRolloutStatus(id: string, status: RolloutStatus, finishedAt: string | null): void {
    this.stmt('UPDATE rollouts SET status = ?, finished_at = ? WHERE id = ?').run(status, finishedAt, id);
  }
  listActions(rolloutId: string): ActionRecord[] {
    return (this.stmt('SELECT * FROM actions WHERE rollout_id = ? ORDER BY group_position, device_id').all(rolloutId) as Row[]).map(toAction);
  }
  getAction(rolloutId: string, deviceId: string): ActionRecord | undefined {
    const r = this.stmt('SELECT * FROM actions WHERE rollout_id = ? AND device_id = ?').get(rolloutId, deviceId) as Row | undefined;
    return r && toAction(r);
  }
  upsertAction(a: ActionRecord): void {
    this.stmt(`INSERT INTO actions (rollout_id, device_id, group_position, bundle_id, state, code, reason, result, updated_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
      ON CONFLICT (rollout_id, device_id) DO UPDATE SET bundle_id = excluded.bundle_id, state = excluded.state, code = excluded.code,
        reason = excluded.reason, result = excluded.result, updated_at = excluded.updated_at`)
      .run(a.rolloutId, a.deviceId, a.groupPosition, a.bundleId, a.state, a.code, a.reason, a.result ? JSON.stringify(a.result) : null, a.updatedAt);
  }
  /** Actions of this device still under way, in any rollout. */
  openActionsForDevice(deviceId: string): ActionRecord[] {
    return (this.stmt("SELECT * FROM actions WHERE device_id = ? AND state NOT IN ('active', 'failed', 'rolled_back')").all(deviceId) as Row[]).map(toAction);
  }

  /**
   * Whether the orchestrator ever assigned this bundle to this device (to install, to roll back
   * to, or to trial: trial_grants, issue 10). Access to bundle bytes is decided by this record
   * of ours, never by what a device reports about itself.
   */
  isBundleAssigned(deviceId: string, bundleId: string): boolean {
    return !!this.stmt(`SELECT 1 FROM rollout_members WHERE device_id = ? AND ((bundle_id = ? AND first_dispatched_ms IS NOT NULL)
        OR (previous_bundle = ? AND rollback_dispatched_ms IS NOT NULL))
      UNION ALL SELECT 1 FROM actions WHERE device_id = ? AND bundle_id = ?
      UNION ALL SELECT 1 FROM trial_grants WHERE device_id = ? AND bundle_id = ? LIMIT 1`).get(deviceId, bundleId, bundleId, deviceId, bundleId, deviceId, bundleId);
  }
}
