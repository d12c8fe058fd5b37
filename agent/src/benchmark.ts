import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { EdgepackError, catalogueCode, type BenchmarkResult, type ErrorCode } from '@edgepack/protocol';
import type { BenchmarkJob, BenchmarkOutcome } from './benchmark-worker.js';

/** Runs the benchmark in a child process with a time limit; a crash or hang becomes a coded error. */
export async function benchmarkInChild(job: BenchmarkJob, timeoutMs: number): Promise<BenchmarkResult> {
  return (await benchmarkOutcomeInChild(job, timeoutMs)).result;
}

/** As benchmarkInChild, with the golden samples' outputs when the job asks for them (trials). */
export function benchmarkOutcomeInChild(job: BenchmarkJob, timeoutMs: number): Promise<BenchmarkOutcome> {
  return new Promise((resolve, reject) => {
    const child = fork(fileURLToPath(new URL('./benchmark-worker.js', import.meta.url)), [], { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] });
    let stderr = '';
    let settled = false;
    child.stderr?.on('data', (d: Buffer) => { stderr = (stderr + d.toString()).slice(-2000); });
    const timer = setTimeout(() => {
      finish(new EdgepackError('BENCHMARK_TIMEOUT', `benchmark did not finish within ${timeoutMs} ms`));
      child.kill('SIGKILL');
    }, timeoutMs);
    const finish = (outcome: BenchmarkOutcome | Error) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      if (outcome instanceof Error) reject(outcome);
      else resolve(outcome);
    };
    child.on('message', (m: ({ ok: true } & BenchmarkOutcome) | { ok: false; code: ErrorCode; message: string }) => {
      // The code crossed a process boundary: trust it only if it is in the catalogue.
      finish(m.ok ? { result: m.result, ...(m.outputs ? { outputs: m.outputs } : {}) } : new EdgepackError(catalogueCode(m.code, 'BENCHMARK_FAILED'), m.message));
    });
    child.on('exit', (code, signal) => finish(new EdgepackError('BENCHMARK_CRASHED', `benchmark process exited (${signal ?? code}) without a result${stderr ? `: ${stderr.trim().split('\n').pop()}` : ''}`)));
    child.on('error', (err) => finish(new EdgepackError('BENCHMARK_CRASHED', err.message)));
    child.send(job);
  });
}
