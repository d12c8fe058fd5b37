import { randomBytes } from 'node:crypto';
import { chmod, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { generateKeyPair, keyId, type KeyPair } from '@edgepack/protocol';

export interface OrchestratorSecrets {
  signing: KeyPair & { keyId: string };
  adminToken: string;
}

/**
 * Loads the orchestrator's ed25519 signing key and admin API token from the data dir,
 * creating them on first start. Both files are mode 0600: they are the keys to the fleet.
 */
export async function loadOrCreateSecrets(dataDir: string): Promise<OrchestratorSecrets & { created: boolean }> {
  const keyFile = join(dataDir, 'signing-key.json');
  const tokenFile = join(dataDir, 'admin-token');
  let created = false;
  let signing: KeyPair;
  try {
    signing = JSON.parse(await readFile(keyFile, 'utf8')) as KeyPair;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    signing = generateKeyPair();
    await writeFile(keyFile, JSON.stringify(signing, null, 2) + '\n', { mode: 0o600, flag: 'wx' });
    created = true;
  }
  let adminToken: string;
  try {
    adminToken = (await readFile(tokenFile, 'utf8')).trim();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    adminToken = `ept_${randomBytes(24).toString('base64url')}`;
    await writeFile(tokenFile, adminToken + '\n', { mode: 0o600, flag: 'wx' });
    created = true;
  }
  // Tighten modes even when the files pre-exist (copied in, restored from backup).
  await chmod(keyFile, 0o600);
  await chmod(tokenFile, 0o600);
  return { signing: { ...signing, keyId: keyId(signing.publicKey) }, adminToken, created };
}
