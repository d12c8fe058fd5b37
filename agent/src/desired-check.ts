import { errorCode, errorMessage, type DesiredState, type DesiredStateSchema, type Validator } from '@edgepack/protocol';

/** What one payload on a device's desired topic is, before its signature is checked; see `parseDesired`. */
export type DesiredParse =
  | { kind: 'cleared' }
  | { kind: 'refused'; reason: string; fields: Record<string, unknown> }
  | { kind: 'parsed'; desired: DesiredState };

/** What to make of a parsed desired state once its signature is checked; see `classifyDesired`. */
export type DesiredCheck =
  | { kind: 'refused'; reason: string; fields: Record<string, unknown> }
  | { kind: 'old'; desired: DesiredState }
  | { kind: 'new'; desired: DesiredState };

/**
 * Pure first half of the desired-state check, shared by the agent and the fleet simulator:
 * shape and addressee. The caller then walks any roots the desired state carries (TUF updates
 * the root before anything it vouches for) and calls `classifyDesired`.
 */
export function parseDesired(payload: Uint8Array, ctx: { validator: Validator<typeof DesiredStateSchema>; deviceId: string }): DesiredParse {
  if (payload.length === 0) return { kind: 'cleared' }; // retained message cleared
  const parsed = ctx.validator.parse(payload, 4 << 20);
  if (!parsed.ok) return { kind: 'refused', reason: `desired state refused: ${parsed.reason}`, fields: { code: parsed.code } };
  const desired = parsed.value;
  if (desired.deviceId !== ctx.deviceId) {
    return { kind: 'refused', reason: 'desired state for another device ignored', fields: { deviceId: desired.deviceId } };
  }
  return { kind: 'parsed', desired };
}

/**
 * Second half: the envelope signature through the trusted root (`verify` throws a coded error,
 * e.g. TrustVerifier.verifyDesired), then seq against the last one acted on. The signature comes
 * before the seq counts: whoever can publish on the topic could otherwise replay an old bundle
 * or send a huge seq and lock the device out of updates.
 */
export function classifyDesired(desired: DesiredState, ctx: { verify: (desired: DesiredState) => void; lastSeq: number; rootVersion?: number }): DesiredCheck {
  try {
    ctx.verify(desired);
  } catch (err) {
    return {
      kind: 'refused',
      reason: `desired state ignored: ${errorMessage(err)}`,
      fields: { seq: desired.seq, rolloutId: desired.rolloutId, code: errorCode(err) ?? 'DESIRED_SIGNATURE_INVALID', ...(ctx.rootVersion !== undefined ? { rootVersion: ctx.rootVersion } : {}) },
    };
  }
  return desired.seq <= ctx.lastSeq ? { kind: 'old', desired } : { kind: 'new', desired };
}

/** What to do with a desired state at or below lastSeq; see `answerOldDesired`. */
export type OldDesiredAnswer<D> =
  | { kind: 'report'; action: D }
  | { kind: 'wait' }
  | { kind: 'supersede' };

/**
 * A desired state at or below lastSeq is a redelivery (persistent session plus retained
 * message) or an older one that will never run. A redelivery of the current or a recent
 * action gets its answer again; one still queued waits its turn; anything else is
 * answered as superseded, or its rollout would wait for this device forever.
 */
export function answerOldDesired<D extends { rolloutId: string }>(
  desired: Pick<DesiredState, 'rolloutId'>,
  known: { current: D | null; queued: Pick<DesiredState, 'rolloutId'> | null; recent: readonly D[] },
): OldDesiredAnswer<D> {
  if (known.current?.rolloutId === desired.rolloutId) return { kind: 'report', action: known.current };
  if (known.queued?.rolloutId === desired.rolloutId) return { kind: 'wait' };
  const r = known.recent.find((x) => x.rolloutId === desired.rolloutId);
  if (r) return { kind: 'report', action: r };
  return { kind: 'supersede' };
}
