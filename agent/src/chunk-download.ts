import { createHash } from 'node:crypto';
import { mkdir, open, rename, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_SIZE, EdgepackError, type BundleFile, type ChunkHeader } from '@edgepack/protocol';
import { sha256File } from './bundle-slots.js';

/**
 * Downloads one bundle file as MQTT chunks into downloads/<sha256>.part. Chunks are written
 * in order, so the part file's length (rounded down to a chunk) is exactly where a transfer
 * resumes after a disconnect or a restart; nothing else needs persisting.
 */
export class ChunkDownload {
  private next = 0;
  private total: number;
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
    private readonly dir: string,
    private readonly request: (index: number, count: number) => void,
    private readonly window = 32,
  ) {
    this.total = Math.max(1, Math.ceil(file.length / CHUNK_SIZE));
  }

  static finalPath(dir: string, sha256: string): string {
    return join(dir, sha256);
  }

  private get partPath(): string {
    return join(this.dir, `${this.file.sha256}.part`);
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
    await mkdir(this.dir, { recursive: true });
    if (await stat(ChunkDownload.finalPath(this.dir, this.file.sha256)).then(() => true, () => false)) {
      this.done?.resolve();
      this.done = undefined;
      return;
    }
    const have = await stat(this.partPath).then((s) => s.size, () => 0);
    this.next = Math.min(this.total, Math.floor(have / CHUNK_SIZE));
    await truncate(this.partPath, this.next * CHUNK_SIZE).catch(async () => { await (await open(this.partPath, 'w')).close(); });
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

  /** Takes one decoded chunk; out-of-window and duplicate chunks are dropped harmlessly. Serialised, since writes must stay in order. */
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
    const fh = await open(this.partPath, 'a');
    try {
      while (this.early.has(this.next)) {
        const b = this.early.get(this.next)!;
        this.early.delete(this.next);
        await fh.write(b, 0, b.length, this.next * CHUNK_SIZE);
        this.next++;
      }
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (this.next >= this.total) return this.finish();
    if (this.next >= this.inFlightUntil) this.ask();
  }

  private async finish(): Promise<void> {
    try {
      const actual = await sha256File(this.partPath);
      if (actual.length !== this.file.length || actual.sha256 !== this.file.sha256) {
        // Keep nothing of a bad transfer: the next attempt starts clean.
        await truncate(this.partPath, 0);
        throw new EdgepackError(actual.length !== this.file.length ? 'FILE_LENGTH_MISMATCH' : 'FILE_HASH_MISMATCH',
          `downloaded ${this.file.path} has length ${actual.length} and sha256 ${actual.sha256}; manifest says ${this.file.length} and ${this.file.sha256}`);
      }
      await rename(this.partPath, ChunkDownload.finalPath(this.dir, this.file.sha256));
      this.done?.resolve();
    } catch (err) {
      this.done?.reject(err as Error);
    }
    this.done = undefined;
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
