import { open, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { TRUST_LIMITS, type SignedRoot } from '@edgepack/protocol';
import { writeFileAtomic } from './durable-file.js';

/** What enrollment gives a device; persisted (0600) so a restart never re-enrolls. */
export interface Identity {
  deviceId: string;
  name: string;
  profile: string;
  server: string;
  publicKey: string;
  secretKey: string;
  /** Pinned at enrollment; verifies nothing itself once `trustedRoot` is there (kept for devices enrolled before roots existed). */
  orchestratorPublicKey: string;
  /** The root pinned at enrollment (checked by TrustVerifier.verifyInitialRoot); absent in identities from before trust metadata. */
  trustedRoot?: SignedRoot;
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

/** Next to identity.json: the highest root this device has verified, written before it is relied on (TUF §5.3.8). */
export const TRUST_FILE = 'trust.json';

/** The persisted root as read, still to be checked by the caller; null if there is none yet. */
export async function loadTrustedRoot(dataDir: string): Promise<Buffer | null> {
  let fh;
  try {
    fh = await open(join(dataDir, TRUST_FILE), 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    // At most one byte past the cap: enough for the verifier to refuse it as too large, unread.
    const buf = Buffer.alloc(TRUST_LIMITS.maxRootBytes + 1);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

export function saveTrustedRoot(dataDir: string, root: SignedRoot): Promise<void> {
  return writeFileAtomic(join(dataDir, TRUST_FILE), JSON.stringify(root, null, 2), 0o600);
}
