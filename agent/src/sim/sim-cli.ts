import { readFile } from 'node:fs/promises';
import { errorMessage } from '@edgepack/protocol';
import { createLogger } from '../logger.js';
import { startFleet, type FleetStats } from './fleet.js';
import { SimConfigError, parseSimConfig, simHelp } from './sim-config.js';

async function packageVersion(): Promise<string> {
  const pkg = JSON.parse(await readFile(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string };
  return pkg.version;
}

const MiB = 2 ** 20;

/** The one-line summary printed every second. */
export function summaryLine(s: FleetStats): string {
  const order = ['idle', 'trialing', 'downloading', 'verifying', 'installing', 'benchmarking', 'active', 'failed', 'rolled_back'];
  const states = order.filter((k) => s.states[k]).map((k) => `${k}=${s.states[k]}`).join(' ');
  return `sim ${Math.round(s.uptimeMs / 1000)}s devices=${s.devices} connected=${s.connected}/${s.online} offline=${s.offline}`
    + ` ${states || 'idle=0'} rx=${(s.bytesReceived / MiB).toFixed(1)}MiB chunks=${s.chunks} reports=${s.reports}`;
}

async function main(argv: string[]): Promise<number> {
  let config;
  try {
    config = parseSimConfig(argv, process.env);
  } catch (err) {
    if (!(err instanceof SimConfigError)) throw err;
    console.error(`edgepack-sim: ${err.message}\n\n${simHelp()}`);
    return 2;
  }
  if (config === 'help') { console.log(simHelp()); return 0; }
  const version = await packageVersion();
  if (config === 'version') { console.log(version); return 0; }
  const log = createLogger(config.logLevel, 'edgepack-sim');
  let adminToken: string | undefined;
  if (config.adminTokenFile) {
    try {
      adminToken = (await readFile(config.adminTokenFile, 'utf8')).trim();
    } catch (err) {
      console.error(`edgepack-sim: cannot read --admin-token-file ${config.adminTokenFile}: ${errorMessage(err)}`);
      return 2;
    }
  }

  let caCertificate: string | undefined;
  if (config.caFile) {
    try {
      caCertificate = await readFile(config.caFile, 'utf8');
    } catch (err) {
      console.error(`edgepack-sim: cannot read --ca-file ${config.caFile}: ${errorMessage(err)}`);
      return 2;
    }
  }

  // Stop asked for before the fleet is up still ends cleanly, once it is.
  let stopRequested = false;
  let wake: () => void = () => undefined;
  const stopped = new Promise<void>((resolve) => { wake = resolve; });
  const onSignal = () => { stopRequested = true; wake(); };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);

  const fleet = await startFleet({
    server: config.server, devices: config.devices, dataDir: config.dataDir, ...(adminToken ? { adminToken } : {}),
    ...(config.profile ? { profile: config.profile } : {}), tags: config.tags, failRate: config.failRate, failCode: config.failCode,
    p95Factor: config.p95Factor, offlineRate: config.offlineRate, speed: config.speed, seed: config.seed,
    enrollConcurrency: config.enrollConcurrency, connectConcurrency: config.connectConcurrency,
    ...(config.mqttUrl ? { mqttUrl: config.mqttUrl } : {}), stallMs: config.stallMs, agentVersion: `edgepack-sim/${version}`, log,
    ...(caCertificate ? { caCertificate } : {}), allowPlaintext: config.allowPlaintext === true, insecureEnroll: config.insecureEnroll === true,
    tlsResume: config.noTlsResume !== true,
  });
  const summary = setInterval(() => console.log(summaryLine(fleet.stats())), 1000);
  void fleet.ready.then((r) => {
    // Machine-readable, for scripts and tests; everything else on stdout is the summary.
    console.log(JSON.stringify({ ...r, rssBytes: process.memoryUsage().rss }));
  });
  if (!stopRequested) await stopped;
  clearInterval(summary);
  await fleet.stop();
  console.log(summaryLine(fleet.stats()));
  console.log(JSON.stringify({ event: 'stopped', ...fleet.stats() }));
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: Error & { code?: string }) => {
    console.error(`edgepack-sim: ${err.code ? `[${err.code}] ` : ''}${err.message}`);
    process.exitCode = 1;
  },
);
