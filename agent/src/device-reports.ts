import { PROTOCOL_VERSION, type BenchmarkResult, type Heartbeat, type Manifest, type StatusReport } from '@edgepack/protocol';
import { isTerminal, reportedState, type Phase } from './update-machine.js';

/** The fields of an action a status report is made of. */
export interface ReportedAction {
  rolloutId: string;
  bundleId: string;
  phase: Phase;
  code?: string;
  reason?: string;
  result?: BenchmarkResult;
  hadPrevious: boolean;
  updatedAt: string;
}

/** The status report for an action: the state it reports, its code, reason and figures. */
export function statusReport(deviceId: string, d: ReportedAction): StatusReport {
  let state = reportedState(d.phase);
  // Nothing to roll back to on a first install: say failed, not rolled_back.
  if (state === 'rolled_back' && !d.hadPrevious) state = 'failed';
  return {
    v: PROTOCOL_VERSION, deviceId, rolloutId: d.rolloutId, bundleId: d.bundleId, state,
    ...(d.code ? { code: d.code } : {}), ...(d.reason ? { reason: d.reason.slice(0, 4000) } : {}), ...(d.result ? { result: d.result } : {}),
    at: d.updatedAt,
  };
}

/** Only a change of the reported state, or an end, is worth a report; internal phases fold into the step they belong to. */
export function reportsTransition(from: Phase, to: Phase): boolean {
  return reportedState(to) !== reportedState(from) || isTerminal(to);
}

export function heartbeatMessage(args: { deviceId: string; uptimeSec: number; activeBundle: string | null; lastBenchmark: BenchmarkResult | null; agentVersion: string; at: Date }): Heartbeat {
  return {
    v: PROTOCOL_VERSION, deviceId: args.deviceId, uptimeSec: args.uptimeSec, activeBundle: args.activeBundle,
    lastBenchmark: args.lastBenchmark, agentVersion: args.agentVersion, at: args.at.toISOString(),
  };
}

/** Why a benchmark result keeps a bundle from being committed, or null: the on-device acceptance rule. */
export function acceptanceFailure(manifest: Manifest, result: BenchmarkResult): { code: 'GOLDEN_MISMATCH' | 'LATENCY_BUDGET_EXCEEDED'; message: string } | null {
  if (!result.golden.passed) {
    return { code: 'GOLDEN_MISMATCH', message: `golden samples differ by up to ${result.golden.maxAbsError}, allowed ${manifest.golden.maxAbsError}` };
  }
  const budget = manifest.acceptance.p95LatencyMs;
  if (budget !== undefined && result.latencyMs.p95 > budget) {
    return { code: 'LATENCY_BUDGET_EXCEEDED', message: `p95 latency ${result.latencyMs.p95} ms is over the profile's ${budget} ms budget` };
  }
  return null;
}
