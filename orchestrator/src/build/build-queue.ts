import { runBuild, type BuildDeps } from './build-runner.js';

/**
 * Runs builds one at a time in the background so the API answers at once; callers poll
 * GET /v1/builds/:id. `close()` stops the running build's worker and starts no queued one:
 * shutdown must not wait minutes for quantization, and unfinished builds are marked failed
 * (with a reason) when the orchestrator starts again.
 */
export class BuildQueue {
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;
  private readonly abort = new AbortController();

  constructor(private readonly deps: BuildDeps) {}

  enqueue(buildId: string): void {
    this.pending++;
    this.chain = this.chain
      .then(() => (this.abort.signal.aborted ? undefined : runBuild(this.deps, buildId, this.abort.signal)))
      .catch((err) => this.deps.log.error({ buildId, err }, 'build crashed'))
      .finally(() => { this.pending--; });
  }

  get size(): number {
    return this.pending;
  }

  idle(): Promise<void> {
    return this.chain;
  }

  async close(): Promise<void> {
    this.abort.abort();
    await this.chain;
  }
}
