// Runs in a child process: load time, warm-up, timed runs and golden samples for one installed
// bundle. A separate process gives a true peak RSS for the model alone and keeps a runtime that
// crashes or leaks from taking the agent down with it.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { EdgepackError, GoldenFileSchema, Validator, catalogueCode, encodeTensor, errorMessage, modelFile, type BenchmarkResult, type EncodedTensor, type Manifest } from '@edgepack/protocol';
import { decodeGolden, latencySummary, maxAbsDiff } from './benchmark-stats.js';
import { createRunner } from './runtime/create-runner.js';

export interface BenchmarkJob {
  bundleDir: string;
  manifest: Manifest;
  warmupRuns: number;
  runs: number;
  providers: string[];
  /** Also hand back each golden sample's outputs (a trial compares them with the reference's). */
  collectOutputs?: boolean;
}

/** A benchmark's figures and, when asked for, the outputs of the golden samples in file order. */
export interface BenchmarkOutcome {
  result: BenchmarkResult;
  outputs?: Record<string, EncodedTensor>[];
}

export async function runBenchmark(job: BenchmarkJob): Promise<BenchmarkResult> {
  return (await runBenchmarkWithOutputs(job)).result;
}

export async function runBenchmarkWithOutputs(job: BenchmarkJob): Promise<BenchmarkOutcome> {
  const { manifest } = job;
  const bytes = new Uint8Array(await readFile(join(job.bundleDir, modelFile(manifest).path)));
  const goldenParsed = new Validator('golden file', GoldenFileSchema).parse(await readFile(join(job.bundleDir, manifest.golden.file)), 256 << 20);
  if (!goldenParsed.ok) throw new EdgepackError('GOLDEN_INVALID', goldenParsed.reason);
  const samples = decodeGolden(goldenParsed.value);
  if (samples.length === 0) throw new EdgepackError('GOLDEN_INVALID', 'bundle has no golden samples to check');

  const t0 = performance.now();
  const runner = await createRunner(manifest, bytes, { providers: job.providers, intraOpThreads: 1 });
  const loadMs = performance.now() - t0;
  try {
    let maxErr = 0;
    const outputs: Record<string, EncodedTensor>[] = [];
    for (const s of samples) {
      const out = await runner.run(s.inputs);
      if (job.collectOutputs) outputs.push(Object.fromEntries(Object.entries(out).map(([k, t]) => [k, encodeTensor(t.dtype, t.dims, t.data)])));
      for (const [name, expected] of Object.entries(s.outputs)) {
        const got = out[name];
        maxErr = Math.max(maxErr, got ? maxAbsDiff(got, expected) : Infinity);
      }
    }
    const feeds = samples[0]!.inputs;
    for (let i = 0; i < job.warmupRuns; i++) await runner.run(feeds);
    const times: number[] = [];
    const started = performance.now();
    for (let i = 0; i < job.runs; i++) {
      const s = performance.now();
      await runner.run(feeds);
      times.push(performance.now() - s);
    }
    const elapsed = performance.now() - started;
    const result: BenchmarkResult = {
      runtime: runner.runtime,
      providers: runner.providers,
      loadMs: Math.round(loadMs * 1000) / 1000,
      warmupRuns: job.warmupRuns,
      runs: job.runs,
      latencyMs: latencySummary(times),
      throughputPerSec: Math.round((job.runs / (elapsed / 1000)) * 100) / 100,
      // maxRSS is in KiB and covers this process's whole life, which is this one benchmark.
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
      golden: { passed: maxErr <= manifest.golden.maxAbsError, maxAbsError: Number.isFinite(maxErr) ? maxErr : 1e308, samples: samples.length },
    };
    return job.collectOutputs ? { result, outputs } : { result };
  } finally {
    await runner.close();
  }
}

// When forked: take one job over IPC, answer with one message, exit.
if (process.send) {
  process.once('message', (job: BenchmarkJob) => {
    runBenchmarkWithOutputs(job).then(
      (outcome) => process.send!({ ok: true, ...outcome }, () => process.exit(0)),
      (err: unknown) => process.send!({ ok: false, code: catalogueCode(err, 'BENCHMARK_FAILED'), message: errorMessage(err) }, () => process.exit(0)),
    );
  });
}
