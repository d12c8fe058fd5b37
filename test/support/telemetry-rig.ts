// The orchestrator's telemetry parts over a real SQLite file in a temp dir and a fake clock,
// wired as the server wires them (telemetry/wiring.ts), with the MQTT edge replaced by a
// recorder of the acks and notices the ingest hands it. Acks are checked against a second
// database connection at the moment they are handed over: it sees only committed rows.
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { TelemetryAck } from '@edgepack/protocol';
import { openDatabase, type Db } from '@edgepack/orchestrator/db/database.js';
import { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { HealthService } from '@edgepack/orchestrator/telemetry/health-service.js';
import { TelemetryIngest, type TelemetryIngestOptions } from '@edgepack/orchestrator/telemetry/ingest.js';
import { createMetrics, type OrchestratorMetrics } from '@edgepack/orchestrator/telemetry/metrics.js';
import { DEFAULT_RETENTION, TelemetryJobs } from '@edgepack/orchestrator/telemetry/rollups.js';
import { TelemetryStore } from '@edgepack/orchestrator/telemetry/telemetry-store.js';
import { makeBatch } from './telemetry-windows.js';
import type { TelemetryGap, TelemetryWindow } from '@edgepack/protocol';

export const FACTS = { arch: 'x86_64', platform: 'linux', cpuModel: 't', cores: 2, ramBytes: 1 << 30, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 't' };

export interface Rig {
  dir: string;
  file: string;
  db: Db;
  store: Store;
  telemetry: TelemetryStore;
  ingest: TelemetryIngest;
  health: HealthService;
  jobs: TelemetryJobs;
  metrics: OrchestratorMetrics;
  clock: { ms: number };
  now: () => Date;
  acks: { deviceId: string; ack: TelemetryAck; committedRows: number }[];
  notices: { deviceId: string; code: string; message: string }[];
  logs: { level: number; msg: string; [k: string]: unknown }[];
  addDevice(id: string, profile?: string, tags?: string[]): void;
  /** Sends a batch as the device's topic would deliver it and waits for its flush. */
  send(deviceId: string, windows: readonly TelemetryWindow[], gaps?: readonly TelemetryGap[], wait?: boolean): Promise<void>;
  rawRows(): number;
  /** Reopens the database (a restart): new connection, new parts, same file. */
  restart(): void;
  close(): Promise<void>;
}

export async function telemetryRig(opts: TelemetryIngestOptions & { startMs?: number } = {}): Promise<Rig> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-telemetry-'));
  const file = path.join(dir, 'edgepack.db');
  const clock = { ms: opts.startMs ?? Date.parse('2026-06-01T12:00:00.000Z') };
  const now = () => new Date(clock.ms);
  let reader: Database.Database;
  const logs: Rig['logs'] = [];
  const log = createLogger('debug', { write: (line: string) => { logs.push(JSON.parse(line)); } });
  const r = { dir, file, clock, now, acks: [], notices: [], logs } as unknown as Rig;
  const build = () => {
    r.db = openDatabase(file);
    r.store = new Store(r.db);
    r.telemetry = new TelemetryStore(r.db);
    r.metrics = createMetrics({ telemetry: r.telemetry, now, processMetrics: false });
    r.health = new HealthService({ telemetry: r.telemetry, devices: r.store, now, retention: DEFAULT_RETENTION });
    r.jobs = new TelemetryJobs({ telemetry: r.telemetry, log, now, retention: DEFAULT_RETENTION, chunk: 50 });
    r.ingest = new TelemetryIngest({
      telemetry: r.telemetry, devices: r.store, log, now, metrics: r.metrics.ingest, maxDelayMs: 5, ...opts,
      replies: {
        ack: async (deviceId, ack) => {
          const committedRows = (reader.prepare('SELECT COUNT(*) FROM telemetry_windows').pluck().get() as number);
          r.acks.push({ deviceId, ack, committedRows });
        },
        notice: async (deviceId, code, message) => { r.notices.push({ deviceId, code, message }); },
      },
    });
  };
  build();
  reader = new Database(file, { readonly: true });
  r.addDevice = (id, profile = 'x86-64-gateway', tags = []) => {
    r.store.insertDevice({ id, name: id, profile, publicKey: 'pk', tags, facts: FACTS as never, createdAt: now().toISOString() });
  };
  r.send = async (deviceId, windows, gaps = [], wait = true) => {
    r.ingest.receive(deviceId, Buffer.from(JSON.stringify(makeBatch(deviceId, windows, gaps, clock.ms))));
    if (wait) await r.ingest.idle();
  };
  r.rawRows = () => r.db.prepare('SELECT COUNT(*) FROM telemetry_windows').pluck().get() as number;
  r.restart = () => {
    r.db.close();
    build();
  };
  r.close = async () => {
    await r.ingest.idle();
    reader.close();
    r.db.close();
    await rm(dir, { recursive: true, force: true });
  };
  return r;
}
