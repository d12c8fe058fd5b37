/**
 * Counts failed attempts per key (a client IP, a device id) and blocks a key that fails too
 * often: after `maxFailures` failures inside `windowMs` the key is blocked for `blockMs`, and
 * each block that follows within `maxBlockMs` of the last one lasts twice as long (up to
 * `maxBlockMs`). Pure bookkeeping: the caller passes the time, so tests drive it with a fake
 * clock, and both doors (HTTP and MQTT) share it.
 *
 * Memory is bounded: at most `maxKeys` keys are tracked; past that the least recently touched
 * key is forgotten (Map keeps insertion order, and a touched key is moved to the end).
 */
export interface FailureThrottleOptions {
  maxFailures: number;
  windowMs: number;
  blockMs: number;
  maxBlockMs: number;
  maxKeys?: number;
}

interface Entry {
  windowStart: number;
  failures: number;
  blockedUntil: number;
  /** How many blocks in a row (each doubles the next). */
  strikes: number;
}

export type ThrottleState = { blocked: false } | { blocked: true; retryAfterMs: number };

export class FailureThrottle {
  private readonly entries = new Map<string, Entry>();
  private readonly maxKeys: number;

  constructor(private readonly o: FailureThrottleOptions) {
    this.maxKeys = o.maxKeys ?? 10_000;
  }

  /** Whether `key` is blocked now; asks nothing of the credential, so a blocked key costs no check. */
  check(key: string, nowMs: number): ThrottleState {
    const e = this.entries.get(key);
    if (!e || e.blockedUntil <= nowMs) return { blocked: false };
    return { blocked: true, retryAfterMs: e.blockedUntil - nowMs };
  }

  /** Records a failure; returns the state it leaves the key in (blocked when this was one too many). */
  fail(key: string, nowMs: number): ThrottleState {
    let e = this.entries.get(key);
    if (e) this.entries.delete(key);
    else e = { windowStart: nowMs, failures: 0, blockedUntil: 0, strikes: 0 };
    this.entries.set(key, e);
    this.evict();
    // A quiet spell as long as the longest block forgives earlier blocks.
    if (e.strikes > 0 && nowMs - e.blockedUntil > this.o.maxBlockMs) e.strikes = 0;
    if (nowMs - e.windowStart >= this.o.windowMs) {
      e.windowStart = nowMs;
      e.failures = 0;
    }
    e.failures++;
    if (e.failures >= this.o.maxFailures) {
      const ms = Math.min(this.o.maxBlockMs, this.o.blockMs * 2 ** e.strikes);
      e.blockedUntil = Math.max(e.blockedUntil, nowMs + ms);
      e.strikes++;
      e.failures = 0;
      e.windowStart = nowMs;
    }
    return this.check(key, nowMs);
  }

  /** A success under `key` (a device that proved itself) forgets its failures. */
  succeed(key: string): void {
    this.entries.delete(key);
  }

  get size(): number {
    return this.entries.size;
  }

  private evict(): void {
    while (this.entries.size > this.maxKeys) {
      const oldest = this.entries.keys().next().value as string;
      this.entries.delete(oldest);
    }
  }
}
