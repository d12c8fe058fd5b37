// What TLS costs, side by side in one run against one orchestrator serving both TLS and plaintext
// (--allow-plaintext):
//   1. N simulated devices enroll (token + enroll each) and connect: over HTTPS + MQTTS with
//      pinned tokens, then N others over plain HTTP + MQTT; then each fleet reconnects at once
//      (a restarted simulator: every handshake a full one).
//   2. TLS handshakes with the broker one after another: full, resumed (the session ticket the
//      broker gave the previous connection), and plain TCP connects as the floor.
// The orchestrator's CPU is read from /proc for each phase.
//
//   EDGEPACK_BENCH_TLS_DEVICES=N   devices per fleet (default 500)
import { readFile } from 'node:fs/promises';
import { connect as netConnect } from 'node:net';
import { join } from 'node:path';
import { performance } from 'node:perf_hooks';
import { connect as tlsConnect } from 'node:tls';
import { startOrchestrator, tempDir, type Orchestrator } from '../support/processes.js';
import { startSim, type SimProc } from '../support/sim.js';

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
async function cpuSec(pid: number): Promise<number> {
  const fields = (await readFile(`/proc/${pid}/stat`, 'utf8')).split(') ')[1]!.split(' ');
  return (Number(fields[11]) + Number(fields[12])) / 100; // utime, stime in clock ticks (100/s)
}

async function stopSim(s: SimProc): Promise<void> {
  const code = await s.kill('SIGTERM');
  if (code !== 0) throw new Error(`simulator exited ${code}: ${s.stderr().slice(-2000)}`);
}

interface Phase { ready: Record<string, any>; orchCpu: number; simCpu: number }

/** One simulator run until ready: its figures, and the CPU the orchestrator and the simulator spent on it. */
async function phase(o: Orchestrator, dir: string, n: number, args: string[]): Promise<Phase> {
  const pid = o.proc.child.pid!;
  const c0 = await cpuSec(pid);
  const sim = await startSim(o, dir, n, args, 600_000);
  const orchCpu = (await cpuSec(pid)) - c0;
  const simCpu = await cpuSec(sim.child.pid!); // a fresh process: all of it is this phase
  await stopSim(sim);
  return { ready: sim.ready, orchCpu, simCpu };
}

async function fleet(o: Orchestrator, dir: string, n: number, args: string[]): Promise<{ enroll: Phase; storm: Phase; paced: Phase }> {
  const enroll = await phase(o, dir, n, ['--profile', 'x86-64-gateway', ...args]);
  const storm = await phase(o, dir, n, ['--connect-concurrency', String(n), ...args]);
  // The simulator's default: at most 64 connects awaiting CONNACK at once.
  const paced = await phase(o, dir, n, args);
  return { enroll, storm, paced };
}

/** `count` connections one after another; `resume` offers the previous connection's TLS session. */
async function handshakes(o: Orchestrator, count: number, kind: 'full' | 'resumed' | 'tcp'): Promise<{ msEach: number; cpuMsEach: number; resumed: number }> {
  const pid = o.proc.child.pid!;
  const c0 = await cpuSec(pid);
  const t0 = performance.now();
  let session: Buffer | undefined;
  let resumed = 0;
  for (let i = 0; i < count; i++) {
    await new Promise<void>((resolve, reject) => {
      if (kind === 'tcp') {
        const s = netConnect(o.plainMqttPort!, '127.0.0.1', () => { s.destroy(); resolve(); });
        s.once('error', reject);
        return;
      }
      const s = tlsConnect({ host: '127.0.0.1', port: o.mqttPort, ca: o.caCertificate, ...(kind === 'resumed' && session ? { session } : {}) });
      const done = () => { s.destroy(); resolve(); };
      // A full handshake is followed by the broker's session ticket; a resumed one gets none
      // (the ticket stays good for the broker's sessionTimeout).
      s.once('session', (sess: Buffer) => { session = sess; done(); });
      s.once('secureConnect', () => {
        if (s.isSessionReused()) { resumed++; done(); } else setTimeout(done, 1000).unref();
      });
      s.once('error', reject);
    });
  }
  const ms = performance.now() - t0;
  const cpu = ((await cpuSec(pid)) - c0) * 1000;
  return { msEach: ms / count, cpuMsEach: cpu / count, resumed };
}

export async function run(): Promise<void> {
  const n = Number(process.env.EDGEPACK_BENCH_TLS_DEVICES ?? 500);
  if (!Number.isInteger(n) || n < 1) throw new Error(`EDGEPACK_BENCH_TLS_DEVICES must be a positive integer, got ${process.env.EDGEPACK_BENCH_TLS_DEVICES}`);
  const dir = await tempDir('bench-tls');
  const o = await startOrchestrator(join(dir.path, 'o'), ['--log-level', 'warn', '--heartbeat-sec', '30', '--enroll-per-min', '1000000', '--api-per-min', '1000000'], { plaintext: true });
  try {
    const tls = await fleet(o, join(dir.path, 'sim-tls'), n, []);
    const plain = await fleet(o, join(dir.path, 'sim-plain'), n, ['--server', o.plainUrl!, '--allow-plaintext']);
    const count = 500;
    const full = await handshakes(o, count, 'full');
    const resumed = await handshakes(o, count, 'resumed');
    const tcp = await handshakes(o, count, 'tcp');

    const s = (ms: number) => `${(ms / 1000).toFixed(2)} s`.padStart(9);
    const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}x`.padStart(8);
    console.log(`${n} simulated devices per fleet on 2 cores (server ECDSA P-256, TLS 1.3); orchestrator CPU from /proc`);
    console.log('                                   TLS (HTTPS+MQTTS)   plaintext    TLS/plain');
    const rows: [string, Phase, Phase, 'enrollMs' | 'connectMs'][] = [
      [`enroll ${n} (token + enroll each)`, tls.enroll, plain.enroll, 'enrollMs'],
      [`reconnect storm, all ${n} at once`, tls.storm, plain.storm, 'connectMs'],
      ['reconnect, 64 at a time (default)', tls.paced, plain.paced, 'connectMs'],
    ];
    for (const [name, t, p, key] of rows) {
      console.log(`${name.padEnd(35)}${s(t.ready[key])}   ${s(p.ready[key])}   ${ratio(t.ready[key], p.ready[key])}`);
      console.log(`  orchestrator CPU                 ${s(t.orchCpu * 1000)}   ${s(p.orchCpu * 1000)}   ${ratio(t.orchCpu, p.orchCpu)}`);
      console.log(`  simulator CPU                    ${s(t.simCpu * 1000)}   ${s(p.simCpu * 1000)}   ${ratio(t.simCpu, p.simCpu)}`);
    }
    console.log(`simulator RSS after the TLS storm ${(tls.storm.ready.rssBytes / 2 ** 20).toFixed(0)} MB, plaintext ${(plain.storm.ready.rssBytes / 2 ** 20).toFixed(0)} MB`);
    console.log(`${count} connections one after another   wall each   orchestrator CPU each`);
    console.log(`  TLS full handshake             ${full.msEach.toFixed(2).padStart(7)} ms   ${full.cpuMsEach.toFixed(3).padStart(7)} ms`);
    console.log(`  TLS resumed (ticket, ${resumed.resumed}/${count})   ${resumed.msEach.toFixed(2).padStart(7)} ms   ${resumed.cpuMsEach.toFixed(3).padStart(7)} ms   (${(full.cpuMsEach / resumed.cpuMsEach).toFixed(1)}x less CPU than full)`);
    console.log(`  plain TCP connect              ${tcp.msEach.toFixed(2).padStart(7)} ms   ${tcp.cpuMsEach.toFixed(3).padStart(7)} ms`);
  } finally {
    await o.stop();
    await dir.remove();
  }
}
