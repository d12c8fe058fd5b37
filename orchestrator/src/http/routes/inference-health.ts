import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type } from '@sinclair/typebox';
import { TELEMETRY_BUCKET_BOUNDS_MS } from '@edgepack/protocol';
import { MAX_POINTS } from '../../telemetry/health-range.js';
import { Access } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { IdParams, Nullable, StrictObject, Timestamp } from '../schemas.js';

/**
 * Live inference health from the devices' telemetry windows: request rates, error rates by
 * outcome, latency and queue-time percentiles, items and system figures over time.
 */

const QUANTILE_NOTE = 'Milliseconds. p50/p95/p99 come from the merged fixed-bucket histograms (every device and window uses the same '
  + `${TELEMETRY_BUCKET_BOUNDS_MS.length + 1} exponential buckets, neighbouring bounds √2 apart), via protocol's histogramQuantile: the bucket holding the `
  + 'nearest-rank observation, reported at its geometric midpoint. Error bound: for values in (0.05 ms, 74.1 s] within a factor 2^¼ of the true '
  + 'quantile (at most 19% high or 16% low); below 0.05 ms an absolute error under 0.05 ms; above 74.1 s only a lower bound (74145.5). '
  + 'mean is exact (Σ latency ÷ count). null without ok requests.';

const Quantiles = Type.Object({
  p50: Nullable(Type.Number()), p95: Nullable(Type.Number()), p99: Nullable(Type.Number()), mean: Nullable(Type.Number()),
}, { title: 'LatencyQuantiles', description: QUANTILE_NOTE });

const Outcomes = {
  ok: Type.Integer({ description: '200' }), invalid: Type.Integer({ description: '400/404' }), timeout: Type.Integer({ description: '504' }),
  rejected: Type.Integer({ description: '503 (queue full, not ready)' }), error: Type.Integer({ description: '500' }),
};

const MeanMax = Type.Object({ mean: Type.Number(), max: Type.Number() });
const MeanMin = Type.Object({ mean: Type.Number(), min: Type.Number() });

const FigureProperties = {
  windows: Type.Integer({ description: 'raw telemetry windows added up (a window the device merged counts as its parts)' }),
  requests: Type.Object({ ...Outcomes, total: Type.Integer() }, { description: 'inference requests by outcome' }),
  requestsPerSec: Type.Number({ description: 'total requests ÷ the bucket\'s seconds (or the longest window in it, if longer)' }),
  errorRate: Nullable(Type.Number({ description: '(total − ok) ÷ total' })),
  errorRates: Nullable(Type.Object({ invalid: Type.Number(), timeout: Type.Number(), rejected: Type.Number(), error: Type.Number() }, { description: 'each non-ok outcome ÷ total' })),
  items: Type.Integer({ description: 'batch items (first dimension) of the ok requests' }),
  latencyMs: Quantiles,
  queueMs: Quantiles,
  system: Nullable(Type.Object({
    cpuPercent: MeanMax, rssBytes: MeanMax, memAvailableBytes: MeanMin, diskFreeBytes: MeanMin, temperatureC: Nullable(MeanMax),
  }, { description: 'the devices\' system samples (one per window, not sums): mean over the samples, with the max of CPU, RSS and temperature and the min of free memory and disk' })),
  swaps: Type.Object({ count: Type.Integer(), held: Type.Integer(), heldRequests: Type.Integer(), maxHoldMs: Type.Integer() }, { description: 'model switches (hot swaps), those that held requests, requests held, longest hold' }),
};

const HealthFigures = Type.Object(FigureProperties, { title: 'HealthFigures', description: 'inference figures added up over a range' });
const HealthPoint = Type.Object({ t: Timestamp, ...FigureProperties }, { title: 'HealthPoint', description: 'one bucket of the series (t is its start); buckets without any window are left out' });
const BundleHealth = Type.Object({ bundleId: Nullable(Type.String()), ...FigureProperties }, { title: 'BundleHealth', description: 'the range\'s figures of one bundle (null: served by no bundle)' });
const GapView = Type.Object({
  seq: Type.Integer(), lastSeq: Type.Integer(), windows: Type.Integer(),
  lostWindows: Type.Integer({ description: 'windows of the gap that were never stored' }), from: Timestamp, to: Timestamp,
  reason: Type.String({ description: 'spool-full or unclean-stop' }),
  requests: Nullable(Type.Object(Outcomes, { description: 'what the lost windows had counted, when the device knew' })),
}, { title: 'TelemetryGap', description: 'windows a device reported lost' });

const SeriesProperties = {
  from: Timestamp, to: Timestamp,
  step: Type.Integer({ description: 'seconds per bucket actually used' }),
  source: Type.Union([Type.Literal('raw'), Type.Literal('10m'), Type.Literal('1h')], { description: 'the table read: raw windows, 10-minute or 1-hour roll-ups' }),
  reportingDevices: Type.Integer({ description: 'devices that sent windows in the range' }),
  summary: HealthFigures,
  bundles: Type.Array(BundleHealth, { description: 'per bundle, most requests first' }),
  points: Type.Array(HealthPoint),
};

const DeviceHealthView = Type.Object({ deviceId: Type.String(), ...SeriesProperties, gaps: Type.Array(GapView, { description: 'gap reports overlapping the range, newest first (at most 100)' }) }, { title: 'DeviceHealth' });
const FleetHealthView = Type.Object({
  filter: Type.Object({ profile: Nullable(Type.String()), tag: Nullable(Type.String()), bundle: Nullable(Type.String()) }),
  devices: Type.Integer({ description: 'unrevoked devices matching profile and tag' }),
  ...SeriesProperties,
  gapReports: Type.Integer(), lostWindows: Type.Integer({ description: 'windows reported lost in the range' }),
}, { title: 'FleetHealth' });

const RangeParams = {
  from: Type.Optional(Type.String({ format: 'date-time', description: 'start (default: one hour before to)' })),
  to: Type.Optional(Type.String({ format: 'date-time', description: 'end, exclusive (default: now)' })),
  step: Type.Optional(Type.Integer({
    minimum: 1, maximum: 31 * 86_400,
    description: `seconds per bucket (default: 60 s or coarser, for at most 240 points; at most ${MAX_POINTS} points). A whole number of hours reads the 1-hour roll-up, of 10 minutes the 10-minute one, else raw windows; a range older than a table's retention reads the next coarser table with the step rounded up to it.`,
  })),
};
const DeviceHealthQuery = StrictObject(RangeParams);
const FleetHealthQuery = StrictObject({
  profile: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'devices of this firmware profile' })),
  tag: Type.Optional(Type.String({ minLength: 1, maxLength: 64, description: 'devices with this tag' })),
  bundle: Type.Optional(Type.String({ pattern: '^[A-Za-z0-9_-]{1,128}$', description: 'only windows served by this bundle' })),
  ...RangeParams,
});

export const inferenceHealthRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  app.get('/devices/:id/health', {
    config: { access: Access.read, errors: ['DEVICE_NOT_FOUND'] },
    schema: {
      summary: 'A device\'s live inference health over time: request and error rates, latency percentiles, system figures',
      tags: ['fleet'], params: IdParams, querystring: DeviceHealthQuery, response: { 200: DeviceHealthView },
    },
  }, async (req) => deps.health.device(req.params.id, req.query));

  app.get('/fleet/health', {
    config: { access: Access.read },
    schema: {
      summary: 'Live inference health of the fleet (by profile, tag, bundle) over time, percentiles from merged histograms',
      tags: ['fleet'], querystring: FleetHealthQuery, response: { 200: FleetHealthView },
    },
  }, async (req) => {
    const { profile, tag, bundle, ...range } = req.query;
    return deps.health.fleet({ ...(profile !== undefined ? { profile } : {}), ...(tag !== undefined ? { tag } : {}), ...(bundle !== undefined ? { bundle } : {}) }, range);
  });
};
