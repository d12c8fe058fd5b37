// `npm run demo`: an orchestrator and three agents with different profiles on loopback, one
// model rolled out to all of them, and the benchmark each device reported. Everything runs as
// real processes in a temp dir that is removed afterwards.
// `npm run demo -- --selection device` (issue 10): the build keeps every candidate, the agents
// trial them before installing, and the demo prints per profile the host's pick beside the
// devices' pick, with every candidate's figures as the devices measured them.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { request } from 'node:https';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildTinyMlpModel } from './onnx/graph-builder.js';

const here = dirname(fileURLToPath(import.meta.url));
const repo = resolve(here, '../..');
const AGENTS = [
  { name: 'gateway-1', profile: undefined as string | undefined },
  { name: 'pi5-kitchen', profile: 'raspberry-pi-5' },
  { name: 'jetson-dock', profile: 'jetson-orin-nano' },
  { name: 'coral-door', profile: 'coral-dev-board' },
];

function start(file: string, args: string[]): { child: ChildProcess; event: (name: string) => Promise<Record<string, unknown>> } {
  const child = spawn(process.execPath, [file, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let buf = '';
  let errTail = '';
  const seen: Record<string, unknown>[] = [];
  const listeners: (() => void)[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    buf += d.toString();
    for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
      try { seen.push(JSON.parse(buf.slice(0, nl)) as Record<string, unknown>); } catch { /* not an event */ }
      buf = buf.slice(nl + 1);
      listeners.forEach((l) => l());
    }
  });
  child.stderr!.on('data', (d: Buffer) => { errTail = (errTail + d.toString()).slice(-4000); });
  return {
    child,
    event: (name) => new Promise((ok, fail) => {
      const check = () => { const m = seen.find((e) => e.event === name); if (m) ok(m); };
      listeners.push(check);
      check();
      child.once('exit', (code) => fail(new Error(`${file} exited (${code}) before '${name}':\n${errTail}`)));
    }),
  };
}

/** One HTTPS request that trusts only the orchestrator's own CA (Node's fetch takes no CA). */
function httpsJson(url: string, ca: string, o: { method: string; headers: Record<string, string>; body?: Uint8Array | string }): Promise<{ ok: boolean; status: number; json: unknown }> {
  return new Promise((resolve, reject) => {
    const req = request(url, { method: o.method, headers: o.headers, ca }, (res) => {
      const parts: Buffer[] = [];
      res.on('data', (d: Buffer) => parts.push(d));
      res.on('end', () => {
        const status = res.statusCode ?? 0;
        try { resolve({ ok: status >= 200 && status < 300, status, json: JSON.parse(Buffer.concat(parts).toString('utf8')) }); } catch (err) { reject(err); }
      });
    });
    req.on('error', reject);
    req.end(o.body);
  });
}

/** `--selection host|device` (default host); anything else is refused before anything starts. */
export function parseDemoArgs(argv: readonly string[]): { selection: 'host' | 'device' } {
  let selection: 'host' | 'device' = 'host';
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a !== '--selection' && !a.startsWith('--selection=')) throw new Error(`unknown argument ${a}; the demo takes --selection host|device`);
    const v = a === '--selection' ? argv[++i] : a.slice('--selection='.length);
    if (v !== 'host' && v !== 'device') throw new Error(`--selection takes host or device, not ${JSON.stringify(v ?? '')}`);
    selection = v;
  }
  return { selection };
}

const fmt = (x: number | null | undefined) => (typeof x === 'number' ? x.toFixed(3) : '-');

/** Per profile: the host's pick, the devices' pick, and each candidate's median p95 on the devices (from GET /v1/rollouts/:id choices). */
export function choiceTable(choices: readonly any[]): string[] {
  const rows = choices.map((c) => [
    c.profile, c.hostPick?.precision ?? '-', c.precision, c.cause,
    c.candidates.map((x: any) => `${x.precision} ${fmt(x.medianP95Ms)}${x.eligible ? '' : '✗'} (${x.devices.filter((d: any) => d.p95Ms !== null).length} dev)`).join(', '),
  ]);
  const head = ['profile', 'host pick', 'devices\' pick', 'cause', 'median p95 ms on the devices per candidate (✗ = not eligible)'];
  const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ');
  return [line(head), widths.map((w) => '-'.repeat(w)).join('  '), ...rows.map(line)];
}

async function main(): Promise<void> {
  const { selection } = parseDemoArgs(process.argv.slice(2));
  const t0 = Date.now();
  const work = await mkdtemp(join(tmpdir(), 'edgepack-demo-'));
  const children: ChildProcess[] = [];
  try {
    const orch = start(join(here, 'cli.js'), ['serve', '--data-dir', join(work, 'orchestrator'), '--http-host', '127.0.0.1', '--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', '0', '--log-level', 'warn']);
    children.push(orch.child);
    const { httpPort } = await orch.event('listening');
    // HTTPS with the CA the orchestrator made on its first start; agents pin it through their tokens.
    const url = `https://127.0.0.1:${httpPort}`;
    const ca = await readFile(join(work, 'orchestrator', 'tls', 'ca-cert.pem'), 'utf8');
    const token = (await readFile(join(work, 'orchestrator', 'admin-token'), 'utf8')).trim();
    const api = async (method: string, path: string, body?: unknown): Promise<any> => {
      const bytes = body instanceof Uint8Array;
      const res = await httpsJson(url + path, ca, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body ? { 'content-type': bytes ? 'application/octet-stream' : 'application/json' } : {}) },
        ...(body ? { body: bytes ? body : JSON.stringify(body) } : {}),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.json)}`);
      return res.json as any;
    };
    const { caFingerprint } = await orch.event('listening');
    console.log(`orchestrator  ${url}  TLS CA ${String(caFingerprint)}  (data in ${work})`);

    const agentCli = join(repo, 'agent', 'dist', 'cli.js');
    for (const a of AGENTS) {
      const { token: enroll } = await api('POST', '/v1/enrollment-tokens', {});
      const args = ['--server', url, '--enroll', enroll, '--data-dir', join(work, a.name), '--name', a.name, '--log-level', 'warn', ...(a.profile ? ['--profile', a.profile] : [])];
      const agent = start(agentCli, args);
      children.push(agent.child);
      const ev = await agent.event('started');
      console.log(`agent         ${a.name.padEnd(12)} ${String(ev.deviceId)}  profile ${String(ev.profile)}${a.profile ? '' : ' (matched from detected facts)'}`);
    }

    const shared = resolve(repo, '../shared/models');
    const model = existsSync(join(shared, 'fashion_cnn.onnx'))
      ? { name: 'fashion-cnn', bytes: new Uint8Array(await readFile(join(shared, 'fashion_cnn.onnx'))) }
      : { name: 'tiny-mlp', bytes: buildTinyMlpModel() };
    const { model: m } = await api('POST', `/v1/models?name=${model.name}&version=1.0.0`, model.bytes);
    console.log(`model         ${m.name}@${m.version}  ${(m.sizeBytes / 1024).toFixed(0)} KiB  opset ${m.opset}  ${m.inputs.map((i: any) => `${i.name}[${i.shape.join(',')}]`).join(' ')}`);
    // Calibration and labelled evaluation data let the build quantize and judge accuracy.
    for (const [kind, file] of [['calibration', 'fashion_calib256.npy'], ['evaluation', 'fashion_test1k.npy'], ['labels', 'fashion_test1k.labels.npy']]) {
      if (model.name !== 'fashion-cnn') break;
      const { dataset } = await api('POST', `/v1/models/${m.id}/datasets?kind=${kind}`, new Uint8Array(await readFile(join(shared, file!))));
      console.log(`dataset       ${kind!.padEnd(12)} ${file}  [${dataset.shape.join(',')}] ${dataset.dtype}`);
    }

    let { build } = await api('POST', '/v1/builds', { modelId: m.id, selection });
    while (build.status === 'queued' || build.status === 'running') {
      await new Promise((r) => setTimeout(r, 200));
      ({ build } = await api('GET', `/v1/builds/${build.id}`));
    }
    for (const a of build.artifacts) {
      const chosen = a.decisions?.find((d: any) => d.accepted);
      const refused = (a.decisions ?? []).filter((d: any) => !d.accepted).map((d: any) => `${d.precision} refused: ${d.reason}`);
      console.log(`artifact      ${a.profile.padEnd(18)} ${a.status.padEnd(8)} ${a.status === 'built' ? `${a.format} ${a.precision}  ${(a.sizeBytes / 1024).toFixed(0)} KiB  ${chosen?.reason ?? ''}` : a.reason}`);
      for (const r of refused) console.log(`${' '.repeat(42)}${r.slice(0, 110)}`);
      if (selection === 'device' && a.candidates?.length) {
        console.log(`${' '.repeat(42)}kept for the devices to trial: ${a.candidates.map((c: any) => `${c.precision}${c.hostPick ? ' (host pick)' : ''}`).join(', ')}`);
      }
    }

    const devices = (await api('GET', '/v1/devices')).devices as any[];
    // Device selection: every agent is in the canary, trials first (3 rounds), then installs the
    // winner; a short bake keeps the demo short.
    const plan = selection === 'device'
      ? { waves: [{ name: 'canary', size: { percent: 100 }, bakeSec: 5 }], trial: { rounds: 3, timeoutSec: 180 } }
      : {};
    let { rollout } = await api('POST', '/v1/rollouts', { buildId: build.id, target: {}, ...plan });
    const deadline = Date.now() + (selection === 'device' ? 300_000 : 120_000);
    while (rollout.status === 'running' && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 250));
      ({ rollout } = await api('GET', `/v1/rollouts/${rollout.id}`));
    }

    const rows = rollout.devices.map((d: any) => {
      const dev = devices.find((x) => x.id === d.deviceId);
      const art = build.artifacts.find((a: any) => a.profile === dev.profile);
      const chosen = rollout.choices?.find((c: any) => c.profile === dev.profile);
      const r = d.result;
      return [dev.name, dev.profile, chosen?.precision ?? art?.precision ?? '-', d.state, r ? r.providers.join('+') : '-',
        r ? r.loadMs.toFixed(1) : '-', r ? r.latencyMs.p50.toFixed(3) : '-', r ? r.latencyMs.p90.toFixed(3) : '-', r ? r.latencyMs.p99.toFixed(3) : '-',
        r ? r.throughputPerSec.toFixed(0) : '-', r ? (r.peakRssBytes / 2 ** 20).toFixed(0) : '-', r ? (r.golden.passed ? `pass ${r.golden.maxAbsError.toExponential(1)}` : 'FAIL') : (d.reason ?? '-').slice(0, 70)];
    });
    const head = ['device', 'profile', 'precision', 'state', 'ran on', 'load ms', 'p50 ms', 'p90 ms', 'p99 ms', 'inf/s', 'RSS MiB', 'golden (max abs err)'];
    const widths = head.map((h, i) => Math.max(h.length, ...rows.map((r: string[]) => r[i]!.length)));
    const line = (cells: string[]) => cells.map((c, i) => (i >= 5 && i <= 10 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ');
    console.log(`\nrollout ${rollout.id}: ${rollout.status}\n`);
    console.log(line(head));
    console.log(widths.map((w) => '-'.repeat(w)).join('  '));
    for (const r of rows) console.log(line(r));
    if (selection === 'device') {
      console.log('\nvariant per profile: the build host\'s pick and the devices\' pick\n');
      for (const l of choiceTable(rollout.choices ?? [])) console.log(l);
    }
    console.log(`\nwhole loop in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (rollout.status !== 'succeeded') process.exitCode = 1;
  } finally {
    for (const c of children.reverse()) c.kill('SIGTERM');
    await Promise.all(children.map((c) => (c.exitCode === null && c.signalCode === null ? new Promise((r) => c.once('exit', r)) : null)));
    await rm(work, { recursive: true, force: true });
  }
}

// Imported by a test for its pure helpers: run only as the entry point.
if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().catch((err) => {
    console.error(`demo failed: ${(err as Error).message}`);
    process.exitCode = 1;
  });
}
