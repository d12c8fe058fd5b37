import { mkdir, open, readdir, readFile, stat } from 'node:fs/promises';
import { join } from 'node:path';
import {
  EdgepackError, TRUST_LIMITS, TrustVerifier, catalogueCode, createRoot, errorCode, errorMessage, generateKeyPair, keyId, rootFileName, signRoot,
  type KeyPair, type SignedRoot,
} from '@edgepack/protocol';
import type { Logger } from './logger.js';

/** What `edgepack serve` publishes: the verified chain of roots and the one devices pin at enrollment. */
export interface TrustChain {
  /** Every root, oldest first, as sent to devices with each desired state. */
  roots: SignedRoot[];
  /** The highest root: what a device enrolling now pins. */
  latest: SignedRoot;
  /** True when the roots are signed by the data dir's own development root key. */
  development: boolean;
}

export const TRUST_DIR = 'trust';
export const DEV_ROOT_KEY_FILE = 'dev-root-key.json';
const ROOT_FILE = /^root-([1-9][0-9]{0,8})\.json$/;
const DEV_ROOT_DAYS = 365;
const WARN_DAYS = 30;

/**
 * Loads `<dataDir>/trust/root-N.json` and checks, as a device would, that the chain verifies
 * from version 1 up, that the highest root is not expired and that it delegates bundle
 * signing to this orchestrator's online key. Anything else would make every device refuse
 * everything we sign, so it refuses to start and says how to fix it.
 *
 * The root keys never live here. Only in a development setup (no trust/ yet) does the first
 * start make a 1-of-1 root from a root key it keeps in trust/dev-root-key.json, so `npm start`
 * works out of the box; such a setup also re-issues its root when it nears expiry or the
 * online key changes. Replace it for production with roots made by `edgepack keys`.
 */
export async function loadTrustChain(o: { dataDir: string; online: KeyPair; log: Logger; now: Date }): Promise<TrustChain> {
  const dir = join(o.dataDir, TRUST_DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const verifier = new TrustVerifier();
  let roots = await readRoots(dir, verifier);
  const devKey = await readDevKey(dir, roots.length === 0);
  if (roots.length === 0) o.log.warn({ dir }, 'DEVELOPMENT trust setup: made a 1-of-1 root whose key is kept in the data dir; for production make offline root keys with `edgepack keys init` and put the signed root-1.json in this directory');
  const onlineId = keyId(o.online.publicKey);
  if (devKey) {
    const latest = roots[roots.length - 1];
    const renew = !latest || !latest.signed.roles.bundles.keyids.includes(onlineId) || Date.parse(latest.signed.expires) - o.now.getTime() < WARN_DAYS * 86_400_000;
    const soleKey = !latest || (latest.signed.roles.root.threshold === 1 && latest.signed.roles.root.keyids.length === 1 && latest.signed.roles.root.keyids[0] === keyId(devKey.publicKey));
    if (renew && soleKey) {
      const version = (latest?.signed.version ?? 0) + 1;
      const next = signRoot(createRoot({
        version, expires: new Date(o.now.getTime() + DEV_ROOT_DAYS * 86_400_000), rootKeys: [devKey.publicKey], rootThreshold: 1, bundlesKeys: [o.online.publicKey],
      }), devKey.secretKey);
      await writeNew(join(dir, rootFileName(version)), JSON.stringify(next, null, 2) + '\n');
      if (latest) o.log.warn({ version, keyId: onlineId }, 'DEVELOPMENT trust setup: issued a new root version for the current online key');
      roots = [...roots, next];
    }
  }
  const chain = verifyChain(verifier, roots);
  const latest = chain[chain.length - 1]!;
  try {
    verifier.checkFresh(latest, o.now);
  } catch (err) {
    throw new EdgepackError(catalogueCode(err, 'ROOT_EXPIRED'), `${rootFileName(latest.signed.version)}: ${errorMessage(err)} (edgepack keys rotate-online … --online-key with the current key makes one)`);
  }
  if (!latest.signed.roles.bundles.keyids.includes(onlineId)) {
    throw new EdgepackError('TRUST_ONLINE_KEY_NOT_DELEGATED',
      `the online signing key ${onlineId} (signing-key.json) is not delegated by ${rootFileName(latest.signed.version)}, which delegates to ${latest.signed.roles.bundles.keyids.join(', ')}; `
      + `every device would refuse what this orchestrator signs. Make and sign a root for this key with \`edgepack keys rotate-online\`, or put back the key it names`);
  }
  const daysLeft = (Date.parse(latest.signed.expires) - o.now.getTime()) / 86_400_000;
  if (daysLeft < WARN_DAYS) o.log.warn({ version: latest.signed.version, expires: latest.signed.expires }, `trusted root expires in ${daysLeft.toFixed(1)} days; sign a newer version before then`);
  o.log.info({ versions: chain.map((r) => r.signed.version), keyId: onlineId, expires: latest.signed.expires }, 'trust chain loaded');
  const r = latest.signed.roles.root;
  const development = !!devKey && r.keyids.length === 1 && r.keyids[0] === keyId(devKey.publicKey);
  return { roots: publishable(chain, o.online), latest, development };
}

/**
 * A device enrolled before roots existed trusts only the online key it pinned (see
 * pinnedKeyRoot); for it to walk to root 1, root 1 must carry that key's signature too.
 * Other devices ignore the extra signature: the key is not in any root role.
 */
function publishable(chain: SignedRoot[], online: KeyPair): SignedRoot[] {
  const [first, ...rest] = chain;
  if (!first!.signed.roles.bundles.keyids.includes(keyId(online.publicKey))) return chain;
  return [signRoot(first!, online.secretKey), ...rest];
}

async function readRoots(dir: string, verifier: TrustVerifier): Promise<SignedRoot[]> {
  const files = (await readdir(dir)).map((f) => ({ f, m: ROOT_FILE.exec(f) })).filter((x) => x.m).map((x) => ({ file: x.f, version: Number(x.m![1]) }));
  files.sort((a, b) => a.version - b.version);
  const roots: SignedRoot[] = [];
  for (const { file, version } of files) {
    const path = join(dir, file);
    const size = (await stat(path)).size;
    if (size > TRUST_LIMITS.maxRootBytes) throw new EdgepackError('TRUST_METADATA_TOO_LARGE', `${path} is ${size} bytes, over the ${TRUST_LIMITS.maxRootBytes}-byte limit`);
    let root: SignedRoot;
    try {
      root = verifier.parseRoot(await readFile(path));
    } catch (err) {
      throw new EdgepackError(catalogueCode(err, 'ROOT_INVALID'), `${path}: ${errorMessage(err)}`);
    }
    if (root.signed.version !== version) throw new EdgepackError('TRUST_ROOT_FILE_MISMATCH', `${path} holds root version ${root.signed.version}; the file name says ${version}`);
    roots.push(root);
  }
  return roots;
}

/** Verifies the chain as a device enrolled at version 1 would walk it; refuses a start on any break. */
function verifyChain(verifier: TrustVerifier, roots: SignedRoot[]): SignedRoot[] {
  const wrap = (root: SignedRoot | undefined, version: number, err: unknown) =>
    new EdgepackError(catalogueCode(err, 'ROOT_INVALID'), `${TRUST_DIR}/${rootFileName(root?.signed.version ?? version)}: ${errorMessage(err)}`);
  if (roots[0]!.signed.version !== 1) throw new EdgepackError('ROOT_VERSION_GAP', `${TRUST_DIR}/ starts at ${rootFileName(roots[0]!.signed.version)}; ${rootFileName(1)} is needed`);
  let trusted: SignedRoot;
  try {
    trusted = verifier.verifyInitialRoot(roots[0]);
  } catch (err) {
    throw wrap(roots[0], 1, err);
  }
  const chain = [trusted];
  for (const next of roots.slice(1)) {
    try {
      trusted = verifier.updateRoot(trusted, next);
    } catch (err) {
      throw wrap(next, trusted.signed.version + 1, err);
    }
    chain.push(trusted);
  }
  return chain;
}

async function readDevKey(dir: string, create: boolean): Promise<KeyPair | null> {
  const file = join(dir, DEV_ROOT_KEY_FILE);
  try {
    return JSON.parse(await readFile(file, 'utf8')) as KeyPair;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  if (!create) return null;
  const key = generateKeyPair();
  await writeNew(file, JSON.stringify(key, null, 2) + '\n', 0o600);
  return key;
}

/** Creates `file`, never overwriting one: a root version, once written, is never changed. */
async function writeNew(file: string, text: string, mode = 0o644): Promise<void> {
  const fh = await open(file, 'wx', mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}
