import { join } from 'node:path';
import { repoRoot } from './paths.js';
import { startProcess, type Orchestrator, type Proc } from './processes.js';

/** The committed bin, so tests also prove `npx edgepack-sim` hands over to the build. */
export const SIM_BIN = () => join(repoRoot(), 'agent/bin/edgepack-sim.js');

export interface SimProc extends Proc {
  ready: Record<string, any>;
}

/** Starts `edgepack-sim` against `o` on `dataDir` and waits for its ready line. */
export async function startSim(o: Orchestrator, dataDir: string, devices: number, args: string[] = [], timeoutMs = 30_000): Promise<SimProc> {
  const proc = startProcess(SIM_BIN(), [
    '--server', o.url, '--admin-token-file', join(o.dataDir, 'admin-token'), '--devices', String(devices), '--data-dir', dataDir, '--log-level', 'warn', ...args,
  ]);
  try {
    const ready = await proc.event('ready', timeoutMs);
    return Object.assign(proc, { ready });
  } catch (err) {
    await proc.kill('SIGKILL');
    throw err;
  }
}
