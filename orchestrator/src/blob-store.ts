import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { EdgepackError } from '@edgepack/protocol';

/** How much of a failed upload is still read (and dropped) so the client sees the error response. */
const DRAIN_LIMIT = 64 * 1024 * 1024;

export class BlobTooLargeError extends EdgepackError {
  constructor(limit: number) { super('PAYLOAD_TOO_LARGE', `upload exceeds the ${limit}-byte limit`); }
}

/**
 * Content-addressed files under `<data-dir>/blobs/<sha256>`. Writes go to a temp file and are
 * renamed into place after fsync, so a crash never leaves a half-written blob under its hash.
 */
export class BlobStore {
  constructor(readonly dir: string) {}

  async init(): Promise<void> {
    await mkdir(join(this.dir, 'tmp'), { recursive: true });
  }

  path(sha256: string): string {
    if (!/^[0-9a-f]{64}$/.test(sha256)) throw new EdgepackError('BLOB_ID_INVALID', `not a sha256: ${sha256}`);
    return join(this.dir, sha256);
  }

  async has(sha256: string): Promise<boolean> {
    return stat(this.path(sha256)).then(() => true, () => false);
  }

  async size(sha256: string): Promise<number> {
    return (await stat(this.path(sha256))).size;
  }

  /**
   * Streams `source` into the store, enforcing `maxBytes` while streaming. When writing fails
   * (over the limit, disk full) the rest of the body is still read and dropped, up to
   * DRAIN_LIMIT, so the client gets the error response instead of a reset connection.
   */
  async putStream(source: Readable, maxBytes: number): Promise<{ sha256: string; sizeBytes: number; tempPath: string }> {
    const tempPath = join(this.dir, 'tmp', randomBytes(8).toString('hex'));
    const hash = createHash('sha256');
    const out = createWriteStream(tempPath, { mode: 0o600 });
    let writeError: Error | undefined;
    out.on('error', (err) => { writeError ??= err; });
    let size = 0;
    let failure: Error | undefined;
    let drained = 0;
    const waitDrain = () => new Promise<void>((resolve) => {
      const done = () => { out.off('drain', done); out.off('error', done); resolve(); };
      out.on('drain', done);
      out.on('error', done);
    });
    try {
      for await (const chunk of source as AsyncIterable<Buffer>) {
        if (!failure) failure = writeError;
        if (failure) {
          drained += chunk.length;
          if (drained > DRAIN_LIMIT) { source.destroy(); break; }
          continue;
        }
        size += chunk.length;
        if (size > maxBytes) { failure = new BlobTooLargeError(maxBytes); continue; }
        hash.update(chunk);
        if (!out.write(chunk)) await waitDrain();
      }
    } catch (err) {
      // The client went away mid-upload: nothing of it may stay behind.
      failure ??= err as Error;
    } finally {
      await new Promise<void>((resolve) => {
        if (out.destroyed || out.writableFinished) return resolve();
        out.once('error', () => resolve());
        out.end(() => resolve());
      });
    }
    failure ??= writeError;
    if (failure) {
      out.destroy();
      await rm(tempPath, { force: true });
      throw failure;
    }
    return { sha256: hash.digest('hex'), sizeBytes: size, tempPath };
  }

  /** Moves a temp file written by putStream into place under its hash. */
  async commit(tempPath: string, sha256: string): Promise<void> {
    const fh = await open(tempPath, 'r');
    try { await fh.sync(); } finally { await fh.close(); }
    await rename(tempPath, this.path(sha256));
  }

  async discard(tempPath: string): Promise<void> {
    await rm(tempPath, { force: true });
  }

  async putBytes(bytes: Uint8Array): Promise<{ sha256: string; sizeBytes: number }> {
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    if (!(await this.has(sha256))) {
      const tempPath = join(this.dir, 'tmp', randomBytes(8).toString('hex'));
      const fh = await open(tempPath, 'w', 0o600);
      try { await fh.writeFile(bytes); await fh.sync(); } finally { await fh.close(); }
      await rename(tempPath, this.path(sha256));
    }
    return { sha256, sizeBytes: bytes.byteLength };
  }

  /**
   * Opens a blob the database says exists. Its absence is damage on our side (a deleted or
   * restored data dir), answered with our own code; the message names the blob, never the path.
   */
  private async openExisting(sha256: string) {
    try {
      return await open(this.path(sha256), 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') throw new EdgepackError('BLOB_MISSING', `blob ${sha256} is missing from the blob store`);
      throw err;
    }
  }

  async readRange(sha256: string, offset: number, length: number): Promise<Buffer> {
    const fh = await this.openExisting(sha256);
    try {
      const buf = Buffer.alloc(length);
      const { bytesRead } = await fh.read(buf, 0, length, offset);
      return buf.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  }

  stream(sha256: string, range?: { start: number; end: number }): Readable {
    return createReadStream(this.path(sha256), range);
  }

  /**
   * A stream of a blob that is already open: a missing blob fails here, before an answer has
   * started, instead of as a stream error half-way through one.
   */
  async openStream(sha256: string, range?: { start: number; end: number }): Promise<Readable> {
    const fh = await this.openExisting(sha256);
    return fh.createReadStream(range ? { start: range.start, end: range.end } : {});
  }
}
