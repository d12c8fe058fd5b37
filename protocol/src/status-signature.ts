import { canonicalJson } from './canonical-json.js';
import { signBytes, verifyBytes, type PublicKeyCache } from './signing.js';
import type { StatusReport, TrialReport } from './messages.js';

/**
 * A status report is the device's word only if the device signed it: the orchestrator checks the
 * signature against the key the device enrolled with, so a report injected by whoever holds the
 * broker (or replays a device's MQTT credential) cannot mark a rollout succeeded.
 *
 * The signature is ed25519 by the device key over
 *   "edgepack.status/1\n" ‖ canonical JSON of the report without `signature`
 * The prefix separates it from everything else the device key signs (its credentials), so a
 * signature made for one can never be taken for the other.
 */
const DOMAIN = 'edgepack.status/1\n';

function signedBytes(report: Omit<StatusReport, 'signature'>): Uint8Array {
  const { signature: _, ...rest } = report as StatusReport;
  return new TextEncoder().encode(DOMAIN + canonicalJson(rest));
}

export function signStatusReport(report: Omit<StatusReport, 'signature'>, deviceSecretKey: string): StatusReport {
  const { signature: _, ...rest } = report as StatusReport;
  return { ...rest, signature: signBytes(signedBytes(rest), deviceSecretKey) };
}

/** Never throws: an unsigned report, a malformed signature or one by another key simply does not verify. */
export function verifyStatusReport(report: StatusReport, devicePublicKey: string, keys?: PublicKeyCache): boolean {
  if (typeof report.signature !== 'string') return false;
  let bytes: Uint8Array;
  try {
    bytes = signedBytes(report);
  } catch {
    return false; // a value canonical JSON cannot hold
  }
  return verifyBytes(bytes, report.signature, devicePublicKey, keys);
}

/** A trial report is signed like a status report, under its own prefix ("edgepack.trial-report/1\n"). */
const TRIAL_DOMAIN = 'edgepack.trial-report/1\n';

function trialBytes(report: Omit<TrialReport, 'signature'>): Uint8Array {
  const { signature: _, ...rest } = report as TrialReport;
  return new TextEncoder().encode(TRIAL_DOMAIN + canonicalJson(rest));
}

export function signTrialReport(report: Omit<TrialReport, 'signature'>, deviceSecretKey: string): TrialReport {
  const { signature: _, ...rest } = report as TrialReport;
  return { ...rest, signature: signBytes(trialBytes(rest), deviceSecretKey) };
}

/** Never throws, like verifyStatusReport. */
export function verifyTrialReport(report: TrialReport, devicePublicKey: string, keys?: PublicKeyCache): boolean {
  if (typeof report.signature !== 'string') return false;
  let bytes: Uint8Array;
  try {
    bytes = trialBytes(report);
  } catch {
    return false;
  }
  return verifyBytes(bytes, report.signature, devicePublicKey, keys);
}
