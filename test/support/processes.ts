import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { IClientOptions } from 'mqtt';
import { Agent as HttpDispatcher, fetch as undiciFetch } from 'undici';
import { AGENT_CLI, ORCHESTRATOR_CLI } from './paths.js';

export interface Proc {
  child: ChildProcess;
  stderr: () => string;
  /** Everything the process wrote to stdout so far. */
  stdout: () => string;
  /** Resolves with the first stdout JSON line whose `event` matches. */
  event: (name: string, timeoutMs?: number) => Promise<Record<string, unknown>>;
  exited: Promise<number | null>;
  kill: (signal?: NodeJS.Signals) => Promise<number | null>;
}

/**
 * A rollout plan in one wave without bake, for tests about delivery rather than staging. The
 * latency gate is off: ten benchmark runs of a tiny model on a shared machine give a p95 that
 * swings several-fold from one run to the next.
 */
export const ONE_WAVE = { waves: [{ name: 'all', size: { percent: 100 }, bakeSec: 0 }], gate: { maxP95Regression: 100 } } as const;

/** `nodeArgs` go before the script (e.g. --cpu-prof, which NODE_OPTIONS does not take). */
export function startProcess(file: string, args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []): Proc {
  const child = spawn(process.execPath, [...nodeArgs, file, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  let out = '';
  let all = '';
  let err = '';
  const waiters: { name: string; resolve: (v: Record<string, unknown>) => void }[] = [];
  const seen: Record<string, unknown>[] = [];
  child.stdout!.on('data', (d: Buffer) => {
    out += d.toString();
    all = (all + d.toString()).slice(-200_000);
    let nl;
    while ((nl = out.indexOf('\n')) >= 0) {
      const line = out.slice(0, nl);
      out = out.slice(nl + 1);
      try {
        const msg = JSON.parse(line) as Record<string, unknown>;
        seen.push(msg);
        for (const w of waiters.filter((w) => w.name === msg.event)) w.resolve(msg);
      } catch { /* not an event line */ }
    }
  });
  child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-200_000); });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    child,
    stderr: () => err,
    stdout: () => all,
    exited,
    event: (name, timeoutMs = 20_000) => {
      const hit = seen.find((m) => m.event === name);
      if (hit) return Promise.resolve(hit);
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no '${name}' event within ${timeoutMs} ms; stderr:\n${err.slice(-3000)}`)), timeoutMs);
        waiters.push({ name, resolve: (v) => { clearTimeout(t); resolve(v); } });
        void exited.then((code) => { clearTimeout(t); reject(new Error(`process exited (${code}) before '${name}'; stderr:\n${err.slice(-3000)}`)); });
      });
    },
    kill: async (signal = 'SIGTERM') => {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      return exited;
    },
  };
}

export async function tempDir(prefix: string): Promise<{ path: string; remove: () => Promise<void> }> {
  const path = await mkdtemp(join(tmpdir(), `edgepack-${prefix}-`));
  return { path, remove: () => rm(path, { recursive: true, force: true }) };
}

export interface Orchestrator {
  proc: Proc;
  /** https://127.0.0.1:<port>: every orchestrator in the tests serves TLS, with its self-made CA unless told otherwise. */
  url: string;
  httpPort: number;
  /** The MQTTS port. */
  mqttPort: number;
  /** With `plaintext: true` (--allow-plaintext): http://127.0.0.1:<port> and the plain MQTT port. */
  plainUrl?: string;
  plainMqttPort?: number;
  dataDir: string;
  adminToken: string;
  /** The CA the orchestrator's certificates chain to (PEM), and its `sha256:` fingerprint. */
  caCertificate: string;
  caFingerprint: string;
  /** fetch that trusts only the orchestrator's CA, for `url` (and any other URL). */
  fetch: (url: string, init?: Parameters<typeof undiciFetch>[1]) => ReturnType<typeof undiciFetch>;
  /** mqtt.js options for the MQTTS broker, trusting only the orchestrator's CA. */
  mqttOptions: () => IClientOptions;
  api: <T = any>(method: string, path: string, body?: unknown, headers?: Record<string, string>) => Promise<{ status: number; body: T; headers: Record<string, string> }>;
  stop: () => Promise<void>;
}

/** A fetch whose only trust anchor is `ca` (undici's own fetch: Node's global one takes no CA). */
export function fetchTrusting(ca: string): Orchestrator['fetch'] {
  const dispatcher = new HttpDispatcher({ connect: { ca, rejectUnauthorized: true } });
  return (url, init = {}) => undiciFetch(url, { ...init, dispatcher });
}

export interface OrchestratorOptions {
  nodeArgs?: string[];
  /** Also serve plain HTTP and MQTT on ephemeral ports (--allow-plaintext). */
  plaintext?: boolean;
  /** The CA file to trust when the orchestrator is given its own certificate (--tls-cert); default DIR/tls/ca-cert.pem. */
  caFile?: string;
}

export async function startOrchestrator(dataDir: string, extraArgs: string[] = [], opts: OrchestratorOptions = {}): Promise<Orchestrator> {
  const plain = opts.plaintext ? ['--allow-plaintext', '--plain-http-port', '0', '--plain-mqtt-port', '0'] : [];
  const proc = startProcess(ORCHESTRATOR_CLI(), ['serve', '--data-dir', dataDir, '--http-host', '127.0.0.1', '--http-port', '0', '--mqtt-host', '127.0.0.1', '--mqtt-port', '0', '--heartbeat-sec', '2', '--log-level', 'debug', ...plain, ...extraArgs], {}, opts.nodeArgs);
  const ev = await proc.event('listening');
  const adminToken = (await readFile(join(dataDir, 'admin-token'), 'utf8')).trim();
  const caCertificate = await readFile(opts.caFile ?? join(dataDir, 'tls', 'ca-cert.pem'), 'utf8');
  const url = `https://127.0.0.1:${ev.httpPort}`;
  const caFetch = fetchTrusting(caCertificate);
  const mqttPort = ev.mqttPort as number;
  return {
    proc, url, httpPort: ev.httpPort as number, mqttPort, dataDir, adminToken, caCertificate, caFingerprint: ev.caFingerprint as string, fetch: caFetch,
    ...(ev.plainHttpPort !== undefined ? { plainUrl: `http://127.0.0.1:${ev.plainHttpPort}`, plainMqttPort: ev.plainMqttPort as number } : {}),
    mqttOptions: () => ({ protocol: 'mqtts', host: '127.0.0.1', port: mqttPort, ca: [caCertificate], rejectUnauthorized: true }),
    api: async (method, path, body, headers = {}) => {
      const isBytes = body instanceof Uint8Array;
      const res = await caFetch(url + path, {
        method,
        headers: {
          authorization: `Bearer ${adminToken}`,
          ...(body === undefined ? {} : { 'content-type': isBytes ? 'application/octet-stream' : 'application/json' }),
          ...headers,
        },
        ...(body === undefined ? {} : { body: isBytes ? body : JSON.stringify(body) }),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try { parsed = JSON.parse(text); } catch { /* keep text */ }
      return { status: res.status, body: parsed as any, headers: Object.fromEntries(res.headers) };
    },
    stop: async () => { await proc.kill('SIGTERM'); },
  };
}

/**
 * An agent process. It enrolls (unless `enroll: false`) with a token from the API, which pins
 * the orchestrator's CA (enr_…#sha256:…), so every agent in the tests enrolls and connects over
 * TLS. `plaintext: true` enrolls over the plain listener instead, with the agent's --allow-plaintext.
 */
export async function startAgent(o: Orchestrator, dataDir: string, opts: { profile?: string; name?: string; env?: Record<string, string>; enroll?: boolean; plaintext?: boolean } = {}): Promise<Proc> {
  if (opts.plaintext && !o.plainUrl) throw new Error('startAgent({ plaintext }) needs an orchestrator started with { plaintext: true }');
  const args = ['--server', opts.plaintext ? o.plainUrl! : o.url, '--data-dir', dataDir, '--bench-runs', '10', '--log-level', 'debug', ...(opts.plaintext ? ['--allow-plaintext'] : [])];
  if (opts.enroll !== false) {
    const t = await o.api('POST', '/v1/enrollment-tokens', {});
    if (t.status !== 201) throw new Error(`enrollment token: ${t.status} ${JSON.stringify(t.body)}`);
    args.push('--enroll', t.body.token);
  }
  if (opts.profile) args.push('--profile', opts.profile);
  if (opts.name) args.push('--name', opts.name);
  const proc = startProcess(AGENT_CLI(), args, opts.env);
  await proc.event('started');
  return proc;
}

/** Polls `fn` until it returns a truthy value or the time runs out; the last value is in the error. */
export async function until<T>(what: string, fn: () => Promise<T | undefined | null | false>, timeoutMs = 30_000, everyMs = 200): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
      last = v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}
