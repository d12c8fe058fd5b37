import { performance } from 'node:perf_hooks';
import { errorCode, errorMessage, type TelemetryOutcome } from '@edgepack/protocol';
import type { ActiveRecord } from '../bundle-slots.js';
import type { Logger } from '../logger.js';
import { ServingError, decodeInferRequest, encodeInferResponse, modelMetadata } from './kserve-codec.js';
import { ServedModel, modelBytes, type ServedModelOptions } from './served-model.js';

/** What one inference request came to, for telemetry and metrics. */
export interface RequestRecord {
  bundleId: string | null;
  modelName: string | null;
  outcome: TelemetryOutcome;
  /** Received → answered, ms. */
  latencyMs: number;
  /** Received → a runner slot, ms (only for requests that got one). */
  queueMs?: number;
  items: number;
  /** The request waited for a held model switch. */
  held?: boolean;
}

export interface SwapRecord {
  from: string | null;
  to: string | null;
  /** Memory did not allow two models: new requests were held while the old one closed. */
  held: boolean;
  heldRequests: number;
  holdMs: number;
}

export interface ServingObserver {
  request(r: RequestRecord): void;
  swap(s: SwapRecord): void;
}

export interface InferenceServiceOptions extends Omit<ServedModelOptions, 'warmupRuns'> {
  log: Logger;
  /** Where an installed bundle's files are. */
  bundleDir: (bundleId: string) => string;
  /** Used when a request names no timeout (header `timeout-ms` or `parameters.timeout_ms`). */
  defaultTimeoutMs: number;
  /** A new model loads beside the old one only when available memory ≥ its model file × this factor. */
  memoryFactor: number;
  availableMemoryBytes: () => number | Promise<number>;
  /** Loads, warms and golden-checks a bundle (tests may slow it down; the default is ServedModel.load). */
  load?: (active: ActiveRecord) => Promise<ServedModel>;
  observer?: ServingObserver;
}

export interface InferResult {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
  /** Completed by the HTTP layer with the latency once the answer is written. */
  record: Omit<RequestRecord, 'latencyMs'>;
}

export function errorBody(message: string): Buffer {
  return Buffer.from(JSON.stringify({ error: message }));
}

/** Longest timeout honoured: Node's timers cannot take more than 2^31 − 1 ms, and nothing on a device should wait an hour. */
const MAX_TIMEOUT_MS = 3_600_000;

const OUTCOME_BY_STATUS: Record<number, TelemetryOutcome> = { 400: 'invalid', 404: 'invalid', 413: 'invalid', 503: 'rejected', 504: 'timeout' };

/**
 * The on-device inference service: serves the agent's active bundle, swaps to a newly
 * committed one without failing a request, and reports every request's outcome.
 *
 * Swap: with memory for two models, the new one is loaded, warmed and golden-checked beside the
 * old one, new requests go to it the moment it is ready, and the old one closes once the
 * requests that chose it have finished. Without that memory, new requests are held (never
 * refused) while the old one finishes its requests and closes and the new one loads; if the new
 * one fails to load, the old one is loaded back. Activations are handled one at a time.
 */
export class InferenceService {
  private current?: ServedModel;
  private hold?: { done: Promise<void>; startedAt: number; requests: number; to: ActiveRecord };
  private chain: Promise<void> = Promise.resolve();
  private notReady = 'no bundle is active yet';
  private readonly now = () => performance.now();

  constructor(private readonly o: InferenceServiceOptions) {}

  /** KServe "live": the server answers. It is, as long as this process runs. */
  get live(): boolean { return true; }

  /** KServe "ready": a model is loaded, warmed and golden-checked, and no switch is holding requests. */
  get ready(): boolean { return this.current !== undefined && this.hold === undefined; }

  get readyReason(): string { return this.hold ? `switching to bundle ${this.hold.to.bundleId}` : this.notReady; }

  get model(): ServedModel | undefined { return this.current; }

  /** Serves `active` from now on (null: nothing). Resolves once new requests go to it, or it failed to load. */
  activate(active: ActiveRecord | null): Promise<void> {
    const run = this.chain.then(() => this.switchTo(active));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async load(active: ActiveRecord): Promise<ServedModel> {
    if (this.o.load) return this.o.load(active);
    return ServedModel.load(this.o.bundleDir(active.bundleId), active, { concurrency: this.o.concurrency, maxQueued: this.o.maxQueued, ...(this.o.runner ? { runner: this.o.runner } : {}) });
  }

  private async switchTo(active: ActiveRecord | null): Promise<void> {
    const old = this.current;
    if ((old?.bundleId ?? null) === (active?.bundleId ?? null)) return;
    const { log } = this.o;
    if (!active) {
      this.current = undefined;
      this.notReady = 'no bundle is active';
      if (old) await old.retire();
      this.o.observer?.swap({ from: old?.bundleId ?? null, to: null, held: false, heldRequests: 0, holdMs: 0 });
      return;
    }
    // Every runner instance holds its own session.
    const need = modelBytes(active.manifest) * this.o.memoryFactor * Math.max(1, this.o.concurrency);
    const available = await this.o.availableMemoryBytes();
    if (!old || available >= need) {
      if (!old) this.notReady = `loading bundle ${active.bundleId}`;
      let next: ServedModel;
      try {
        next = await this.load(active);
      } catch (err) {
        if (!old) this.notReady = `bundle ${active.bundleId} could not be served: ${errorMessage(err)}`;
        log.error({ bundleId: active.bundleId, code: errorCode(err), err: errorMessage(err), keeps: old?.bundleId ?? null }, 'serving: the new model could not be loaded; the old one keeps serving');
        throw err;
      }
      this.current = next;
      log.info({ bundleId: next.bundleId, model: next.name, version: next.version, replaced: old?.bundleId ?? null }, 'serving: new requests go to the new model');
      this.o.observer?.swap({ from: old?.bundleId ?? null, to: next.bundleId, held: false, heldRequests: 0, holdMs: 0 });
      // The old model finishes what it has in the background; the switch is already done.
      if (old) void old.retire().then(() => log.info({ bundleId: old.bundleId }, 'serving: the replaced model finished its requests and closed'),
        (err) => log.warn({ bundleId: old.bundleId, err: errorMessage(err) }, 'serving: closing the replaced model failed'));
      return;
    }

    // Not enough memory for two: hold new requests, let the old one finish, then swap.
    let release!: () => void;
    const hold = { done: new Promise<void>((r) => (release = r)), startedAt: this.now(), requests: 0, to: active };
    this.hold = hold;
    log.warn({ from: old.bundleId, to: active.bundleId, availableBytes: available, neededBytes: need, memoryFactor: this.o.memoryFactor },
      'serving: not enough memory for two models; holding new requests while the old model closes and the new one loads');
    let failure: unknown;
    try {
      await old.retire();
      this.current = undefined;
      try {
        this.current = await this.load(active);
      } catch (err) {
        failure = err;
        log.error({ bundleId: active.bundleId, err: errorMessage(err) }, 'serving: the new model could not be loaded; loading the old one back');
        try {
          this.current = await this.load(old.active);
        } catch (err2) {
          this.notReady = `neither bundle ${active.bundleId} nor ${old.bundleId} could be loaded: ${errorMessage(err2)}`;
          log.error({ bundleId: old.bundleId, err: errorMessage(err2) }, 'serving: the old model could not be loaded back either');
        }
      }
    } finally {
      this.hold = undefined;
      release();
    }
    const holdMs = Math.round(this.now() - hold.startedAt);
    log.warn({ bundleId: this.current?.bundleId ?? null, holdMs, heldRequests: hold.requests }, 'serving: switch done; held requests released');
    this.o.observer?.swap({ from: old.bundleId, to: this.current?.bundleId ?? null, held: true, heldRequests: hold.requests, holdMs });
    if (failure) throw failure;
  }

  /** Waits out a held switch (within the request's deadline). */
  private async waitForHold(deadline: number): Promise<boolean> {
    const h = this.hold;
    if (!h) return false;
    h.requests++;
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => { timer = setTimeout(() => r('late'), Math.max(0, deadline - this.now())); });
    const r = await Promise.race([h.done.then(() => 'done' as const), late]);
    clearTimeout(timer);
    if (r === 'late') throw new ServingError('INFER_TIMEOUT', `the request timed out while the service switched to bundle ${h.to.bundleId}`);
    return true;
  }

  /** Finds the model a request names, waiting out a held switch; 404 for another name or version, 503 when none is ready. */
  private async resolve(name: string, version: string | undefined, deadline: number): Promise<{ model: ServedModel; held: boolean }> {
    let held = false;
    if (this.hold && (this.hold.to.manifest.model.name === name || this.current?.name === name || !this.current)) held = await this.waitForHold(deadline);
    const m = this.current;
    if (!m) throw new ServingError('MODEL_UNAVAILABLE', `no model is ready: ${this.notReady}`, 1);
    if (m.name !== name) throw new ServingError('MODEL_NOT_FOUND', `no model named '${name}'; this device serves '${m.name}'`);
    if (version !== undefined && version !== m.version) throw new ServingError('MODEL_VERSION_NOT_FOUND', `model '${name}' has no version '${version}'; this device serves version '${m.version}'`);
    return { model: m, held };
  }

  /** Metadata of the model a request names (KServe GET /v2/models/{name}[/versions/{v}]). */
  metadata(name: string, version?: string): { status: number; body: Buffer } {
    if (this.hold && this.hold.to.manifest.model.name === name && !this.current) {
      return { status: 503, body: errorBody(`switching to bundle ${this.hold.to.bundleId}; retry shortly`) };
    }
    const m = this.current;
    if (!m || m.name !== name || (version !== undefined && version !== m.version)) {
      return { status: 404, body: errorBody(m ? `no model named '${name}'${version ? ` version '${version}'` : ''}; this device serves '${m.name}' version '${m.version}'` : `no model is active: ${this.notReady}`) };
    }
    const man = m.manifest;
    return {
      status: 200,
      body: Buffer.from(JSON.stringify(modelMetadata({
        name: m.name, version: m.version, platform: m.runtime === 'litert' ? 'tflite_litert' : 'onnxruntime_onnx', sig: m.signature,
        bundleId: m.bundleId, precision: man.precision, format: man.format, ...(man.layout ? { layout: man.layout } : {}),
      }))),
    };
  }

  /** KServe model readiness: 200 ready, 503 known but not ready (switching), 404 unknown. */
  modelReady(name: string, version?: string): { status: number; body: Buffer } {
    const m = this.current;
    const known = (m && m.name === name && (version === undefined || version === m.version)) || this.hold?.to.manifest.model.name === name;
    if (!known) return { status: 404, body: errorBody(`no model named '${name}'${version ? ` version '${version}'` : ''}`) };
    const ready = this.ready;
    return { status: ready ? 200 : 503, body: Buffer.from(JSON.stringify({ name, ready, ...(ready ? {} : { error: this.readyReason }) })) };
  }

  /**
   * One inference request, from its raw body to its answer. Never throws: every failure is an
   * answer (400, 404, 503 + Retry-After, 504, 500) with its outcome for telemetry.
   */
  async infer(args: { name: string; version?: string; body: Buffer; ownsBody?: boolean; headerLength?: string; timeoutHeader?: string; receivedAt: number }): Promise<InferResult> {
    let chosen: ServedModel | undefined;
    let held = false;
    let items = 0;
    let queueMs: number | undefined;
    try {
      let timeoutMs = this.o.defaultTimeoutMs;
      if (args.timeoutHeader !== undefined) {
        const t = Number(args.timeoutHeader);
        if (!/^\d+$/.test(args.timeoutHeader) || t < 1) throw new ServingError('INFER_REQUEST_INVALID', `header timeout-ms must be a positive integer, got ${JSON.stringify(args.timeoutHeader)}`);
        timeoutMs = t;
      }
      let deadline = args.receivedAt + Math.min(timeoutMs, MAX_TIMEOUT_MS);
      const r = await this.resolve(args.name, args.version, deadline);
      held = r.held;
      chosen = r.model;
      chosen.enter();
      try {
        const req = decodeInferRequest(args.body, args.headerLength, chosen.signature, args.ownsBody === true);
        if (req.timeoutMs !== undefined) deadline = Math.min(deadline, args.receivedAt + Math.min(req.timeoutMs, MAX_TIMEOUT_MS));
        const run = await chosen.run(req.inputs, deadline, this.now);
        queueMs = run.startedAt - args.receivedAt;
        items = req.items;
        const out = encodeInferResponse({ modelName: chosen.name, modelVersion: chosen.version, ...(req.id ? { id: req.id } : {}), outputs: run.outputs, requested: req.outputs });
        return { status: 200, headers: out.headers, body: out.body, record: this.recordOf(chosen, 'ok', items, queueMs, held) };
      } finally {
        chosen.leave();
      }
    } catch (err) {
      const e = err instanceof ServingError ? err : new ServingError('INFER_FAILED', errorMessage(err));
      if (e.status >= 500 && e.status !== 503 && e.status !== 504) this.o.log.error({ code: e.code, err: e.message, bundleId: chosen?.bundleId }, 'serving: inference failed');
      const outcome = OUTCOME_BY_STATUS[e.status] ?? 'error';
      const model = chosen ?? this.current;
      return {
        status: e.status,
        headers: { 'content-type': 'application/json', ...(e.retryAfterSec !== undefined ? { 'retry-after': String(e.retryAfterSec) } : {}) },
        body: errorBody(e.message),
        record: this.recordOf(model, outcome, 0, undefined, held),
      };
    }
  }

  private recordOf(m: ServedModel | undefined, outcome: TelemetryOutcome, items: number, queueMs: number | undefined, held: boolean): Omit<RequestRecord, 'latencyMs'> {
    return { bundleId: m?.bundleId ?? null, modelName: m?.name ?? null, outcome, items, ...(queueMs !== undefined ? { queueMs } : {}), ...(held ? { held } : {}) };
  }

  /** Called by the HTTP layer once the answer is written. */
  finish(record: Omit<RequestRecord, 'latencyMs'>, latencyMs: number): void {
    this.o.observer?.request({ ...record, latencyMs });
  }

  /** Closes the served model after its requests finish. */
  async close(): Promise<void> {
    await this.chain;
    const m = this.current;
    this.current = undefined;
    this.notReady = 'the service is stopping';
    await m?.retire();
  }
}
