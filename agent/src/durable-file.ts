import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';

/** fsyncs a directory so a rename inside it survives power loss, not just a process crash. */
export async function fsyncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try { await fh.sync(); } finally { await fh.close(); }
}

let tmpCounter = 0;

/** The prefix every temp sibling of `file` starts with; a restart may delete leftovers by it. */
export function tempPrefix(file: string): string {
  return `${file}.tmp-`;
}

/**
 * Replaces `file` atomically: write a sibling temp file, fsync it, rename over the target,
 * fsync the directory. A kill -9 at any point leaves either the old or the new content.
 * Each call gets its own temp name (pid, counter, random), so two writes in flight never
 * share, truncate or steal each other's temp file; the later rename simply wins.
 */
export async function writeFileAtomic(file: string, data: string | Uint8Array, mode = 0o600): Promise<void> {
  const tmp = `${tempPrefix(file)}${process.pid}-${++tmpCounter}-${randomBytes(4).toString('hex')}`;
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dirname(file));
}
