import { createHash, randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import { EnrollRequestSchema, PROTOCOL_VERSION, Validator, type EnrollResponse } from '@edgepack/protocol';
import { matchProfile } from '../../core/profile-match.js';
import type { DeviceRecord } from '../../records.js';
import { newId } from '../../ids.js';
import { requireAdmin, type AppDeps } from '../app.js';
import { HttpError } from '../errors.js';

const hashToken = (t: string) => createHash('sha256').update(t).digest('hex');

/** The public shape of a device; the public key and internal counters stay inside. */
export function deviceView(d: DeviceRecord) {
  return {
    id: d.id, name: d.name, profile: d.profile, status: d.status, tags: d.tags, facts: d.facts,
    activeBundle: d.activeBundle, lastSeen: d.lastSeen, lastHeartbeat: d.lastHeartbeat, createdAt: d.createdAt,
  };
}

const Tag = Type.String({ pattern: '^[A-Za-z0-9_.:=-]{1,64}$' });
const PatchDevice = Type.Object({ tags: Type.Optional(Type.Array(Tag, { maxItems: 64 })), name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })) }, { additionalProperties: false });
const ListQuery = Type.Object({ profile: Type.Optional(Type.String()), tag: Type.Optional(Type.String()), status: Type.Optional(Type.Union([Type.Literal('online'), Type.Literal('offline')])) });
const IdParams = Type.Object({ id: Type.String() });
const TokenBody = Type.Object({ ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 30 * 86400 })) });

export function registerDeviceRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { store, now } = deps;

  // The body is optional, which a Fastify body schema cannot say, so it is checked here.
  const tokenBody = new Validator('enrollment token request', TokenBody);
  app.post('/v1/enrollment-tokens', async (req, reply) => {
    requireAdmin(req);
    const parsed = tokenBody.validate(req.body ?? {});
    if (!parsed.ok) throw new HttpError(400, 'VALIDATION_FAILED', parsed.reason);
    const ttlSec = parsed.value.ttlSec;
    const token = `enr_${randomBytes(18).toString('base64url')}`;
    const created = now();
    const expiresAt = new Date(created.getTime() + (ttlSec ?? deps.config.enrollmentTokenTtlSec) * 1000).toISOString();
    store.insertEnrollmentToken(hashToken(token), created.toISOString(), expiresAt);
    return reply.status(201).send({ token, expiresAt });
  });

  app.post<{ Body: Static<typeof EnrollRequestSchema> }>('/v1/enroll', { schema: { body: EnrollRequestSchema }, config: { public: true } }, async (req, reply) => {
    const body = req.body;
    const tokenHash = hashToken(body.token);
    const token = store.getEnrollmentToken(tokenHash);
    if (!token) throw new HttpError(401, 'ENROLLMENT_TOKEN_INVALID', 'enrollment token is not known');
    if (token.usedAt) throw new HttpError(401, 'ENROLLMENT_TOKEN_INVALID', 'enrollment token was already used');
    if (Date.parse(token.expiresAt) <= now().getTime()) throw new HttpError(401, 'ENROLLMENT_TOKEN_INVALID', `enrollment token expired at ${token.expiresAt}`);

    let profileId: string;
    if (body.profile) {
      if (!deps.profiles.some((p) => p.id === body.profile)) {
        throw new HttpError(400, 'PROFILE_NOT_FOUND', `unknown profile ${body.profile}; known: ${deps.profiles.map((p) => p.id).join(', ')}`);
      }
      profileId = body.profile;
    } else {
      const m = matchProfile(body.facts, deps.profiles);
      if (!m.ok) throw new HttpError(422, 'PROFILE_NO_MATCH', `${m.reason}; pass --profile to choose one`);
      profileId = m.profile.id;
    }
    const id = newId('dev');
    const at = now().toISOString();
    store.transaction(() => {
      if (!store.consumeEnrollmentToken(tokenHash, id, at)) throw new HttpError(401, 'ENROLLMENT_TOKEN_INVALID', 'enrollment token was already used');
      store.insertDevice({ id, name: body.name ?? id, profile: profileId, publicKey: body.publicKey, tags: [], facts: body.facts, createdAt: at });
    });
    const res: EnrollResponse = {
      v: PROTOCOL_VERSION, deviceId: id, name: body.name ?? id, profile: profileId, orchestratorPublicKey: deps.signingPublicKey,
      mqtt: { host: deps.config.publicHost, port: deps.mqttPort() }, heartbeatSec: deps.config.heartbeatSec,
      ...(deps.trustedRoot ? { trustedRoot: deps.trustedRoot() } : {}),
    };
    return reply.status(201).send(res);
  });

  app.get<{ Querystring: Static<typeof ListQuery> }>('/v1/devices', { schema: { querystring: ListQuery } }, async (req) => {
    requireAdmin(req);
    const { profile, tag, status } = req.query;
    const devices = store.listDevices().filter((d) =>
      (!profile || d.profile === profile) && (!tag || d.tags.includes(tag)) && (!status || d.status === status));
    return { devices: devices.map(deviceView) };
  });

  const getLive = (id: string) => {
    const d = store.getDevice(id);
    if (!d || d.revokedAt) throw new HttpError(404, 'DEVICE_NOT_FOUND', `device ${id} not found`);
    return d;
  };

  app.get<{ Params: Static<typeof IdParams> }>('/v1/devices/:id', { schema: { params: IdParams } }, async (req) => {
    requireAdmin(req);
    return { device: deviceView(getLive(req.params.id)) };
  });

  app.patch<{ Params: Static<typeof IdParams>; Body: Static<typeof PatchDevice> }>('/v1/devices/:id', { schema: { params: IdParams, body: PatchDevice } }, async (req) => {
    requireAdmin(req);
    const d = getLive(req.params.id);
    if (req.body.tags) store.setDeviceTags(d.id, [...new Set(req.body.tags)].sort());
    if (req.body.name) store.setDeviceName(d.id, req.body.name);
    return { device: deviceView(store.getDevice(d.id)!) };
  });

  app.delete<{ Params: Static<typeof IdParams> }>('/v1/devices/:id', { schema: { params: IdParams } }, async (req, reply) => {
    requireAdmin(req);
    const d = getLive(req.params.id);
    store.revokeDevice(d.id, now().toISOString());
    await deps.onDeviceRevoked(d.id);
    return reply.status(204).send();
  });
}
