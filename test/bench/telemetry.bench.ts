// Telemetry ingestion, side by side in one run: a real orchestrator (in this process: broker,
// ingest, SQLite, HTTP API) takes telemetry batches from 40 devices over real MQTT — each an
// mqtt.js client with the device's own credential, in a worker thread, keeping 4 batches of 50
// windows unacked (an agent draining its spool) — once with the batched ingest (one transaction
// per 250 ms or 1,000 windows) and once with a naive one transaction per window. Meanwhile a
// dashboard-like loop in the worker times GET /v1/devices/:id every 20 ms. Then, without MQTT,
// where the time of one window goes: parsing and validation, the SQL, the commit.
//
//   EDGEPACK_BENCH_TELEMETRY_DEVICES=N   devices (default 40)
//   EDGEPACK_BENCH_TELEMETRY_WINDOWS=N   windows per device (default 1250: 50,000 in all)
import os from 'node:os';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { fork } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { createTelemetryValidator, generateKeyPair, planTelemetryIngest, type TelemetryWindow } from '@edgepack/protocol';
import { parseServeConfig } from '@edgepack/orchestrator/config.js';
import { openDatabase } from '@edgepack/orchestrator/db/database.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { startServer } from '@edgepack/orchestrator/server.js';
import { TelemetryIngest, type TelemetryIngestOptions } from '@edgepack/orchestrator/telemetry/ingest.js';
import { TelemetryStore } from '@edgepack/orchestrator/telemetry/telemetry-store.js';
import { tempDir } from '../support/processes.js';
import { FACTS } from '../support/telemetry-rig.js';
import { latencies, makeBatch, windowRun } from '../support/telemetry-windows.js';
import type { LoadInput, LoadResult } from './telemetry-load.js';

const DEVICES = Number(process.env.EDGEPACK_BENCH_TELEMETRY_DEVICES ?? 40);
const WINDOWS = Number(process.env.EDGEPACK_BENCH_TELEMETRY_WINDOWS ?? 1250);

const quantile = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.floor(q * s.length))]! : NaN;
};
const f1 = (x: number) => x.toFixed(1);

interface Row { mode: string; windows: number; seconds: number; rate: number; cpuUsPerWindow: number; transactions: number; gets: number; p50: number; p99: number; max: number; txP50: number; maxTxMs: number; loopP99: number; loopMax: number }

export async function scenario(mode: string, opts: TelemetryIngestOptions): Promise<Row> {
  const dir = await tempDir('bench-telemetry');
  // Plain MQTT and HTTP (--allow-plaintext) on loopback: what is measured is the ingest, not TLS.
  const config = parseServeConfig(['--data-dir', join(dir.path, 'o'), '--http-host', '127.0.0.1', '--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', '0',
    '--allow-plaintext', '--plain-http-port', '0', '--plain-mqtt-port', '0', '--log-level', 'silent', '--api-per-min', '1000000'], {});
  if (config === 'help') throw new Error('help');
  const server = await startServer(config, { log: createLogger('silent'), telemetry: opts });
  const txMs: number[] = [];
  try {
    const devices = Array.from({ length: DEVICES }, (_, i) => {
      const kp = generateKeyPair();
      const id = `dev_bench_${String(i).padStart(3, '0')}`;
      server.store.insertDevice({ id, name: id, profile: i % 2 ? 'x86-64-gateway' : 'coral-dev-board', publicKey: kp.publicKey, tags: [], facts: FACTS as never, createdAt: new Date().toISOString() });
      return { id, secretKey: kp.secretKey };
    });
    // Every transaction's duration, as the ingest reports it to the metrics.
    const commitHook = server.telemetry.metrics.ingest.commit;
    server.telemetry.metrics.ingest.commit = (s, n) => { txMs.push(s * 1000); commitHook(s, n); };
    const input: LoadInput = {
      mqttPort: server.plainMqttPort!, httpUrl: `http://127.0.0.1:${server.plainHttpPort!}`, token: server.adminToken, devices,
      windowsPerDevice: WINDOWS, batchWindows: 50, inFlight: 4, nowMs: Date.now(), getEveryMs: 20,
    };
    const child = fork(fileURLToPath(new URL('./telemetry-load.js', import.meta.url)), [], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
    // How long the orchestrator's event loop was held, and the CPU this process (the orchestrator alone) used, while the load ran.
    const loop = monitorEventLoopDelay({ resolution: 5 });
    let cpu0 = process.cpuUsage();
    const result = await new Promise<LoadResult>((resolve, reject) => {
      child.on('message', (m: { kind: string; result?: LoadResult; message?: string }) => {
        if (m.kind === 'ready') { loop.enable(); cpu0 = process.cpuUsage(); child.send('go'); }
        else if (m.kind === 'done') resolve(m.result!);
        else reject(new Error(m.message));
      });
      child.once('error', reject);
      child.once('exit', (code) => { if (code) reject(new Error(`load generator exited ${code}`)); });
      child.send(input);
    });
    const cpu = process.cpuUsage(cpu0);
    loop.disable();
    child.kill();
    const stored = server.telemetry.store.db.prepare('SELECT COUNT(*) FROM telemetry_windows').pluck().get() as number;
    if (stored !== DEVICES * WINDOWS || result.windows !== stored) throw new Error(`${mode}: ${result.windows} acked, ${stored} stored, ${DEVICES * WINDOWS} sent`);
    if (result.getErrors) throw new Error(`${mode}: ${result.getErrors} GETs failed`);
    return {
      mode, windows: result.windows, seconds: result.seconds, rate: result.windows / result.seconds, cpuUsPerWindow: (cpu.user + cpu.system) / result.windows, transactions: server.telemetry.ingest!.stats.transactions,
      gets: result.getMs.length, p50: quantile(result.getMs, 0.5), p99: quantile(result.getMs, 0.99), max: Math.max(...result.getMs),
      txP50: quantile(txMs, 0.5), maxTxMs: Math.max(...txMs), loopP99: loop.percentile(99) / 1e6, loopMax: loop.max / 1e6,
    };
  } finally {
    await server.close();
    await dir.remove();
  }
}

/** Without MQTT: µs per window for each step, on a fresh database. */
async function breakdown(): Promise<{ step: string; usPerWindow: number }[]> {
  const dir = await tempDir('bench-telemetry-parts');
  try {
    const db = openDatabase(join(dir.path, 'e.db'));
    const store = new TelemetryStore(db);
    const n = 20_000;
    const devices = 20;
    const per = n / devices;
    const nowMs = Date.now();
    const start = Math.floor(nowMs / 60_000) * 60_000 - per * 60_000;
    const byDevice = Array.from({ length: devices }, (_, d) => windowRun(`dev_${d}`, 1, per, { startMs: start, latenciesOf: (i) => latencies(5 + (i % 7), d * 10_000 + i, 0.5, 80) }));
    for (let d = 0; d < devices; d++) db.prepare("INSERT INTO devices (id, name, profile, public_key, facts, created_at) VALUES (?, ?, 'x86-64-gateway', 'pk', '{}', ?)").run(`dev_${d}`, `dev_${d}`, new Date().toISOString());
    const payloads = byDevice.flatMap((ws) => Array.from({ length: per / 50 }, (_, k) => ({ deviceId: ws[0]!.deviceId, text: JSON.stringify(makeBatch(ws[0]!.deviceId, ws.slice(k * 50, k * 50 + 50), [], nowMs)) })));
    const out: { step: string; usPerWindow: number }[] = [];
    const time = (step: string, fn: () => void) => {
      const t = performance.now();
      fn();
      out.push({ step, usPerWindow: ((performance.now() - t) * 1000) / n });
    };
    const check = createTelemetryValidator();
    const now = new Date(nowMs);
    let parsed: { deviceId: string; value: ReturnType<typeof check.batch> }[] = [];
    time('JSON.parse + schema + rules (protocol validator)', () => { parsed = payloads.map((p) => ({ deviceId: p.deviceId, value: check.batch(p.text, { deviceId: p.deviceId, now }) })); });
    const windows: TelemetryWindow[] = parsed.flatMap((p) => (p.value.ok ? p.value.value.windows : []));
    if (windows.length !== n) throw new Error(`validated ${windows.length} of ${n}`);
    time('dedupe lookup + plan (stored ranges, planTelemetryIngest)', () => {
      for (const p of parsed) if (p.value.ok) planTelemetryIngest(p.value.value, store.rangesNear(p.deviceId, p.value.value.windows[0]!.seq, p.value.value.windows.at(-1)!.seq));
    });
    const begin = db.prepare('BEGIN');
    const commit = db.prepare('COMMIT');
    time('INSERT, 1,000 windows per transaction (incl. COMMIT)', () => {
      for (let i = 0; i < n; i += 1000) {
        begin.run();
        for (const w of windows.slice(i, i + 1000)) store.insertWindow(w, nowMs);
        commit.run();
      }
    });
    db.exec('DELETE FROM telemetry_windows');
    time('INSERT, one transaction per window', () => {
      for (const w of windows) { begin.run(); store.insertWindow(w, nowMs); commit.run(); }
    });
    db.exec('DELETE FROM telemetry_windows');
    // The whole ingest (validation, plan, SQL, acks to a no-op), as the broker would feed it.
    const ingest = new TelemetryIngest({ telemetry: store, devices: { getDevice: () => ({ profile: 'x86-64-gateway', revokedAt: null }) }, replies: { ack: async () => undefined, notice: async () => undefined }, log: createLogger('silent'), now: () => now, maxDelayMs: 600_000, maxPendingBytes: 1e12 });
    time('the whole ingest (receive, flushes of 1,000), no metrics', () => {
      for (const p of payloads) ingest.receive(p.deviceId, p.text);
      while (ingest.stats.acked < payloads.length) ingest.flush();
    });
    await ingest.idle();
    time('roll-up of the 20,000 raw windows (10-min and 1-h)', () => { while (store.rollUp(5000) > 0) { /* chunks */ } });
    db.close();
    return out;
  } finally {
    await dir.remove();
  }
}

export async function run(): Promise<void> {
  console.log(`${DEVICES} devices × ${WINDOWS} windows, batches of 50, 4 unacked per device; GET /v1/devices/:id every 20 ms meanwhile`);
  const batched = await scenario('batched: 250 ms or 1,000 windows per transaction', {});
  const naive = await scenario('naive: one transaction per window', { maxBatchWindows: 1, maxDelayMs: 0 });
  console.log('\n| ingest | windows | s | windows/s | orchestrator CPU µs/window | transactions | tx p50 ms | tx max ms | loop delay p99 ms | loop delay max ms | GETs | GET p50 ms | GET p99 ms | GET max ms |');
  console.log('|---|---|---|---|---|---|---|---|---|---|---|---|---|---|');
  for (const r of [batched, naive]) {
    console.log(`| ${r.mode} | ${r.windows} | ${r.seconds.toFixed(2)} | ${Math.round(r.rate)} | ${f1(r.cpuUsPerWindow)} | ${r.transactions} | ${f1(r.txP50)} | ${f1(r.maxTxMs)} | ${f1(r.loopP99)} | ${f1(r.loopMax)} | ${r.gets} | ${f1(r.p50)} | ${f1(r.p99)} | ${f1(r.max)} |`);
  }
  console.log(`\nbatched ÷ naive throughput: ${(batched.rate / naive.rate).toFixed(2)}×, CPU per window: ${(naive.cpuUsPerWindow / batched.cpuUsPerWindow).toFixed(2)}× less; one core of orchestrator CPU ingests ${Math.round(1e6 / batched.cpuUsPerWindow)} windows/s batched (${Math.round(1e6 / naive.cpuUsPerWindow)} naive);`);
  console.log(`  load average while it ran: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} on ${os.cpus().length} cores; target ≥ 20,000 windows/s with GET p99 ≤ 100 ms: ${batched.rate >= 20_000 && batched.p99 <= 100 ? 'met' : 'NOT met'}`);
  console.log('\nwhere the time of one window goes (no MQTT, 20,000 windows, µs per window):');
  console.log('| step | µs/window |');
  console.log('|---|---|');
  for (const s of await breakdown()) console.log(`| ${s.step} | ${s.usPerWindow.toFixed(1)} |`);
}
