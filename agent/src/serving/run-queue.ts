import { ServingError } from './kserve-codec.js';

interface Waiter {
  grant: () => void;
  timer?: NodeJS.Timeout;
}

/**
 * At most `concurrency` runs at a time on one model, at most `maxQueued` more waiting in
 * arrival order. A request that finds the queue full is refused at once (503, Retry-After);
 * one still waiting at its deadline leaves the queue with a 504. A slot is held until the run
 * really ends, even when its caller has already been answered 504: the runtime cannot be
 * interrupted, and the slot bounds the work in progress, not the answers.
 */
export class RunQueue {
  private running = 0;
  private readonly waiting: Waiter[] = [];
  private idleWaiters: (() => void)[] = [];

  constructor(readonly concurrency: number, readonly maxQueued: number, private readonly retryAfterSec = 1) {}

  get depth(): number { return this.waiting.length; }
  get inFlight(): number { return this.running; }

  /** Resolves with a release function once a slot is free; `deadline` is a performance.now() time. */
  acquire(deadline: number, now: () => number): Promise<() => void> {
    if (this.running < this.concurrency && this.waiting.length === 0) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    if (this.waiting.length >= this.maxQueued) {
      return Promise.reject(new ServingError('INFER_QUEUE_FULL', `the model's queue is full (${this.running} running, ${this.waiting.length} waiting); retry shortly`, this.retryAfterSec));
    }
    return new Promise((resolve, reject) => {
      const w: Waiter = { grant: () => { clearTimeout(w.timer); this.running++; resolve(this.releaser()); } };
      const left = deadline - now();
      w.timer = setTimeout(() => {
        const i = this.waiting.indexOf(w);
        if (i >= 0) this.waiting.splice(i, 1);
        this.notifyIdle();
        reject(new ServingError('INFER_TIMEOUT', 'the request timed out waiting for the model'));
      }, Math.max(0, left));
      this.waiting.push(w);
    });
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.running--;
      const next = this.waiting.shift();
      if (next) next.grant();
      else this.notifyIdle();
    };
  }

  private notifyIdle(): void {
    if (this.running > 0 || this.waiting.length > 0) return;
    const ws = this.idleWaiters;
    this.idleWaiters = [];
    for (const w of ws) w();
  }

  /** Resolves when nothing runs or waits: what a retiring model waits for before it closes. */
  idle(): Promise<void> {
    if (this.running === 0 && this.waiting.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }
}
