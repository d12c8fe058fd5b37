import { readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import type { BenchmarkResult, DesiredState, SignedManifest } from '@edgepack/protocol';
import { tempPrefix, writeFileAtomic } from './durable-file.js';
import type { Logger } from './logger.js';
import { isTrialRecord, type TrialRecord } from './trial/trial-state.js';
import type { Phase } from './update-machine.js';

/**
 * One desired state the agent is carrying out or has carried out: hawkBit's Action, the word
 * the orchestrator uses for a device's part in a rollout. (Called Deployment before; state.json
 * files written then keep it under `deployment`, read once by parseState.)
 */
export interface Action {
  rolloutId: string;
  seq: number;
  bundle: SignedManifest;
  phase: Phase;
  code?: string;
  reason?: string;
  result?: BenchmarkResult;
  /** Whether a previous bundle was active when this one started: decides failed vs rolled_back. */
  hadPrevious: boolean;
  updatedAt: string;
}

export interface AgentState {
  /** Highest desired-state seq acted on (only ever from a verified envelope); older or repeated ones are ignored. */
  lastSeq: number;
  action: Action | null;
  /** A desired state that arrived while another action was running. */
  queued: DesiredState | null;
  lastBenchmark: BenchmarkResult | null;
  /**
   * The last few finished actions other than `action`, newest first, including ones
   * superseded before they ran. They are re-reported on reconnect, so an outcome reported while
   * the connection was down still reaches the orchestrator.
   */
  recent: Action[];
  /**
   * The latest trial (a desired state of kind `trial`; see trial/), running or reported, and the
   * few before it, newest first. Absent until the device's first trial. A trial is no Action: it
   * never touches the install flow's phases or slots.
   */
  trial?: TrialRecord | null;
  recentTrials?: TrialRecord[];
}

export const RECENT_LIMIT = 8;

const PHASES: readonly Phase[] = ['downloading', 'verifying', 'installing', 'benchmarking', 'committing', 'rolling_back', 'done', 'failed', 'rolled_back'];

function emptyState(): AgentState {
  return { lastSeq: 0, action: null, queued: null, lastBenchmark: null, recent: [] };
}

export function stateFile(dataDir: string): string {
  return join(dataDir, 'state.json');
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function isAction(v: unknown): v is Action {
  return isObject(v) && typeof v.rolloutId === 'string' && typeof v.seq === 'number' && PHASES.includes(v.phase as Phase)
    && isObject(v.bundle) && isObject(v.bundle.manifest);
}

/** Checks the shape this agent relies on; anything else is treated like a corrupt file. */
function parseState(text: string): AgentState {
  const raw: unknown = JSON.parse(text);
  if (!isObject(raw)) throw new Error('state is not a JSON object');
  // Written by an agent from before the rename: the same record under its old name. The next
  // save writes `action` only.
  if (!('action' in raw) && 'deployment' in raw) raw.action = raw.deployment;
  delete raw.deployment;
  if (typeof raw.lastSeq !== 'number' || !Number.isInteger(raw.lastSeq) || raw.lastSeq < 0) throw new Error('lastSeq is not a non-negative integer');
  if (raw.action != null && !isAction(raw.action)) throw new Error('action is malformed');
  if (raw.queued != null && !(isObject(raw.queued) && typeof raw.queued.seq === 'number' && isObject(raw.queued.bundle))) throw new Error('queued is malformed');
  const recent = Array.isArray(raw.recent) ? raw.recent.filter(isAction) : [];
  // A damaged trial record is dropped, not trusted: a trial is only ever measured, never resumed.
  if ('trial' in raw && raw.trial !== null && !isTrialRecord(raw.trial)) delete raw.trial;
  if ('recentTrials' in raw) raw.recentTrials = Array.isArray(raw.recentTrials) ? raw.recentTrials.filter(isTrialRecord) : [];
  return { ...emptyState(), ...(raw as Partial<AgentState>), recent };
}

/**
 * Reads state.json. A missing file is a fresh device. A file that cannot be read or parsed
 * must not keep the agent from starting: it is moved aside to state.json.corrupt-<timestamp>
 * for later inspection and the agent starts from an empty state. The running bundle is not
 * in this file (active.json / previous.json), so the device keeps serving it.
 */
export async function loadState(dataDir: string, log?: Logger): Promise<AgentState> {
  const file = stateFile(dataDir);
  await removeStaleTemps(file);
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
    return setAside(file, err, log);
  }
  try {
    return parseState(text);
  } catch (err) {
    return setAside(file, err, log);
  }
}

async function setAside(file: string, why: unknown, log?: Logger): Promise<AgentState> {
  const stamp = `${file}.corrupt-${new Date().toISOString().replace(/[:.]/g, '-')}`;
  let aside = stamp;
  for (let n = 1; await stat(aside).then(() => true, () => false); n++) aside = `${stamp}-${n}`;
  const reason = why instanceof Error ? why.message : String(why);
  try {
    await rename(file, aside);
    log?.error({ file, movedTo: aside, err: reason }, 'state file unreadable; moved aside, starting from an empty state');
  } catch (err) {
    // Still start: the next save replaces the file by rename.
    log?.error({ file, err: reason, moveErr: (err as Error).message }, 'state file unreadable and could not be moved aside; starting from an empty state');
  }
  return emptyState();
}

/** Temp files of writes a kill -9 interrupted; each write has its own name, so they would pile up. */
async function removeStaleTemps(file: string): Promise<void> {
  const prefix = basename(tempPrefix(file));
  const entries = await readdir(dirname(file)).catch(() => [] as string[]);
  for (const e of entries) if (e.startsWith(prefix)) await rm(join(dirname(file), e), { force: true }).catch(() => undefined);
}

export function saveState(dataDir: string, state: AgentState): Promise<void> {
  return writeFileAtomic(stateFile(dataDir), JSON.stringify(state));
}

/**
 * The one way the agent writes state.json: every save is serialised (one write at a time, in
 * call order) and snapshots the state when it is called, so the file always ends up holding
 * the state of the latest save, never a mix. A failed save rejects its caller only.
 */
export class StateStore {
  private tail: Promise<void> = Promise.resolve();
  constructor(private readonly dataDir: string) {}

  save(state: AgentState): Promise<void> {
    const text = JSON.stringify(state);
    const run = this.tail.then(() => writeFileAtomic(stateFile(this.dataDir), text));
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every save requested so far has finished (successfully or not). */
  idle(): Promise<void> {
    return this.tail;
  }
}
