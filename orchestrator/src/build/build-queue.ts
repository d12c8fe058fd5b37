import { runBuild, type BuildDeps } from './build-runner.js';

/**
 * Runs builds one at a time in the background so the API answers at once; callers poll
 * GET /v1/builds/:id. `idle()` lets shutdown and tests wait for the queue to drain.
 */
export class BuildQueue {
  private chain: Promise<void> = Promise.resolve();
  private pending = 0;

  constructor(private readonly deps: BuildDeps) {}

  enqueue(buildId: string): void {
    this.pending++;
    this.chain = this.chain
      .then(() => runBuild(this.deps, buildId))
      .catch((err) => this.deps.log.error({ buildId, err: String(err) }, 'build crashed'))
      .finally(() => { this.pending--; });
  }

  get size(): number {
    return this.pending;
  }

  idle(): Promise<void> {
    return this.chain;
  }
}
