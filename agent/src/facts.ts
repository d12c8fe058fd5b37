import { readFileSync } from 'node:fs';
import os from 'node:os';
import type { DeviceFacts } from '@edgepack/protocol';

const ARCH: Record<string, string> = { x64: 'x86_64', arm64: 'arm64', arm: 'armv7', riscv64: 'riscv64' };

/** Pure: CPU flags from /proc/cpuinfo text (x86 "flags", arm "Features"). */
export function parseCpuFlags(cpuinfo: string): string[] {
  const line = cpuinfo.split('\n').find((l) => /^(flags|Features)\s*:/.test(l));
  return line ? [...new Set(line.split(':')[1]!.trim().split(/\s+/).filter(Boolean))].sort() : [];
}

/** Accelerators the device can prove it has: device nodes for NVIDIA GPUs and Edge TPUs. */
function detectAccelerators(exists: (p: string) => boolean): string[] {
  const found: string[] = [];
  if (exists('/dev/nvidia0') || exists('/dev/nvhost-ctrl-gpu')) found.push('cuda');
  if (exists('/dev/apex_0')) found.push('edgetpu');
  return found;
}

export function detectFacts(opts: { onnxruntimeVersion: string | null; executionProviders: string[]; agentVersion: string }): DeviceFacts {
  let cpuinfo = '';
  try { cpuinfo = readFileSync('/proc/cpuinfo', 'utf8'); } catch { /* not Linux: no flags */ }
  const exists = (p: string) => { try { readFileSync(p); return true; } catch (e) { return (e as NodeJS.ErrnoException).code === 'EISDIR' || (e as NodeJS.ErrnoException).code === 'EACCES'; } };
  const cpus = os.cpus();
  return {
    arch: ARCH[os.arch()] ?? os.arch(),
    platform: `${os.platform()} ${os.release()}`,
    cpuModel: cpus[0]?.model ?? 'unknown',
    cores: cpus.length,
    ramBytes: os.totalmem(),
    cpuFlags: parseCpuFlags(cpuinfo),
    accelerators: detectAccelerators(exists),
    runtimes: opts.onnxruntimeVersion ? { onnxruntime: { version: opts.onnxruntimeVersion, executionProviders: opts.executionProviders } } : {},
    agentVersion: opts.agentVersion,
  };
}
