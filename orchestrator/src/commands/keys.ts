// `edgepack keys …`: the offline side of trust metadata. Root keys are made, kept and used
// here, on whatever machine holds them; the orchestrator only ever sees the signed roots.
import { mkdir, open, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import {
  EdgepackError, TRUST_LIMITS, TrustVerifier, createRoot, errorMessage, generateKeyPair, keyId, publicKeyOf, rootFileName, signRoot,
  type KeyPair, type SignedRoot,
} from '@edgepack/protocol';

export const KEYS_HELP = `usage: edgepack keys <command> [options]

  init --keys N --threshold T --out DIR (--online-key FILE | --data-dir DIR) [--expires-days D]
        Makes N offline root keys (DIR/root-key-1.json …, mode 0600) and DIR/root-1.json:
        version 1, root role T of N, bundle signing delegated to the online key (FILE, or the
        orchestrator's DIR/signing-key.json; only its public key is read). Signed by all N keys.
  sign ROOT.json --key KEY.json [--key KEY.json …] [--previous PREV.json]
        Adds each key's signature to ROOT.json (in place), then shows who has signed and what
        is still needed, against ROOT.json's own root role and the previous version's
        (PREV.json, default root-(N-1).json next to ROOT.json, if there is one).
  rotate-online ROOT.json --online-key FILE [--create] [--expires-days D] [--out FILE]
        Writes the next root version (default: root-(N+1).json next to ROOT.json) delegating
        bundle signing to the key in FILE instead; root keys unchanged. --create makes FILE as
        a new key pair first (copy it to the orchestrator's data dir as signing-key.json).
        Unsigned: sign it with a threshold of the current root keys.
  rotate-root ROOT.json --keys N --threshold T --out DIR [--expires-days D]
        Writes root-(N+1).json next to ROOT.json whose root role is N new keys, made in
        DIR/root-key-*.json, threshold T; bundle signing unchanged. Signed by the new keys; it
        also needs a threshold of the current root keys (edgepack keys sign).
  verify ROOT.json [ROOT.json …]
        Walks the chain as a device would and prints where it stands.

The orchestrator loads <data-dir>/trust/root-N.json at start; put every signed version there.`;

class UsageError extends Error {}

const DAY = 86_400_000;

function int(name: string, value: string | undefined, dflt?: number): number {
  if (value === undefined) {
    if (dflt === undefined) throw new UsageError(`${name} is required`);
    return dflt;
  }
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new UsageError(`${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

/** Creates `file` (never overwriting) and fsyncs it. */
async function writeNew(file: string, text: string, mode: number): Promise<void> {
  const fh = await open(file, 'wx', mode);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
}

async function replace(file: string, text: string): Promise<void> {
  const tmp = `${file}.tmp-${process.pid}`;
  await rm(tmp, { force: true });
  await writeNew(tmp, text, 0o644);
  await rename(tmp, file);
}

const rootText = (r: SignedRoot) => JSON.stringify(r, null, 2) + '\n';

async function readRoot(verifier: TrustVerifier, file: string): Promise<SignedRoot> {
  const bytes = await readFile(file);
  if (bytes.length > TRUST_LIMITS.maxRootBytes) throw new EdgepackError('TRUST_METADATA_TOO_LARGE', `${file} is ${bytes.length} bytes, over the ${TRUST_LIMITS.maxRootBytes}-byte limit`);
  try {
    return verifier.parseRoot(bytes);
  } catch (err) {
    throw new EdgepackError((err as EdgepackError).code ?? 'ROOT_INVALID', `${file}: ${errorMessage(err)}`);
  }
}

/** A secret key file: {publicKey, secretKey} as `keys init` and the orchestrator write them. */
async function readSecretKey(file: string): Promise<KeyPair> {
  let k: Partial<KeyPair>;
  try {
    k = JSON.parse(await readFile(file, 'utf8')) as Partial<KeyPair>;
  } catch (err) {
    throw new EdgepackError('KEY_INVALID', `${file}: not a key file (${errorMessage(err)})`);
  }
  if (typeof k.secretKey !== 'string') throw new EdgepackError('KEY_INVALID', `${file} holds no secretKey`);
  const publicKey = publicKeyOf(k.secretKey);
  if (k.publicKey !== undefined && k.publicKey !== publicKey) throw new EdgepackError('KEY_INVALID', `${file}: its publicKey is not the public half of its secretKey`);
  return { publicKey, secretKey: k.secretKey };
}

/** A public key from a key file (JSON with publicKey) or a file holding just the base64 key. */
async function readPublicKey(file: string): Promise<string> {
  const text = (await readFile(file, 'utf8')).trim();
  let pub: unknown = text;
  if (text.startsWith('{')) {
    try {
      pub = (JSON.parse(text) as { publicKey?: unknown }).publicKey;
    } catch (err) {
      throw new EdgepackError('KEY_INVALID', `${file}: not JSON (${errorMessage(err)})`);
    }
  }
  if (typeof pub !== 'string' || !/^[A-Za-z0-9+/]{43}=$/.test(pub) || Buffer.from(pub, 'base64').toString('base64') !== pub) {
    throw new EdgepackError('KEY_INVALID', `${file} holds no ed25519 public key`);
  }
  return pub;
}

/** Makes `count` key files DIR/root-key-<i>.json (0600), numbered after any already there. */
async function makeRootKeys(dir: string, count: number): Promise<{ key: KeyPair; file: string }[]> {
  const out: { key: KeyPair; file: string }[] = [];
  for (let i = 1; out.length < count; i++) {
    const file = join(dir, `root-key-${i}.json`);
    const key = generateKeyPair();
    try {
      await writeNew(file, JSON.stringify({ keyid: keyId(key.publicKey), ...key }, null, 2) + '\n', 0o600);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EEXIST') continue;
      throw err;
    }
    out.push({ key, file });
  }
  return out;
}

function describe(verifier: TrustVerifier, doc: SignedRoot, previous: SignedRoot | null): string[] {
  const s = doc.signed;
  const own = verifier.signatureStatus(doc, doc);
  const lines = [
    `${rootFileName(s.version)}: version ${s.version}, expires ${s.expires}`,
    `  root keys      ${s.roles.root.keyids.join(', ')} (threshold ${s.roles.root.threshold})`,
    `  bundle keys    ${s.roles.bundles.keyids.join(', ')}`,
    `  signed by its own root keys: ${own.signers.length} of ${own.threshold} needed${own.met ? ' ✓' : ''}${own.signers.length ? ` (${own.signers.join(', ')})` : ''}`,
  ];
  if (previous) {
    const prev = verifier.signatureStatus(previous, doc);
    lines.push(`  signed by version ${previous.signed.version}'s root keys: ${prev.signers.length} of ${prev.threshold} needed${prev.met ? ' ✓' : ''}${prev.signers.length ? ` (${prev.signers.join(', ')})` : ''}`);
  }
  return lines;
}

async function previousOf(verifier: TrustVerifier, file: string, doc: SignedRoot): Promise<SignedRoot | null> {
  if (doc.signed.version <= 1) return null;
  try {
    return await readRoot(verifier, join(dirname(file), rootFileName(doc.signed.version - 1)));
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

async function init(args: string[], now: Date): Promise<number> {
  const { values } = parseArgs({ args, options: { keys: { type: 'string' }, threshold: { type: 'string' }, out: { type: 'string' }, 'online-key': { type: 'string' }, 'data-dir': { type: 'string' }, 'expires-days': { type: 'string' } }, strict: true });
  const n = int('--keys', values.keys);
  const t = int('--threshold', values.threshold);
  if (t > n) throw new UsageError(`--threshold ${t} is more than --keys ${n}: no root could ever be signed`);
  if (!values.out) throw new UsageError('--out DIR is required');
  const onlineFile = values['online-key'] ?? (values['data-dir'] ? join(values['data-dir'], 'signing-key.json') : undefined);
  if (!onlineFile) throw new UsageError('--online-key FILE or --data-dir DIR (for its signing-key.json) is required');
  const online = await readPublicKey(onlineFile);
  const dir = resolve(values.out);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const rootFile = join(dir, rootFileName(1));
  // Refuse before making any key, so a second init cannot leave stray keys beside an old root.
  if (await readFile(rootFile).then(() => true, () => false)) throw new EdgepackError('TRUST_ROOT_EXISTS', `${rootFile} already exists`);
  const keys = await makeRootKeys(dir, n);
  const root = keys.reduce((r, k) => signRoot(r, k.key.secretKey), createRoot({
    version: 1, expires: new Date(now.getTime() + int('--expires-days', values['expires-days'], 365) * DAY),
    rootKeys: keys.map((k) => k.key.publicKey), rootThreshold: t, bundlesKeys: [online],
  }));
  await writeNew(rootFile, rootText(root), 0o644);
  for (const k of keys) console.log(`root key ${keyId(k.key.publicKey)} → ${k.file} (0600: keep it offline)`);
  console.log(`${rootFile} written; copy it to <data-dir>/trust/ on the orchestrator`);
  for (const line of describe(new TrustVerifier(), root, null)) console.log(line);
  return 0;
}

async function sign(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { key: { type: 'string', multiple: true }, previous: { type: 'string' } }, allowPositionals: true, strict: true });
  if (positionals.length !== 1) throw new UsageError('sign takes one ROOT.json');
  if (!values.key?.length) throw new UsageError('--key KEY.json is required');
  const file = positionals[0]!;
  const verifier = new TrustVerifier();
  let root = await readRoot(verifier, file);
  const previous = values.previous ? await readRoot(verifier, values.previous) : await previousOf(verifier, file, root);
  if (previous && previous.signed.version !== root.signed.version - 1) {
    throw new UsageError(`${values.previous} is version ${previous.signed.version}; ${file} (version ${root.signed.version}) follows version ${root.signed.version - 1}`);
  }
  for (const keyFile of values.key) {
    const key = await readSecretKey(keyFile);
    const id = keyId(key.publicKey);
    const useful = root.signed.roles.root.keyids.includes(id) || !!previous?.signed.roles.root.keyids.includes(id);
    root = signRoot(root, key.secretKey);
    console.log(`signed with ${id}${useful ? '' : ` — note: ${id} is a root key of neither this version${previous ? ' nor the previous one' : ''}, so this signature will not count`}`);
  }
  await replace(file, rootText(root));
  for (const line of describe(verifier, root, previous)) console.log(line);
  return 0;
}

async function rotateOnline(args: string[], now: Date): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { 'online-key': { type: 'string' }, create: { type: 'boolean' }, 'expires-days': { type: 'string' }, out: { type: 'string' } }, allowPositionals: true, strict: true });
  if (positionals.length !== 1) throw new UsageError('rotate-online takes one ROOT.json (the current version)');
  if (!values['online-key']) throw new UsageError('--online-key FILE is required');
  const verifier = new TrustVerifier();
  const current = await readRoot(verifier, positionals[0]!);
  const keyFile = values['online-key'];
  if (values.create) {
    const key = generateKeyPair();
    await writeNew(keyFile, JSON.stringify(key, null, 2) + '\n', 0o600);
    console.log(`new online key ${keyId(key.publicKey)} → ${keyFile} (0600: this one goes to the orchestrator as signing-key.json)`);
  }
  const online = await readPublicKey(keyFile);
  const s = current.signed;
  const rootKeys = s.roles.root.keyids.map((id) => s.keys[id]!.public);
  const next = createRoot({
    version: s.version + 1, expires: new Date(now.getTime() + int('--expires-days', values['expires-days'], 365) * DAY),
    rootKeys, rootThreshold: s.roles.root.threshold, bundlesKeys: [online],
  });
  const out = values.out ?? join(dirname(positionals[0]!), rootFileName(next.signed.version));
  await writeNew(out, rootText(next), 0o644);
  console.log(`${out} written: version ${next.signed.version} delegates bundle signing to ${keyId(online)} instead of ${s.roles.bundles.keyids.join(', ')}`);
  console.log(`sign it with ${s.roles.root.threshold} of the root keys: edgepack keys sign ${out} --key root-key-1.json --key …`);
  return 0;
}

async function rotateRoot(args: string[], now: Date): Promise<number> {
  const { values, positionals } = parseArgs({ args, options: { keys: { type: 'string' }, threshold: { type: 'string' }, out: { type: 'string' }, 'expires-days': { type: 'string' } }, allowPositionals: true, strict: true });
  if (positionals.length !== 1) throw new UsageError('rotate-root takes one ROOT.json (the current version)');
  const n = int('--keys', values.keys);
  const t = int('--threshold', values.threshold);
  if (t > n) throw new UsageError(`--threshold ${t} is more than --keys ${n}: no root could ever be signed`);
  if (!values.out) throw new UsageError('--out DIR is required (for the new root keys and the new root)');
  const verifier = new TrustVerifier();
  const current = await readRoot(verifier, positionals[0]!);
  const dir = resolve(values.out);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const s = current.signed;
  const out = join(dirname(positionals[0]!), rootFileName(s.version + 1));
  if (await readFile(out).then(() => true, () => false)) throw new EdgepackError('TRUST_ROOT_EXISTS', `${out} already exists`);
  const keys = await makeRootKeys(dir, n);
  const next = keys.reduce((r, k) => signRoot(r, k.key.secretKey), createRoot({
    version: s.version + 1, expires: new Date(now.getTime() + int('--expires-days', values['expires-days'], 365) * DAY),
    rootKeys: keys.map((k) => k.key.publicKey), rootThreshold: t, bundlesKeys: s.roles.bundles.keyids.map((id) => s.keys[id]!.public),
  }));
  await writeNew(out, rootText(next), 0o644);
  for (const k of keys) console.log(`new root key ${keyId(k.key.publicKey)} → ${k.file} (0600: keep it offline)`);
  console.log(`${out} written, signed by the new keys; it also needs ${s.roles.root.threshold} of version ${s.version}'s root keys: edgepack keys sign ${out} --key OLD-KEY.json …`);
  for (const line of describe(verifier, next, current)) console.log(line);
  return 0;
}

async function verify(args: string[], now: Date): Promise<number> {
  const { positionals } = parseArgs({ args, options: {}, allowPositionals: true, strict: true });
  if (positionals.length === 0) throw new UsageError('verify takes ROOT.json files');
  const verifier = new TrustVerifier();
  const roots = await Promise.all(positionals.map((f) => readRoot(verifier, f)));
  roots.sort((a, b) => a.signed.version - b.signed.version);
  let trusted = verifier.verifyInitialRoot(roots[0]);
  console.log(`version ${trusted.signed.version}: signed by a threshold of its own root keys`);
  const walk = verifier.walkChain(trusted, roots.slice(1));
  trusted = walk.root;
  for (const v of walk.walked) console.log(`version ${v}: follows, signed by a threshold of the previous and of its own root keys`);
  for (const line of describe(verifier, trusted, null)) console.log(line);
  let fresh = true;
  try { verifier.checkFresh(trusted, now); } catch (err) { fresh = false; console.log(`  ${errorMessage(err)}`); }
  if (walk.error) {
    console.error(`edgepack keys verify: [${walk.error.code}] ${walk.error.message}`);
    return 1;
  }
  return fresh ? 0 : 1;
}

export async function run(argv: string[]): Promise<number> {
  const [sub, ...rest] = argv;
  // The one clock read of the command, passed down: roots expire relative to it.
  const now = new Date();
  try {
    switch (sub) {
      case 'init': return await init(rest, now);
      case 'sign': return await sign(rest);
      case 'rotate-online': return await rotateOnline(rest, now);
      case 'rotate-root': return await rotateRoot(rest, now);
      case 'verify': return await verify(rest, now);
      case undefined: case '--help': case '-h': case 'help':
        console.log(KEYS_HELP);
        return sub === undefined ? 2 : 0;
      default:
        throw new UsageError(`unknown keys command '${sub}'`);
    }
  } catch (err) {
    // parseArgs reports unknown or malformed flags with ERR_PARSE_ARGS_* codes.
    if (err instanceof UsageError || /^ERR_PARSE_ARGS/.test(String((err as { code?: unknown }).code))) {
      console.error(`edgepack keys: ${(err as Error).message}\n\n${KEYS_HELP}`);
      return 2;
    }
    throw err;
  }
}
