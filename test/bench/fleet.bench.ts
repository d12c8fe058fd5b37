// Fleet rollout, side by side in one run: N simulated devices (one edgepack-sim process, each
// device its own MQTT session downloading and checking the real ~1 MB bundle) take a staged
// rollout (waves of 1% / 10% / the rest, no bake), and then the same rollout of a fresh build
// sent as one wave. For each: time until every device is active, devices/s, the orchestrator's
// peak RSS and CPU, and the API's p99 meanwhile (a dashboard polling GET /v1/devices every
// 250 ms, and GET /v1/rollouts/:id every second).
//
//   EDGEPACK_BENCH_DEVICES=N      devices (default 1000)
//   EDGEPACK_BENCH_MODEL_KB=K     size of the bundle (default 1024)
//   EDGEPACK_BENCH_CPU_PROF=DIR   also CPU-profile the orchestrator (--cpu-prof) and print where its time went
import { mkdir, readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { performance } from 'node:perf_hooks';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { startOrchestrator, tempDir, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';

const PROFILE = 'x86-64-gateway';
const CLK_TCK = 100; // USER_HZ on Linux

const quantile = (xs: number[], q: number) => {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
};

/** CPU seconds (user + system) and resident memory of a process, from /proc. */
async function procStats(pid: number): Promise<{ cpuSec: number; rssBytes: number }> {
  const stat = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  const cpuSec = (Number(stat[11]) + Number(stat[12])) / CLK_TCK;
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rssKb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
  return { cpuSec, rssBytes: rssKb * 1024 };
}

/** Polls `path` every `everyMs` (one request in flight at most) until `stop` is set; returns the latencies. */
async function poll(o: Orchestrator, path: string, everyMs: number, stopped: () => boolean): Promise<number[]> {
  const times: number[] = [];
  while (!stopped()) {
    const t = performance.now();
    const r = await o.api('GET', path);
    if (r.status !== 200) throw new Error(`GET ${path} answered ${r.status}`);
    const ms = performance.now() - t;
    times.push(ms);
    if (ms < everyMs) await new Promise((res) => setTimeout(res, everyMs - ms));
  }
  return times;
}

async function build(o: Orchestrator, modelId: string): Promise<{ id: string; bundleBytes: number }> {
  const b = await o.api('POST', '/v1/builds', { modelId, profiles: [PROFILE] });
  let build = b.body.build;
  while (build.status === 'queued' || build.status === 'running') {
    await new Promise((r) => setTimeout(r, 200));
    build = (await o.api('GET', `/v1/builds/${build.id}`)).body.build;
  }
  if (build.status !== 'succeeded') throw new Error(`build ${build.id} ${build.status}: ${build.error}`);
  const m = (await o.api('GET', `/v1/bundles/${build.artifacts[0].bundleId}`)).body.bundle.manifest;
  return { id: build.id, bundleBytes: m.files.reduce((s: number, f: any) => s + f.length, 0) };
}

interface Result {
  name: string;
  /** Seconds from the POST to each wave's opening and passing, from the rollout's events. */
  waves: string;
  simCpuSec: number;
  ms: number;
  devicesPerSec: number;
  peakRss: number;
  cpuSec: number;
  devicesP99: number;
  devicesP50: number;
  rolloutP99: number;
  requests: number;
}

async function measure(o: Orchestrator, sim: SimProc, name: string, body: object, n: number): Promise<Result> {
  const pid = o.proc.child.pid!;
  const before = await procStats(pid);
  const simBefore = await procStats(sim.child.pid!);
  let peak = before.rssBytes;
  let done = false;
  const sampler = setInterval(() => { procStats(pid).then((s) => { peak = Math.max(peak, s.rssBytes); }, () => undefined); }, 100);
  const t0 = performance.now();
  const r = await o.api('POST', '/v1/rollouts', body);
  if (r.status !== 201) throw new Error(`rollout: ${r.status} ${JSON.stringify(r.body)}`);
  const id = r.body.rollout.id as string;
  const dashboards = poll(o, '/v1/devices', 250, () => done);
  const views = poll(o, `/v1/rollouts/${id}`, 1000, () => done);
  let ms = 0;
  for (;;) {
    const g = (await o.api('GET', `/v1/rollouts?buildId=${(body as { buildId: string }).buildId}`)).body.rollouts[0];
    if (g.status === 'succeeded') { ms = performance.now() - t0; break; }
    if (g.status !== 'running') throw new Error(`${name}: rollout ${g.status} ${JSON.stringify(g.pause)}`);
    if (performance.now() - t0 > 600_000) throw new Error(`${name}: not finished after 10 min`);
    await new Promise((res) => setTimeout(res, 100));
  }
  done = true;
  const [devs, rollout] = await Promise.all([dashboards, views]);
  clearInterval(sampler);
  const after = await procStats(pid);
  const simAfter = await procStats(sim.child.pid!);
  const full = (await o.api('GET', `/v1/rollouts/${id}`)).body.rollout;
  if (full.counts.succeeded !== n) throw new Error(`${name}: ${JSON.stringify(full.counts)}`);
  const created = Date.parse(full.createdAt);
  const sec = (iso: string | null) => (iso ? ((Date.parse(iso) - created) / 1000).toFixed(1) : '-');
  const waves = full.waves.map((w: any) => `${w.name} ${sec(w.openedAt)}→${sec(w.passedAt)}`).join(', ');
  if (process.env.EDGEPACK_BENCH_DEBUG) {
    const took = full.devices.map((d: any) => (Date.parse(d.finishedAt) - Date.parse(d.dispatchedAt)) / 1000).sort((x: number, y: number) => x - y);
    console.error(name, 'dispatch→done s: p10', took[Math.floor(took.length * 0.1)], 'p50', took[Math.floor(took.length / 2)], 'p90', took[Math.floor(took.length * 0.9)], 'max', took.at(-1));
    const hist = new Map<number, number>();
    for (const x of took) hist.set(Math.floor(x), (hist.get(Math.floor(x)) ?? 0) + 1);
    console.error([...hist].sort((x, y) => x[0] - y[0]).map(([k, v]) => `${k}s:${v}`).join(' '));
  }
  return {
    name, ms, waves, simCpuSec: simAfter.cpuSec - simBefore.cpuSec, devicesPerSec: n / (ms / 1000), peakRss: Math.max(peak, after.rssBytes), cpuSec: after.cpuSec - before.cpuSec,
    devicesP99: quantile(devs, 0.99), devicesP50: quantile(devs, 0.5), rolloutP99: quantile(rollout, 0.99), requests: devs.length + rollout.length,
  };
}

/** The orchestrator's self time by function over the whole run (the profile is written when it exits). */
async function selfTime(dir: string): Promise<string[]> {
  const { readdir } = await import('node:fs/promises');
  const files = (await readdir(dir)).filter((f) => f.endsWith('.cpuprofile')).sort();
  if (!files.length) return ['(no profile written)'];
  const prof = JSON.parse(await readFile(join(dir, files.at(-1)!), 'utf8')) as { nodes: { id: number; callFrame: { functionName: string; url: string; lineNumber: number } }[]; samples: number[]; timeDeltas: number[] };
  const byId = new Map(prof.nodes.map((x) => [x.id, x]));
  const self = new Map<string, number>();
  let total = 0;
  prof.samples.forEach((id, i) => {
    const f = byId.get(id)!.callFrame;
    const k = `${f.functionName || '(anonymous)'} ${f.url.split('/').slice(-2).join('/')}:${f.lineNumber}`;
    const dt = prof.timeDeltas[i] ?? 0;
    self.set(k, (self.get(k) ?? 0) + dt);
    total += dt;
  });
  return [`orchestrator self time over the run (${(total / 1e6).toFixed(1)} s, ${join(dir, files.at(-1)!)}):`,
    ...[...self].sort((a, b) => b[1] - a[1]).slice(0, 25).map(([k, v]) => `  ${((100 * v) / total).toFixed(1).padStart(5)}%  ${(v / 1000).toFixed(0).padStart(6)} ms  ${k}`)];
}

export async function run(): Promise<void> {
  const n = Number(process.env.EDGEPACK_BENCH_DEVICES ?? 1000);
  const kb = Number(process.env.EDGEPACK_BENCH_MODEL_KB ?? 1024);
  if (!Number.isInteger(n) || n < 10) throw new Error(`EDGEPACK_BENCH_DEVICES must be an integer ≥ 10, got ${process.env.EDGEPACK_BENCH_DEVICES}`);
  const dir = await tempDir('bench-fleet');
  // Heartbeats every 30 s, as a fleet would run: the rollout, not heartbeat traffic, is measured.
  const profDir = process.env.EDGEPACK_BENCH_CPU_PROF ? resolve(process.env.EDGEPACK_BENCH_CPU_PROF) : undefined;
  if (profDir) await mkdir(profDir, { recursive: true });
  const orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn', '--heartbeat-sec', '30', '--enroll-per-min', '1000000', '--api-per-min', '1000000'], { nodeArgs: profDir ? ['--cpu-prof', `--cpu-prof-dir=${profDir}`] : [] });
  let sim: SimProc | undefined;
  try {
    // A model whose built bundle is about K KiB: the build picks the variant (int8 or fp32), so
    // size the MLP's 784 × hidden weights by what a first build came out at.
    let hidden = Math.max(8, Math.round((kb * 1024) / (784 * 4)));
    let modelId = '';
    let staged = { id: '', bundleBytes: 0 };
    for (let version = 1; version <= 3; version++) {
      const up = await orch.api('POST', `/v1/models?name=fleet-bench&version=${version}`, buildTinyMlpModel({ seed: 1, hidden }));
      if (up.status !== 201) throw new Error(`upload: ${up.status} ${JSON.stringify(up.body)}`);
      modelId = up.body.model.id;
      staged = await build(orch, modelId);
      const ratio = (kb * 1024) / staged.bundleBytes;
      if (ratio > 0.8 && ratio < 1.25) break;
      hidden = Math.max(8, Math.round(hidden * ratio));
    }
    const t0 = performance.now();
    sim = await startSim(orch, join(dir.path, 'sim'), n, ['--profile', PROFILE, '--tags', 'bench', '--connect-concurrency', '200', '--log-level', 'error'], 900_000);
    const enrolled = performance.now() - t0;
    const plan = { target: { tags: ['bench'] }, gate: { maxP95Regression: 100 }, rate: { maxPerMinute: 100_000, maxInFlight: 100_000 } };
    const a = await measure(orch, sim, 'staged: 1% / 10% / rest', {
      buildId: staged.id, ...plan,
      waves: [{ name: '1%', size: { percent: 1 }, bakeSec: 0 }, { name: '10%', size: { percent: 10 }, bakeSec: 0 }, { name: 'rest', size: { percent: 100 }, bakeSec: 0 }],
    }, n);
    const once = await build(orch, modelId);
    const b = await measure(orch, sim, 'one wave', { buildId: once.id, ...plan, waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }] }, n);

    const mb = (x: number) => `${(x / 2 ** 20).toFixed(0)} MB`;
    console.log(`${n} simulated devices (one edgepack-sim process) and one orchestrator on ${(await import('node:os')).cpus().length} cores;`
      + ` bundle ${(staged.bundleBytes / 2 ** 20).toFixed(2)} MiB; enrolled and connected in ${(enrolled / 1000).toFixed(1)} s`);
    console.log('rollout                     all active   devices/s   orch peak RSS   orch CPU (s, % of one core)   GET /v1/devices p50 / p99   GET /v1/rollouts/:id p99');
    for (const r of [a, b]) {
      console.log(`${r.name.padEnd(26)} ${`${(r.ms / 1000).toFixed(1)} s`.padStart(10)} ${r.devicesPerSec.toFixed(0).padStart(11)} ${mb(r.peakRss).padStart(15)}`
        + ` ${`${r.cpuSec.toFixed(1)} s, ${((100 * r.cpuSec) / (r.ms / 1000)).toFixed(0)}%`.padStart(29)}`
        + ` ${`${r.devicesP50.toFixed(0)} / ${r.devicesP99.toFixed(0)} ms`.padStart(27)} ${`${r.rolloutP99.toFixed(0)} ms`.padStart(25)}`);
    }
    console.log(`staged vs one wave: ${(a.ms / b.ms).toFixed(2)}x the time to all active`);
    for (const r of [a, b]) console.log(`${r.name}: waves open→passed at ${r.waves} s; simulator CPU ${r.simCpuSec.toFixed(1)} s (${((100 * r.simCpuSec) / (r.ms / 1000)).toFixed(0)}% of one core)`);
    console.log('targets (issue 9): all active ≤ 60 s, API p99 ≤ 100 ms, orchestrator RSS ≤ 400 MB');
  } finally {
    await sim?.kill('SIGTERM');
    await orch.stop();
    await dir.remove();
  }
  if (profDir) for (const line of await selfTime(profDir)) console.log(line);
}
