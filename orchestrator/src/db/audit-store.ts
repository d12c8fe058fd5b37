import type Database from 'better-sqlite3';
import type { Db } from './database.js';
import type { Page, PageQuery } from './store.js';

/** Who made a call: an API token, a device (its own credential or a device token), or nobody known. */
export interface AuditActor {
  kind: 'token' | 'device' | 'anonymous';
  /** Token id, or device id. */
  id: string | null;
  name: string | null;
  /** The token's role (admin, operator, viewer, device). */
  role: string | null;
}

/** One audited call: who, what (method and route pattern), on what, when, and how it ended. */
export interface AuditRecord {
  id: string;
  at: string;
  actor: AuditActor;
  method: string;
  /** The route pattern, e.g. /v1/rollouts/:id/pause, never the raw URL (no query strings in the log). */
  route: string;
  targetId: string | null;
  status: number;
  /** The catalogue code of an error answer; null on success. */
  code: string | null;
  requestId: string;
  ip: string | null;
}

export interface AuditFilter {
  actor?: string;
  target?: string;
  since?: string;
  until?: string;
}

type Row = Record<string, unknown>;

function toAudit(r: Row): AuditRecord {
  return {
    id: r.id as string, at: r.at as string,
    actor: { kind: r.actor_kind as AuditActor['kind'], id: (r.actor_id as string | null) ?? null, name: (r.actor_name as string | null) ?? null, role: (r.actor_role as string | null) ?? null },
    method: r.method as string, route: r.route as string, targetId: (r.target_id as string | null) ?? null, status: r.status as number,
    code: (r.error_code as string | null) ?? null, requestId: r.request_id as string, ip: (r.ip as string | null) ?? null,
  };
}

/** The SQL of the audit_log table (migration 6). Rows are only ever added. */
export class AuditStore {
  private readonly statements = new Map<string, Database.Statement<unknown[]>>();

  constructor(private readonly db: Db) {}

  /** Prepared once per SQL text: these run on every API request (token check, audit row). */
  private stmt(sql: string): Database.Statement<unknown[]> {
    let s = this.statements.get(sql);
    if (!s) this.statements.set(sql, (s = this.db.prepare(sql)));
    return s;
  }

  insert(a: AuditRecord): void {
    this.stmt(`INSERT INTO audit_log (id, at, actor_kind, actor_id, actor_name, actor_role, method, route, target_id, status, error_code, request_id, ip)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
      .run(a.id, a.at, a.actor.kind, a.actor.id, a.actor.name, a.actor.role, a.method, a.route, a.targetId, a.status, a.code, a.requestId, a.ip);
  }

  /** Oldest first, like every list; `since` is inclusive, `until` exclusive. */
  page(filter: AuditFilter, q: PageQuery): Page<AuditRecord & { createdAt: string }> {
    const where: [string, ...unknown[]][] = [];
    if (filter.actor !== undefined) where.push(['actor_id = ?', filter.actor]);
    if (filter.target !== undefined) where.push(['target_id = ?', filter.target]);
    if (filter.since !== undefined) where.push(['at >= ?', filter.since]);
    if (filter.until !== undefined) where.push(['at < ?', filter.until]);
    if (q.after) where.push(['(at, id) > (?, ?)', q.after.createdAt, q.after.id]);
    const sql = `SELECT * FROM audit_log${where.length ? ` WHERE ${where.map((w) => w[0]).join(' AND ')}` : ''} ORDER BY at, id LIMIT ?`;
    const rows = this.stmt(sql).all(...where.flatMap((w) => w.slice(1)), q.limit + 1) as Row[];
    const items = rows.slice(0, q.limit).map((r) => ({ ...toAudit(r), createdAt: r.at as string }));
    const last = items[items.length - 1];
    return { items, next: rows.length > q.limit && last ? { createdAt: last.at, id: last.id } : null };
  }
}
