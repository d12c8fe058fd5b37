// The on-device inference service in-process, with real parts: real bundles on disk, real
// onnxruntime-node, real HTTP on loopback (and a Unix socket), the real telemetry spool.
// Only MQTT is absent here (the link stays disconnected, so windows stay spooled); the
// telemetry round trip over a broker is in agent-telemetry.test.ts.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { stat, writeFile, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { totalRequests, type TelemetryWindow } from '@edgepack/protocol';
import { DeviceLink } from '@edgepack/agent/device-link.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { startDeviceServing, type DeviceServing, type DeviceServingOptions } from '@edgepack/agent/serving/device-serving.js';
import { ServedModel } from '@edgepack/agent/serving/served-model.js';
import { GraphBuilder, buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType } from '@edgepack/orchestrator/onnx/tensor.js';
import { tempDir, until } from '../support/processes.js';
import { decodeBinaryResponse, installBundle, inputsFor, kserveBinary, kserveJson, randomFloats } from '../support/serving-fixtures.js';

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

interface LogLine { level: string; msg: string; obj: Record<string, unknown> }
function recorder(): { log: Logger; lines: LogLine[] } {
  const lines: LogLine[] = [];
  const log = Object.fromEntries(['error', 'warn', 'info', 'debug'].map((level) => [level, (obj: object, msg?: string) => { lines.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> }); }])) as unknown as Logger;
  return { log, lines };
}

async function setup(extra: Partial<DeviceServingOptions> = {}): Promise<{ dataDir: string; serving: DeviceServing; url: string; lines: LogLine[] }> {
  const dir = await tempDir('serving');
  const { log, lines } = recorder();
  const serving = await startDeviceServing({
    dataDir: dir.path, log, agentVersion: 'test', link: new DeviceLink('dev_serving'), listen: { tcp: { host: '127.0.0.1', port: 0 } },
    concurrency: 1, maxQueued: 8, defaultTimeoutMs: 20_000, memoryFactor: 3, telemetry: { windowSec: 1, spoolBytes: 1 << 20 },
    ...extra,
  });
  cleanups.push(() => dir.remove(), () => serving.stop());
  return { dataDir: dir.path, serving, url: serving.url!, lines };
}

/** A model that takes its time without big weights: 32 × (MatMul x·x, Tanh) over [batch, 256, 256]. */
function slowModel(): Uint8Array {
  const b = new GraphBuilder({ graphName: 'slow', opset: 13 });
  b.input('x', DataType.FLOAT, ['batch', 256, 256]);
  let cur = 'x';
  for (let i = 0; i < 32; i++) {
    const [m] = b.node('MatMul', [cur, cur], [`m${i}`]);
    [cur] = b.node('Tanh', [m!], [`t${i}`]) as [string];
  }
  b.node('Identity', [cur], ['y']);
  b.output('y', DataType.FLOAT, ['batch', 256, 256]);
  return b.encode();
}

async function post(url: string, body: string | Buffer, headers: Record<string, string> = {}): Promise<{ status: number; headers: Headers; body: Buffer }> {
  const res = await fetch(url, { method: 'POST', body, headers: { 'content-type': 'application/json', ...headers } });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

async function ortDirect(model: Uint8Array, feeds: Record<string, { dims: number[]; data: Float32Array | any }>): Promise<Record<string, Float32Array>> {
  // The same session options as the agent's runner, so results are bit-identical.
  const s = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], intraOpNumThreads: 0, graphOptimizationLevel: 'all' });
  try {
    const out = await s.run(Object.fromEntries(Object.entries(feeds).map(([k, t]) => [k, new ort.Tensor('float32', t.data as Float32Array, t.dims)])));
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
  } finally {
    await s.release();
  }
}

const MLP_A = buildTinyMlpModel({ seed: 1 });
const MLP_B = buildTinyMlpModel({ seed: 2 });

/** Every ok window's request counts from the spool, after the service stopped (which flushes the open window). */
function spooledWindows(serving: DeviceServing): TelemetryWindow[] {
  return serving.spool.pending.flatMap((e) => (e.kind === 'window' ? [e.window] : []));
}

test('ready is never 200 without a loaded, warmed, golden-checked model; live is; metadata names the bundle', async () => {
  const { serving, url, dataDir } = await setup();
  const live = await fetch(`${url}/v2/health/live`);
  assert.equal(live.status, 200);
  assert.deepEqual(await live.json(), { live: true });
  const notReady = await fetch(`${url}/v2/health/ready`);
  assert.equal(notReady.status, 503);
  assert.equal(((await notReady.json()) as { ready: boolean }).ready, false);
  const early = await post(`${url}/v2/models/fashion/infer`, kserveJson(inputsFor([{ name: 'input', dtype: 'float32', shape: ['batch', 1, 28, 28] }], 1, 1)));
  assert.equal(early.status, 503);
  assert.equal(early.headers.get('retry-after'), '1');
  assert.equal((await fetch(`${url}/v2/models/fashion`)).status, 404);

  const a = await installBundle(dataDir, { bundleId: 'bdl_a', name: 'fashion', version: '1.0.0', model: MLP_A });
  await serving.activate(a);
  assert.equal((await fetch(`${url}/v2/health/ready`)).status, 200);
  const ready = await fetch(`${url}/v2/models/fashion/ready`);
  assert.equal(ready.status, 200);
  assert.deepEqual(await ready.json(), { name: 'fashion', ready: true });
  assert.equal((await fetch(`${url}/v2/models/fashion/versions/1.0.0/ready`)).status, 200);
  assert.equal((await fetch(`${url}/v2/models/other/ready`)).status, 404);
  const meta: any = await (await fetch(`${url}/v2/models/fashion`)).json();
  assert.deepEqual(meta, {
    name: 'fashion', versions: ['1.0.0'], platform: 'onnxruntime_onnx',
    inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] }], outputs: [{ name: 'output', datatype: 'FP32', shape: [-1, 10] }],
    parameters: { bundle_id: 'bdl_a', precision: 'fp32', format: 'onnx' },
  });
  assert.equal((await fetch(`${url}/v2/models/fashion/versions/9`)).status, 404);
  const server: any = await (await fetch(`${url}/v2`)).json();
  assert.ok(server.extensions.includes('binary_tensor_data'));

  // A bundle whose golden samples do not match what the runtime computes is never served.
  const bad = await installBundle(dataDir, { bundleId: 'bdl_bad', name: 'fashion', version: '2', model: MLP_B });
  const goldenPath = join(dataDir, 'bundles', 'bdl_bad', 'golden.json');
  const golden = JSON.parse(await readFile(goldenPath, 'utf8'));
  golden.samples[0].outputs = JSON.parse(await readFile(join(dataDir, 'bundles', 'bdl_a', 'golden.json'), 'utf8')).samples[0].outputs;
  await writeFile(goldenPath, JSON.stringify(golden));
  await assert.rejects(serving.activate(bad), (e: { code?: string }) => e.code === 'GOLDEN_MISMATCH');
  assert.equal(((await (await fetch(`${url}/v2/models/fashion`)).json()) as any).parameters.bundle_id, 'bdl_a');
  assert.equal((await fetch(`${url}/v2/health/ready`)).status, 200);
});

test('JSON and binary requests give exactly what onnxruntime gives for the same input, batch in the first dimension', async () => {
  const { serving, url, dataDir } = await setup();
  const { sharedModelsDir } = await import('../support/paths.js');
  const shared = sharedModelsDir();
  const model = shared ? new Uint8Array(await readFile(join(shared, 'fashion_cnn.onnx'))) : MLP_A;
  await serving.activate(await installBundle(dataDir, { bundleId: 'bdl_cnn', name: 'fashion', version: '1', model }));
  const feeds = { input: { dtype: 'float32' as const, dims: [3, 1, 28, 28], data: randomFloats(3 * 784, 7) } };
  const expected = await ortDirect(model, feeds);

  const json = await post(`${url}/v2/models/fashion/infer`, kserveJson(feeds, { id: 'req-1' }));
  assert.equal(json.status, 200, json.body.toString());
  const reply = JSON.parse(json.body.toString());
  assert.equal(reply.model_name, 'fashion');
  assert.equal(reply.model_version, '1');
  assert.equal(reply.id, 'req-1');
  assert.deepEqual(reply.outputs.map((o: any) => [o.name, o.datatype, o.shape]), [['output', 'FP32', [3, 10]]]);
  assert.deepEqual(Float32Array.from(reply.outputs[0].data), expected.output);

  // Nested data is the same tensor.
  const nested = JSON.stringify({ inputs: [{ name: 'input', shape: [3, 1, 28, 28], datatype: 'FP32', data: Array.from({ length: 3 }, (_, b) => [Array.from({ length: 28 }, (_, r) => Array.from(feeds.input.data.subarray(b * 784 + r * 28, b * 784 + r * 28 + 28)))]) }] });
  assert.deepEqual(Float32Array.from(JSON.parse((await post(`${url}/v2/models/fashion/infer`, nested)).body.toString()).outputs[0].data), expected.output);

  // The binary tensor extension, in and out.
  const bin = kserveBinary(feeds, { parameters: { binary_data_output: true } });
  const r = await post(`${url}/v2/models/fashion/versions/1/infer`, bin.body, { 'inference-header-content-length': String(bin.headerLength), 'content-type': 'application/octet-stream' });
  assert.equal(r.status, 200, r.body.toString());
  const hl = Number(r.headers.get('inference-header-content-length'));
  assert.deepEqual(decodeBinaryResponse(r.body, hl).output, expected.output);
  // Binary in, JSON out (an output can ask for JSON).
  const mixed = kserveBinary(feeds, { outputs: [{ name: 'output', parameters: { binary_data: false } }] });
  const m = await post(`${url}/v2/models/fashion/infer`, mixed.body, { 'inference-header-content-length': String(mixed.headerLength) });
  assert.deepEqual(Float32Array.from(JSON.parse(m.body.toString()).outputs[0].data), expected.output);
});

test('bad requests get 400 naming the tensor and the shape it needs; other models 404; nothing else breaks', async () => {
  const { serving, url, dataDir } = await setup({ maxBodyBytes: 200_000 });
  await serving.activate(await installBundle(dataDir, { bundleId: 'bdl_a', name: 'fashion', version: '1', model: MLP_A }));
  const one = (o: Record<string, unknown>) => JSON.stringify({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', data: new Array(784).fill(0), ...o }] });
  const binarySizeOff = JSON.stringify({ inputs: [{ name: 'input', shape: [1, 1, 28, 28], datatype: 'FP32', parameters: { binary_data_size: 100 } }] });
  const cases: [string, string | Buffer, RegExp, Record<string, string>?][] = [
    ['wrong shape', one({ shape: [1, 28, 28], data: new Array(784).fill(0) }), /input 'input' has shape \[1,28,28\]; the model takes FP32 \[-1,1,28,28\]/],
    ['wrong static dim', one({ shape: [1, 3, 28, 28], data: new Array(3 * 784).fill(0) }), /input 'input' has shape \[1,3,28,28\]; the model takes FP32 \[-1,1,28,28\]/],
    ['unknown tensor', JSON.stringify({ inputs: [{ name: 'image', shape: [1, 1, 28, 28], datatype: 'FP32', data: [] }] }), /unknown input 'image'; the model takes 'input' \(FP32 \[-1,1,28,28\]\)/],
    ['wrong datatype', one({ datatype: 'FP64' }), /input 'input' has datatype "FP64"; the model takes FP32 \[-1,1,28,28\]/],
    ['too few elements', one({ data: [1, 2, 3] }), /input 'input': data is neither flat with 784 elements nor nested/],
    ['a string among numbers', one({ data: ['x', ...new Array(783).fill(0)] }), /input 'input': element 0 \("x"\) is not a number/],
    ['empty batch', one({ shape: [0, 1, 28, 28], data: [] }), /empty batch/],
    ['no inputs', JSON.stringify({ inputs: [] }), /"inputs" must be a non-empty array; the model takes 'input' \(FP32 \[-1,1,28,28\]\)/],
    ['not JSON', '{"inputs":', /not JSON/],
    ['binary size off', binarySizeOff, /binary_data_size 100, but FP32 \[-1,1,28,28\] with shape \[1,1,28,28\] is 3136 bytes/, { 'inference-header-content-length': String(binarySizeOff.length) }],
    ['bad timeout', one({}), /timeout-ms must be a positive integer/, { 'timeout-ms': 'soon' }],
    ['unknown output', JSON.stringify({ ...JSON.parse(one({})), outputs: [{ name: 'logits' }] }), /unknown output 'logits'; the model gives 'output'/],
  ];
  for (const [what, body, re, headers] of cases) {
    const r = await post(`${url}/v2/models/fashion/infer`, body, headers);
    assert.equal(r.status, 400, `${what}: ${r.body}`);
    assert.match(JSON.parse(r.body.toString()).error, re, what);
  }
  // binary_data_size with the header pointing at an empty binary part.
  const hl = await post(`${url}/v2/models/fashion/infer`, one({}), { 'inference-header-content-length': '99999999' });
  assert.equal(hl.status, 400);
  const big = await post(`${url}/v2/models/fashion/infer`, Buffer.alloc(300_000, 0x20));
  assert.equal(big.status, 413);
  assert.equal((await post(`${url}/v2/models/other/infer`, one({}))).status, 404);
  assert.equal((await post(`${url}/v2/models/fashion/versions/7/infer`, one({}))).status, 404);
  assert.equal((await fetch(`${url}/v2/models/fashion/infer`)).status, 405);
  assert.equal((await fetch(`${url}/nothing`)).status, 404);
  // Still serving, and every one of those was counted as invalid (the last two not at all: not infer calls).
  assert.equal((await post(`${url}/v2/models/fashion/infer`, one({}))).status, 200);
  await serving.stop();
  const windows = spooledWindows(serving);
  const sum = (k: 'ok' | 'invalid') => windows.reduce((n, w) => n + w.requests[k], 0);
  assert.equal(sum('invalid'), cases.length + 4);
  assert.equal(sum('ok'), 1);
});

test('a full queue answers 503 with Retry-After; a request past its timeout answers 504, queued or running', async () => {
  const { serving, url, dataDir } = await setup({ maxQueued: 1 });
  await serving.activate(await installBundle(dataDir, { bundleId: 'bdl_slow', name: 'slow', version: '1', model: slowModel(), goldenSamples: 1 }));
  const big = kserveBinary({ x: { dtype: 'float32', dims: [6, 256, 256], data: randomFloats(6 * 65536, 3) } }, { parameters: { binary_data_output: true } });
  const small = kserveBinary({ x: { dtype: 'float32', dims: [1, 256, 256], data: randomFloats(65536, 4) } }, { parameters: { binary_data_output: true } });
  const send = (b: typeof big, headers: Record<string, string> = {}) => post(`${url}/v2/models/slow/infer`, b.body, { 'inference-header-content-length': String(b.headerLength), ...headers });
  const metrics = async () => (await fetch(`${url}/metrics`)).text();

  const first = send(big);
  await until('first request running', async () => /edgepack_agent_inference_in_flight 1/.test(await metrics()), 10_000, 5);
  const queued = send(small);
  await until('second request queued', async () => /edgepack_agent_inference_queued 1/.test(await metrics()), 10_000, 5);
  const refused = await send(small);
  assert.equal(refused.status, 503);
  assert.equal(refused.headers.get('retry-after'), '1');
  assert.match(JSON.parse(refused.body.toString()).error, /queue is full/);
  assert.equal((await first).status, 200);
  assert.equal((await queued).status, 200);

  // Timed out while waiting in the queue (body parameter), and while running (header).
  const running = send(big);
  await until('running again', async () => /edgepack_agent_inference_in_flight 1/.test(await metrics()), 10_000, 5);
  const inQueue = kserveBinary({ x: { dtype: 'float32', dims: [1, 256, 256], data: randomFloats(65536, 5) } }, { parameters: { timeout_ms: 20 } });
  const t1 = await send(inQueue);
  assert.equal(t1.status, 504);
  assert.match(JSON.parse(t1.body.toString()).error, /timed out waiting/);
  assert.equal((await running).status, 200);
  const t2 = await send(big, { 'timeout-ms': '5' });
  assert.equal(t2.status, 504);
  // The service is fine afterwards.
  assert.equal((await send(small)).status, 200);
  await serving.stop();
  const windows = spooledWindows(serving);
  const sum = (k: 'ok' | 'timeout' | 'rejected') => windows.reduce((n, w) => n + w.requests[k], 0);
  assert.deepEqual([sum('ok'), sum('rejected'), sum('timeout')], [4, 1, 2]);
});

/** Sends requests without pause from `workers` loops; records each answer with when it was sent. */
function hammer(url: string, body: string, workers: number) {
  let stop = false;
  const results: { sentAt: number; status: number; out?: number[]; error?: string }[] = [];
  const loops = Array.from({ length: workers }, async () => {
    while (!stop) {
      const sentAt = performance.now();
      try {
        const r = await post(url, body);
        const text = r.body.toString();
        results.push({ sentAt, status: r.status, ...(r.status === 200 ? { out: JSON.parse(text).outputs[0].data } : { error: text }) });
      } catch (err) {
        results.push({ sentAt, status: 0, error: (err as Error).message });
      }
    }
  });
  return { results, stop: async () => { stop = true; await Promise.all(loops); return results; } };
}

const close = (a: ArrayLike<number>, b: ArrayLike<number>) => a.length === b.length && Array.from(a).every((x, i) => Math.abs(x - b[i]!) < 1e-5);

test('hot swap beside the old model and back: requests without pause see no failure, and switch outputs at once', async () => {
  const { serving, url, dataDir } = await setup({ concurrency: 2, maxQueued: 64 });
  const a = await installBundle(dataDir, { bundleId: 'bdl_a', name: 'fashion', version: '1', model: MLP_A });
  const b = await installBundle(dataDir, { bundleId: 'bdl_b', name: 'fashion', version: '2', model: MLP_B });
  await serving.activate(a);
  const feeds = { input: { dtype: 'float32' as const, dims: [2, 1, 28, 28], data: randomFloats(2 * 784, 9) } };
  const outA = (await ortDirect(MLP_A, feeds)).output!;
  const outB = (await ortDirect(MLP_B, feeds)).output!;
  assert.ok(!close(outA, outB));
  const h = hammer(`${url}/v2/models/fashion/infer`, kserveJson(feeds), 4);
  await until('some requests served', async () => h.results.length > 50, 10_000, 10);
  await serving.activate(b);
  const switchedAt = performance.now();
  await until('requests after the switch', async () => h.results.filter((r) => r.sentAt > switchedAt).length > 50, 10_000, 10);
  const rollbackAt = performance.now();
  await serving.activate(a); // a rollback swaps back the same way
  const backAt = performance.now();
  await until('requests after the rollback', async () => h.results.filter((r) => r.sentAt > backAt).length > 50, 10_000, 10);
  const results = await h.stop();

  const failed = results.filter((r) => r.status !== 200);
  assert.deepEqual(failed, [], `${failed.length} of ${results.length} requests failed`);
  for (const r of results) assert.ok(close(r.out!, outA) || close(r.out!, outB));
  // Requests sent after a switch completed get the model switched to: nothing stale is served.
  assert.ok(results.filter((r) => r.sentAt > switchedAt && r.sentAt < rollbackAt).every((r) => close(r.out!, outB)));
  assert.ok(results.filter((r) => r.sentAt > backAt).every((r) => close(r.out!, outA)));

  // Telemetry: exactly the requests sent, split by the bundle that served them, and two swaps.
  await serving.stop();
  const windows = spooledWindows(serving);
  assert.equal(windows.reduce((n, w) => n + totalRequests(w.requests), 0), results.length);
  assert.equal(windows.reduce((n, w) => n + w.requests.ok, 0), results.length);
  assert.equal(windows.reduce((n, w) => n + w.items, 0), results.length * 2);
  const byBundle = (id: string) => windows.filter((w) => w.bundleId === id).reduce((n, w) => n + w.requests.ok, 0);
  assert.equal(byBundle('bdl_a') + byBundle('bdl_b'), results.length);
  assert.ok(byBundle('bdl_b') > 50);
  const swaps = (id: string) => windows.filter((w) => w.bundleId === id).reduce((n, w) => n + (w.swaps?.count ?? 0), 0);
  assert.deepEqual([swaps('bdl_a'), swaps('bdl_b')], [2, 1]);
  assert.ok(windows.every((w) => !w.swaps?.held));
  const seqs = serving.spool.pending.map((e) => (e.kind === 'window' ? e.window.seq : e.gap.seq));
  assert.deepEqual(seqs, [...seqs].sort((x, y) => x - y));
});

test('without memory for two models the swap holds requests instead of failing them, and says so', async () => {
  const { dataDir } = { dataDir: (await tempDir('serving-hold')).path };
  cleanups.push(async () => { const { rm } = await import('node:fs/promises'); await rm(dataDir, { recursive: true, force: true }); });
  const loads: string[] = [];
  const { serving, url, lines } = await setup({
    dataDir, concurrency: 2, maxQueued: 64, memoryFactor: 2, availableMemoryBytes: () => 1000, // never room for two
    // A slower load, as on a small board, so that the hold is long enough to be seen.
    load: async (active) => {
      loads.push(active.bundleId);
      await new Promise((r) => setTimeout(r, 300));
      return ServedModel.load(join(dataDir, 'bundles', active.bundleId), active, { concurrency: 2, maxQueued: 64 });
    },
  });
  const a = await installBundle(dataDir, { bundleId: 'bdl_a', name: 'fashion', version: '1', model: MLP_A });
  const b = await installBundle(dataDir, { bundleId: 'bdl_b', name: 'fashion', version: '2', model: MLP_B });
  await serving.activate(a);
  const feeds = { input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: randomFloats(784, 10) } };
  const outB = (await ortDirect(MLP_B, feeds)).output!;
  const h = hammer(`${url}/v2/models/fashion/infer`, kserveJson(feeds), 3);
  await until('some requests served', async () => h.results.length > 30, 10_000, 10);
  const swap = serving.activate(b);
  await until('the hold is visible', async () => (await fetch(`${url}/v2/health/ready`)).status === 503, 5000, 5);
  await swap;
  assert.equal((await fetch(`${url}/v2/health/ready`)).status, 200);
  const doneAt = performance.now();
  await until('requests after the switch', async () => h.results.filter((r) => r.sentAt > doneAt).length > 30, 10_000, 10);
  const results = await h.stop();
  assert.deepEqual(results.filter((r) => r.status !== 200), []);
  assert.ok(results.filter((r) => r.sentAt > doneAt).every((r) => close(r.out!, outB)));
  assert.deepEqual(loads, ['bdl_a', 'bdl_b']);
  const warn = lines.find((l) => l.level === 'warn' && /not enough memory for two models/.test(l.msg));
  assert.ok(warn, 'the hold is logged');
  assert.equal(warn!.obj.memoryFactor, 2);
  assert.match(await (await fetch(`${url}/metrics`)).text(), /edgepack_agent_model_swaps_total\{held="true"\} 1/);
  await serving.stop();
  const swaps = spooledWindows(serving).filter((w) => w.swaps?.held);
  assert.equal(swaps.length, 1);
  assert.equal(swaps[0]!.bundleId, 'bdl_b');
  assert.ok(swaps[0]!.swaps!.heldRequests >= 1 && swaps[0]!.swaps!.maxHoldMs >= 250, JSON.stringify(swaps[0]!.swaps));
});

test('the Unix socket is created with mode 0660 and serves the same API; /metrics speaks Prometheus', async () => {
  const dir = await tempDir('serving-sock');
  cleanups.push(() => dir.remove());
  const socketPath = join(dir.path, 'infer.sock');
  const { serving, dataDir, url } = await setup({ listen: { tcp: { host: '127.0.0.1', port: 0 }, socketPath } });
  assert.equal((await stat(socketPath)).mode & 0o777, 0o660);
  await serving.activate(await installBundle(dataDir, { bundleId: 'bdl_a', name: 'fashion', version: '1', model: MLP_A }));
  const feeds = { input: { dtype: 'float32' as const, dims: [1, 1, 28, 28], data: randomFloats(784, 11) } };
  const body = kserveJson(feeds);
  const viaSocket = await new Promise<{ status: number; text: string }>((resolve, reject) => {
    const req = request({ socketPath, path: '/v2/models/fashion/infer', method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) } }, (res) => {
      let text = '';
      res.on('data', (d) => (text += d));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', reject);
    req.end(body);
  });
  assert.equal(viaSocket.status, 200);
  assert.deepEqual(Float32Array.from(JSON.parse(viaSocket.text).outputs[0].data), (await ortDirect(MLP_A, feeds)).output);
  const text = await (await fetch(`${url}/metrics`)).text();
  assert.match(text, /edgepack_agent_inference_requests_total\{model="fashion",bundle="bdl_a",outcome="ok"\} 1/);
  assert.match(text, /edgepack_agent_inference_duration_seconds_bucket\{le="0.00005",model="fashion",bundle="bdl_a"\}/);
  assert.match(text, /edgepack_agent_ready 1/);
  assert.match(text, /edgepack_agent_telemetry_spool_bytes \d+/);
  assert.match(text, /edgepack_agent_process_resident_memory_bytes \d+/);
  await serving.stop();
  await assert.rejects(stat(socketPath), 'the socket is removed on stop');
});
