import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { AuditActor, AuditLog } from '../audit-log.js';
import type { Caller } from './access.js';

const MUTATING = new Set(['POST', 'PUT', 'PATCH', 'DELETE']);

function actorOf(caller: Caller | undefined): AuditActor {
  if (!caller) return { kind: 'anonymous', id: null, name: null, role: null };
  if (caller.kind === 'token') return { kind: 'token', id: caller.tokenId, name: caller.name ?? null, role: caller.role };
  // A device token is a token (role device); a device's own signed credential is the device.
  return caller.tokenId
    ? { kind: 'token', id: caller.tokenId, name: caller.name ?? null, role: 'device' }
    : { kind: 'device', id: caller.deviceId, name: null, role: null };
}

/**
 * The id a created resource answers with: `{"rollout": {"id": …}}`, `{"token": {"id": …}}`, an
 * enrollment's `deviceId`. Read from the serialized answer, so no route has to say it.
 */
export function createdId(payload: string): string | null {
  let body: unknown;
  try {
    body = JSON.parse(payload);
  } catch {
    return null;
  }
  if (typeof body !== 'object' || body === null) return null;
  const top = body as Record<string, unknown>;
  if (typeof top.deviceId === 'string') return top.deviceId;
  for (const v of Object.values(top)) {
    if (typeof v === 'object' && v !== null && typeof (v as { id?: unknown }).id === 'string') return (v as { id: string }).id;
  }
  return null;
}

/**
 * Writes one audit row for every mutating call (POST, PUT, PATCH, DELETE on a route, failed ones
 * included: a 401 or a 409 is as much part of the trail as a 201), after the answer is sent, so
 * a failed audit write can never change the answer. Rollout commands are POSTs and land here too.
 * Refusals by a rate limit (429) are not written row by row: they come by the thousand and the
 * log has a summary line for them.
 */
export function installAuditHook(app: FastifyInstance, audit: AuditLog): void {
  const seen = new WeakMap<FastifyRequest, { target: string | null; code: string | null }>();
  app.addHook('onSend', async (req, reply, payload) => {
    if (!MUTATING.has(req.method) || !req.routeOptions.url) return payload;
    const params = (req.params ?? {}) as Record<string, unknown>;
    let target = typeof params.id === 'string' ? params.id : null;
    let code: string | null = null;
    if (typeof payload === 'string') {
      if (reply.statusCode >= 400) {
        try {
          const c = (JSON.parse(payload) as { error?: { code?: unknown } }).error?.code;
          code = typeof c === 'string' ? c : null;
        } catch { /* not our error shape; the status says enough */ }
      } else if (!target) {
        target = createdId(payload);
      }
    }
    seen.set(req, { target, code });
    return payload;
  });
  app.addHook('onResponse', async (req, reply) => {
    if (!MUTATING.has(req.method) || !req.routeOptions.url || reply.statusCode === 429) return;
    const s = seen.get(req) ?? { target: null, code: null };
    audit.record({
      actor: actorOf(req.caller), method: req.method, route: req.routeOptions.url, targetId: s.target,
      status: reply.statusCode, code: s.code, requestId: String(req.id), ip: req.ip ?? null,
    });
  });
}
