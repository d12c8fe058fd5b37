import {
  alignedWindow, emptyHistogram, observe, type TelemetryHistogram, type TelemetryRequests, type TelemetrySwaps, type TelemetryWindow,
} from '@edgepack/protocol';
import type { RequestRecord, SwapRecord } from '../serving/inference-service.js';

/** A closed window before the spool gives it a seq and the sampler its system figures. */
export type WindowDraft = Omit<TelemetryWindow, 'v' | 'deviceId' | 'seq' | 'system'>;

interface Accumulator {
  bundleId: string | null;
  modelName: string | null;
  requests: TelemetryRequests;
  items: number;
  latencyMs: TelemetryHistogram;
  queueMs: TelemetryHistogram;
  swaps?: TelemetrySwaps;
}

function accumulator(bundleId: string | null, modelName: string | null): Accumulator {
  return {
    bundleId, modelName, requests: { ok: 0, invalid: 0, timeout: 0, rejected: 0, error: 0 }, items: 0,
    latencyMs: emptyHistogram(), queueMs: emptyHistogram(),
  };
}

const iso = (ms: number) => new Date(ms).toISOString().replace('.000Z', 'Z');

/**
 * Counts requests into fixed, aligned windows (`windowSec`, from the epoch: the minute for 60),
 * one accumulator per bundle, since a window in which the model was swapped must say which
 * bundle served what. A record lands in the window that is open when it completes; a period
 * ends on its boundary whether or not anyone asks, so a late timer misplaces nothing. A period
 * without any request still yields one empty window for the active bundle, so that silence is
 * visible as data. Pure over its clock.
 */
export class WindowAggregator {
  private start: number;
  private end: number;
  private accs = new Map<string, Accumulator>();
  private closed: WindowDraft[] = [];
  private active: { bundleId: string | null; modelName: string | null } = { bundleId: null, modelName: null };

  constructor(readonly windowSec: number, private readonly now: () => number) {
    ({ start: this.start, end: this.end } = alignedWindow(now(), windowSec));
  }

  /** The bundle an empty window is reported for. */
  setActive(bundleId: string | null, modelName: string | null): void {
    this.roll();
    this.active = { bundleId, modelName };
  }

  /** When the open window ends (epoch ms): when to call takeClosed(). */
  get openUntil(): number { return this.end; }

  private acc(bundleId: string | null, modelName: string | null): Accumulator {
    const key = bundleId ?? '';
    let a = this.accs.get(key);
    if (!a) {
      a = accumulator(bundleId, modelName);
      this.accs.set(key, a);
    }
    return a;
  }

  record(r: RequestRecord): void {
    this.roll();
    const a = this.acc(r.bundleId, r.modelName);
    a.requests[r.outcome] += 1;
    if (r.outcome === 'ok') {
      a.items += r.items;
      observe(a.latencyMs, r.latencyMs);
      observe(a.queueMs, Math.min(r.queueMs ?? 0, r.latencyMs));
    }
  }

  recordSwap(s: SwapRecord): void {
    this.roll();
    if (s.to === null) return;
    const a = this.acc(s.to, this.active.bundleId === s.to ? this.active.modelName : null);
    const w = (a.swaps ??= { count: 0, held: 0, heldRequests: 0, maxHoldMs: 0 });
    w.count += 1;
    if (s.held) {
      w.held += 1;
      w.heldRequests += s.heldRequests;
      w.maxHoldMs = Math.max(w.maxHoldMs, Math.round(s.holdMs));
    }
  }

  /** Closes the open period if its end has passed and opens the one holding now(). */
  private roll(): void {
    const t = this.now();
    if (t < this.end) return;
    this.closePeriod(this.end);
    ({ start: this.start, end: this.end } = alignedWindow(t, this.windowSec));
  }

  private closePeriod(end: number): void {
    const accs = [...this.accs.values()];
    if (accs.length === 0) accs.push(accumulator(this.active.bundleId, this.active.modelName));
    for (const a of accs) {
      // A swap recorded before the model's name was known takes it from the active bundle.
      const modelName = a.modelName ?? (a.bundleId === this.active.bundleId ? this.active.modelName : null);
      this.closed.push({
        start: iso(this.start), end: iso(end), bundleId: a.bundleId, modelName, requests: a.requests, items: a.items,
        latencyMs: a.latencyMs, queueMs: a.queueMs, ...(a.swaps ? { swaps: a.swaps } : {}),
      });
    }
    this.accs = new Map();
  }

  /** Windows closed so far (oldest first); each is handed out once. */
  takeClosed(): WindowDraft[] {
    this.roll();
    return this.closed.splice(0);
  }

  /**
   * Closes the open window early (the agent is stopping): it ends at now rounded up to the
   * second, so that nothing counted so far is lost. The next process opens a window of its own.
   */
  closeEarly(): WindowDraft[] {
    this.roll();
    const end = Math.min(this.end, Math.max(this.start + 1000, Math.ceil(this.now() / 1000) * 1000));
    this.closePeriod(end);
    this.start = end;
    return this.closed.splice(0);
  }
}
