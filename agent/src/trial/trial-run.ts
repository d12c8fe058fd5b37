import { join } from 'node:path';
import {
  float16BitsToFloat32, EdgepackError, catalogueCode, decodeTensor, errorCode, errorMessage, verifyFileIntegrity,
  type BenchmarkResult, type BundleFile, type DesiredState, type EncodedTensor, type ErrorCode, type SignedManifest, type TrialCandidateResult,
} from '@edgepack/protocol';
import type { BenchmarkJob, BenchmarkOutcome } from '../benchmark-worker.js';
import { sha256File } from '../bundle-slots.js';
import { computeAgreement, type SampleOutputs } from './agreement.js';
import type { ScratchSlot } from './scratch-slot.js';
import { combineRounds, roundSchedule } from './trial-rounds.js';
import { trialCandidates } from './trial-state.js';

/** The agent's edges a trial runs on; each throws a coded error (EdgepackError) when it fails. */
export interface TrialEdges {
  scratch: ScratchSlot;
  /** Manifest signature through the trusted root, profile, expiry: exactly an install's check. */
  verifyBundle: (bundle: SignedManifest) => void;
  /** The install slot directory of a bundle the device already holds (read, never written), else null. */
  installedDir: (bundleId: string) => Promise<string | null>;
  /** Brings one file in as chunks to `ChunkDownload.finalPath(dir, file.sha256)`. */
  download: (bundleId: string, file: BundleFile, dir: string) => Promise<void>;
  /** Where `download` put a file. */
  downloadedPath: (dir: string, sha256: string) => string;
  benchmark: (job: BenchmarkJob) => Promise<BenchmarkOutcome>;
  /** Throws the trial's stop reason (superseded, agent stopping) if there is one; called between steps. */
  checkpoint: () => void;
  /** Timed runs per round (default: the manifest's acceptance.runs, else 20). */
  runs?: number;
}

/** A failure that ends the whole trial, not one candidate: the disk is full, or the trial was stopped. */
export class TrialStop extends EdgepackError {
  constructor(code: ErrorCode, message: string) { super(code, message); }
}

function isDiskFull(err: unknown): boolean {
  const raw = errorCode(err);
  return raw === 'ENOSPC' || raw === 'EDQUOT';
}

/** Output tensors as numbers, for the agreement check (float16 is carried as its bits). */
function decodeOutputs(outputs: Record<string, EncodedTensor>[]): SampleOutputs[] {
  return outputs.map((rec) => Object.fromEntries(Object.entries(rec).map(([name, t]) => {
    const d = decodeTensor(t);
    const data = d.dtype === 'float16' ? Float32Array.from(d.data as Uint16Array, float16BitsToFloat32) : (d.data as ArrayLike<number | bigint>);
    return [name, { dims: d.dims, data }];
  })));
}

interface CandidateRun {
  bundle: SignedManifest;
  out: TrialCandidateResult;
  /** False once the candidate failed (verification, download, load, crash): it is measured no further. */
  live: boolean;
  rounds: BenchmarkResult[];
  outputs?: SampleOutputs[];
}

/**
 * Runs one trial on the device's edges: fetch and verify every candidate into the scratch slot,
 * benchmark them in interleaved rounds, golden-check them, compare each one's outputs with the
 * reference's. A candidate that fails gets its own code and the others go on; a TrialStop (or a
 * full disk, raised as one) ends the whole trial. The caller removes the scratch slot.
 */
export async function runTrial(desired: DesiredState, edges: TrialEdges): Promise<TrialCandidateResult[]> {
  const { scratch } = edges;
  const runs: CandidateRun[] = trialCandidates(desired).map((bundle) => ({
    bundle, out: { bundleId: bundle.manifest.bundleId, precision: bundle.manifest.precision }, live: true, rounds: [],
  }));
  const fail = (c: CandidateRun, err: unknown, step: string) => {
    if (err instanceof TrialStop) throw err;
    if (isDiskFull(err)) throw new TrialStop('DISK_FULL', `${step} ${c.out.bundleId}: no space left for the trial's scratch slot (${errorMessage(err)})`);
    c.live = false;
    c.out.code = catalogueCode(err, 'STEP_FAILED');
    c.out.reason = `${step}: ${errorMessage(err)}`.slice(0, 4000);
  };

  // 1. Fetch and verify, one candidate at a time, exactly as an install checks its bundle.
  for (const c of runs) {
    edges.checkpoint();
    const m = c.bundle.manifest;
    try {
      edges.verifyBundle(c.bundle);
    } catch (err) {
      fail(c, err, 'verifying');
      continue;
    }
    try {
      const kept = await edges.installedDir(m.bundleId);
      const paths = new Map<string, string>();
      for (const file of m.files) {
        edges.checkpoint();
        let path: string;
        if (kept) {
          path = join(kept, file.path);
        } else {
          await edges.download(m.bundleId, file, scratch.downloads);
          path = edges.downloadedPath(scratch.downloads, file.sha256);
        }
        verifyFileIntegrity(file, await sha256File(path));
        paths.set(file.sha256, path);
      }
      await scratch.bundles.install(m, (sha) => paths.get(sha)!);
    } catch (err) {
      fail(c, err, 'downloading');
    }
  }

  // 2. Interleaved rounds. The golden samples run in every round (the worker checks them before
  // timing); their outputs are kept from the first round for the agreement check.
  for (const { round, candidate: c } of roundSchedule(runs, desired.trial!.rounds)) {
    if (!c.live) continue;
    edges.checkpoint();
    const m = c.bundle.manifest;
    const n = edges.runs ?? m.acceptance.runs ?? 20;
    try {
      const outcome = await edges.benchmark({
        bundleDir: scratch.dir(m.bundleId), manifest: m, warmupRuns: Math.min(n, m.acceptance.warmupRuns ?? 3), runs: n,
        providers: m.runtime.executionProviders, collectOutputs: round === 1,
      });
      c.rounds.push(outcome.result);
      if (outcome.outputs) c.outputs = decodeOutputs(outcome.outputs);
    } catch (err) {
      fail(c, err, `benchmarking (round ${round})`);
    }
  }
  edges.checkpoint();

  // 3. Figures, golden verdicts, agreement with the reference.
  const reference = runs.find((c) => c.out.bundleId === desired.trial!.referenceBundleId);
  for (const c of runs) {
    if (!c.live || c.rounds.length === 0) continue;
    const result = combineRounds(c.rounds);
    c.out.result = result;
    if (!result.golden.passed) {
      c.out.code = 'GOLDEN_MISMATCH';
      c.out.reason = `golden samples differ by up to ${result.golden.maxAbsError}, allowed ${c.bundle.manifest.golden.maxAbsError}`;
    }
    if (reference?.live && reference.outputs && c.outputs) c.out.agreement = computeAgreement(reference.outputs, c.outputs);
  }
  return runs.map((c) => c.out);
}
