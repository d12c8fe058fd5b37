// Delivery path figures, side by side in one run: the same bundle file fetched as MQTT chunks
// (what agents do) and over HTTP (the Range-capable fallback), through a real orchestrator, both
// over TLS as agents use them.
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import mqtt from 'mqtt';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { CHUNK_SIZE, PROTOCOL_VERSION, createChunkDecoder, createDeviceCredential, deviceTopic, generateKeyPair } from '@edgepack/protocol';
import { sharedModelsDir } from '../support/paths.js';
import { ONE_WAVE, startOrchestrator, tempDir } from '../support/processes.js';

export async function run(): Promise<void> {
  const dir = await tempDir('bench-delivery');
  const orch = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn']);
  try {
    const shared = sharedModelsDir();
    const bytes = shared ? new Uint8Array(await readFile(join(shared, 'mobilenet_v2.onnx'))) : buildTinyMlpModel({ hidden: 2048 });
    const up = await orch.api('POST', '/v1/models?name=bench&version=1', bytes);
    const build = await orch.api('POST', '/v1/builds', { modelId: up.body.model.id, profiles: ['x86-64-gateway'] });
    let b = build.body.build;
    while (b.status === 'queued' || b.status === 'running') { await new Promise((r) => setTimeout(r, 100)); b = (await orch.api('GET', `/v1/builds/${b.id}`)).body.build; }
    const bundleId = b.artifacts[0].bundleId;

    // A device of our own, so the bench drives the chunk protocol directly.
    const keys = generateKeyPair();
    const token = (await orch.api('POST', '/v1/enrollment-tokens', {})).body.token;
    const facts = { arch: 'x86_64', platform: 'bench', cpuModel: 'bench', cores: 1, ramBytes: 4e9, cpuFlags: [], accelerators: [], runtimes: {}, agentVersion: 'bench' };
    const dev = (await orch.api('POST', '/v1/enroll', { v: PROTOCOL_VERSION, token, publicKey: keys.publicKey, facts, profile: 'x86-64-gateway' })).body;
    await orch.api('POST', '/v1/rollouts', { buildId: b.id, target: { deviceIds: [dev.deviceId] }, ...ONE_WAVE });
    const c = await mqtt.connectAsync({ ...orch.mqttOptions(), clientId: dev.deviceId, username: dev.deviceId, password: createDeviceCredential(dev.deviceId, keys.secretKey, new Date()) });
    await c.subscribeAsync(deviceTopic(dev.deviceId, 'chunk'), { qos: 1 });
    const sha = up.body.model.sha256 as string;
    const total = Math.ceil(bytes.length / CHUNK_SIZE);
    const decode = createChunkDecoder();

    const viaMqtt = async (window: number) => {
      const parts: Buffer[] = new Array(total);
      let got = 0;
      const t0 = performance.now();
      await new Promise<void>((resolve) => {
        let next = 0;
        const ask = () => { const n = Math.min(window, total - next); c.publish(deviceTopic(dev.deviceId, 'chunk-request'), JSON.stringify({ v: 1, bundleId, sha256: sha, index: next, count: n }), { qos: 1 }); next += n; };
        c.removeAllListeners('message');
        c.on('message', (_t, p) => {
          const f = decode(p);
          if (!f.ok) throw new Error(f.reason);
          parts[f.header.index] = f.bytes;
          if (++got === total) resolve();
          else if (got === next) ask();
        });
        ask();
      });
      const ms = performance.now() - t0;
      if (createHash('sha256').update(Buffer.concat(parts)).digest('hex') !== sha) throw new Error('mqtt transfer corrupted');
      return ms;
    };
    const viaHttp = async () => {
      const t0 = performance.now();
      const res = await orch.fetch(`${orch.url}/v1/bundles/${bundleId}/files/model.onnx`, { headers: { authorization: `Bearer ${orch.adminToken}` } });
      const buf = Buffer.from(await res.arrayBuffer());
      const ms = performance.now() - t0;
      if (createHash('sha256').update(buf).digest('hex') !== sha) throw new Error('http transfer corrupted');
      return ms;
    };
    const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
    const rounds = 5;
    const results: Record<string, number[]> = { http: [], 'mqtt w=1': [], 'mqtt w=8': [], 'mqtt w=32': [] };
    for (let i = 0; i < rounds; i++) {
      // Interleaved, so drift on a noisy machine hits every variant alike.
      results.http!.push(await viaHttp());
      results['mqtt w=1']!.push(await viaMqtt(1));
      results['mqtt w=8']!.push(await viaMqtt(8));
      results['mqtt w=32']!.push(await viaMqtt(32));
    }
    await c.endAsync();
    const base = median(results.http!);
    console.log(`file ${(bytes.length / 2 ** 20).toFixed(1)} MiB, ${total} chunks of ${CHUNK_SIZE / 1024} KiB, median of ${rounds} interleaved rounds`);
    console.log('path        median ms   MiB/s   time vs HTTP');
    for (const [k, v] of Object.entries(results)) {
      const m = median(v);
      console.log(`${k.padEnd(10)} ${m.toFixed(1).padStart(10)} ${(bytes.length / 2 ** 20 / (m / 1000)).toFixed(1).padStart(7)} ${(m / base).toFixed(2).padStart(12)}x`);
    }
  } finally {
    await orch.stop();
    await dir.remove();
  }
}
