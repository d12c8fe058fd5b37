import { appendFile, mkdir, open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BenchmarkResult, DesiredState, Precision, SignedRoot } from '@edgepack/protocol';
import type { ReportedAction } from '../device-reports.js';
import { writeFileAtomic } from '../durable-file.js';
import type { Identity } from '../identity.js';
import type { Logger } from '../logger.js';
import type { TrialRecord } from '../trial/trial-state.js';
import type { LatencyFigures } from './synthetic-benchmark.js';

/** A bundle a simulated device has had active: what the real agent would keep a slot (and figures) of. */
export interface HeldBundle {
  bundleId: string;
  precision: Precision;
  /** fp32-equivalent figures on this bundle's model; the next new bundle's figures follow from them. */
  reference: LatencyFigures;
  /** What the device reported when it installed this bundle; reported again when it goes back to it. */
  result: BenchmarkResult;
  activatedAt: string;
}

export interface SimAction extends ReportedAction {
  seq: number;
  /** Kept while the action runs, so a restart can redo it; dropped once it is over. */
  desired?: DesiredState;
  /** The fp32-equivalent figures measured in benchmarking, kept until the commit. */
  reference?: LatencyFigures;
}

/** Everything one simulated device remembers besides its identity; the agent's state.json, active.json and previous.json in one. */
export interface SimDeviceState {
  /** Highest desired-state seq acted on; see classifyDesired. */
  lastSeq: number;
  /** The highest root walked to since enrollment (the agent's trust.json); absent: the enrollment root. */
  trustedRoot?: SignedRoot;
  activeBundleId: string | null;
  previousBundleId: string | null;
  /** Every bundle it ever had active, newest first (bounded): failures are never injected into these. */
  held: HeldBundle[];
  lastBenchmark: BenchmarkResult | null;
  action: SimAction | null;
  queued: DesiredState | null;
  /** The last few finished actions other than `action`, newest first; re-reported on reconnect like the agent's. */
  recent: SimAction[];
  /** The latest trial and the few before it, as the agent keeps them (see trial/trial-state.ts); absent until the first. */
  trial?: TrialRecord | null;
  recentTrials?: TrialRecord[];
}

export interface StoredDevice {
  /** 1-based position in the fleet; names the device (sim-0001) and orders it. */
  index: number;
  identity: Identity;
  state: SimDeviceState;
}

export const HELD_LIMIT = 16;

export function emptyDeviceState(): SimDeviceState {
  return { lastSeq: 0, activeBundleId: null, previousBundleId: null, held: [], lastBenchmark: null, action: null, queued: null, recent: [] };
}

/** A stored device state; one written before the rename keeps its action under `deployment`. */
function stateOf(raw: (Partial<SimDeviceState> & { deployment?: SimAction | null }) | undefined): Partial<SimDeviceState> {
  if (!raw) return {};
  const { deployment, ...rest } = raw;
  return 'action' in rest || deployment === undefined ? rest : { ...rest, action: deployment };
}

interface StateFile {
  version: 1;
  devices: Record<string, SimDeviceState & { deployment?: SimAction | null }>;
}

/**
 * The simulator's data dir:
 *   identities.jsonl    one line per enrolled device, appended as it enrolls (write-once data,
 *                       so 1,000 enrollments cost 1,000 small appends, not 1,000 rewrites)
 *   devices-state.json  every device's state, rewritten atomically when something changed
 * A torn last line (a kill during an append) is skipped with a warning; that device is simply
 * enrolled again.
 */
export class FleetStore {
  private saving?: Promise<void>;
  constructor(readonly dataDir: string, private readonly log: Logger) {}

  private get identitiesFile(): string { return join(this.dataDir, 'identities.jsonl'); }
  private get stateFile(): string { return join(this.dataDir, 'devices-state.json'); }

  async load(): Promise<StoredDevice[]> {
    await mkdir(this.dataDir, { recursive: true, mode: 0o700 });
    const lines = await readFile(this.identitiesFile, 'utf8').then((t) => t.split('\n'), (err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    let states: StateFile['devices'] = {};
    try {
      const parsed = JSON.parse(await readFile(this.stateFile, 'utf8')) as StateFile;
      if (parsed && typeof parsed === 'object' && parsed.devices && typeof parsed.devices === 'object') states = parsed.devices;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') this.log.warn({ file: this.stateFile, err: (err as Error).message }, 'device state unreadable; devices start from an empty state');
    }
    const byIndex = new Map<number, StoredDevice>();
    for (const [n, line] of lines.entries()) {
      if (!line.trim()) continue;
      try {
        const { index, identity } = JSON.parse(line) as { index: number; identity: Identity };
        if (!Number.isInteger(index) || typeof identity?.deviceId !== 'string' || typeof identity.secretKey !== 'string') throw new Error('not an identity line');
        byIndex.set(index, { index, identity, state: { ...emptyDeviceState(), ...stateOf(states[identity.deviceId]) } });
      } catch (err) {
        this.log.warn({ file: this.identitiesFile, line: n + 1, err: (err as Error).message }, 'identity line skipped');
      }
    }
    return [...byIndex.values()].sort((a, b) => a.index - b.index);
  }

  /** Appends one enrolled device; its secret key is in it, hence 0600. */
  async addIdentity(index: number, identity: Identity): Promise<void> {
    await appendFile(this.identitiesFile, `${JSON.stringify({ index, identity })}\n`, { mode: 0o600 });
  }

  /** Makes the appended identities durable: once after a batch of enrollments rather than per line. */
  async syncIdentities(): Promise<void> {
    const fh = await open(this.identitiesFile, 'a');
    try { await fh.sync(); } finally { await fh.close(); }
  }

  /** Snapshots the state now and writes it; saves run one at a time, and a save asked for while one runs follows it. */
  save(devices: readonly StoredDevice[]): Promise<void> {
    const file: StateFile = { version: 1, devices: Object.fromEntries(devices.map((d) => [d.identity.deviceId, d.state])) };
    const text = JSON.stringify(file);
    const run = (this.saving ?? Promise.resolve()).then(() => writeFileAtomic(this.stateFile, text));
    this.saving = run.catch(() => undefined);
    return run;
  }
}
