import { chmod, lstat, rm } from 'node:fs/promises';
import { createConnection } from 'node:net';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { performance } from 'node:perf_hooks';
import { ERROR_CATALOGUE, EdgepackError, catalogueCode, errorMessage } from '@edgepack/protocol';
import type { Logger } from '../logger.js';
import { errorBody, type InferenceService } from './inference-service.js';
import type { ServingMetrics } from './serving-metrics.js';

export interface ServingHttpOptions {
  service: InferenceService;
  metrics: ServingMetrics;
  log: Logger;
  agentVersion: string;
  /** Largest request body accepted (413 above). */
  maxBodyBytes: number;
}

const MODEL_PATH = /^\/v2\/models\/([^/]+)(?:\/versions\/([^/]+))?(\/ready|\/infer)?$/;

function send(res: ServerResponse, status: number, body: Buffer | string, headers: Record<string, string> = { 'content-type': 'application/json' }): void {
  const b = typeof body === 'string' ? Buffer.from(body) : body;
  res.writeHead(status, { ...headers, 'content-length': String(b.length) });
  res.end(b);
}

/**
 * Reads a request body. With a Content-Length, straight into an ArrayBuffer of its own (`owned`),
 * placed so that byte `alignAt` (where the binary tensors start) lands on an 8-byte boundary:
 * the decoder can then take tensors as views instead of copies.
 */
function readBody(req: IncomingMessage, max: number, alignAt: number): Promise<{ body: Buffer; owned: boolean }> {
  return new Promise((resolve, reject) => {
    const declared = Number(req.headers['content-length']);
    if (Number.isFinite(declared) && declared > max) {
      req.resume();
      return reject(new EdgepackError('INFER_BODY_TOO_LARGE', `request body of ${declared} bytes exceeds the ${max}-byte limit`));
    }
    const sized = Number.isSafeInteger(declared) && declared >= 0;
    const pad = (8 - (alignAt % 8)) % 8;
    const into = sized ? Buffer.from(new ArrayBuffer(declared + pad), pad, declared) : undefined;
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      if (size + c.length > (into ? into.length : max)) {
        req.destroy();
        reject(new EdgepackError('INFER_BODY_TOO_LARGE', into ? 'request body is longer than its Content-Length' : `request body exceeds the ${max}-byte limit`));
        return;
      }
      if (into) c.copy(into, size);
      else chunks.push(c);
      size += c.length;
    });
    req.on('end', () => {
      if (into) return size === into.length ? resolve({ body: into, owned: true }) : reject(new EdgepackError('INFER_BODY_ABORTED', 'request body is shorter than its Content-Length'));
      resolve({ body: Buffer.concat(chunks, size), owned: false });
    });
    req.on('error', reject);
    req.on('aborted', () => reject(new EdgepackError('INFER_BODY_ABORTED', 'the client went away before the body was complete')));
  });
}

function header(req: IncomingMessage, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

/**
 * The HTTP face of the inference service: KServe v2 health, metadata, readiness and infer,
 * plus /metrics. Health answers follow KServe: live is 200 while the process serves; ready is
 * 200 only when a model is loaded, warmed and golden-checked, else 503 (never 200 when not).
 */
export function createServingHandler(o: ServingHttpOptions): (req: IncomingMessage, res: ServerResponse) => void {
  const { service } = o;
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const receivedAt = performance.now();
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const path = q >= 0 ? url.slice(0, q) : url;
    const method = req.method ?? 'GET';

    if (path === '/v2/health/live') return send(res, service.live ? 200 : 503, JSON.stringify({ live: service.live }));
    if (path === '/v2/health/ready') {
      const ready = service.ready;
      return send(res, ready ? 200 : 503, JSON.stringify({ ready, ...(ready ? {} : { error: service.readyReason }) }));
    }
    if (path === '/v2' || path === '/v2/') {
      return send(res, 200, JSON.stringify({ name: 'edgepack-agent', version: o.agentVersion, extensions: ['binary_tensor_data'] }));
    }
    if (path === '/metrics') {
      if (method !== 'GET') return send(res, 405, errorBody('use GET'), { 'content-type': 'application/json', allow: 'GET' });
      return send(res, 200, await o.metrics.text(), { 'content-type': o.metrics.contentType });
    }
    const m = MODEL_PATH.exec(path);
    if (!m) return send(res, 404, errorBody(`no such endpoint: ${method} ${path}`));
    let name: string;
    let version: string | undefined;
    try {
      name = decodeURIComponent(m[1]!);
      version = m[2] === undefined ? undefined : decodeURIComponent(m[2]);
    } catch {
      return send(res, 400, errorBody('the model name in the path is not valid percent-encoding'));
    }
    const action = m[3];
    if (action === '/infer') {
      if (method !== 'POST') return send(res, 405, errorBody('use POST for infer'), { 'content-type': 'application/json', allow: 'POST' });
      let recorded = false;
      let record: Parameters<InferenceService['finish']>[0] | undefined;
      const finish = () => {
        if (recorded || !record) return;
        recorded = true;
        service.finish(record, performance.now() - receivedAt);
      };
      res.once('finish', finish);
      res.once('close', finish);
      let body: { body: Buffer; owned: boolean };
      const headerLength = header(req, 'inference-header-content-length');
      try {
        body = await readBody(req, o.maxBodyBytes, Number(headerLength) || 0);
      } catch (err) {
        const m2 = service.model;
        record = { bundleId: m2?.bundleId ?? null, modelName: m2?.name ?? null, outcome: 'invalid', items: 0 };
        if (res.destroyed) return finish();
        return send(res, ERROR_CATALOGUE[catalogueCode(err, 'INFER_BODY_ABORTED')].status, errorBody(errorMessage(err)));
      }
      const out = await service.infer({
        name, ...(version !== undefined ? { version } : {}), body: body.body, ownsBody: body.owned, receivedAt,
        ...(headerLength !== undefined ? { headerLength } : {}),
        ...(header(req, 'timeout-ms') !== undefined ? { timeoutHeader: header(req, 'timeout-ms') } : {}),
      });
      record = out.record;
      if (res.destroyed) return finish();
      return send(res, out.status, out.body, out.headers);
    }
    if (method !== 'GET') return send(res, 405, errorBody('use GET'), { 'content-type': 'application/json', allow: 'GET' });
    const r = action === '/ready' ? service.modelReady(name, version) : service.metadata(name, version);
    return send(res, r.status, r.body);
  };
  return (req, res) => {
    handle(req, res).catch((err) => {
      // Nothing a client sends may take the agent down.
      o.log.error({ err: errorMessage(err), url: req.url }, 'serving: request handler failed');
      if (!res.headersSent) send(res, 500, errorBody('internal error'));
      else res.destroy();
    });
  };
}

export interface ListenOptions {
  /** host:port; port 0 picks a free one. */
  tcp?: { host: string; port: number };
  /** A Unix socket path; created with mode 0660. */
  socketPath?: string;
}

export interface ServingListener {
  url?: string;
  socketPath?: string;
  close(): Promise<void>;
}

/** Removes a socket file left by a process that is gone; refuses to touch anything else. */
async function clearStaleSocket(path: string): Promise<void> {
  const st = await lstat(path).catch(() => null);
  if (!st) return;
  if (!st.isSocket()) throw new EdgepackError('SERVE_SOCKET_IN_USE', `${path} exists and is not a socket; not replacing it`);
  const alive = await new Promise<boolean>((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (alive) throw new EdgepackError('SERVE_SOCKET_IN_USE', `another process serves on ${path}`);
  await rm(path, { force: true });
}

function listen(server: Server, arg: { port: number; host: string } | string): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    const done = () => { server.off('error', reject); resolve(); };
    if (typeof arg === 'string') server.listen(arg, done);
    else server.listen(arg.port, arg.host, done);
  });
}

/** Starts the HTTP servers (TCP and/or Unix socket) on one handler. */
export async function listenServing(handler: (req: IncomingMessage, res: ServerResponse) => void, o: ListenOptions): Promise<ServingListener> {
  const servers: Server[] = [];
  const result: ServingListener = { close: async () => undefined };
  const make = () => {
    const s = createServer({ keepAliveTimeout: 5000 }, handler);
    servers.push(s);
    return s;
  };
  try {
    if (o.tcp) {
      const s = make();
      await listen(s, o.tcp);
      const a = s.address();
      const port = typeof a === 'object' && a ? a.port : o.tcp.port;
      const host = o.tcp.host.includes(':') ? `[${o.tcp.host}]` : o.tcp.host;
      result.url = `http://${host}:${port}`;
    }
    if (o.socketPath) {
      await clearStaleSocket(o.socketPath);
      const s = make();
      await listen(s, o.socketPath);
      // Owner and group only: the device's apps join the agent's group to call it.
      await chmod(o.socketPath, 0o660);
      result.socketPath = o.socketPath;
    }
  } catch (err) {
    for (const s of servers) s.close();
    throw err;
  }
  result.close = async () => {
    await Promise.all(servers.map((s) => new Promise<void>((resolve) => {
      s.close(() => resolve());
      // Idle keep-alive connections would hold close() open; in-flight requests still finish.
      s.closeIdleConnections();
      const t = setTimeout(() => s.closeAllConnections(), 5000);
      t.unref();
    })));
    if (o.socketPath) await rm(o.socketPath, { force: true }).catch(() => undefined);
  };
  return result;
}
