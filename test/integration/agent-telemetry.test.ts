// Telemetry end to end on the device side: a real agent (in-process) serving a real bundle
// over HTTP, its windows travelling over its real MQTT connection to a real Aedes broker, where
// a receiver made of protocol's own ingest pieces stores and acks them. Requests counted ⇒
// requests stored, exactly, through withheld acks, a broker restart and an agent restart.
import { afterEach, test } from 'node:test';
import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { DeviceTopic, PROTOCOL_VERSION, deviceTopic, generateKeyPair, windowRange } from '@edgepack/protocol';
import { startBroker, type Broker } from '@edgepack/orchestrator/mqtt/broker.js';
import type { Store } from '@edgepack/orchestrator/db/store.js';
import { createLogger } from '@edgepack/orchestrator/logger.js';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { Agent } from '@edgepack/agent/agent.js';
import { BundleSlots } from '@edgepack/agent/bundle-slots.js';
import type { Logger } from '@edgepack/agent/logger.js';
import { startDeviceServing, type DeviceServing } from '@edgepack/agent/serving/device-serving.js';
import { tempDir, until } from '../support/processes.js';
import { installBundle, kserveJson, randomFloats } from '../support/serving-fixtures.js';
import { startAcknowledger, type Acknowledger } from '../support/telemetry-acknowledger.js';

const ORCH = generateKeyPair();
const DEVICE = generateKeyPair();
const DEVICE_ID = 'dev_telemetry';
const silent = createLogger('silent');

const cleanups: (() => Promise<void>)[] = [];
afterEach(async () => {
  while (cleanups.length) await cleanups.pop()!().catch(() => undefined);
});

interface LogLine { level: string; msg: string; obj: Record<string, unknown> }

async function broker(port = 0): Promise<Broker> {
  const store: Pick<Store, 'getDeviceKey'> = { getDeviceKey: (id: string) => (id === DEVICE_ID ? { publicKey: DEVICE.publicKey, revoked: false } : undefined) };
  return startBroker({ store, log: silent, host: '127.0.0.1', port, now: () => new Date() });
}

/** The agent and its inference service, wired as cli.ts wires them. */
async function device(dataDir: string, mqttPort: number, lines: LogLine[]): Promise<{ agent: Agent; serving: DeviceServing; stop: () => Promise<void> }> {
  const log = Object.fromEntries(['error', 'warn', 'info', 'debug'].map((level) => [level, (obj: object, msg?: string) => { lines.push({ level, msg: msg ?? '', obj: obj as Record<string, unknown> }); }])) as unknown as Logger;
  let serving: DeviceServing | undefined;
  const agent = new Agent({
    dataDir, log, agentVersion: 'test', onActiveChanged: (a) => serving?.activate(a),
    identity: {
      deviceId: DEVICE_ID, name: 'test', profile: 'x86-64-gateway', server: 'http://127.0.0.1:1', publicKey: DEVICE.publicKey, secretKey: DEVICE.secretKey,
      orchestratorPublicKey: ORCH.publicKey, mqtt: { host: '127.0.0.1', port: mqttPort }, heartbeatSec: 60, enrolledAt: new Date().toISOString(),
    },
  });
  serving = await startDeviceServing({
    dataDir, log, agentVersion: 'test', link: agent.link, listen: { tcp: { host: '127.0.0.1', port: 0 } },
    concurrency: 1, maxQueued: 32, defaultTimeoutMs: 20_000, memoryFactor: 3,
    telemetry: { windowSec: 1, spoolBytes: 1 << 20, reconnectJitterMs: 100, ackTimeoutMs: 1500, maxWindowsPerSec: 200 },
  });
  await agent.start();
  const s = serving;
  return { agent, serving: s, stop: async () => { await s.stop(); await agent.stop(); } };
}

async function send(url: string, n: number, body: string): Promise<void> {
  for (let i = 0; i < n; i++) {
    const r = await fetch(`${url}/v2/models/fashion/infer`, { method: 'POST', body, headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 200, await r.text());
    await r.arrayBuffer().catch(() => undefined);
  }
}

function assertDisjoint(a: Acknowledger): void {
  const ranges = [...a.stored.values()].map(windowRange).sort((x, y) => x[0] - y[0]);
  for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i]![0] > ranges[i - 1]![1], `stored windows overlap: ${JSON.stringify(ranges)}`);
}

test('N requests served ⇒ exactly N counted by the receiver: with acks withheld, across a broker restart and an agent restart', async () => {
  const dir = await tempDir('agent-telemetry');
  cleanups.push(() => dir.remove());
  let b = await broker();
  const port = b.port;
  let ack = startAcknowledger(b, DEVICE_ID);
  cleanups.push(async () => { await b.close(); });
  const active = await installBundle(dir.path, { bundleId: 'bdl_a', name: 'fashion', version: '1', model: buildTinyMlpModel({ seed: 3 }) });
  await new BundleSlots(dir.path).activate(active);
  const lines: LogLine[] = [];
  let d = await device(dir.path, port, lines);
  cleanups.push(() => d.stop());
  await until('serving the active bundle', async () => d.serving.service.ready, 20_000, 20);
  const body = kserveJson({ input: { dtype: 'float32', dims: [1, 1, 28, 28], data: randomFloats(784, 1) } });
  const url = () => d.serving.url!;
  const settled = (n: number, what: string) => until(what, async () => ack.okTotal() === n && d.serving.spool.pending.length === 0 && ack.okTotal(), 30_000, 50);

  await send(url(), 60, body);
  await settled(60, '60 requests stored and acked');

  // The receiver "dies before its commit" for a while: windows arrive, nothing is acked; the
  // agent sends them again after its ack timeout, and the receiver dedupes what it then gets.
  ack.acking = false;
  await send(url(), 40, body);
  const before = ack.batches;
  await until('unacked windows sent again', async () => ack.batches >= before + 4, 15_000, 50);
  assert.ok(d.serving.spool.pending.length > 0);
  ack.acking = true;
  await settled(100, '100 requests, redeliveries deduped');

  // The broker goes away (as when the orchestrator is killed) and comes back on the same port.
  ack.detach();
  await b.close();
  await send(url(), 30, body);
  await new Promise((r) => setTimeout(r, 1500)); // a window or two closes while offline: spooled only
  assert.ok(d.serving.spool.pending.length > 0);
  b = await broker(port);
  ack = startAcknowledgerKeeping(b, ack);
  await settled(130, 'the backlog drained after the reconnect');

  // The agent restarts (SIGTERM-like stop: the open window is flushed) and keeps counting.
  await d.stop();
  d = await device(dir.path, port, lines);
  await until('serving again', async () => d.serving.service.ready, 20_000, 20);
  await send(url(), 20, body);
  await settled(150, 'every request of both agent runs');

  assertDisjoint(ack);
  assert.deepEqual(ack.gaps, [], 'nothing was lost, so no gap was reported');
  assert.deepEqual(ack.refusals, []);
  // Seqs are unique across the restart: the receiver saw each range once in its store.
  const seqs = [...ack.stored.values()].flatMap((w) => { const [x, y] = windowRange(w); return Array.from({ length: y - x + 1 }, (_, i) => x + i); });
  assert.equal(new Set(seqs).size, seqs.length);
  assert.ok([...ack.stored.values()].every((w) => w.deviceId === DEVICE_ID && (w.bundleId === 'bdl_a' || w.requests.ok === 0)));
});

/** A new acknowledger on a restarted broker that keeps what the old one stored (the database survives a restart). */
function startAcknowledgerKeeping(b: Broker, old: Acknowledger): Acknowledger {
  const a = startAcknowledger(b, DEVICE_ID);
  for (const [k, w] of old.stored) a.stored.set(k, w);
  a.gaps.push(...old.gaps);
  a.refusals.push(...old.refusals);
  return a;
}

test('malformed acks and acks for another device change nothing; a refusal makes the agent drop the entry and say why', async () => {
  const dir = await tempDir('agent-telemetry-acks');
  cleanups.push(() => dir.remove());
  const b = await broker();
  cleanups.push(async () => { await b.close(); });
  const lines: LogLine[] = [];
  const d = await device(dir.path, b.port, lines);
  cleanups.push(() => d.stop());
  const batches: { windows: { seq: number }[] }[] = [];
  b.aedes.on('publish', (p, c) => { if (c && p.topic === deviceTopic(DEVICE_ID, DeviceTopic.telemetry)) batches.push(JSON.parse(p.payload.toString())); });
  // No bundle active: the windows are empty ones, which still flow (silence is data).
  await until('a window sent', async () => batches.length > 0, 10_000, 20);
  const seq = batches[0]!.windows[0]!.seq;
  const publish = (payload: string) => new Promise<void>((resolve) => b.aedes.publish({ cmd: 'publish', topic: deviceTopic(DEVICE_ID, DeviceTopic.telemetryAck), payload: Buffer.from(payload), qos: 1, retain: false, dup: false } as never, () => resolve()));
  await publish('not json');
  await publish(JSON.stringify({ v: PROTOCOL_VERSION, deviceId: 'dev_other', acked: [[seq, seq]], refused: [] }));
  await until('both ignored acks logged', async () => lines.filter((l) => l.level === 'warn' && /ack (ignored|for another device)/.test(l.msg)).length >= 2, 5000, 20);
  assert.ok(d.serving.spool.pending.some((e) => e.kind === 'window' && e.window.seq === seq));
  await publish(JSON.stringify({ v: PROTOCOL_VERSION, deviceId: DEVICE_ID, acked: [], refused: [{ seq, lastSeq: seq, code: 'TELEMETRY_TIME_INVALID', reason: 'clock far off' }] }));
  await until('the refused entry dropped', async () => !d.serving.spool.pending.some((e) => e.kind === 'window' && e.window.seq === seq), 5000, 20);
  assert.ok(lines.some((l) => l.level === 'warn' && l.obj.code === 'TELEMETRY_TIME_INVALID' && /refused/.test(l.msg)));
});

test('a gap report travels like a window: after an unclean stop the receiver gets it, records it and acks it', async () => {
  const dir = await tempDir('agent-telemetry-gap');
  cleanups.push(() => dir.remove());
  const b = await broker();
  cleanups.push(async () => { await b.close(); });
  const ack = startAcknowledger(b, DEVICE_ID);
  const lines: LogLine[] = [];
  const first = await device(dir.path, b.port, lines);
  await until('a window stored', async () => ack.stored.size > 0, 10_000, 20);
  await first.stop();
  const lastSeq = Math.max(...[...ack.stored.values()].map((w) => windowRange(w)[1]));
  // What a kill -9 leaves behind: a spool that never recorded its clean stop.
  const statePath = join(dir.path, 'telemetry', 'state.json');
  await writeFile(statePath, JSON.stringify({ ...JSON.parse(await readFile(statePath, 'utf8')), clean: false }));
  const second = await device(dir.path, b.port, lines);
  cleanups.push(() => second.stop());
  const gap = await until('the gap received', async () => ack.gaps[0], 10_000, 20);
  assert.equal(gap.reason, 'unclean-stop');
  assert.ok(gap.seq > lastSeq, 'the gap has a seq of its own, after every window sent before');
  await until('the gap acked and gone from the spool', async () => !second.serving.spool.pending.some((e) => e.kind === 'gap'), 10_000, 20);
  assert.ok(lines.some((l) => l.level === 'warn' && /did not stop cleanly/.test(l.msg)));
});
