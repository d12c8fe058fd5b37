import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform, type Readable } from 'node:stream';
import { EdgepackError } from '@edgepack/protocol';

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

  /** Streams `source` into the store, enforcing `maxBytes` while streaming. */
  async putStream(source: Readable, maxBytes: number): Promise<{ sha256: string; sizeBytes: number; tempPath: string }> {
    const tempPath = join(this.dir, 'tmp', randomBytes(8).toString('hex'));
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        size += chunk.length;
        if (size > maxBytes) return cb(new BlobTooLargeError(maxBytes));
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(source, meter, createWriteStream(tempPath, { mode: 0o600 }));
    } catch (err) {
      await rm(tempPath, { force: true });
      throw err;
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

  async readRange(sha256: string, offset: number, length: number): Promise<Buffer> {
    const fh = await open(this.path(sha256), 'r');
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
}
