import { verifyDesiredSignature, type DesiredState, type DesiredStateSchema, type Validator } from '@edgepack/protocol';

/** What to make of one payload on a device's desired topic; see `checkDesired`. */
export type DesiredCheck =
  | { kind: 'cleared' }
  | { kind: 'refused'; reason: string; fields: Record<string, unknown> }
  | { kind: 'old'; desired: DesiredState }
  | { kind: 'new'; desired: DesiredState };

/**
 * Pure check of a desired-state payload, shared by the agent and the fleet simulator: shape,
 * addressee, envelope signature, then seq against the last one acted on. `refused` carries
 * the log fields and reason the agent has always logged.
 */
export function checkDesired(payload: Uint8Array, ctx: {
  validator: Validator<typeof DesiredStateSchema>;
  deviceId: string;
  orchestratorPublicKey: string;
  lastSeq: number;
}): DesiredCheck {
  if (payload.length === 0) return { kind: 'cleared' }; // retained message cleared
  const parsed = ctx.validator.parse(payload, 4 << 20);
  if (!parsed.ok) return { kind: 'refused', reason: `desired state refused: ${parsed.reason}`, fields: { code: parsed.code } };
  const desired = parsed.value;
  if (desired.deviceId !== ctx.deviceId) {
    return { kind: 'refused', reason: 'desired state for another device ignored', fields: { deviceId: desired.deviceId } };
  }
  // Before anything else, and before its seq counts: whoever can publish on the topic could
  // otherwise replay an old bundle or send a huge seq and lock the device out of updates.
  if (!verifyDesiredSignature(desired, ctx.orchestratorPublicKey)) {
    return {
      kind: 'refused',
      reason: 'desired state ignored: its envelope signature does not verify against the orchestrator key',
      fields: { seq: desired.seq, rolloutId: desired.rolloutId, code: 'DESIRED_SIGNATURE_INVALID' },
    };
  }
  return desired.seq <= ctx.lastSeq ? { kind: 'old', desired } : { kind: 'new', desired };
}

/** What to do with a desired state at or below lastSeq; see `answerOldDesired`. */
export type OldDesiredAnswer<D> =
  | { kind: 'report'; deployment: D }
  | { kind: 'wait' }
  | { kind: 'supersede' };

/**
 * A desired state at or below lastSeq is a redelivery (persistent session plus retained
 * message) or an older one that will never run. A redelivery of the current or a recent
 * deployment gets its answer again; one still queued waits its turn; anything else is
 * answered as superseded, or its rollout would wait for this device forever.
 */
export function answerOldDesired<D extends { rolloutId: string }>(
  desired: Pick<DesiredState, 'rolloutId'>,
  known: { current: D | null; queued: Pick<DesiredState, 'rolloutId'> | null; recent: readonly D[] },
): OldDesiredAnswer<D> {
  if (known.current?.rolloutId === desired.rolloutId) return { kind: 'report', deployment: known.current };
  if (known.queued?.rolloutId === desired.rolloutId) return { kind: 'wait' };
  const r = known.recent.find((x) => x.rolloutId === desired.rolloutId);
  if (r) return { kind: 'report', deployment: r };
  return { kind: 'supersede' };
}
