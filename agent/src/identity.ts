import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { writeFileAtomic } from './durable-file.js';

/** What enrollment gives a device; persisted (0600) so a restart never re-enrolls. */
export interface Identity {
  deviceId: string;
  name: string;
  profile: string;
  server: string;
  publicKey: string;
  secretKey: string;
  orchestratorPublicKey: string;
  mqtt: { host: string; port: number };
  heartbeatSec: number;
  enrolledAt: string;
}

export async function loadIdentity(dataDir: string): Promise<Identity | null> {
  try {
    return JSON.parse(await readFile(join(dataDir, 'identity.json'), 'utf8')) as Identity;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

export function saveIdentity(dataDir: string, identity: Identity): Promise<void> {
  return writeFileAtomic(join(dataDir, 'identity.json'), JSON.stringify(identity, null, 2), 0o600);
}
