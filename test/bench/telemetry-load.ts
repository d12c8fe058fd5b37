// The load side of the telemetry bench, run in a child process (forked, IPC) so that it shares
// neither the orchestrator's event loop nor its CPU-time account: one mqtt.js client per device with the device's own signed
// credential sends pre-serialised telemetry batches (as an agent draining its spool does) and
// keeps `inFlight` of them unacked; meanwhile a dashboard-like loop times a cheap GET on the API.
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { DeviceTopic, createDeviceCredential, deviceTopic, type TelemetryAck } from '@edgepack/protocol';
import { latencies, makeBatch, windowRun } from '../support/telemetry-windows.js';

export interface LoadInput {
  mqttPort: number;
  httpUrl: string;
  token: string;
  devices: { id: string; secretKey: string }[];
  windowsPerDevice: number;
  batchWindows: number;
  inFlight: number;
  /** Epoch ms; windows end before it. */
  nowMs: number;
  getEveryMs: number;
}

export interface LoadResult {
  windows: number;
  seconds: number;
  getMs: number[];
  getErrors: number;
}

async function run(input: LoadInput): Promise<void> {
  const len = 60_000;
  const firstStart = Math.floor(input.nowMs / len) * len - input.windowsPerDevice * len;
  const plans = input.devices.map((d, k) => {
    const payloads: { text: string; windows: number; lastSeq: number }[] = [];
    for (let seq = 1; seq <= input.windowsPerDevice; seq += input.batchWindows) {
      const n = Math.min(input.batchWindows, input.windowsPerDevice - seq + 1);
      const ws = windowRun(d.id, seq, n, { startMs: firstStart + (seq - 1) * len, latenciesOf: (i) => latencies(5 + ((seq + i) % 7), k * 100_000 + seq + i, 0.5, 80) });
      payloads.push({ text: JSON.stringify(makeBatch(d.id, ws, [], input.nowMs)), windows: n, lastSeq: seq + n - 1 });
    }
    return { device: d, payloads };
  });
  const clients = await Promise.all(input.devices.map((d) => mqtt.connectAsync({
    host: '127.0.0.1', port: input.mqttPort, clientId: d.id, username: d.id, password: createDeviceCredential(d.id, d.secretKey, new Date()),
    clean: true, reconnectPeriod: 0, keepalive: 60,
  })));
  await Promise.all(clients.map((c, i) => c.subscribeAsync(deviceTopic(input.devices[i]!.id, DeviceTopic.telemetryAck), { qos: 1 })));
  process.send!({ kind: 'ready' });
  await new Promise<void>((resolve) => process.once('message', () => resolve()));

  let acked = 0;
  let stopGets = false;
  const getMs: number[] = [];
  let getErrors = 0;
  const gets = (async () => {
    while (!stopGets) {
      const t = performance.now();
      try {
        const r = await fetch(`${input.httpUrl}/v1/devices/${input.devices[0]!.id}`, { headers: { authorization: `Bearer ${input.token}` } });
        await r.arrayBuffer();
        if (r.status !== 200) getErrors++;
      } catch {
        getErrors++;
      }
      const ms = performance.now() - t;
      getMs.push(ms);
      if (ms < input.getEveryMs) await new Promise((r) => setTimeout(r, input.getEveryMs - ms));
    }
  })();

  const t0 = performance.now();
  await Promise.all(plans.map((p, i) => new Promise<void>((resolve) => {
    const client = clients[i]!;
    let next = 0;
    let open = 0;
    const pending = new Map<number, number>(); // lastSeq → windows
    const pump = () => {
      while (open < input.inFlight && next < p.payloads.length) {
        const m = p.payloads[next++]!;
        pending.set(m.lastSeq, m.windows);
        open++;
        client.publish(deviceTopic(p.device.id, DeviceTopic.telemetry), m.text, { qos: 1 });
      }
      if (open === 0 && next >= p.payloads.length) resolve();
    };
    client.on('message', (_topic, payload) => {
      const ack = JSON.parse(payload.toString()) as TelemetryAck;
      for (const [, last] of ack.acked) {
        const w = pending.get(last);
        if (w === undefined) continue;
        pending.delete(last);
        acked += w;
        open--;
      }
      pump();
    });
    pump();
  })));
  const seconds = (performance.now() - t0) / 1000;
  stopGets = true;
  await gets;
  await Promise.all(clients.map((c) => c.endAsync()));
  const result: LoadResult = { windows: acked, seconds, getMs, getErrors };
  process.send!({ kind: 'done', result });
}

// Forked by telemetry.bench.ts: the input is the first message.
if (process.send) {
  process.once('message', (input: LoadInput) => {
    void run(input).catch((err: unknown) => process.send!({ kind: 'error', message: String((err as Error)?.stack ?? err) }));
  });
}
