import {
  EdgepackError, EnrollResponseSchema, PROTOCOL_VERSION, TrustVerifier, Validator, catalogueCode, errorCode, errorMessage, generateKeyPair,
  type DeviceFacts, type EnrollRequest, type SignedRoot,
} from '@edgepack/protocol';
import type { Identity } from './identity.js';

/** Enrolls with a single-use token; the device's keypair is made here and its secret never leaves the device. */
export async function enroll(args: { server: string; token: string; facts: DeviceFacts; name?: string; profile?: string; fetchImpl?: typeof fetch }): Promise<Identity> {
  const keys = generateKeyPair();
  const body: EnrollRequest = {
    v: PROTOCOL_VERSION, token: args.token, publicKey: keys.publicKey, facts: args.facts,
    ...(args.name ? { name: args.name } : {}), ...(args.profile ? { profile: args.profile } : {}),
  };
  const url = new URL('/v1/enroll', args.server).toString();
  let res: Response;
  try {
    res = await (args.fetchImpl ?? fetch)(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  } catch (err) {
    throw new EdgepackError('ENROLL_UNREACHABLE', `cannot reach ${url}: ${(err as Error).message}`);
  }
  const text = await res.text();
  if (!res.ok) {
    let detail = text;
    try { const e = JSON.parse(text) as { error?: { code?: string; message?: string } }; detail = `[${e.error?.code}] ${e.error?.message}`; } catch { /* not JSON */ }
    throw new EdgepackError('ENROLL_REFUSED', `enrollment refused (${res.status}): ${detail}`);
  }
  const parsed = new Validator('enroll response', EnrollResponseSchema).parse(text);
  if (!parsed.ok) throw new EdgepackError('ENROLL_BAD_RESPONSE', parsed.reason);
  const r = parsed.value;
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
    orchestratorPublicKey: r.orchestratorPublicKey, trustedRoot, mqtt: r.mqtt, heartbeatSec: r.heartbeatSec, enrolledAt: new Date().toISOString(),
  };
}
