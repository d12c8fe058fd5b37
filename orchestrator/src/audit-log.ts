import { randomBytes } from 'node:crypto';
import { AuditStore, type AuditActor, type AuditFilter, type AuditRecord } from './db/audit-store.js';
import type { Db } from './db/database.js';
import type { Page, PageQuery } from './db/store.js';
import type { Logger } from './logger.js';

export type AuditEntry = Omit<AuditRecord, 'id' | 'at'>;

/**
 * The audit trail: who did what to which target, when, and how it ended. Written in the same
 * SQLite database as what it describes. Recording never throws: a failed write must not change
 * the outcome of the call it describes (which has already happened), so it is logged at error
 * level instead, with everything the row would have held.
 *
 * The HTTP API records every mutating call through one hook (http/audit-hook.ts); a use case
 * that runs outside HTTP (a command from cron or the dashboard) calls `record` itself.
 */
export class AuditLog {
  private readonly store: AuditStore;
  /** Rows page by (at, id): ids that grow within the process keep calls of one millisecond in order. */
  private seq = 0;

  constructor(private readonly deps: { db: Db; log: Logger; now: () => Date }) {
    this.store = new AuditStore(deps.db);
  }

  record(entry: AuditEntry): boolean {
    const id = `aud_${(++this.seq).toString(36).padStart(8, '0')}${randomBytes(4).toString('hex')}`;
    const row: AuditRecord = { id, at: this.deps.now().toISOString(), ...entry };
    try {
      this.store.insert(row);
      return true;
    } catch (err) {
      this.deps.log.error({ err, audit: row }, 'audit row could not be written; the call it describes stands');
      return false;
    }
  }

  page(filter: AuditFilter, q: PageQuery): Page<AuditRecord> {
    return this.store.page(filter, q);
  }
}

export type { AuditActor, AuditRecord };
