import type { Logger } from './logger.js';

interface Pending {
  msg: string;
  fields: Record<string, unknown>;
  count: number;
  /** Occurrences by source (a client IP, a device id), the busiest first in the summary. */
  by: Map<string, number>;
}

/** Distinct sources kept per key and interval; the rest are only counted. */
const MAX_SOURCES = 100;
const SHOWN_SOURCES = 10;

/**
 * Rate-limited logging for events that an attacker can repeat thousands of times a second
 * (failed authentication, refused requests): the first event of a kind in an interval is logged
 * at once, and the rest of that interval become one summary line with counts per source, so a
 * flood is visible in the log without writing the log at the flood's rate.
 */
export class LogDigest {
  private readonly pending = new Map<string, Pending>();
  private readonly timer: NodeJS.Timeout;

  constructor(private readonly log: Logger, private readonly intervalMs: number) {
    this.timer = setInterval(() => this.flush(), intervalMs);
    this.timer.unref();
  }

  /** Counts one event of kind `key` from `source`; `fields` never hold secrets (no tokens, no credentials). */
  note(key: string, msg: string, fields: Record<string, unknown>, source: string): void {
    const p = this.pending.get(key);
    if (!p) {
      this.log.warn({ ...fields, source }, msg);
      this.pending.set(key, { msg, fields, count: 0, by: new Map() });
      return;
    }
    p.count++;
    if (p.by.has(source) || p.by.size < MAX_SOURCES) p.by.set(source, (p.by.get(source) ?? 0) + 1);
  }

  /** Writes one summary line per kind that repeated since the last flush, and starts a new interval. */
  flush(): void {
    for (const [key, p] of this.pending) {
      // A kind that went quiet is forgotten, so its next event is logged at once again; one that
      // keeps repeating stays, so a sustained flood is exactly one summary line per interval.
      if (p.count === 0) {
        this.pending.delete(key);
        continue;
      }
      const top = [...p.by].sort((a, b) => b[1] - a[1]).slice(0, SHOWN_SOURCES).map(([source, count]) => ({ source, count }));
      this.log.warn({ ...p.fields, repeated: p.count, sources: p.by.size, top, intervalMs: this.intervalMs }, `${p.msg} (${p.count} more in the last ${Math.round(this.intervalMs / 1000)} s)`);
      p.count = 0;
      p.by.clear();
    }
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
    this.pending.clear();
  }
}
