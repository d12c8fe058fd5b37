// The on-device inference service against the bare runtime, side by side in one run: one real
// agent process (--serve) serving mobilenet_v2 and then fashion_cnn, rolled out by a real
// orchestrator; requests/s and p50/p99 through HTTP (KServe v2 JSON and the binary tensor
// extension) next to a bare onnxruntime-node loop on the same bundle file with the same
// session options. Also where the time goes: the service's request decoding, timed alone.
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request } from 'node:http';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import * as ort from 'onnxruntime-node';
import { decodeInferRequest } from '@edgepack/agent/serving/kserve-codec.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { sharedModelsDir } from '../support/paths.js';
import { startAgent, startOrchestrator, tempDir, until, type Orchestrator, ONE_WAVE } from '../support/processes.js';
import { kserveBinary, kserveJson, randomFloats } from '../support/serving-fixtures.js';

interface Row { model: string; path: string; conc: number; n: number; rps: number; p50: number; p99: number; vsBare: string }

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;

/** Runs `once` from `conc` loops until `n` calls are done; per-call latency and overall rate. */
async function drive(n: number, conc: number, once: () => Promise<void>): Promise<{ rps: number; p50: number; p99: number }> {
  const times: number[] = [];
  let left = n;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: conc }, async () => {
    while (left-- > 0) {
      const s = performance.now();
      await once();
      times.push(performance.now() - s);
    }
  }));
  const elapsed = performance.now() - t0;
  times.sort((a, b) => a - b);
  return { rps: n / (elapsed / 1000), p50: pct(times, 50), p99: pct(times, 99) };
}

/** At concurrency 1 the paths take turns request by request, so each pair of samples sees the same machine load. */
async function lockstep(n: number, paths: readonly (readonly [string, () => Promise<void>])[]): Promise<Record<string, { rps: number; p50: number; p99: number }>> {
  const times: Record<string, number[]> = Object.fromEntries(paths.map(([k]) => [k, []]));
  for (let i = 0; i < n; i++) {
    for (const [k, f] of paths) {
      const s = performance.now();
      await f();
      times[k]!.push(performance.now() - s);
    }
  }
  return Object.fromEntries(Object.entries(times).map(([k, t]) => {
    const total = t.reduce((a, b) => a + b, 0);
    t.sort((a, b) => a - b);
    return [k, { rps: n / (total / 1000), p50: pct(t, 50), p99: pct(t, 99) }];
  }));
}

function post(url: URL, agent: HttpAgent, body: Buffer, headers: Record<string, string>, socketPath?: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const where = socketPath ? { socketPath } : { host: url.hostname, port: url.port };
    const req = request({ ...where, path: url.pathname, method: 'POST', agent, headers: { ...headers, 'content-length': String(body.length) } }, (res) => {
      res.on('data', () => undefined);
      res.on('end', () => (res.statusCode === 200 ? resolve() : reject(new Error(`HTTP ${res.statusCode}`))));
    });
    req.on('error', reject);
    req.end(body);
  });
}

async function rollOutModel(orch: Orchestrator, deviceId: string, bytes: Uint8Array, name: string): Promise<string> {
  const up = await orch.api('POST', `/v1/models?name=${name}&version=1`, bytes);
  if (up.status !== 201) throw new Error(JSON.stringify(up.body));
  const b = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'] });
  const build = await until('build', async () => {
    const r = await orch.api('GET', `/v1/builds/${b.body.build.id}`);
    return r.body.build.status !== 'queued' && r.body.build.status !== 'running' && r.body.build;
  }, 600_000, 200);
  if (build.status !== 'succeeded') throw new Error(JSON.stringify(build));
  const r = await orch.api('POST', '/v1/rollouts', { buildId: build.id, target: { deviceIds: [deviceId] }, ...ONE_WAVE });
  await until('rollout', async () => (await orch.api('GET', `/v1/rollouts/${r.body.rollout.id}`)).body.rollout.status === 'succeeded', 300_000, 200);
  return build.artifacts[0].bundleId as string;
}

async function bundleFile(orch: Orchestrator, bundleId: string): Promise<Uint8Array> {
  const b = (await orch.api('GET', `/v1/bundles/${bundleId}`)).body.bundle;
  const f = b.manifest.files.find((x: { role: string }) => x.role === 'model');
  const res = await orch.fetch(`${orch.url}/v1/bundles/${bundleId}/files/${f.path}`, { headers: { authorization: `Bearer ${orch.adminToken}` } });
  return new Uint8Array(await res.arrayBuffer());
}

export async function run(): Promise<void> {
  const dir = await tempDir('bench-serving');
  const orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn']);
  const rows: Row[] = [];
  const decodeRows: string[] = [];
  try {
    const socketPath = join(dir.path, 'infer.sock');
    const agentProc = await startAgent(orch, join(dir.path, 'a'), { profile: 'x86-64-gateway', env: { EDGEPACK_AGENT_SERVE: '127.0.0.1:0', EDGEPACK_AGENT_SERVE_SOCKET: socketPath, EDGEPACK_AGENT_LOG_LEVEL: 'warn', EDGEPACK_AGENT_SERVE_QUEUE: '64' } });
    try {
      const deviceId = (await agentProc.event('started')).deviceId as string;
      const base = new URL((await agentProc.event('serving')).url as string);
      const shared = sharedModelsDir();
      const cases = shared
        ? [
          { name: 'mobilenet_v2', bytes: new Uint8Array(await readFile(join(shared, 'mobilenet_v2.onnx'))), dims: [1, 3, 224, 224], n: 300 },
          { name: 'fashion_cnn', bytes: new Uint8Array(await readFile(join(shared, 'fashion_cnn.onnx'))), dims: [1, 1, 28, 28], n: 3000 },
        ]
        : [{ name: 'tiny_mlp', bytes: buildTinyMlpModel({ hidden: 2048 }), dims: [1, 1, 28, 28], n: 2000 }];
      for (const c of cases) {
        const bundleId = await rollOutModel(orch, deviceId, c.bytes, c.name);
        const model = await bundleFile(orch, bundleId);
        const x = randomFloats(c.dims.reduce((a, b) => a * b, 1), 42);
        const feeds = { input: { dtype: 'float32' as const, dims: c.dims, data: x } };
        const json = Buffer.from(kserveJson(feeds));
        const bin = kserveBinary(feeds, { parameters: { binary_data_output: true } });
        const url = new URL(`/v2/models/${c.name}/infer`, base);
        const agent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
        const unixAgent = new HttpAgent({ keepAlive: true, maxSockets: 16 });
        const binHeaders = { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(bin.headerLength) };
        const viaJson = () => post(url, agent, json, { 'content-type': 'application/json' });
        const viaBinary = () => post(url, agent, bin.body, binHeaders);
        const viaSocket = () => post(url, unixAgent, bin.body, binHeaders, socketPath);
        // The bare loop: the same bundle file, the same session options as the agent's served runner (all cores, no spinning).
        const session = await ort.InferenceSession.create(model, {
          executionProviders: ['cpu'], intraOpNumThreads: 0, graphOptimizationLevel: 'all',
          extra: { session: { 'intra_op.allow_spinning': '0', 'inter_op.allow_spinning': '0' } },
        });
        const bare = async () => { await session.run({ [session.inputNames[0]!]: new ort.Tensor('float32', x, c.dims) }); };
        const warm = Math.max(10, Math.round(c.n / 20));
        const paths = [['bare onnxruntime', bare], ['service binary', viaBinary], ['  … unix socket', viaSocket], ['service JSON', viaJson]] as const;
        for (const [, f] of paths) for (let i = 0; i < warm; i++) await f();
        const single = await lockstep(c.n, paths);
        for (const [path, m] of Object.entries(single)) {
          rows.push({ model: c.name, path, conc: 1, n: c.n, ...m, vsBare: (m.p50 / single['bare onnxruntime']!.p50).toFixed(2) });
        }
        // Four requests in flight: interleaved in rounds, so drift on a shared machine hits every path alike.
        const conc = 4;
        const acc: Record<string, { rps: number[]; p50: number[]; p99: number[] }> = {};
        const rounds = 5;
        for (let r = 0; r < rounds; r++) {
          for (const [path, f] of paths) {
            const m = await drive(Math.round(c.n / rounds), conc, f);
            const a = (acc[path] ??= { rps: [], p50: [], p99: [] });
            a.rps.push(m.rps); a.p50.push(m.p50); a.p99.push(m.p99);
          }
        }
        const med = (xs: number[]) => [...xs].sort((p, q) => p - q)[Math.floor(xs.length / 2)]!;
        const bareP50 = med(acc['bare onnxruntime']!.p50);
        for (const [path, a] of Object.entries(acc)) {
          rows.push({ model: c.name, path, conc, n: c.n, rps: med(a.rps), p50: med(a.p50), p99: med(a.p99), vsBare: (med(a.p50) / bareP50).toFixed(2) });
        }
        // Where the time of a binary request goes: the agent's own histograms (received → answered,
        // and received → a runner slot: body read, decode, queue) next to what the client saw.
        const scrape = async () => {
          const text = await (await fetch(new URL('/metrics', base))).text();
          const get = (metric: string) => {
            const line = text.split('\n').find((l) => l.startsWith(`${metric}{`) && l.includes(`model="${c.name}"`));
            return line ? Number(line.slice(line.lastIndexOf(' ') + 1)) : 0;
          };
          return { sum: get('edgepack_agent_inference_duration_seconds_sum'), count: get('edgepack_agent_inference_duration_seconds_count'), queue: get('edgepack_agent_inference_queue_seconds_sum') };
        };
        const k = Math.min(100, c.n);
        const before = await scrape();
        const pair = await lockstep(k, [['bare', bare], ['binary', viaBinary]]);
        const after = await scrape();
        const n = after.count - before.count;
        const serverMs = ((after.sum - before.sum) / n) * 1000;
        const preRunMs = ((after.queue - before.queue) / n) * 1000;
        const clientMs = 1000 / pair.binary!.rps;
        const bareMs = 1000 / pair.bare!.rps;
        decodeRows.push(`${c.name.padEnd(13)} mean of ${k} binary requests: client ${clientMs.toFixed(2)} ms = transport and client ${(clientMs - serverMs).toFixed(2)} + in the agent ${serverMs.toFixed(2)} (before the runner ${preRunMs.toFixed(2)}, runner thread and answer ${(serverMs - preRunMs).toFixed(2)}); bare run ${bareMs.toFixed(2)} ms`);
        unixAgent.destroy();
        await session.release();
        agent.destroy();
        // Where the time goes: the service's own decoding of the same bodies, alone.
        const sig = { inputs: [{ name: 'input', dtype: 'float32' as const, shape: ['batch', ...c.dims.slice(1)] }], outputs: [{ name: 'output', dtype: 'float32' as const, shape: ['batch', 0] }] };
        const time = (f: () => void) => { for (let i = 0; i < 5; i++) f(); const s = performance.now(); const k = 50; for (let i = 0; i < k; i++) f(); return (performance.now() - s) / k; };
        const jsonMs = time(() => decodeInferRequest(json, undefined, sig));
        const binMs = time(() => decodeInferRequest(bin.body, String(bin.headerLength), sig));
        decodeRows.push(`${c.name.padEnd(13)} body JSON ${(json.length / 1024).toFixed(0).padStart(5)} KiB → decode ${jsonMs.toFixed(3)} ms; binary ${(bin.body.length / 1024).toFixed(0).padStart(5)} KiB → decode ${binMs.toFixed(3)} ms`);
      }
    } finally {
      await agentProc.kill();
    }
  } finally {
    await orch.stop();
    await dir.remove();
  }
  console.log('requests through the agent\'s KServe v2 service vs the bare onnxruntime-node loop (same bundle file, same session options);');
  console.log('conc 1: the paths take turns request by request; conc 4: medians of 5 interleaved rounds');
  console.log('model          path              conc  req/s    p50 ms   p99 ms   p50 vs bare');
  for (const r of rows) {
    console.log(`${r.model.padEnd(14)} ${r.path.padEnd(17)} ${String(r.conc).padStart(4)} ${r.rps.toFixed(0).padStart(6)} ${r.p50.toFixed(3).padStart(9)} ${r.p99.toFixed(3).padStart(8)}   ${r.vsBare}x`);
  }
  console.log('\nwhere the time goes (the service decoding the request body, in-process):');
  for (const l of decodeRows) console.log(l);
}
