import type { TLSSocket } from 'node:tls';
import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { EnrollRequestSchema, EnrollResponseSchema } from '@edgepack/protocol';
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
  app.post('/enrollment-tokens', {
    config: { access: Access.admin },
    schema: { summary: 'Create a single-use enrollment token', tags: ['fleet'], body: CreateTokenBody, response: { 201: EnrollmentTokenView } },
    // The body is optional: a request without one takes the defaults and is still checked.
    preValidation: async (req) => { if (req.body === undefined || req.body === null) req.body = {}; },
  }, async (req, reply) => reply.status(201).send(deps.devices.createEnrollmentToken(req.body.ttlSec)));

  app.post('/enroll', {
    // Public, but it checks a credential of its own: wrong tokens count as failed authentication,
    // and the route has a per-IP rate limit besides.
    config: { access: Access.public, checksCredential: true, rateLimit: enrollRateLimit(deps.limits), errors: ['ENROLLMENT_TOKEN_INVALID', 'PROFILE_NOT_FOUND', 'PROFILE_NO_MATCH', 'RATE_LIMITED'] },
    schema: { summary: 'Enroll a device with a single-use token (called by the agent)', tags: ['fleet'], body: EnrollBody, response: { 201: EnrollView } },
  }, async (req, reply) => {
    // The channel a device enrolls on decides its MQTT (DeviceService.enroll).
    const overTls = (req.raw.socket as Partial<TLSSocket>).encrypted === true;
    return reply.status(201).send(deps.devices.enroll(req.body, { overTls }));
  });
};
