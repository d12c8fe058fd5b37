import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { EdgepackError, errorCode, type ErrorCode } from '@edgepack/protocol';
import { FailureThrottle } from '../core/failure-throttle.js';
import type { HttpLimits } from '../limits.js';
import { LogDigest } from '../log-digest.js';
import type { Logger } from '../logger.js';
import type { AccessGuard, Caller } from './access.js';

/** Codes that mean "a credential was presented and refused": each is a failed authentication. */
const CREDENTIAL_REFUSALS: ReadonlySet<string> = new Set<ErrorCode>(['UNAUTHORIZED', 'TOKEN_EXPIRED', 'TOKEN_REVOKED', 'ENROLLMENT_TOKEN_INVALID']);

/**
 * The deepest nesting of objects and arrays in a JSON text is over `max`. A scan of the raw text
 * (strings skipped), so a body nested 10,000 deep is refused before the parser, the validator
 * or any recursive walk ever sees it.
 */
export function exceedsJsonDepth(text: string, max: number): boolean {
  let depth = 0;
  let inString = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (inString) {
      if (c === 0x5c) i++; // a backslash escapes the next character
      else if (c === 0x22) inString = false;
      continue;
    }
    if (c === 0x22) inString = true;
    else if (c === 0x7b || c === 0x5b) {
      if (++depth > max) return true;
    } else if (c === 0x7d || c === 0x5d) depth--;
  }
  return false;
}

/** Whom a per-token rate limit counts: the token, or the device behind its own credential. */
function callerKey(caller: Caller | undefined): string {
  if (!caller) return 'anonymous';
  return caller.tokenId ? `token:${caller.tokenId}` : caller.kind === 'device' ? `device:${caller.deviceId}` : 'anonymous';
}

/** The per-route options of the enrollment rate limit (per client IP), for POST /v1/enroll to declare. */
export function enrollRateLimit(limits: HttpLimits): { max: number; timeWindow: number; keyGenerator: (req: FastifyRequest) => string } {
  return { max: limits.enrollPerMinute, timeWindow: 60_000, keyGenerator: (req) => `enroll:${req.ip}` };
}

/**
 * The limits on the HTTP door, installed before any route:
 * - @fastify/rate-limit, with our error shape (429 RATE_LIMITED and Retry-After): the per-IP
 *   enrollment limit routes declare, and a per-token (or per-device) request rate;
 * - failed authentication per client IP (FailureThrottle): after `maxFailures` refusals the client
 *   gets 429 with Retry-After before its credential is even looked up, for a time that doubles
 *   while it keeps at it. @fastify/rate-limit counts requests, not failures, and cannot answer on
 *   the strength of earlier failures, so this counter is our own (shared with the MQTT door);
 * - one log line per interval for repeated refusals (LogDigest), never one per attempt;
 * - JSON nesting depth and query-string length.
 * Returns the guard the access hook consults.
 */
export function installRequestLimits(app: FastifyInstance, limits: HttpLimits, log: Logger, now: () => Date): AccessGuard {
  const digest = new LogDigest(log, limits.logDigestMs);
  const failures = new FailureThrottle(limits.authFailures);
  app.addHook('onClose', async () => digest.close());

  void app.register(rateLimit, {
    global: false,
    errorResponseBuilder: (_req, ctx) => new EdgepackError('RATE_LIMITED', `too many requests; retry in ${ctx.after}`),
    onExceeded: (req) => digest.note(`rate:${req.routeOptions.url ?? ''}`, 'requests refused: rate limit', { route: req.routeOptions.url ?? null }, req.ip),
  });

  // Caps on input that no route schema can express.
  app.addHook('onRequest', async (req) => {
    const q = req.url.indexOf('?');
    if (q >= 0 && req.url.length - q - 1 > limits.maxQueryBytes) {
      throw new EdgepackError('QUERY_TOO_LONG', `the query string is ${req.url.length - q - 1} bytes, over the ${limits.maxQueryBytes}-byte limit`);
    }
  });
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => {
    if (exceedsJsonDepth(body as string, limits.maxJsonDepth)) {
      done(new EdgepackError('BODY_TOO_DEEP', `the JSON body nests deeper than ${limits.maxJsonDepth} levels`), undefined);
      return;
    }
    json(req, body as string, done);
  });

  // Every refused credential, wherever it was refused (the access hook, or enrollment's own
  // token check), counts against the client's IP. A request without any credential is not an
  // attempt at one and does not count.
  app.addHook('onError', async (req, _reply, err) => {
    const code = errorCode(err);
    if (!code || !CREDENTIAL_REFUSALS.has(code)) return;
    if (code === 'UNAUTHORIZED' && !req.headers.authorization) return;
    const kind = code === 'ENROLLMENT_TOKEN_INVALID' ? 'enrollment token' : (req.headers.authorization ?? '').split(' ', 1)[0] === 'Device' ? 'device credential' : 'API token';
    digest.note(`auth:${kind}`, `authentication failed: ${kind}`, { kind, code }, req.ip);
    const state = failures.fail(req.ip, now().getTime());
    if (state.blocked) digest.note('auth:blocked', 'client blocked after repeated failed authentication', { retryAfterMs: state.retryAfterMs }, req.ip);
  });

  let perToken: ((req: FastifyRequest) => Promise<{ isAllowed: boolean; isExceeded?: boolean; ttlInSeconds?: number }>) | undefined;
  const refuse = (reply: FastifyReply, seconds: number, why: string): never => {
    reply.header('retry-after', String(Math.max(1, seconds)));
    throw new EdgepackError('RATE_LIMITED', why);
  };
  return {
    beforeAuthentication(req, reply) {
      const state = failures.check(req.ip, now().getTime());
      if (state.blocked) {
        digest.note('auth:refused-blocked', 'request refused: client blocked after repeated failed authentication', {}, req.ip);
        refuse(reply, Math.ceil(state.retryAfterMs / 1000), `too many failed authentications from this client; retry in ${Math.ceil(state.retryAfterMs / 1000)} s`);
      }
    },
    async accepted(req, reply, caller) {
      // Made on first use: the plugin's decorator exists once the app has loaded its plugins.
      perToken ??= app.createRateLimit({ max: limits.requestsPerMinutePerToken, timeWindow: 60_000, keyGenerator: (r) => callerKey(r.caller) });
      const r = await perToken(req);
      if (!r.isAllowed && r.isExceeded) {
        digest.note(`rate:${callerKey(caller)}`, 'requests refused: per-token rate limit', { caller: callerKey(caller) }, req.ip);
        refuse(reply, r.ttlInSeconds ?? 60, `this token made more than ${limits.requestsPerMinutePerToken} requests in a minute; retry in ${r.ttlInSeconds ?? 60} s`);
      }
    },
  };
}
