import { join } from 'node:path';
import Database from 'better-sqlite3';
import { EdgepackError } from '@edgepack/protocol';

export interface DataDirLock {
  release(): void;
}

/**
 * One orchestrator per data dir. A second `serve` on the same dir would mark the running
 * build failed and split the fleet between two brokers, so it must refuse to start.
 *
 * The lock is an exclusive SQLite transaction held open on `<dataDir>/serve.lock`: SQLite takes
 * an OS file lock (POSIX fcntl), which the kernel drops the moment the holder dies, so a
 * kill -9 never leaves a stale lock behind and no PID guessing is needed.
 */
export function lockDataDir(dataDir: string): DataDirLock {
  const file = join(dataDir, 'serve.lock');
  const db = new Database(file, { timeout: 0 });
  try {
    db.pragma('locking_mode = EXCLUSIVE');
    db.exec('BEGIN EXCLUSIVE');
  } catch (err) {
    db.close();
    const code = (err as { code?: string }).code;
    if (code === 'SQLITE_BUSY' || code === 'SQLITE_LOCKED') {
      throw new EdgepackError('DATA_DIR_LOCKED', `another orchestrator is already serving ${dataDir} (it holds ${file}); stop it first, or give this one its own --data-dir`);
    }
    throw err;
  }
  let released = false;
  return {
    release() {
      if (released) return;
      released = true;
      try { db.exec('ROLLBACK'); } catch { /* closing releases it anyway */ }
      db.close();
    },
  };
}
