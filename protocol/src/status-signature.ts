import { canonicalJson } from './canonical-json.js';
import { signBytes, verifyBytes, type PublicKeyCache } from './signing.js';
import type { StatusReport, TrialReport } from './messages.js';

/**
 * A status report is the device's word only if the device signed it: the orchestrator checks the
 * signature against the key the device enrolled with, so a report injected by whoever holds the
 * broker (or replays a device's MQTT credential) cannot mark a rollout succeeded. Trial reports
 * (issue 10) are signed the same way: their figures choose what the whole fleet runs.
 *
 * The signature is ed25519 by the device key over
 *   "<domain>\n" ‖ canonical JSON of the report without `signature`
 * with the domain `edgepack.status/1` or `edgepack.trial-report/1`. The prefix separates each
 * kind from the other and from everything else the device key signs (its credentials), so a
 * signature made for one can never be taken for another.
 */
const STATUS_DOMAIN = 'edgepack.status/1\n';
const TRIAL_DOMAIN = 'edgepack.trial-report/1\n';

interface Signed { signature?: string }

function signedBytes(domain: string, report: Signed): Uint8Array {
  const { signature: _, ...rest } = report;
  return new TextEncoder().encode(domain + canonicalJson(rest));
}

function signReport<T extends Signed>(domain: string, report: Omit<T, 'signature'>, deviceSecretKey: string): T {
  const { signature: _, ...rest } = report as T;
  return { ...rest, signature: signBytes(signedBytes(domain, rest), deviceSecretKey) } as T;
}

/** Never throws: an unsigned report, a malformed signature or one by another key simply does not verify. */
function verifyReport(domain: string, report: Signed, devicePublicKey: string, keys?: PublicKeyCache): boolean {
  if (typeof report.signature !== 'string') return false;
  let bytes: Uint8Array;
  try {
    bytes = signedBytes(domain, report);
  } catch {
    return false; // a value canonical JSON cannot hold
  }
  return verifyBytes(bytes, report.signature, devicePublicKey, keys);
}

export function signStatusReport(report: Omit<StatusReport, 'signature'>, deviceSecretKey: string): StatusReport {
  return signReport<StatusReport>(STATUS_DOMAIN, report, deviceSecretKey);
}

export function verifyStatusReport(report: StatusReport, devicePublicKey: string, keys?: PublicKeyCache): boolean {
  return verifyReport(STATUS_DOMAIN, report, devicePublicKey, keys);
}

export function signTrialReport(report: Omit<TrialReport, 'signature'>, deviceSecretKey: string): TrialReport {
  return signReport<TrialReport>(TRIAL_DOMAIN, report, deviceSecretKey);
}

export function verifyTrialReport(report: TrialReport, devicePublicKey: string, keys?: PublicKeyCache): boolean {
  return verifyReport(TRIAL_DOMAIN, report, devicePublicKey, keys);
}
