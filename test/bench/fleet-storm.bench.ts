// Reconnect storm, side by side in one run: N enrolled simulated devices (mqtt.js clients doing
// exactly what an agent does on connect: signed credential, persistent session, last will,
// three subscriptions, presence and a heartbeat) connect at once to a freshly restarted
// orchestrator, and the same N clients connect at once to Debian's mosquitto. Meanwhile the
// bench asks the orchestrator's API for GET /v1/devices in a loop and times every answer.
//
//   EDGEPACK_BENCH_STORM_DEVICES=N   devices (default 1000)
//   EDGEPACK_BENCH_CPU_PROF=DIR      also CPU-profile the orchestrator during the storm (--cpu-prof)
//                                    and print where its time went
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { connect, createServer } from 'node:net';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { startOrchestrator, tempDir, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Times GET /v1/devices until `stop` resolves, like a dashboard refreshing every `everyMs`: one
 * request in flight at most, the next one `everyMs` after the previous one started (or at once
 * if it took longer). Back to back would load the orchestrator with the listing itself.
 */
async function pollApi(o: Orchestrator, stop: Promise<unknown>, everyMs = 250): Promise<number[]> {
  const times: number[] = [];
  let done = false;
  void stop.finally(() => { done = true; });
  while (!done) {
    const t = performance.now();
    const r = await o.api('GET', '/v1/devices');
    if (r.status !== 200) throw new Error(`GET /v1/devices answered ${r.status}`);
    const ms = performance.now() - t;
    times.push(ms);
    if (ms < everyMs && !done) await Promise.race([new Promise((r) => setTimeout(r, everyMs - ms)), stop]);
  }
  return times;
}

async function stopSim(s: SimProc): Promise<void> {
  const code = await s.kill('SIGTERM');
  if (code !== 0) throw new Error(`simulator exited ${code}: ${s.stderr().slice(-2000)}`);
}

async function startMosquitto(dir: string): Promise<{ port: number; child: ChildProcess; stop: () => Promise<void> } | null> {
  if (spawnSync('mosquitto', ['-h']).error) return null;
  const port = await freePort();
  const conf = join(dir, 'mosquitto.conf');
  await writeFile(conf, [`listener ${port} 127.0.0.1`, 'allow_anonymous true', 'persistence false', 'max_connections -1', 'log_dest stderr', 'log_type error', ''].join('\n'));
  const child = spawn('mosquitto', ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (d: Buffer) => { err += d.toString(); });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  // Up when it accepts a TCP connection.
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((r) => {
      const c = connect(port, '127.0.0.1');
      c.once('connect', () => { c.destroy(); r(true); });
      c.once('error', () => r(false));
    });
    if (up) break;
    if (child.exitCode !== null || i > 100) throw new Error(`mosquitto did not start: ${err}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, child, stop: async () => { child.kill('SIGTERM'); await exited; } };
}

interface CpuProfile {
  nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number }; children?: number[] }[];
  samples: number[];
  timeDeltas: number[];
}

/** What a profile frame is part of, for the storm's time budget. */
function category(fn: string, url: string): string {
  if (fn === '(idle)') return 'idle';
  if (fn === '(garbage collector)') return 'garbage collection';
  if (url.includes('better-sqlite3') || url.includes('/db/')) return 'SQLite (store.ts statements + better-sqlite3)';
  if (url.includes('crypto')) return 'ed25519 credential checks (node:crypto)';
  if (fn === 'writeBuffer' || fn === 'writev' || fn === 'writeUtf8String' || url.includes('stream_base') || url.startsWith('node:net')
    || url.startsWith('node:internal/streams')) return 'socket I/O (a write per MQTT packet, Node streams)';
  if (url.includes('mqtt-packet') || url.includes('aedes') || url.includes('qlobber') || url.includes('fastq') || url.includes('/bl/')) return 'Aedes and MQTT packets';
  if (url.includes('pino') || url.includes('sonic-boom') || url.includes('/debug/')) return 'logging (pino, debug)';
  if (url.includes('fastify') || url.includes('find-my-way') || url.includes('/http/')) return 'HTTP API';
  if (url.includes('/mqtt/') || url.includes('protocol/dist')) return 'edgepack device gateway (topics, validation)';
  if (url.includes('loader') || url.includes('esm/')) return 'module loading';
  if (url.startsWith('node:')) return 'other Node internals (events, buffers, timers)';
  return url ? 'other JS' : `other native (${fn})`;
}

/**
 * Where the orchestrator's CPU went during the storm: the window from the first to the last
 * sample inside the broker's CONNECT authentication, self time by category.
 */
export async function profileSummary(dir: string): Promise<string[]> {
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile'));
  if (files.length === 0) return ['(no profile written)'];
  const prof = JSON.parse(await readFile(join(dir, files.sort().at(-1)!), 'utf8')) as CpuProfile;
  const byId = new Map(prof.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of prof.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inConnect = (id: number) => {
    for (let x: number | undefined = id; x !== undefined; x = parent.get(x)) {
      const f = byId.get(x)!.callFrame;
      if (f.functionName === 'authenticate' && f.url.includes('broker')) return true;
    }
    return false;
  };
  const at: number[] = [];
  let t = 0;
  for (const d of prof.timeDeltas) at.push((t += d));
  const hits = prof.samples.map((id, i) => (inConnect(id) ? i : -1)).filter((i) => i >= 0);
  if (hits.length === 0) return ['(no CONNECT handling in the profile)'];
  const [from, to] = [hits[0]!, hits.at(-1)!];
  const cat = new Map<string, number>();
  let total = 0;
  for (let i = from; i <= to; i++) {
    const f = byId.get(prof.samples[i]!)!.callFrame;
    const dt = prof.timeDeltas[i + 1] ?? 0;
    const k = category(f.functionName, f.url);
    cat.set(k, (cat.get(k) ?? 0) + dt);
    total += dt;
  }
  const busy = total - (cat.get('idle') ?? 0);
  return [
    `orchestrator CPU while it handled the CONNECT storm (${((at[to]! - at[from]!) / 1e6).toFixed(2)} s window, ${((100 * busy) / total).toFixed(0)}% busy), self time:`,
    ...[...cat].sort((a, b) => b[1] - a[1]).filter(([, v]) => v / total >= 0.005).map(([k, v]) => `  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`),
  ];
}

export async function run(): Promise<void> {
  const n = Number(process.env.EDGEPACK_BENCH_STORM_DEVICES ?? 1000);
  if (!Number.isInteger(n) || n < 1) throw new Error(`EDGEPACK_BENCH_STORM_DEVICES must be a positive integer, got ${process.env.EDGEPACK_BENCH_STORM_DEVICES}`);
  const profDir = process.env.EDGEPACK_BENCH_CPU_PROF ? resolve(process.env.EDGEPACK_BENCH_CPU_PROF) : undefined;
  const dir = await tempDir('bench-storm');
  const orchDir = join(dir.path, 'o');
  const simDir = join(dir.path, 'sim');
  let orch = await startOrchestrator(orchDir, ['--log-level', 'warn', '--heartbeat-sec', '30']);
  let sim: SimProc | undefined;
  let mosquitto: Awaited<ReturnType<typeof startMosquitto>> = null;
  try {
    // 1. Enroll the fleet (bounded concurrency), then let it go.
    const t0 = performance.now();
    sim = await startSim(orch, simDir, n, ['--profile', 'x86-64-gateway'], 600_000);
    const enrolled = sim.ready;
    const enrollWall = performance.now() - t0;
    await stopSim(sim);
    sim = undefined;

    // 2. As after an orchestrator restart: a fresh process (empty broker, no sessions), then
    //    every device at once. Once with nobody else asking anything (profiled on request), once
    //    with a dashboard polling GET /v1/devices.
    const storm = async (poll: boolean, nodeArgs: string[] = []) => {
      await orch.stop();
      orch = await startOrchestrator(orchDir, ['--log-level', 'warn', '--heartbeat-sec', '30'], { nodeArgs });
      const idle = poll ? await pollApi(orch, new Promise((r) => setTimeout(r, 2000))) : [];
      const s0 = performance.now();
      let readyAt = 0;
      const starting = startSim(orch, simDir, n, ['--connect-concurrency', String(n), '--mqtt-url', `mqtt://127.0.0.1:${orch.mqttPort}`], 600_000)
        .then((x) => { readyAt = performance.now(); return x; });
      const during = poll ? await pollApi(orch, starting.catch(() => undefined)) : [];
      sim = await starting;
      const ready = sim.ready;
      await stopSim(sim);
      sim = undefined;
      return { ready, idle, during, wallMs: readyAt - s0 };
    };
    if (profDir) await mkdir(profDir, { recursive: true });
    const quiet = await storm(false, profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : []);
    const polled = await storm(true);
    await orch.stop();

    // 3. The same clients, the same way, against mosquitto.
    mosquitto = await startMosquitto(dir.path);
    let stormMosq: Record<string, any> | undefined;
    if (mosquitto) {
      // Every device is enrolled, so the simulator never calls the (stopped) orchestrator here.
      sim = await startSim(orch, simDir, n, ['--connect-concurrency', String(n), '--mqtt-url', `mqtt://127.0.0.1:${mosquitto.port}`], 600_000);
      stormMosq = sim.ready;
      await stopSim(sim);
      sim = undefined;
    }

    const mb = (b: number) => `${(b / 2 ** 20).toFixed(0)} MB`;
    console.log(`${n} simulated devices on 2 cores; connect = CONNACK + SUBACK of all three subscriptions`);
    console.log(`enroll ${n} (token + enroll each, ${enrolled.enrolled} new): ${(enrolled.enrollMs / 1000).toFixed(1)} s, all connected after ${(enrolled.readyMs / 1000).toFixed(1)} s (wall ${(enrollWall / 1000).toFixed(1)} s), simulator RSS ${mb(enrolled.rssBytes)}`);
    console.log('reconnect storm                        all connected   simulator RSS   vs mosquitto');
    const row = (name: string, r: Record<string, any> | undefined, base: number | undefined) =>
      console.log(`${name.padEnd(38)} ${r ? `${(r.connectMs / 1000).toFixed(2)} s`.padStart(13) : '   (skipped)'}   ${r ? mb(r.rssBytes).padStart(13) : ''}   ${r && base ? `${(r.connectMs / base).toFixed(1)}x`.padStart(12) : ''}`);
    row('orchestrator, restarted', quiet.ready, stormMosq?.connectMs);
    row('orchestrator, restarted, API polled', polled.ready, stormMosq?.connectMs);
    row(`mosquitto ${mosquitto ? '' : '(not installed)'}`, stormMosq, stormMosq?.connectMs);
    const ms = (xs: number[], q: number) => `${quantile(xs, q).toFixed(0)} ms`;
    console.log(`GET /v1/devices (${n} devices), every 250 ms or back to back when slower:`);
    console.log(`  before the storm: p50 ${ms(polled.idle, 0.5)}, p99 ${ms(polled.idle, 0.99)} (${polled.idle.length} requests)`);
    console.log(`  during the storm: p50 ${ms(polled.during, 0.5)}, p99 ${ms(polled.during, 0.99)}, max ${Math.max(...polled.during).toFixed(0)} ms (${polled.during.length} requests)`);
    console.log(`targets (issue 9): all connected ≤ 3 s, API p99 ≤ 100 ms during the storm${profDir ? `; profile of the unpolled storm in ${profDir}` : ''}`);
    if (profDir) for (const line of await profileSummary(profDir)) console.log(line);
  } finally {
    await sim?.kill('SIGKILL');
    await orch.stop().catch(() => undefined);
    await mosquitto?.stop();
    await dir.remove();
  }
}
