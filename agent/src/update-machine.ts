import type { DeviceState } from '@edgepack/protocol';

/**
 * The update flow as an explicit transition table (after Mender): every phase, the events
 * that leave it, and where they lead. The agent persists the new phase *before* acting on it,
 * so after a kill -9 `resumeAction` says what to redo; every phase's work is idempotent.
 *
 *   downloading → verifying → installing → benchmarking → committing → done
 *        │             │           │              │
 *        └─────────────┴── error ──┴── failed     └── error → rolling_back → rolled_back
 */
export type Phase = 'downloading' | 'verifying' | 'installing' | 'benchmarking' | 'committing' | 'rolling_back' | 'done' | 'failed' | 'rolled_back';
export type UpdateEvent = 'downloaded' | 'verified' | 'installed' | 'accepted' | 'committed' | 'error' | 'rolled_back';

const TABLE: Record<Phase, Partial<Record<UpdateEvent, Phase>>> = {
  downloading: { downloaded: 'verifying', error: 'failed' },
  verifying: { verified: 'installing', error: 'failed' },
  // An install that fails part-way has touched nothing the device runs: clean up and report failed.
  installing: { installed: 'benchmarking', error: 'failed' },
  // From here the new version is on disk; a failure must bring the previous one back.
  benchmarking: { accepted: 'committing', error: 'rolling_back' },
  committing: { committed: 'done', error: 'rolling_back' },
  rolling_back: { rolled_back: 'rolled_back', error: 'rolled_back' },
  done: {},
  failed: {},
  rolled_back: {},
};

export class IllegalTransitionError extends Error {
  readonly code = 'ILLEGAL_TRANSITION';
  constructor(from: Phase, event: UpdateEvent) {
    super(`no transition from ${from} on ${event}`);
  }
}

export function nextPhase(from: Phase, event: UpdateEvent): Phase {
  const to = TABLE[from][event];
  if (!to) throw new IllegalTransitionError(from, event);
  return to;
}

export function isTerminal(phase: Phase): boolean {
  return phase === 'done' || phase === 'failed' || phase === 'rolled_back';
}

/** The state reported upstream for a phase; internal phases report the step they belong to. */
export function reportedState(phase: Phase): DeviceState {
  switch (phase) {
    case 'downloading': return 'downloading';
    case 'verifying': return 'verifying';
    case 'installing': return 'installing';
    case 'benchmarking': return 'benchmarking';
    case 'committing': return 'benchmarking';
    case 'rolling_back': return 'benchmarking';
    case 'done': return 'active';
    case 'failed': return 'failed';
    case 'rolled_back': return 'rolled_back';
  }
}

/** What to do with a deployment found in `phase` after a restart. */
export type ResumeAction = 'redo-phase' | 'report-only';

export function resumeAction(phase: Phase): ResumeAction {
  return isTerminal(phase) ? 'report-only' : 'redo-phase';
}
