import { createHash } from 'node:crypto';
import { mkdir, open, rename, stat, truncate } from 'node:fs/promises';
import { join } from 'node:path';
import { CHUNK_SIZE, type BundleFile } from '@edgepack/protocol';
import { sha256File } from './bundle-slots.js';
import { ChunkTransfer, type ChunkSink } from './chunk-transfer.js';

/**
 * downloads/<sha256>.part, renamed to downloads/<sha256> once it checks out. Chunks are
 * written in order, so the part file's length (rounded down to a chunk) is exactly where a
 * transfer resumes after a disconnect or a restart; nothing else needs persisting.
 */
class PartFileSink implements ChunkSink {
  constructor(private readonly dir: string, private readonly file: BundleFile) {}

  private get partPath(): string {
    return join(this.dir, `${this.file.sha256}.part`);
  }

  async open(total: number): Promise<number | 'complete'> {
    await mkdir(this.dir, { recursive: true });
    if (await stat(ChunkDownload.finalPath(this.dir, this.file.sha256)).then(() => true, () => false)) return 'complete';
    const have = await stat(this.partPath).then((s) => s.size, () => 0);
    const next = Math.min(total, Math.floor(have / CHUNK_SIZE));
    await truncate(this.partPath, next * CHUNK_SIZE).catch(async () => { await (await open(this.partPath, 'w')).close(); });
    return next;
  }

  async append(first: number, chunks: readonly Buffer[]): Promise<void> {
    const fh = await open(this.partPath, 'a');
    try {
      let index = first;
      for (const b of chunks) await fh.write(b, 0, b.length, index++ * CHUNK_SIZE);
      await fh.sync();
    } finally {
      await fh.close();
    }
  }

  digest(): Promise<{ sha256: string; length: number }> {
    return sha256File(this.partPath);
  }

  async reset(): Promise<void> {
    await truncate(this.partPath, 0);
  }

  async commit(): Promise<void> {
    await rename(this.partPath, ChunkDownload.finalPath(this.dir, this.file.sha256));
  }
}

/** Downloads one bundle file as MQTT chunks into downloads/<sha256>; the transfer rules are ChunkTransfer's. */
export class ChunkDownload extends ChunkTransfer {
  constructor(bundleId: string, file: BundleFile, dir: string, request: (index: number, count: number) => void, window = 32) {
    super(bundleId, file, new PartFileSink(dir, file), request, window);
  }

  static finalPath(dir: string, sha256: string): string {
    return join(dir, sha256);
  }
}

export function sha256Hex(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}
