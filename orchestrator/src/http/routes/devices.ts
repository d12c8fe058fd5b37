import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError, type DeviceFacts, type Heartbeat } from '@edgepack/protocol';
import type { DeviceRecord } from '../../records.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import {
  DeviceFactsView, HeartbeatView, IdParams, Next, Nullable, PageQuery, StrictObject, StringEnum, Timestamp, benchmarkView, encodeCursor, pageRequest,
} from '../schemas.js';


export const DeviceView = Type.Object({
  id: Type.String(),
  name: Type.String(),
  profile: Type.String({ description: 'firmware profile id' }),
  status: StringEnum(['online', 'offline']),
  tags: Type.Array(Type.String()),
  facts: DeviceFactsView,
  activeBundle: Nullable(Type.String()),
  lastSeen: Nullable(Timestamp),
  lastHeartbeat: Nullable(HeartbeatView),
  createdAt: Timestamp,
}, { title: 'Device', description: 'an enrolled device; its public key and internal counters stay inside' });
export type DeviceView = Static<typeof DeviceView>;

function factsView(f: DeviceFacts): DeviceView['facts'] {
  return {
    arch: f.arch, platform: f.platform, cpuModel: f.cpuModel, cores: f.cores, ramBytes: f.ramBytes, cpuFlags: [...f.cpuFlags],
    accelerators: [...f.accelerators], agentVersion: f.agentVersion,
    runtimes: Object.fromEntries(Object.entries(f.runtimes).map(([name, r]) => [name, { version: r.version, executionProviders: [...r.executionProviders] }])),
  };
}

function heartbeatView(h: Heartbeat): NonNullable<DeviceView['lastHeartbeat']> {
  return { uptimeSec: h.uptimeSec, activeBundle: h.activeBundle, lastBenchmark: h.lastBenchmark ? benchmarkView(h.lastBenchmark) : null, agentVersion: h.agentVersion, at: h.at };
}

export function deviceView(d: DeviceRecord): DeviceView {
  return {
    id: d.id, name: d.name, profile: d.profile, status: d.status, tags: [...d.tags], facts: factsView(d.facts),
    activeBundle: d.activeBundle, lastSeen: d.lastSeen, lastHeartbeat: d.lastHeartbeat ? heartbeatView(d.lastHeartbeat) : null, createdAt: d.createdAt,
  };
}

const DeviceResponse = Type.Object({ device: DeviceView }, { title: 'DeviceResponse' });
const DeviceList = Type.Object({ devices: Type.Array(DeviceView), next: Next }, { title: 'DeviceList' });

const Tag = Type.String({ pattern: '^[A-Za-z0-9_.:=-]{1,64}$' });
const PatchDeviceBody = StrictObject({
  tags: Type.Optional(Type.Array(Tag, { maxItems: 64, description: 'replaces the tags; stored deduplicated and sorted' })),
  name: Type.Optional(Type.String({ minLength: 1, maxLength: 128 })),
});
const ListQuery = StrictObject({
  ...PageQuery,
  profile: Type.Optional(Type.String({ maxLength: 64 })),
  tag: Type.Optional(Type.String({ maxLength: 64 })),
  status: Type.Optional(StringEnum(['online', 'offline'])),
});

export const deviceRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { devices } = deps;

  app.get('/devices', {
    config: { access: Access.read, errors: ['CURSOR_INVALID'] },
    schema: { summary: 'List enrolled devices, oldest first', tags: ['fleet'], querystring: ListQuery, response: { 200: DeviceList } },
  }, async (req) => {
    const { profile, tag, status } = req.query;
    const page = devices.list({ ...(profile ? { profile } : {}), ...(tag ? { tag } : {}), ...(status ? { status } : {}) }, pageRequest(req.query));
    return { devices: page.items.map(deviceView), next: encodeCursor(page.next) };
  });

  app.get('/devices/:id', {
    config: { access: Access.readOrDevice, errors: ['DEVICE_NOT_FOUND'] },
    schema: { summary: 'One device (a device may read only its own)', tags: ['fleet'], params: IdParams, response: { 200: DeviceResponse } },
  }, async (req) => {
    // A device reads only its own record, and learns nothing of others, not even whether they
    // exist: another id answers as an unknown one does, before any lookup.
    if (req.caller?.kind === 'device' && req.caller.deviceId !== req.params.id) throw new EdgepackError('DEVICE_NOT_FOUND', `device ${req.params.id} not found`);
    return { device: deviceView(devices.get(req.params.id)) };
  });

  app.patch('/devices/:id', {
    config: { access: Access.admin, errors: ['DEVICE_NOT_FOUND'] },
    schema: { summary: 'Set a device\'s tags or name', tags: ['fleet'], params: IdParams, body: PatchDeviceBody, response: { 200: DeviceResponse } },
  }, async (req) => ({ device: deviceView(devices.update(req.params.id, req.body)) }));

  app.delete('/devices/:id', {
    config: { access: Access.admin, errors: ['DEVICE_NOT_FOUND'] },
    schema: { summary: 'Revoke a device: its credential stops working and its open actions close', tags: ['fleet'], params: IdParams, response: { 204: Type.Null({ description: 'revoked' }) } },
  }, async (req, reply) => {
    await devices.revoke(req.params.id);
    return reply.status(204).send(null);
  });
};
