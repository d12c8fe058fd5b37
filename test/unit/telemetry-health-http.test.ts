// The live-health routes and /metrics over the real app (inject) and a real SQLite file filled
// through the real ingest: strict query validation (400 naming the parameter), the table chosen
// by range and step, fleet percentiles from merged histograms (not averaged), filters, and a
// Prometheus exposition that parses and equals the windows' own figures bucket for bucket.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import type { FastifyInstance, LightMyRequestResponse } from 'fastify';
import {
  TELEMETRY_BUCKET_BOUNDS_MS, emptyHistogram, histogramQuantile, mergeHistograms, type TelemetryHistogram, type TelemetryWindow,
} from '@edgepack/protocol';
import { buildApp } from '@edgepack/orchestrator/http/app.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { TelemetryIngest } from '@edgepack/orchestrator/telemetry/ingest.js';
import { DEFAULT_RETENTION } from '@edgepack/orchestrator/telemetry/rollups.js';
import { createTelemetry, type Telemetry } from '@edgepack/orchestrator/telemetry/wiring.js';
import { ADMIN, testDeps, type TestDeps } from '../support/http-app.js';
import { FACTS } from '../support/telemetry-rig.js';
import { latencies, makeBatch, windowRun } from '../support/telemetry-windows.js';

const HOUR = 3600_000;
let t: TestDeps;
let app: FastifyInstance;
let tel: Telemetry;
let ingest: TelemetryIngest;
const T0 = Date.parse('2026-06-01T11:00:00.000Z');
const windows: Record<string, TelemetryWindow[]> = {};

const json = (res: LightMyRequestResponse): any => JSON.parse(res.body);
const get = (url: string) => app.inject({ url, headers: ADMIN });

before(async () => {
  t = await testDeps('health-http');
  tel = createTelemetry({ db: t.db, devices: t.store, log: createLogger('error'), now: t.deps.now, retention: DEFAULT_RETENTION });
  app = buildApp({ ...t.deps, health: tel.health, metrics: tel.metrics });
  await app.ready();
  ingest = new TelemetryIngest({
    telemetry: tel.store, devices: t.store, log: createLogger('error'), now: t.deps.now, metrics: tel.metrics.ingest, maxDelayMs: 1,
    replies: { ack: async () => undefined, notice: async () => undefined },
  });
  const add = (id: string, profile: string, tags: string[]) => t.store.insertDevice({ id, name: id, profile, publicKey: 'pk', tags, facts: FACTS as never, createdAt: t.deps.now().toISOString() });
  add('dev_fast', 'x86-64-gateway', ['lab']);
  add('dev_slow', 'x86-64-gateway', []);
  add('dev_coral', 'coral-dev-board', ['lab']);
  // 60 one-minute windows each: fast ~1-3 ms with a few errors, slow ~40-120 ms and fewer requests, coral on another bundle.
  windows.dev_fast = windowRun('dev_fast', 1, 60, { startMs: T0, latenciesOf: (i) => latencies(40, i, 1, 3) }).map((w, i) => ({ ...w, requests: { ...w.requests, error: i % 10 === 0 ? 2 : 0, timeout: i % 20 === 0 ? 1 : 0 } }));
  windows.dev_slow = windowRun('dev_slow', 1, 60, { startMs: T0, latenciesOf: (i) => latencies(8, 100 + i, 40, 120) }).map((w) => ({ ...w, requests: { ...w.requests, rejected: 1 } }));
  windows.dev_coral = windowRun('dev_coral', 1, 60, { startMs: T0, bundleId: 'bdl_coral', latenciesOf: (i) => latencies(5, 200 + i, 5, 9) });
  for (const [id, ws] of Object.entries(windows)) ingest.receive(id, Buffer.from(JSON.stringify(makeBatch(id, ws, [], t.clock.ms))));
  await ingest.idle();
});

after(async () => {
  await app?.close();
  await t?.close();
});

const RANGE = `from=${new Date(T0).toISOString()}&to=${new Date(T0 + HOUR).toISOString()}`;
const merged = (ws: TelemetryWindow[]): TelemetryHistogram => ws.reduce((h, w) => mergeHistograms(h, w.latencyMs), emptyHistogram());
const round3 = (x: number | null) => (x === null ? null : Math.round(x * 1000) / 1000);

test('bad from, to and step are 400s that name the parameter', async () => {
  const cases: [string, RegExp][] = [
    ['/v1/fleet/health?from=yesterday', /querystring\.from must match format "date-time"/],
    ['/v1/fleet/health?to=2026-13-01T00:00:00Z', /querystring\.to must match format "date-time"/],
    [`/v1/fleet/health?from=${new Date(T0).toISOString()}&to=${new Date(T0 - 1000).toISOString()}`, /querystring\.from \(.*\) must be before querystring\.to/],
    ['/v1/fleet/health?step=0', /querystring\.step must be >= 1/],
    ['/v1/fleet/health?step=1.5', /querystring\.step must be integer/],
    ['/v1/fleet/health?step=ten', /querystring\.step must be integer/],
    [`/v1/fleet/health?from=${new Date(T0 - 23 * HOUR).toISOString()}&step=1`, /querystring\.step 1 s gives \d+ points over this range, more than 1440; use a step of at least \d+ s/],
    [`/v1/fleet/health?from=${new Date(T0 - 500 * 24 * HOUR).toISOString()}`, /querystring\.from: the range is \d+ days, longer than the 400-day retention/],
    ['/v1/fleet/health?bundle=../x', /querystring\.bundle must match pattern/],
    ['/v1/fleet/health?device=dev_fast', /querystring has unknown parameter 'device'/],
    ['/v1/devices/dev_fast/health?profile=x86-64-gateway', /querystring has unknown parameter 'profile'/],
  ];
  for (const [url, message] of cases) {
    const res = await get(url);
    assert.equal(res.statusCode, 400, `${url}: ${res.body}`);
    assert.equal(json(res).error.code, 'VALIDATION_FAILED');
    assert.match(json(res).error.message, message, url);
  }
  const missing = await get('/v1/devices/dev_nope/health');
  assert.equal(missing.statusCode, 404);
  assert.equal(json(missing).error.code, 'DEVICE_NOT_FOUND');
  assert.equal((await app.inject({ url: '/v1/fleet/health' })).statusCode, 401);
});

test('the table is chosen by range and step; steps too fine for old data are rounded up to the table', async () => {
  const now = t.clock.ms;
  const at = (ms: number) => new Date(ms).toISOString();
  const cases: [string, { source: string; step: number }][] = [
    ['', { source: 'raw', step: 60 }],
    [`from=${at(now - 24 * HOUR)}`, { source: '10m', step: 600 }],
    [`from=${at(now - 6 * HOUR)}&step=30`, { source: 'raw', step: 30 }],
    [`from=${at(now - 6 * HOUR)}&step=1200`, { source: '10m', step: 1200 }],
    [`from=${at(now - 6 * HOUR)}&step=7200`, { source: '1h', step: 7200 }],
    [`from=${at(now - 3 * 24 * HOUR)}&step=300`, { source: '10m', step: 600 }],
    [`from=${at(now - 40 * 24 * HOUR)}&step=1800`, { source: '1h', step: 3600 }],
    [`from=${at(now - 90 * 24 * HOUR)}`, { source: '1h', step: 43_200 }],
  ];
  for (const [q, want] of cases) {
    const body = json(await get(`/v1/fleet/health?${q}`));
    assert.deepEqual({ source: body.source, step: body.step }, want, q);
  }
});

test('fleet percentiles come from the merged histograms of every device, not from averaged percentiles', async () => {
  const fleet = json(await get(`/v1/fleet/health?${RANGE}&step=60`));
  const all = [...windows.dev_fast!, ...windows.dev_slow!, ...windows.dev_coral!];
  const h = merged(all);
  for (const [p, q] of [['p50', 0.5], ['p95', 0.95], ['p99', 0.99]] as const) assert.equal(fleet.summary.latencyMs[p], round3(histogramQuantile(h, q)), p);
  assert.equal(fleet.summary.latencyMs.mean, Math.round(h.sumUs / h.count) / 1000);
  const p95 = await Promise.all(['dev_fast', 'dev_slow', 'dev_coral'].map(async (d) => json(await get(`/v1/devices/${d}/health?${RANGE}&step=60`)).summary.latencyMs.p95 as number));
  for (const [i, d] of ['dev_fast', 'dev_slow', 'dev_coral'].entries()) assert.equal(p95[i], round3(histogramQuantile(merged(windows[d]!), 0.95)), d);
  const averaged = p95.reduce((a, b) => a + b, 0) / 3;
  assert.ok(Math.abs(averaged - fleet.summary.latencyMs.p95) > 5, `the merged p95 ${fleet.summary.latencyMs.p95} is not the mean of p95s ${averaged}`);
  // Each minute's point is the merge of that minute's three windows.
  assert.equal(fleet.points.length, 60);
  for (const [i, pt] of fleet.points.entries()) {
    assert.equal(pt.t, new Date(T0 + i * 60_000).toISOString());
    assert.equal(pt.latencyMs.p99, round3(histogramQuantile(merged(all.filter((w) => Date.parse(w.start) === T0 + i * 60_000)), 0.99)));
  }
  // Queue time too (a quarter of each latency, in its own histogram).
  const q = all.reduce((x, w) => mergeHistograms(x, w.queueMs), emptyHistogram());
  assert.equal(fleet.summary.queueMs.p50, round3(histogramQuantile(q, 0.5)));
  assert.match(JSON.stringify((json(await get('/openapi.json'))).components.schemas.LatencyQuantiles.description), /within a factor 2\^¼/);
});

test('rates, error rates by outcome, items and system figures; profile, tag and bundle filters', async () => {
  const d = json(await get(`/v1/devices/dev_fast/health?${RANGE}&step=600`));
  const ws = windows.dev_fast!;
  const ok = ws.reduce((n, w) => n + w.requests.ok, 0);
  const error = ws.reduce((n, w) => n + w.requests.error, 0);
  const timeout = ws.reduce((n, w) => n + w.requests.timeout, 0);
  const total = ok + error + timeout;
  assert.deepEqual(d.summary.requests, { ok, invalid: 0, timeout, rejected: 0, error, total });
  assert.equal(d.summary.requestsPerSec, Math.round((total / 3600) * 1e4) / 1e4);
  assert.equal(d.summary.errorRate, Math.round(((error + timeout) / total) * 1e6) / 1e6);
  assert.equal(d.summary.errorRates.error, Math.round((error / total) * 1e6) / 1e6);
  assert.equal(d.summary.items, ok);
  assert.deepEqual(d.summary.system.cpuPercent, { mean: 20, max: 20 });
  assert.deepEqual(d.summary.system.temperatureC, { mean: 45, max: 45 });
  assert.equal(d.points.length, 6);
  assert.equal(d.points[0].requestsPerSec, Math.round((ws.slice(0, 10).reduce((n, w) => n + w.requests.ok + w.requests.error + w.requests.timeout, 0) / 600) * 1e4) / 1e4);
  assert.deepEqual(d.bundles.map((b: any) => b.bundleId), ['bdl_a']);

  const okOf = (id: string) => windows[id]!.reduce((n, w) => n + w.requests.ok, 0);
  const fleet = async (q: string) => json(await get(`/v1/fleet/health?${RANGE}&${q}`));
  const byProfile = await fleet('profile=x86-64-gateway');
  assert.deepEqual([byProfile.devices, byProfile.reportingDevices, byProfile.summary.requests.ok], [2, 2, okOf('dev_fast') + okOf('dev_slow')]);
  const byTag = await fleet('tag=lab');
  assert.deepEqual([byTag.devices, byTag.summary.requests.ok], [2, okOf('dev_fast') + okOf('dev_coral')]);
  assert.deepEqual(byTag.bundles.map((b: any) => [b.bundleId, b.requests.ok]), [['bdl_a', okOf('dev_fast')], ['bdl_coral', okOf('dev_coral')]]);
  const byBundle = await fleet('bundle=bdl_coral');
  assert.deepEqual([byBundle.devices, byBundle.reportingDevices, byBundle.summary.requests.ok, byBundle.filter.bundle], [3, 1, okOf('dev_coral'), 'bdl_coral']);
  const rejected = (await fleet('profile=x86-64-gateway')).summary.errorRates.rejected;
  assert.ok(rejected > 0);
});

// --- the Prometheus exposition ---

interface Sample { name: string; labels: Record<string, string>; value: number }

/** A strict reader of the text format 0.0.4: every sample belongs to a declared metric and parses. */
function parseExposition(text: string): { types: Map<string, string>; samples: Sample[] } {
  const types = new Map<string, string>();
  const samples: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '') continue;
    let m = /^# (HELP|TYPE) ([a-zA-Z_:][a-zA-Z0-9_:]*) (.*)$/.exec(line);
    if (m) {
      if (m[1] === 'TYPE') {
        assert.match(m[3]!, /^(counter|gauge|histogram|summary|untyped)$/, line);
        types.set(m[2]!, m[3]!);
      }
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    assert.ok(m, `not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').match(/[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*"/g) ?? []) {
      const eq = l.indexOf('=');
      labels[l.slice(0, eq)] = JSON.parse(l.slice(eq + 1)) as string;
    }
    // Values are Go floats as Prometheus parses them: NaN and ±Inf in any case (prom-client writes "Nan").
    const v = m[3]!;
    const value = /^[+]?inf$/i.test(v) ? Infinity : /^-inf$/i.test(v) ? -Infinity : /^nan$/i.test(v) ? Number.NaN : Number(v);
    assert.ok(/^nan$/i.test(v) || !Number.isNaN(value), line);
    const base = m[1]!.replace(/_(bucket|sum|count)$/, '');
    assert.ok(types.has(m[1]!) || types.has(base), `${m[1]} has no TYPE`);
    samples.push({ name: m[1]!, labels, value });
  }
  return { types, samples };
}

test('GET /metrics parses as Prometheus text and carries the fleet series, exactly the windows\' figures', async () => {
  const res = await get('/metrics');
  assert.equal(res.statusCode, 200);
  assert.match(String(res.headers['content-type']), /^text\/plain; version=0\.0\.4/);
  const { types, samples } = parseExposition(res.body);
  assert.equal(types.get('edgepack_devices'), 'gauge');
  assert.equal(types.get('edgepack_inference_requests_total'), 'counter');
  assert.equal(types.get('edgepack_inference_duration_seconds'), 'histogram');
  assert.equal(types.get('edgepack_telemetry_lag_seconds'), 'gauge');
  assert.equal(types.get('edgepack_telemetry_dropped_windows_total'), 'counter');
  assert.ok(types.has('process_cpu_user_seconds_total') && types.has('nodejs_eventloop_lag_seconds'), 'the process\'s own metrics');
  const find = (name: string, labels: Record<string, string>) => samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  assert.deepEqual(find('edgepack_devices', { status: 'offline' }).map((s) => [s.labels.profile, s.value]).sort(), [['coral-dev-board', 1], ['x86-64-gateway', 2]]);

  const gw = [...windows.dev_fast!, ...windows.dev_slow!];
  const sum = (ws: TelemetryWindow[], k: 'ok' | 'error' | 'timeout' | 'rejected') => ws.reduce((n, w) => n + w.requests[k], 0);
  for (const k of ['ok', 'error', 'timeout', 'rejected'] as const) {
    assert.equal(find('edgepack_inference_requests_total', { outcome: k, bundle: 'bdl_a', profile: 'x86-64-gateway' })[0]?.value, sum(gw, k), k);
  }
  // The histogram: le = protocol's bounds ÷ 1000, counts cumulated from the merged window histograms.
  const h = merged(gw);
  const buckets = find('edgepack_inference_duration_seconds_bucket', { bundle: 'bdl_a', profile: 'x86-64-gateway' });
  assert.equal(buckets.length, TELEMETRY_BUCKET_BOUNDS_MS.length + 1);
  let cumulative = 0;
  for (const [k, b] of buckets.entries()) {
    cumulative += h.counts[k]!;
    assert.equal(b.labels.le, k < TELEMETRY_BUCKET_BOUNDS_MS.length ? String(Number((TELEMETRY_BUCKET_BOUNDS_MS[k]! / 1000).toPrecision(6))) : '+Inf');
    assert.equal(b.value, cumulative, `le=${b.labels.le}`);
  }
  assert.equal(find('edgepack_inference_duration_seconds_count', { bundle: 'bdl_a' })[0]?.value, h.count);
  assert.ok(Math.abs(find('edgepack_inference_duration_seconds_sum', { bundle: 'bdl_a' })[0]!.value - h.sumUs / 1e6) < 1e-9);
  assert.equal(find('edgepack_inference_duration_seconds_count', { bundle: 'bdl_coral', profile: 'coral-dev-board' })[0]?.value, merged(windows.dev_coral!).count);
  // Lag is about online devices only (all three are offline here); per-device ids never become labels.
  assert.equal(find('edgepack_telemetry_lag_seconds', {}).length, 0);
  t.store.markSeen('dev_fast', t.deps.now().toISOString());
  const lag = parseExposition((await get('/metrics')).body).samples.filter((s) => s.name === 'edgepack_telemetry_lag_seconds');
  assert.deepEqual(lag.map((s) => [s.labels.profile, s.value]), [['x86-64-gateway', (t.clock.ms - (T0 + HOUR)) / 1000]]);
  assert.ok(!/dev_(fast|slow|coral)/.test(res.body), 'no device ids in the exposition');
  assert.equal((await app.inject({ url: '/metrics' })).statusCode, 401, 'a scraper needs a token');
});
