import { readdir, readFile, statfs } from 'node:fs/promises';
import os from 'node:os';
import { join } from 'node:path';
import type { TelemetrySystem } from '@edgepack/protocol';

export interface CpuTimes {
  busy: number;
  total: number;
}

/** Pure: summed CPU times of all cores (what os.cpus() reports). */
export function cpuTimes(cpus: readonly { times: { user: number; nice: number; sys: number; idle: number; irq: number } }[]): CpuTimes {
  let busy = 0;
  let total = 0;
  for (const c of cpus) {
    const t = c.times;
    busy += t.user + t.nice + t.sys + t.irq;
    total += t.user + t.nice + t.sys + t.irq + t.idle;
  }
  return { busy, total };
}

/** Pure: whole-machine CPU use between two samples, 0–100. */
export function cpuPercent(prev: CpuTimes, next: CpuTimes): number {
  const total = next.total - prev.total;
  if (!(total > 0)) return 0;
  return Math.round(Math.min(100, Math.max(0, ((next.busy - prev.busy) / total) * 100)) * 100) / 100;
}

/** Pure: MemAvailable from /proc/meminfo text, in bytes; null when absent (old kernels, other systems). */
export function parseMemAvailable(meminfo: string): number | null {
  const m = /^MemAvailable:\s+(\d+)\s*kB/m.exec(meminfo);
  return m ? Number(m[1]) * 1024 : null;
}

/** Pure: a thermal zone's `temp` file (millidegrees Celsius) in °C, or null when it is not a plausible reading. */
export function parseThermal(text: string): number | null {
  const n = Number(text.trim());
  if (!Number.isFinite(n) || text.trim() === '') return null;
  const c = n / 1000;
  return c > -100 && c < 250 ? Math.round(c * 10) / 10 : null;
}

export interface SystemSamplerOptions {
  /** The file system whose free space is reported: the agent's data directory. */
  dataDir: string;
  /** Defaults to the real ones; tests point them at files of their own. */
  meminfoPath?: string;
  thermalDir?: string;
}

/**
 * The device figures a telemetry window carries: CPU over the window (since the previous
 * sample), the agent's RSS, available memory, free disk, and the hottest thermal zone where the
 * board has any (/sys/class/thermal); a figure the system cannot give is left out, never made up.
 */
export class SystemSampler {
  private last: CpuTimes = cpuTimes(os.cpus());
  private readonly meminfo: string;
  private readonly thermal: string;

  constructor(private readonly o: SystemSamplerOptions) {
    this.meminfo = o.meminfoPath ?? '/proc/meminfo';
    this.thermal = o.thermalDir ?? '/sys/class/thermal';
  }

  async availableMemoryBytes(): Promise<number> {
    const text = await readFile(this.meminfo, 'utf8').catch(() => '');
    return parseMemAvailable(text) ?? os.freemem();
  }

  async diskFreeBytes(): Promise<number> {
    try {
      const s = await statfs(this.o.dataDir);
      return Math.min(Number.MAX_SAFE_INTEGER, s.bavail * s.bsize);
    } catch {
      return 0;
    }
  }

  async temperatureC(): Promise<number | undefined> {
    let zones: string[];
    try {
      zones = (await readdir(this.thermal)).filter((z) => z.startsWith('thermal_zone'));
    } catch {
      return undefined;
    }
    let hottest: number | undefined;
    for (const z of zones) {
      const t = parseThermal(await readFile(join(this.thermal, z, 'temp'), 'utf8').catch(() => ''));
      if (t !== null && (hottest === undefined || t > hottest)) hottest = t;
    }
    return hottest;
  }

  async sample(): Promise<TelemetrySystem> {
    const now = cpuTimes(os.cpus());
    const cpu = cpuPercent(this.last, now);
    this.last = now;
    const [memAvailableBytes, diskFreeBytes, temperatureC] = await Promise.all([this.availableMemoryBytes(), this.diskFreeBytes(), this.temperatureC()]);
    return {
      cpuPercent: cpu,
      rssBytes: process.memoryUsage.rss(),
      memAvailableBytes,
      diskFreeBytes,
      ...(temperatureC !== undefined ? { temperatureC } : {}),
    };
  }
}
