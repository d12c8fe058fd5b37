import { X509Certificate, createPrivateKey, randomBytes, webcrypto } from 'node:crypto';
import { chmod, mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import { join } from 'node:path';
import { createSecureContext } from 'node:tls';
import { EdgepackError, errorMessage, normaliseFingerprint } from '@edgepack/protocol';
import type { Logger } from './logger.js';

/**
 * The orchestrator's TLS identity for HTTPS and MQTTS.
 *
 * Either the operator brings a certificate (`--tls-cert`, `--tls-key`, optionally `--tls-ca`
 * for the CA devices should pin), or the first start makes a private CA and a server
 * certificate issued by it, in `<data-dir>/tls/` (keys mode 0600), like the signing key. Later
 * starts reuse them; the server certificate is issued again when it nears its end, names
 * other hosts than it should, or was not issued by the CA. Devices pin the CA, never the server
 * certificate, so a renewal changes nothing for them.
 *
 * Keys are ECDSA P-256: a full TLS handshake costs the server one P-256 signature (tens of
 * microseconds) where RSA-2048 would cost a millisecond or more, which is what 1,000 devices
 * reconnecting at once pay for. Node's crypto makes and checks keys and certificates but cannot
 * issue one, so issuing is done by @peculiar/x509 over Node's WebCrypto (see issueCertificates).
 */
export interface TlsMaterial {
  /** The server's private key, PEM. */
  key: string;
  /** What the server presents: its certificate, any intermediates, and the CA last (so an agent can find the CA it pinned). */
  cert: string;
  /** The CA certificate devices pin, PEM. */
  caCertificate: string;
  /** `sha256:<hex>` of the CA certificate's DER: what `enr_…#sha256:…` tokens carry. */
  caFingerprint: string;
  source: 'self-made' | 'provided';
  serverNotAfter: Date;
}

export type TlsSettings =
  | { mode: 'self-made'; /** Host names and addresses the server certificate must name. */ sans: readonly string[] }
  | { mode: 'provided'; certFile: string; keyFile: string; caFile?: string };

/** A self-made server certificate lives this long and is issued again in its last RENEW_BEFORE. */
export const SERVER_CERT_DAYS = 90;
export const RENEW_BEFORE_DAYS = 30;
const CA_YEARS = 10;
const DAY_MS = 86_400_000;
/** Backdated so a device whose clock is a little behind still accepts a certificate issued just now. */
const BACKDATE_MS = 3_600_000;

export const TLS_DIR = 'tls';
const FILES = { caKey: 'ca-key.pem', caCert: 'ca-cert.pem', serverKey: 'server-key.pem', serverCert: 'server-cert.pem' } as const;

const invalid = (message: string) => new EdgepackError('TLS_MATERIAL_INVALID', message);

/** The SANs a self-made certificate always names, then the public host and --tls-san names, without repeats. */
export function serverSans(publicHost: string, extra: readonly string[]): string[] {
  const names = ['localhost', '127.0.0.1', '::1', publicHost, ...extra].map((n) => n.trim().toLowerCase()).filter(Boolean);
  return [...new Set(names)];
}

/** PEM blocks of one kind, in file order. */
export function pemBlocks(text: string, label = 'CERTIFICATE'): string[] {
  const re = new RegExp(`-----BEGIN ${label}-----[\\s\\S]+?-----END ${label}-----`, 'g');
  return [...text.matchAll(re)].map((m) => `${m[0]}\n`);
}

export function fingerprintOf(pem: string): string {
  return normaliseFingerprint(new X509Certificate(pem).fingerprint256);
}

/** Whether a certificate names every host in `sans` (exactly as TLS clients check it). */
export function coversSans(cert: X509Certificate, sans: readonly string[]): boolean {
  return sans.every((n) => (isIP(n) ? cert.checkIP(n) !== undefined : cert.checkHost(n, { wildcards: false }) !== undefined));
}

/**
 * Why the self-made server certificate must be issued again, or null. Pure: the certificates
 * and the clock in, a reason out.
 */
export function serverCertRenewalReason(server: X509Certificate, ca: X509Certificate, sans: readonly string[], now: Date): string | null {
  if (!server.checkIssued(ca) || !server.verify(ca.publicKey)) return 'it was not issued by the CA in the data dir';
  const left = Date.parse(server.validTo) - now.getTime();
  if (left < RENEW_BEFORE_DAYS * DAY_MS) return left <= 0 ? `it expired on ${server.validTo}` : `it expires on ${server.validTo}, within ${RENEW_BEFORE_DAYS} days`;
  if (Date.parse(server.validFrom) > now.getTime()) return `it is not valid before ${server.validFrom}`;
  if (!coversSans(server, sans)) return `it does not name all of ${sans.join(', ')}`;
  return null;
}

async function readOptional(file: string): Promise<string | null> {
  try {
    return await readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw invalid(`cannot read ${file}: ${errorMessage(err)}`);
  }
}

/** Written next to its final name and renamed, so a crash never leaves half a key; keys are 0600 from the start. */
async function writeAtomic(file: string, text: string, mode: number): Promise<void> {
  const tmp = `${file}.${randomBytes(4).toString('hex')}.tmp`;
  await writeFile(tmp, text, { mode, flag: 'wx' });
  await rename(tmp, file);
  await chmod(file, mode);
}

function toPem(der: ArrayBuffer, label: string): string {
  const b64 = Buffer.from(der).toString('base64').match(/.{1,64}/g)!.join('\n');
  return `-----BEGIN ${label}-----\n${b64}\n-----END ${label}-----\n`;
}

function serial(): string {
  const b = randomBytes(16);
  b[0] = b[0]! & 0x7f; // a positive INTEGER (RFC 5280 §4.1.2.2)
  return b.toString('hex');
}

const ALG = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

/**
 * @peculiar/x509, loaded only when a certificate is to be issued (first start, renewal): it
 * needs the Reflect metadata polyfill, which patches a global, and no other path needs either.
 */
async function x509(): Promise<typeof import('@peculiar/x509')> {
  await import('reflect-metadata');
  const lib = await import('@peculiar/x509');
  lib.cryptoProvider.set(webcrypto as unknown as Parameters<typeof lib.cryptoProvider.set>[0]);
  return lib;
}

async function importEcKey(pem: string): Promise<webcrypto.CryptoKey> {
  const key = createPrivateKey(pem);
  const der = key.export({ format: 'der', type: 'pkcs8' });
  return webcrypto.subtle.importKey('pkcs8', der, ALG, true, ['sign']) as Promise<webcrypto.CryptoKey>;
}

/** A private CA: self-signed, may sign server certificates only (path length 0). */
async function issueCa(now: Date): Promise<{ key: string; cert: string }> {
  const lib = await x509();
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await lib.X509CertificateGenerator.createSelfSigned({
    serialNumber: serial(),
    // Unique per data dir, so two orchestrators' CAs never share an issuer name.
    name: `CN=edgepack orchestrator CA ${randomBytes(4).toString('hex')}, O=edgepack`,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + CA_YEARS * 365 * DAY_MS),
    keys,
    signingAlgorithm: ALG,
    extensions: [
      new lib.BasicConstraintsExtension(true, 0, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.keyCertSign | lib.KeyUsageFlags.cRLSign, true),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { key: toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'), cert: cert.toString('pem') + '\n' };
}

async function issueServerCert(ca: { key: string; cert: string }, sans: readonly string[], now: Date): Promise<{ key: string; cert: string }> {
  const lib = await x509();
  const caCert = new lib.X509Certificate(ca.cert);
  const caKey = await importEcKey(ca.key);
  const keys = (await webcrypto.subtle.generateKey(ALG, true, ['sign', 'verify'])) as webcrypto.CryptoKeyPair;
  const cert = await lib.X509CertificateGenerator.create({
    serialNumber: serial(),
    subject: `CN=${sans.find((n) => !isIP(n)) ?? 'edgepack'}, O=edgepack`,
    issuer: caCert.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + SERVER_CERT_DAYS * DAY_MS),
    signingKey: caKey,
    publicKey: keys.publicKey,
    signingAlgorithm: ALG,
    extensions: [
      new lib.BasicConstraintsExtension(false, undefined, true),
      new lib.KeyUsagesExtension(lib.KeyUsageFlags.digitalSignature, true),
      new lib.ExtendedKeyUsageExtension([lib.ExtendedKeyUsage.serverAuth]),
      new lib.SubjectAlternativeNameExtension(sans.map((n) => (isIP(n) ? { type: 'ip' as const, value: n } : { type: 'dns' as const, value: n }))),
      await lib.AuthorityKeyIdentifierExtension.create(caCert),
      await lib.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { key: toPem(await webcrypto.subtle.exportKey('pkcs8', keys.privateKey), 'PRIVATE KEY'), cert: cert.toString('pem') + '\n' };
}

/** The key and chain must make a TLS context Node accepts, and the key must belong to the leaf. */
function checkPair(key: string, chain: string, where: string): void {
  const leafPem = pemBlocks(chain)[0];
  if (!leafPem) throw invalid(`${where}: no PEM certificate in it`);
  try {
    const leaf = new X509Certificate(leafPem);
    if (!leaf.checkPrivateKey(createPrivateKey(key))) throw new Error('the key does not belong to the certificate');
    createSecureContext({ key, cert: chain });
  } catch (err) {
    throw invalid(`${where}: ${errorMessage(err)}`);
  }
}

async function loadSelfMade(dataDir: string, sans: readonly string[], now: Date, log: Logger): Promise<TlsMaterial> {
  const dir = join(dataDir, TLS_DIR);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const path = (f: keyof typeof FILES) => join(dir, FILES[f]);
  let caKey = await readOptional(path('caKey'));
  let caCert = await readOptional(path('caCert'));
  if ((caKey === null) !== (caCert === null)) {
    // Never make a new CA over half of an old one: every enrolled device pins the old one.
    throw invalid(`${dir} holds ${caKey === null ? FILES.caCert : FILES.caKey} without ${caKey === null ? FILES.caKey : FILES.caCert}; restore the missing file (devices pin this CA)`);
  }
  if (caKey === null || caCert === null) {
    const ca = await issueCa(now);
    await writeAtomic(path('caKey'), ca.key, 0o600);
    await writeAtomic(path('caCert'), ca.cert, 0o644);
    ({ key: caKey, cert: caCert } = ca);
    log.info({ dir, caFingerprint: fingerprintOf(caCert) }, 'created a private TLS CA');
  } else {
    await chmod(path('caKey'), 0o600);
  }
  let ca: X509Certificate;
  try {
    ca = new X509Certificate(caCert);
    if (!ca.checkPrivateKey(createPrivateKey(caKey))) throw new Error(`${FILES.caKey} does not belong to ${FILES.caCert}`);
  } catch (err) {
    throw invalid(`${dir}: ${errorMessage(err)}`);
  }
  if (Date.parse(ca.validTo) <= now.getTime()) throw invalid(`the CA in ${dir} expired on ${ca.validTo}`);

  let serverKey = await readOptional(path('serverKey'));
  let serverCert = await readOptional(path('serverCert'));
  let reason: string | null = serverKey === null || serverCert === null ? 'there is none yet' : null;
  if (!reason) {
    try {
      const leaf = new X509Certificate(serverCert!);
      reason = leaf.checkPrivateKey(createPrivateKey(serverKey!)) ? serverCertRenewalReason(leaf, ca, sans, now) : 'its key does not belong to it';
    } catch (err) {
      reason = `it cannot be read (${errorMessage(err)})`;
    }
  }
  if (reason) {
    const issued = await issueServerCert({ key: caKey, cert: caCert }, sans, now);
    await writeAtomic(path('serverKey'), issued.key, 0o600);
    await writeAtomic(path('serverCert'), issued.cert, 0o644);
    ({ key: serverKey, cert: serverCert } = issued);
    log.info({ sans, reason }, 'issued the TLS server certificate');
  } else {
    await chmod(path('serverKey'), 0o600);
  }
  const chain = pemBlocks(serverCert!)[0]! + caCert;
  checkPair(serverKey!, chain, path('serverCert'));
  return {
    key: serverKey!, cert: chain, caCertificate: caCert, caFingerprint: fingerprintOf(caCert), source: 'self-made',
    serverNotAfter: new Date(new X509Certificate(serverCert!).validTo),
  };
}

async function loadProvided(s: Extract<TlsSettings, { mode: 'provided' }>, now: Date, log: Logger): Promise<TlsMaterial> {
  const read = async (file: string, what: string) => {
    const text = await readOptional(file);
    if (text === null) throw invalid(`${what} ${file} does not exist`);
    return text;
  };
  const chainText = await read(s.certFile, '--tls-cert');
  const key = await read(s.keyFile, '--tls-key');
  const chain = pemBlocks(chainText);
  if (chain.length === 0) throw invalid(`--tls-cert ${s.certFile} holds no PEM certificate`);
  const caPem = s.caFile ? pemBlocks(await read(s.caFile, '--tls-ca'))[0] : chain[chain.length - 1];
  if (!caPem) throw invalid(`--tls-ca ${s.caFile} holds no PEM certificate`);
  const caFingerprint = fingerprintOf(caPem);
  // The CA goes out with the chain, so an agent can find the one it pinned in what it is shown.
  const served = chain.some((c) => fingerprintOf(c) === caFingerprint) ? chain : [...chain, caPem];
  checkPair(key, served.join(''), `--tls-cert ${s.certFile} with --tls-key ${s.keyFile}`);
  const leaf = new X509Certificate(chain[0]!);
  const notAfter = new Date(leaf.validTo);
  if (notAfter.getTime() <= now.getTime()) throw invalid(`--tls-cert ${s.certFile} expired on ${leaf.validTo}`);
  if (notAfter.getTime() - now.getTime() < RENEW_BEFORE_DAYS * DAY_MS) log.warn({ file: s.certFile, notAfter }, 'the TLS certificate expires soon; replace the file and restart');
  return { key, cert: served.join(''), caCertificate: caPem, caFingerprint, source: 'provided', serverNotAfter: notAfter };
}

export async function loadTlsMaterial(opts: { dataDir: string; settings: TlsSettings; now: Date; log: Logger }): Promise<TlsMaterial> {
  return opts.settings.mode === 'self-made'
    ? loadSelfMade(opts.dataDir, opts.settings.sans, opts.now, opts.log)
    : loadProvided(opts.settings, opts.now, opts.log);
}

/** Days between renewal checks while the orchestrator runs. */
export const RENEWAL_CHECK_MS = 12 * 3_600_000;

/**
 * For a long-running orchestrator: the self-made material again if the server certificate was
 * renewed since `current`, else null. Provided certificates are the operator's to replace.
 */
export async function renewTlsMaterial(current: TlsMaterial, opts: { dataDir: string; settings: TlsSettings; now: Date; log: Logger }): Promise<TlsMaterial | null> {
  if (opts.settings.mode !== 'self-made') return null;
  const next = await loadSelfMade(opts.dataDir, opts.settings.sans, opts.now, opts.log);
  return next.cert === current.cert ? null : next;
}
