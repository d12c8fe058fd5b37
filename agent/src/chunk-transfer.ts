import { createHash, type Hash } from 'node:crypto';
import { CHUNK_SIZE, EdgepackError, type BundleFile, type ChunkHeader, type Notice } from '@edgepack/protocol';

/**
 * Where the chunks of one file go. The transfer hands them over strictly in order, so a sink
 * only ever appends; the agent's sink is a part file on disk, the fleet simulator's a running
 * hash (a simulated device keeps no bundle bytes).
 */
export interface ChunkSink {
  /** Gets ready; returns how many leading chunks it already holds (where to resume), or 'complete' if the file is already whole and checked. */
  open(total: number): Promise<number | 'complete'>;
  /** Appends the run of consecutive chunks starting at index `first`. */
  append(first: number, chunks: readonly Buffer[]): Promise<void>;
  /** Length and sha256 of everything appended so far. */
  digest(): Promise<{ sha256: string; length: number }>;
  /** The transfer was bad: keep nothing of it, so the next attempt starts clean. */
  reset(): Promise<void>;
  /** The transfer matched the manifest: make it final. */
  commit(): Promise<void>;
}

/** What a stall check did; see `ChunkTransfer.checkStall`. */
export type StallCheck = 'progressing' | 'reasked' | 'exhausted' | 'refused' | 'too-slow';

/** The least average rate a transfer must keep over each window; see `ChunkTransfer.checkStall`. */
export interface RateFloor {
  minBytesPerSec: number;
  windowMs: number;
}

/** A refusal the broker relayed about this transfer; see `ChunkTransfer.advise`. */
export interface AdvisedRefusal {
  code: string;
  message: string;
}

/**
 * Fetches one bundle file as MQTT chunks: asks for a window, takes chunks in any order and any
 * number of times, hands them to the sink in order, asks for the next window when one is in,
 * and checks length and sha256 against the manifest at the end. The request itself (a publish
 * on chunk-request) is the caller's, so the agent and the simulator share every rule here.
 */
export class ChunkTransfer {
  private next = 0;
  private readonly total: number;
  private readonly early = new Map<number, Buffer>();
  private inFlightUntil = 0;
  private done?: { resolve: () => void; reject: (e: Error) => void };
  private lastProgress = Date.now();
  /** Re-asks since a chunk last arrived; see `reask`. */
  private asksWithoutProgress = 0;
  private queue: Promise<void> = Promise.resolve();
  /** The last refusal notice about this transfer since a chunk last arrived. */
  private refusal: AdvisedRefusal | undefined;
  /** Bytes taken since `rateWindowStart`, for the rate floor. */
  private rateWindowStart = Date.now();
  private rateWindowBytes = 0;
  /** The rate of the last window the floor judged (bytes/s), for the failure's message. */
  lastWindowRate: number | undefined;

  constructor(
    readonly bundleId: string,
    readonly file: BundleFile,
    private readonly sink: ChunkSink,
    private readonly request: (index: number, count: number) => void,
    private readonly window = 32,
  ) {
    this.total = Math.max(1, Math.ceil(file.length / CHUNK_SIZE));
  }

  /**
   * Resolves when the file is complete and matches the manifest's length and sha256. Set-up
   * runs on the same queue as incoming chunks, so a chunk that arrives early waits for it.
   */
  run(): Promise<void> {
    const finished = new Promise<void>((resolve, reject) => { this.done = { resolve, reject }; });
    this.queue = this.queue.then(() => this.prepare()).catch((err: Error) => this.fail(err));
    return finished;
  }

  private async prepare(): Promise<void> {
    const have = await this.sink.open(this.total);
    if (have === 'complete') {
      this.done?.resolve();
      this.done = undefined;
      return;
    }
    this.next = Math.min(this.total, have);
    this.rateWindowStart = Date.now();
    this.rateWindowBytes = 0;
    if (this.file.length === 0) await this.finish();
    else this.ask();
  }

  /** (Re)asks for the next window; called on start, on reconnect and when a transfer stalls. */
  ask(): void {
    if (!this.done) return;
    const count = Math.min(this.window, this.total - this.next);
    if (count <= 0) return;
    this.inFlightUntil = this.next + count;
    this.lastProgress = Date.now();
    this.request(this.next, count);
  }

  /**
   * Asks again after a stall; returns false instead once `maxAsks` re-asks in a row brought no
   * chunk, so the caller can give up rather than ask forever.
   */
  reask(maxAsks: number): boolean {
    if (this.asksWithoutProgress >= maxAsks) return false;
    this.asksWithoutProgress++;
    this.ask();
    return true;
  }

  /**
   * The periodic stall check both the agent and the simulator run: nothing to do while chunks
   * arrive; after `stallMs` without one, ask again; after `maxAsks` fruitless asks, 'exhausted'
   * (the caller fails the transfer with DOWNLOAD_STALLED).
   */
  checkStall(stallMs: number, maxAsks: number, floor?: RateFloor): StallCheck {
    if (floor && floor.minBytesPerSec > 0 && this.belowFloor(floor)) return 'too-slow';
    if (this.stalledFor() <= stallMs) return 'progressing';
    // Stalled, and the broker relayed a refusal for it: give up now instead of asking again.
    if (this.refusal) return 'refused';
    return this.reask(maxAsks) ? 'reasked' : 'exhausted';
  }

  /**
   * Whether the window that just closed brought less than the floor. Judged per window, not from
   * the start, so a fast start cannot bank credit for a trickle later; a window opens again when
   * one is judged, and the first opens when the transfer is asked for.
   */
  private belowFloor(floor: RateFloor): boolean {
    const elapsed = Date.now() - this.rateWindowStart;
    if (!this.done || elapsed < floor.windowMs) return false;
    this.lastWindowRate = (this.rateWindowBytes * 1000) / elapsed;
    this.rateWindowStart = Date.now();
    this.rateWindowBytes = 0;
    return this.lastWindowRate < floor.minBytesPerSec;
  }

  /**
   * Takes a refusal notice about this transfer as advice, not as an order. Notices are not
   * signed, so whoever holds the broker can send one; but whoever holds the broker can also
   * just withhold the chunks, and a transfer that gets none stalls and fails anyway
   * (DOWNLOAD_STALLED). So a notice may only shorten a stall: it ends the transfer at the next
   * stall check, if by then no chunk has come; any chunk that arrives clears it. A transfer that
   * is making progress is never ended by a notice.
   */
  advise(refusal: AdvisedRefusal): void {
    if (this.done) this.refusal = { code: refusal.code, message: refusal.message };
  }

  /** The refusal `checkStall` answered 'refused' for. */
  get advisedRefusal(): AdvisedRefusal | undefined {
    return this.refusal;
  }

  get reasks(): number {
    return this.asksWithoutProgress;
  }

  stalledFor(): number {
    return Date.now() - this.lastProgress;
  }

  fail(err: Error): void {
    this.done?.reject(err);
    this.done = undefined;
  }

  /** Takes one decoded chunk; out-of-window and duplicate chunks are dropped harmlessly. Serialised, since appends must stay in order. */
  accept(header: ChunkHeader, bytes: Buffer): Promise<void> {
    this.queue = this.queue.then(() => this.acceptOne(header, bytes)).catch((err: Error) => this.fail(err));
    return this.queue;
  }

  private async acceptOne(header: ChunkHeader, bytes: Buffer): Promise<void> {
    if (!this.done || header.sha256 !== this.file.sha256 || header.bundleId !== this.bundleId) return;
    if (header.fileLength !== this.file.length) {
      return this.fail(new EdgepackError('FILE_LENGTH_MISMATCH', `server sends ${header.fileLength} bytes for ${this.file.path}, manifest says ${this.file.length}`));
    }
    if (header.index < this.next || this.early.has(header.index)) return;
    this.early.set(header.index, bytes);
    this.rateWindowBytes += bytes.length;
    this.lastProgress = Date.now();
    this.asksWithoutProgress = 0;
    this.refusal = undefined;
    const first = this.next;
    const run: Buffer[] = [];
    while (this.early.has(this.next)) {
      run.push(this.early.get(this.next)!);
      this.early.delete(this.next);
      this.next++;
    }
    if (run.length) await this.sink.append(first, run);
    if (this.next >= this.total) return this.finish();
    if (this.next >= this.inFlightUntil) this.ask();
  }

  private async finish(): Promise<void> {
    try {
      const actual = await this.sink.digest();
      if (actual.length !== this.file.length || actual.sha256 !== this.file.sha256) {
        await this.sink.reset();
        throw new EdgepackError(actual.length !== this.file.length ? 'FILE_LENGTH_MISMATCH' : 'FILE_HASH_MISMATCH',
          `downloaded ${this.file.path} has length ${actual.length} and sha256 ${actual.sha256}; manifest says ${this.file.length} and ${this.file.sha256}`);
      }
      await this.sink.commit();
      this.done?.resolve();
    } catch (err) {
      this.done?.reject(err as Error);
    }
    this.done = undefined;
  }
}

/** Keeps no bytes, only a running sha256 and length: all a device that never runs the model needs to check a transfer. */
export class HashingChunkSink implements ChunkSink {
  private hash: Hash = createHash('sha256');
  private length = 0;

  async open(): Promise<number> {
    await this.reset();
    return 0;
  }

  async append(_first: number, chunks: readonly Buffer[]): Promise<void> {
    for (const c of chunks) {
      this.hash.update(c);
      this.length += c.length;
    }
  }

  async digest(): Promise<{ sha256: string; length: number }> {
    // copy(): digest() ends a Hash, and a digest must not stop the sink from being reset and reused.
    return { sha256: this.hash.copy().digest('hex'), length: this.length };
  }

  async reset(): Promise<void> {
    this.hash = createHash('sha256');
    this.length = 0;
  }

  async commit(): Promise<void> { /* nothing to move: the bytes were never kept */ }

  /** Bytes taken so far (for the simulator's throughput figures). */
  get received(): number {
    return this.length;
  }
}

/** Refusals of a transfer: asking again will not help. */
export const REFUSAL_NOTICES: readonly string[] = ['BUNDLE_NOT_ASSIGNED', 'FILE_NOT_IN_BUNDLE', 'CHUNK_OUT_OF_RANGE'];

/**
 * Whether an orchestrator notice is a refusal of the transfer of `bundleId` in progress (and so
 * may end it once it has stalled; see `ChunkTransfer.advise`). A notice naming a bundle only
 * concerns that bundle's transfer; a late one about an earlier bundle is no refusal of the
 * current one. Unnamed notices: refusal codes only. A server-side failure counts only when it
 * names this bundle.
 */
export function noticeRefusesTransfer(notice: Pick<Notice, 'code' | 'bundleId'>, bundleId: string): boolean {
  if (notice.bundleId !== undefined && notice.bundleId !== bundleId) return false;
  return REFUSAL_NOTICES.includes(notice.code) || ((notice.code === 'INTERNAL_ERROR' || notice.code === 'BLOB_MISSING') && notice.bundleId === bundleId);
}

/** Why a transfer that stalled after a relayed refusal failed: the device's own finding (it stalled), with what it was told. */
export function stalledAfterRefusal(t: { file: BundleFile; bundleId: string }, stallMs: number, refusal: AdvisedRefusal): string {
  return `no data for ${t.file.path} of bundle ${t.bundleId} for ${stallMs} ms after the broker relayed a refusal `
    + `(${refusal.code}: ${refusal.message}); notices are unsigned, so one only ends a transfer that has stalled`;
}
