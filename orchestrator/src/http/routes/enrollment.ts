import type { TLSSocket } from 'node:tls';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { EdgepackError, EnrollRequestSchema, EnrollResponseSchema, PROTOCOL_VERSION, parseEnrollmentToken, type EnrollResponse } from '@edgepack/protocol';
import { matchProfile } from '../../core/profile-match.js';
import { createEnrollmentToken, hashEnrollmentToken } from '../../enrollment-tokens.js';
import { newId } from '../../ids.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { enrollRateLimit } from '../request-limits.js';
import { StrictObject, Timestamp, named, strict } from '../schemas.js';

const CreateTokenBody = StrictObject({
  ttlSec: Type.Optional(Type.Integer({ minimum: 60, maximum: 30 * 86400, description: 'lifetime in seconds (default: the server setting)' })),
}, { description: 'optional; an empty or missing body takes the defaults' });

const EnrollmentTokenView = Type.Object({
  token: Type.String({ description: 'single use; give it to the agent with --enroll. With TLS it is enr_…#sha256:<CA fingerprint>, so the agent can check the server before sending it' }),
  expiresAt: Timestamp,
  caFingerprint: Type.Optional(Type.String({ description: 'sha256 of the CA certificate the token pins (also after # in the token)' })),
}, { title: 'EnrollmentToken' });

/** The enroll body is protocol's wire schema, made strict at the HTTP door. */
const EnrollBody = strict(EnrollRequestSchema);
const EnrollView = named('EnrollResponse', EnrollResponseSchema, 'what the agent keeps: its id, profile, and the orchestrator key and broker it trusts');

export const enrollmentRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { store, now } = deps;

  app.post('/enrollment-tokens', {
    config: { access: Access.admin },
    schema: { summary: 'Create a single-use enrollment token', tags: ['fleet'], body: CreateTokenBody, response: { 201: EnrollmentTokenView } },
    // The body is optional: a request without one takes the defaults and is still checked.
    preValidation: async (req) => { if (req.body === undefined || req.body === null) req.body = {}; },
  }, async (req, reply) => {
    const t = createEnrollmentToken(store, now(), req.body.ttlSec ?? deps.config.enrollmentTokenTtlSec, deps.tls?.caFingerprint());
    return reply.status(201).send(t);
  });

  app.post('/enroll', {
    // Public, but it checks a credential of its own: wrong tokens count as failed authentication,
    // and the route has a per-IP rate limit besides.
    config: { access: Access.public, checksCredential: true, rateLimit: enrollRateLimit(deps.limits), errors: ['ENROLLMENT_TOKEN_INVALID', 'PROFILE_NOT_FOUND', 'PROFILE_NO_MATCH', 'RATE_LIMITED'] },
    schema: { summary: 'Enroll a device with a single-use token (called by the agent)', tags: ['fleet'], body: EnrollBody, response: { 201: EnrollView } },
  }, async (req, reply) => {
    const body = req.body;
    // Only the secret before '#' counts; a client that sends the whole pinned token is fine.
    let tokenHash: string;
    try {
      tokenHash = hashEnrollmentToken(parseEnrollmentToken(body.token).secret);
    } catch {
      throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token is not known');
    }
    const token = store.getEnrollmentToken(tokenHash);
    if (!token) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token is not known');
    if (token.usedAt) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token was already used');
    if (Date.parse(token.expiresAt) <= now().getTime()) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', `enrollment token expired at ${token.expiresAt}`);

    let profileId: string;
    if (body.profile) {
      if (!deps.profiles.some((p) => p.id === body.profile)) {
        throw new EdgepackError('PROFILE_NOT_FOUND', `unknown profile ${body.profile}; known: ${deps.profiles.map((p) => p.id).join(', ')}`);
      }
      profileId = body.profile;
    } else {
      const m = matchProfile(body.facts, deps.profiles);
      if (!m.ok) throw new EdgepackError('PROFILE_NO_MATCH', `${m.reason}; pass --profile to choose one`);
      profileId = m.profile.id;
    }
    const id = newId('dev');
    const at = now().toISOString();
    store.transaction(() => {
      if (!store.consumeEnrollmentToken(tokenHash, id, at)) throw new EdgepackError('ENROLLMENT_TOKEN_INVALID', 'enrollment token was already used');
      store.insertDevice({ id, name: body.name ?? id, profile: profileId, publicKey: body.publicKey, tags: [], facts: body.facts, createdAt: at });
    });
    // tls branch: the channel a device enrolled on decides its MQTT: over TLS it gets MQTTS and the
    // CA to pin; over plain HTTP (--allow-plaintext) the plain broker, as nothing it was told can be trusted more.
    const overTls = (req.raw.socket as Partial<TLSSocket>).encrypted === true;
    const plainMqttPort = deps.tls?.plainMqttPort() ?? null;
    const mqtt: EnrollResponse['mqtt'] = !deps.tls
      ? { host: deps.config.publicHost, port: deps.mqttPort() } // an app built without TLS (tests): plain, as before TLS
      : overTls || plainMqttPort === null
        ? { host: deps.config.publicHost, port: deps.mqttPort(), protocol: 'mqtts' }
        : { host: deps.config.publicHost, port: plainMqttPort, protocol: 'mqtt' };
    const res: EnrollResponse = {
      v: PROTOCOL_VERSION, deviceId: id, name: body.name ?? id, profile: profileId, orchestratorPublicKey: deps.signingPublicKey,
      mqtt, heartbeatSec: deps.config.heartbeatSec,
      ...(deps.tls ? { tls: { caCertificate: deps.tls.caCertificate(), caFingerprint: deps.tls.caFingerprint() } } : {}),
      // The root the device pins: from here on it trusts bundles only through this chain.
      ...(deps.trustedRoot ? { trustedRoot: deps.trustedRoot() } : {}),
    };
    return reply.status(201).send(res);
  });
};
