import type Database from 'better-sqlite3';
import type { Db } from './database.js';
import type { Page, PageQuery } from './store.js';

export const TOKEN_ROLES = ['admin', 'operator', 'viewer', 'device'] as const;
export type TokenRole = (typeof TOKEN_ROLES)[number];

/** An API token as stored: the sha256 of its secret, never the secret. */
export interface TokenRecord {
  id: string;
  tokenHash: string;
  name: string;
  role: TokenRole;
  /** The one device a device token speaks for; null for every other role. */
  deviceId: string | null;
  createdAt: string;
  /** Token id of the admin who made it; null for the token from the admin-token file. */
  createdBy: string | null;
  /** Null: never expires (only the admin-token file's token). */
  expiresAt: string | null;
  lastUsedAt: string | null;
  revokedAt: string | null;
}

type Row = Record<string, unknown>;

function toToken(r: Row): TokenRecord {
  return {
    id: r.id as string, tokenHash: r.token_hash as string, name: r.name as string, role: r.role as TokenRole,
    deviceId: (r.device_id as string | null) ?? null, createdAt: r.created_at as string, createdBy: (r.created_by as string | null) ?? null,
    expiresAt: (r.expires_at as string | null) ?? null, lastUsedAt: (r.last_used_at as string | null) ?? null, revokedAt: (r.revoked_at as string | null) ?? null,
  };
}

/** The SQL of the api_tokens table (migration 6). */
export class TokenStore {
  private readonly statements = new Map<string, Database.Statement<unknown[]>>();

  constructor(private readonly db: Db) {}

  /** Prepared once per SQL text: these run on every API request (token check, audit row). */
  private stmt(sql: string): Database.Statement<unknown[]> {
    let s = this.statements.get(sql);
    if (!s) this.statements.set(sql, (s = this.db.prepare(sql)));
    return s;
  }

  insert(t: TokenRecord): void {
    this.stmt(`INSERT INTO api_tokens (id, token_hash, name, role, device_id, created_at, created_by, expires_at, last_used_at, revoked_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`).run(t.id, t.tokenHash, t.name, t.role, t.deviceId, t.createdAt, t.createdBy, t.expiresAt, t.lastUsedAt, t.revokedAt);
  }

  /** Inserts unless a token with this hash exists (revoked or not); returns whether it inserted. */
  insertIfAbsent(t: TokenRecord): boolean {
    return this.stmt(`INSERT INTO api_tokens (id, token_hash, name, role, device_id, created_at, created_by, expires_at, last_used_at, revoked_at)
      VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (token_hash) DO NOTHING`)
      .run(t.id, t.tokenHash, t.name, t.role, t.deviceId, t.createdAt, t.createdBy, t.expiresAt, t.lastUsedAt, t.revokedAt).changes === 1;
  }

  byHash(tokenHash: string): TokenRecord | undefined {
    const r = this.stmt('SELECT * FROM api_tokens WHERE token_hash = ?').get(tokenHash) as Row | undefined;
    return r && toToken(r);
  }

  get(id: string): TokenRecord | undefined {
    const r = this.stmt('SELECT * FROM api_tokens WHERE id = ?').get(id) as Row | undefined;
    return r && toToken(r);
  }

  page(filter: { role?: TokenRole; includeRevoked?: boolean }, q: PageQuery): Page<TokenRecord> {
    const where: [string, ...unknown[]][] = [];
    if (!filter.includeRevoked) where.push(['revoked_at IS NULL']);
    if (filter.role) where.push(['role = ?', filter.role]);
    if (q.after) where.push(['(created_at, id) > (?, ?)', q.after.createdAt, q.after.id]);
    const sql = `SELECT * FROM api_tokens${where.length ? ` WHERE ${where.map((w) => w[0]).join(' AND ')}` : ''} ORDER BY created_at, id LIMIT ?`;
    const rows = this.stmt(sql).all(...where.flatMap((w) => w.slice(1)), q.limit + 1) as Row[];
    const items = rows.slice(0, q.limit).map(toToken);
    const last = items[items.length - 1];
    return { items, next: rows.length > q.limit && last ? { createdAt: last.createdAt, id: last.id } : null };
  }

  /** Admin tokens that still work at `at`: not revoked, not expired. */
  countUsableAdmins(at: string, except?: string): number {
    const r = this.stmt(`SELECT COUNT(*) AS n FROM api_tokens WHERE role = 'admin' AND revoked_at IS NULL
      AND (expires_at IS NULL OR expires_at > ?) AND id != ?`).get(at, except ?? '') as { n: number };
    return r.n;
  }

  revoke(id: string, at: string): boolean {
    return this.stmt('UPDATE api_tokens SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL').run(at, id).changes === 1;
  }

  touch(id: string, at: string): void {
    this.stmt('UPDATE api_tokens SET last_used_at = ? WHERE id = ?').run(at, id);
  }
}
