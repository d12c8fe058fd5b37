#!/usr/bin/env node
import { mkdir, readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { resolve } from 'node:path';
import { Agent } from './agent.js';
import { enroll } from './enroll.js';
import { detectFacts } from './facts.js';
import { loadIdentity, saveIdentity } from './identity.js';
import { createLogger } from './logger.js';

const HELP = `usage: edgepack-agent --server URL --enroll TOKEN --data-dir DIR [options]

  --server URL          orchestrator HTTP address, e.g. http://127.0.0.1:8080
  --enroll TOKEN        single-use enrollment token (needed only the first time)
  --data-dir DIR        where the identity, state and installed bundles live (default ./agent-data)
  --profile ID          choose the hardware profile instead of matching it from detected facts
  --name NAME           display name (default: the device id)
  --bench-runs N        override the number of timed benchmark runs
  --log-level LEVEL     error|warn|info|debug (default info)

Once enrolled, the agent restarts from DIR without --enroll.`;

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
  let values;
  try {
    ({ values } = parseArgs({
      args: argv,
      options: {
        server: { type: 'string' }, enroll: { type: 'string' }, 'data-dir': { type: 'string' }, profile: { type: 'string' },
        name: { type: 'string' }, 'bench-runs': { type: 'string' }, 'log-level': { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
      strict: true,
    }));
  } catch (err) {
    console.error(`edgepack-agent: ${(err as Error).message}\n\n${HELP}`);
    return 2;
  }
  if (values.help) { console.log(HELP); return 0; }
  const dataDir = resolve(values['data-dir'] ?? './agent-data');
  const log = createLogger(values['log-level'] ?? 'info', 'edgepack-agent');
  await mkdir(dataDir, { recursive: true, mode: 0o700 });
  const version = await agentVersion();

  let identity = await loadIdentity(dataDir);
  if (identity) {
    if (values.enroll) log.info({ deviceId: identity.deviceId }, 'already enrolled; ignoring --enroll');
  } else {
    if (!values.server || !values.enroll) {
      console.error(`edgepack-agent: not enrolled yet in ${dataDir}; pass --server and --enroll\n\n${HELP}`);
      return 2;
    }
    const ort = await onnxruntimeInfo();
    const facts = detectFacts({ onnxruntimeVersion: ort.version, executionProviders: ort.providers, agentVersion: version });
    identity = await enroll({ server: values.server, token: values.enroll, facts, ...(values.name ? { name: values.name } : {}), ...(values.profile ? { profile: values.profile } : {}) });
    await saveIdentity(dataDir, identity);
    log.info({ deviceId: identity.deviceId, profile: identity.profile }, 'enrolled');
  }
  const benchRuns = values['bench-runs'] ? Number(values['bench-runs']) : undefined;
  if (benchRuns !== undefined && (!Number.isInteger(benchRuns) || benchRuns < 1)) {
    console.error('edgepack-agent: --bench-runs must be a positive integer');
    return 2;
  }
  const agent = new Agent({
    dataDir, identity, log, agentVersion: version,
    ...(benchRuns ? { benchmarkRuns: benchRuns } : {}),
    // Test-only: crash points for the kill -9 tests (see Agent.fault).
    ...(process.env.EDGEPACK_AGENT_FAULTS ? { faults: process.env.EDGEPACK_AGENT_FAULTS.split(',') } : {}),
  });
  await agent.start();
  // Machine-readable start line for scripts and tests.
  console.log(JSON.stringify({ event: 'started', deviceId: identity.deviceId, profile: identity.profile }));
  await new Promise<void>((done) => {
    const stop = () => { agent.stop().then(done, done); };
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
