#!/usr/bin/env node
import { mkdir, readFile } from 'node:fs/promises';
import { Agent } from './agent.js';
import { AgentConfigError, agentHelp, parseAgentConfig } from './config.js';
import { enroll } from './enroll.js';
import { detectFacts } from './facts.js';
import { loadIdentity, saveIdentity } from './identity.js';
import { createLogger } from './logger.js';
import { startDeviceServing, type DeviceServing } from './serving/device-serving.js';

async function agentVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

async function onnxruntimeInfo(): Promise<{ version: string | null; providers: string[] }> {
  try {
    const ort = (await import('onnxruntime-node')).default;
    return { version: ort.env.versions.node ?? null, providers: ort.listSupportedBackends().map((b) => b.name) };
  } catch {
    return { version: null, providers: [] };
  }
}

async function main(argv: string[]): Promise<number> {
  let config;
  try {
    config = parseAgentConfig(argv, process.env);
  } catch (err) {
    if (!(err instanceof AgentConfigError)) throw err;
    console.error(`edgepack-agent: ${err.message}\n\n${agentHelp()}`);
    return 2;
  }
  if (config === 'help') { console.log(agentHelp()); return 0; }
  const version = await agentVersion();
  if (config === 'version') { console.log(version); return 0; }
  const { dataDir } = config;
  const log = createLogger(config.logLevel, 'edgepack-agent');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });

  let identity = await loadIdentity(dataDir);
  if (identity) {
    if (config.enrollToken) log.info({ deviceId: identity.deviceId }, 'already enrolled; ignoring --enroll');
  } else {
    if (!config.server || !config.enrollToken) {
      console.error(`edgepack-agent: not enrolled yet in ${dataDir}; pass --server and --enroll (or EDGEPACK_AGENT_SERVER and EDGEPACK_AGENT_ENROLL)\n\n${agentHelp()}`);
      return 2;
    }
    const ort = await onnxruntimeInfo();
    const facts = detectFacts({ onnxruntimeVersion: ort.version, executionProviders: ort.providers, agentVersion: version });
    identity = await enroll({
      server: config.server, token: config.enrollToken, facts, ...(config.name ? { name: config.name } : {}), ...(config.profile ? { profile: config.profile } : {}),
      allowPlaintext: config.allowPlaintext === true, insecureEnroll: config.insecureEnroll === true, warn: (fields, message) => log.warn(fields, message),
    });
    await saveIdentity(dataDir, identity);
    log.info({ deviceId: identity.deviceId, profile: identity.profile, mqtt: identity.mqtt.protocol, caFingerprint: identity.tls?.caFingerprint }, 'enrolled');
  }
  const benchRuns = config.benchRuns;
  const serve = config.serve !== undefined || config.serveSocket !== undefined;
  let serving: DeviceServing | undefined;
  const agent = new Agent({
    dataDir, identity, log, agentVersion: version,
    ...(benchRuns ? { benchmarkRuns: benchRuns } : {}),
    minDownloadBytesPerSec: config.minDownloadRate,
    // Test-only: crash points for the kill -9 tests (see Agent.fault).
    ...(process.env.EDGEPACK_AGENT_FAULTS ? { faults: process.env.EDGEPACK_AGENT_FAULTS.split(',') } : {}),
    ...(serve ? { onActiveChanged: (active) => serving?.activate(active) } : {}),
  });
  if (serve) {
    serving = await startDeviceServing({
      dataDir, log, agentVersion: version, link: agent.link,
      listen: { ...(config.serve ? { tcp: config.serve } : {}), ...(config.serveSocket ? { socketPath: config.serveSocket } : {}) },
      concurrency: config.serveConcurrency, maxQueued: config.serveQueue, defaultTimeoutMs: config.serveTimeoutMs, memoryFactor: config.serveMemoryFactor,
      // No spinning between runs: a server's cores are needed for HTTP and MQTT in between.
      runner: { intraOpThreads: config.serveThreads, allowSpinning: false },
      telemetry: { windowSec: config.telemetryWindowSec, spoolBytes: config.telemetrySpoolBytes, reconnectJitterMs: config.telemetryJitterMs, maxWindowsPerSec: config.telemetryRate },
    });
    console.log(JSON.stringify({ event: 'serving', ...(serving.url ? { url: serving.url } : {}), ...(serving.socketPath ? { socket: serving.socketPath } : {}) }));
  }
  await agent.start();
  // Machine-readable start line for scripts and tests.
  console.log(JSON.stringify({ event: 'started', deviceId: identity.deviceId, profile: identity.profile }));
  await new Promise<void>((done) => {
    // Serving first: its last requests finish and are counted before telemetry is flushed.
    const stop = () => {
      const served = serving ? serving.stop().catch((err: Error) => log.error({ err: err.message }, 'stopping the inference service failed')) : Promise.resolve();
      served.then(() => agent.stop()).then(done, done);
    };
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: Error & { code?: string }) => {
    console.error(`edgepack-agent: ${err.code ? `[${err.code}] ` : ''}${err.message}`);
    process.exitCode = 1;
  },
);
