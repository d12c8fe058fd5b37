import type { Client } from 'aedes';
import { sessionDeadline, sessionSweepEveryMs } from '../core/session-policy.js';
import type { Logger } from '../logger.js';

/**
 * Ends MQTT sessions past their deadline (core/session-policy.ts): the broker closes the
 * connection and the device reconnects with a freshly signed credential. The one timer lives
 * here; what a deadline is, is decided in core.
 */
export class SessionExpiry {
  private readonly deadlines = new Map<Client, number>();
  private timer?: NodeJS.Timeout;

  constructor(private readonly o: { maxAgeMs: number; now: () => Date; log: Logger }) {}

  get enabled(): boolean { return this.o.maxAgeMs > 0; }

  /** Called once a CONNECT is accepted, with the time the credential says it was signed. */
  track(client: Client, credentialIssuedAtMs: number): void {
    if (!this.enabled) return;
    this.deadlines.set(client, sessionDeadline(credentialIssuedAtMs, this.o.maxAgeMs, client.id));
  }

  forget(client: Client): void {
    this.deadlines.delete(client);
  }

  /** Closes every session past its deadline; returns how many. */
  sweep(): number {
    const t = this.o.now().getTime();
    let closed = 0;
    for (const [client, deadline] of this.deadlines) {
      if (deadline > t) continue;
      this.deadlines.delete(client);
      this.o.log.info({ deviceId: client.id, maxAgeSec: this.o.maxAgeMs / 1000 }, 'mqtt session ended: its credential is past the session max age; the device reconnects with a fresh one');
      client.close();
      closed++;
    }
    return closed;
  }

  start(): void {
    if (!this.enabled || this.timer) return;
    this.timer = setInterval(() => this.sweep(), sessionSweepEveryMs(this.o.maxAgeMs));
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    this.deadlines.clear();
  }
}
