import {
  EdgepackError, EnrollResponseSchema, PROTOCOL_VERSION, TrustVerifier, Validator, catalogueCode, errorMessage, generateKeyPair, parseEnrollmentToken,
  type DeviceFacts, type EnrollRequest, type EnrollResponse, type SignedRoot,
} from '@edgepack/protocol';
import type { Identity } from './identity.js';
import { certificateFingerprint, derToPem, presentedChain, requestText } from './pinned-tls.js';

export interface EnrollArgs {
  server: string;
  /** `enr_…`, or `enr_…#sha256:<CA fingerprint>` to authenticate the server before the token is sent. */
  token: string;
  facts: DeviceFacts;
  name?: string;
  profile?: string;
  /** Allows enrolling over plain http (and a plain MQTT session if the orchestrator names one). */
  allowPlaintext?: boolean;
  /** Over https with a token that pins no CA: trust the CA the server presents this first time (trust on first use). */
  insecureEnroll?: boolean;
  /** Told when the agent trusts something it could not check (insecure enrollment). */
  warn?: (fields: Record<string, unknown>, message: string) => void;
  timeoutMs?: number;
}

/** The CA this enrollment trusts for HTTPS, found in the server's presented chain before any token is sent. */
async function caForEnrollment(url: URL, pin: string | undefined, args: EnrollArgs): Promise<string> {
  let chain: Buffer[];
  try {
    chain = await presentedChain(url, args.timeoutMs);
  } catch (err) {
    throw new EdgepackError('ENROLL_UNREACHABLE', `cannot reach ${url.origin} over TLS: ${errorMessage(err)}`);
  }
  if (chain.length === 0) throw new EdgepackError('ENROLL_SERVER_UNTRUSTED', `${url.origin} presented no certificate; the token was not sent`);
  if (pin) {
    const match = chain.find((der) => certificateFingerprint(der) === pin);
    if (!match) {
      throw new EdgepackError('ENROLL_SERVER_UNTRUSTED', `${url.origin} presented certificates ${chain.map((d) => certificateFingerprint(d)).join(', ')}, none of them the pinned CA ${pin}; the token was not sent`);
    }
    return derToPem(match);
  }
  if (!args.insecureEnroll) {
    throw new EdgepackError('ENROLL_INSECURE', `the token pins no CA, so ${url.origin} cannot be told from an impostor: use a token made by "edgepack tokens create" or POST /v1/enrollment-tokens (enr_…#sha256:…), or pass --insecure-enroll to trust the certificate it presents now`);
  }
  // Trust on first use: the chain's last certificate (the root, as the orchestrator sends it).
  const root = derToPem(chain[chain.length - 1]!);
  args.warn?.({ server: url.origin, caFingerprint: certificateFingerprint(root) }, 'insecure enrollment: trusting the CA this server presents without a pinned fingerprint');
  return root;
}

/** What the device keeps for TLS from a checked answer; throws if the answer contradicts what this enrollment trusted. */
function tlsOfAnswer(r: EnrollResponse, pinnedCa: string | undefined, pin: string | undefined, args: EnrollArgs): Identity['tls'] {
  const protocol = r.mqtt.protocol ?? 'mqtt';
  if (pinnedCa) {
    const fp = certificateFingerprint(pinnedCa);
    if (r.tls && certificateFingerprint(r.tls.caCertificate) !== fp) {
      throw new EdgepackError('ENROLL_BAD_RESPONSE', `the enrollment answer names CA ${certificateFingerprint(r.tls.caCertificate)}, not the ${fp} this connection was checked with`);
    }
    if (protocol !== 'mqtts' && !args.allowPlaintext) {
      throw new EdgepackError('ENROLL_INSECURE', 'the orchestrator named a plain MQTT broker to a device enrolled over TLS; pass --allow-plaintext to accept it');
    }
    return { caCertificate: pinnedCa, caFingerprint: fp };
  }
  // Enrolled over plain http (--allow-plaintext): an MQTTS broker needs the CA the answer carries,
  // checked against the token's fingerprint when there is one.
  if (protocol !== 'mqtts') return undefined;
  if (!r.tls) throw new EdgepackError('ENROLL_BAD_RESPONSE', 'the orchestrator named an MQTTS broker but sent no CA certificate');
  const fp = certificateFingerprint(r.tls.caCertificate);
  if (pin && fp !== pin) throw new EdgepackError('ENROLL_SERVER_UNTRUSTED', `the enrollment answer names CA ${fp}, not the pinned ${pin}`);
  return { caCertificate: r.tls.caCertificate, caFingerprint: fp };
}

/**
 * Enrolls with a single-use token; the device's keypair is made here and its secret never leaves
 * the device. Over https the server is authenticated before the token leaves: see pinned-tls.ts.
 */
export async function enroll(args: EnrollArgs): Promise<Identity> {
  const { secret, caFingerprint: pin } = parseEnrollmentToken(args.token);
  let base: URL;
  try {
    base = new URL(args.server);
  } catch {
    throw new EdgepackError('CONFIG_INVALID', `--server must be a URL such as https://orchestrator:8443, got ${JSON.stringify(args.server)}`);
  }
  if (base.protocol !== 'https:' && base.protocol !== 'http:') throw new EdgepackError('CONFIG_INVALID', `--server must be https:// (or http:// with --allow-plaintext), got ${base.protocol}`);
  if (base.protocol === 'http:' && !args.allowPlaintext) {
    throw new EdgepackError('ENROLL_INSECURE', `${base.origin} is plain http: the token and the keys this device will trust would cross the network unprotected; use https, or pass --allow-plaintext`);
  }
  const url = new URL('/v1/enroll', base);
  const pinnedCa = url.protocol === 'https:' ? await caForEnrollment(url, pin, args) : undefined;

  const keys = generateKeyPair();
  const body: EnrollRequest = {
    v: PROTOCOL_VERSION, token: secret, publicKey: keys.publicKey, facts: args.facts,
    ...(args.name ? { name: args.name } : {}), ...(args.profile ? { profile: args.profile } : {}),
  };
  let res;
  try {
    res = await requestText(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body), ...(pinnedCa ? { ca: pinnedCa } : {}), ...(args.timeoutMs ? { timeoutMs: args.timeoutMs } : {}) });
  } catch (err) {
    const code = (err as { code?: string }).code ?? '';
    // The handshake under the pinned CA failed: the server is not who the pin says (a certificate
    // not issued by that CA, or not for this host name). Nothing was sent.
    if (pinnedCa && /CERT|SELF_SIGNED|UNABLE_TO|HOSTNAME|ERR_TLS/.test(code)) {
      throw new EdgepackError('ENROLL_SERVER_UNTRUSTED', `${url.origin} does not prove itself with the pinned CA: ${errorMessage(err)}; the token was not sent`);
    }
    throw new EdgepackError('ENROLL_UNREACHABLE', `cannot reach ${url.toString()}: ${errorMessage(err)}`);
  }
  if (res.status < 200 || res.status >= 300) {
    let detail = res.text;
    try { const e = JSON.parse(res.text) as { error?: { code?: string; message?: string } }; detail = `[${e.error?.code}] ${e.error?.message}`; } catch { /* not JSON */ }
    throw new EdgepackError('ENROLL_REFUSED', `enrollment refused (${res.status}): ${detail}`);
  }
  const parsed = new Validator('enroll response', EnrollResponseSchema).parse(res.text);
  if (!parsed.ok) throw new EdgepackError('ENROLL_BAD_RESPONSE', parsed.reason);
  const r = parsed.value;
  // First: does the answer agree with the CA this connection was checked with?
  const tls = tlsOfAnswer(r, pinnedCa, pin, args);
  // The root pinned here decides every key this device will ever trust, so it must be a
  // well-formed root signed by a threshold of its own keys; without one there is no chain.
  if (r.trustedRoot === undefined) throw new EdgepackError('ENROLL_BAD_RESPONSE', 'enrollment response carries no trusted root to pin');
  let trustedRoot: SignedRoot;
  try {
    trustedRoot = new TrustVerifier().verifyInitialRoot(r.trustedRoot);
  } catch (err) {
    throw new EdgepackError(catalogueCode(err, 'ROOT_INVALID'), `enrollment response: the root to pin is refused: ${errorMessage(err)}`);
  }
  return {
    deviceId: r.deviceId, name: r.name, profile: r.profile, server: args.server, publicKey: keys.publicKey, secretKey: keys.secretKey,
    orchestratorPublicKey: r.orchestratorPublicKey, trustedRoot, mqtt: { host: r.mqtt.host, port: r.mqtt.port, protocol: r.mqtt.protocol ?? 'mqtt' },
    ...(tls ? { tls } : {}), heartbeatSec: r.heartbeatSec, enrolledAt: new Date().toISOString(),
  };
}
