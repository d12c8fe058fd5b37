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
export type StallCheck = 'progressing' | 'reasked' | 'exhausted';

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
  checkStall(stallMs: number, maxAsks: number): StallCheck {
    if (this.stalledFor() <= stallMs) return 'progressing';
    return this.reask(maxAsks) ? 'reasked' : 'exhausted';
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
    this.lastProgress = Date.now();
    this.asksWithoutProgress = 0;
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

/** Refusals that end the transfer they concern. */
export const FATAL_NOTICES: readonly string[] = ['BUNDLE_NOT_ASSIGNED', 'FILE_NOT_IN_BUNDLE', 'CHUNK_OUT_OF_RANGE'];

/**
 * Whether an orchestrator notice ends the transfer of `bundleId` in progress. A notice naming a
 * bundle only concerns that bundle's transfer; a late one about an earlier bundle must not fail
 * the current one. Unnamed notices: refusal codes only.
 */
export function noticeEndsTransfer(notice: Pick<Notice, 'code' | 'bundleId'>, bundleId: string): boolean {
  if (notice.bundleId !== undefined && notice.bundleId !== bundleId) return false;
  return FATAL_NOTICES.includes(notice.code) || (notice.code === 'INTERNAL_ERROR' && notice.bundleId === bundleId);
}
