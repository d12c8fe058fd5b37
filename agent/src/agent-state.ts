import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BenchmarkResult, DesiredState, SignedManifest } from '@edgepack/protocol';
import { writeFileAtomic } from './durable-file.js';
import type { Phase } from './update-machine.js';

export interface Deployment {
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
  /** Highest desired-state seq acted on; older or repeated ones are ignored. */
  lastSeq: number;
  deployment: Deployment | null;
  /** A desired state that arrived while another deployment was running. */
  queued: DesiredState | null;
  lastBenchmark: BenchmarkResult | null;
}

const EMPTY: AgentState = { lastSeq: 0, deployment: null, queued: null, lastBenchmark: null };

export async function loadState(dataDir: string): Promise<AgentState> {
  try {
    return { ...EMPTY, ...(JSON.parse(await readFile(join(dataDir, 'state.json'), 'utf8')) as AgentState) };
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { ...EMPTY };
    throw err;
  }
}

export function saveState(dataDir: string, state: AgentState): Promise<void> {
  return writeFileAtomic(join(dataDir, 'state.json'), JSON.stringify(state));
}
