/**
 * Views of issue 10's variant choice, shared by GET /v1/builds/:id (per profile: the candidates,
 * the host's pick, the devices' pick) and GET /v1/rollouts/:id (the choices this rollout made).
 * Built field by field from the stored choice; stored JSON is never spread into a reply.
 */
import { Type, type Static } from '@sinclair/typebox';
import type { CandidateFigures, DeviceFigure, VariantChoice } from '../core/variant-choice.js';
import { Nullable, StringEnum, Timestamp } from './schemas.js';

const numOrNull = (x: unknown): number | null => (typeof x === 'number' && Number.isFinite(x) ? x : null);
const str = (x: unknown): string => (typeof x === 'string' ? x : '');

export const TrialFigureView = Type.Object({
  deviceId: Type.String(),
  rolloutId: Type.String({ description: 'the rollout whose trial measured it' }),
  p50Ms: Nullable(Type.Number()),
  p95Ms: Nullable(Type.Number()),
  goldenPassed: Nullable(Type.Boolean()),
  top1: Nullable(Type.Number({ description: 'share of golden samples whose top-1 equals the reference\'s on the device' })),
  code: Nullable(Type.String({ description: 'why the candidate was not measured or was refused on the device' })),
}, { title: 'TrialFigure', description: 'what one device measured of one candidate' });

export const CandidateFiguresView = Type.Object({
  bundleId: Type.String(),
  precision: Type.String(),
  format: Type.String(),
  reference: Type.Boolean({ description: 'the fp32 reference: always a candidate, wins ties' }),
  eligible: Type.Boolean({ description: 'passed the golden check on every device and the latency budget' }),
  reason: Type.String(),
  medianP95Ms: Nullable(Type.Number({ description: 'median over the devices with figures' })),
  medianP50Ms: Nullable(Type.Number()),
  devices: Type.Array(TrialFigureView),
}, { title: 'CandidateFigures', description: 'one candidate\'s figures across the devices that trialled it' });

export const VariantChoiceView = Type.Object({
  profile: Type.String(),
  rolloutId: Type.String(),
  bundleId: Type.String(),
  precision: Type.String(),
  cause: StringEnum(['measured', 'reused', 'fallback'], { description: 'measured in this rollout\'s trials, reused from stored trials, or the reference for want of an eligible candidate' }),
  reason: Type.String(),
  chosenAt: Timestamp,
  tieMargin: Type.Number({ description: 'another candidate must be this much faster (relative) than the reference to beat it' }),
  budgetP95Ms: Nullable(Type.Number()),
  hostPick: Nullable(Type.Object({ bundleId: Type.String(), precision: Type.String() }, { description: 'what host selection would have chosen' })),
  candidates: Type.Array(CandidateFiguresView),
  leftOut: Type.Array(Type.Object({ deviceId: Type.String(), why: Type.String() }), { description: 'canary devices without figures' }),
}, { title: 'VariantChoice', description: 'the devices\' pick for one profile, with every device\'s figures for every candidate' });
export type VariantChoiceView = Static<typeof VariantChoiceView>;

function figureView(d: DeviceFigure): Static<typeof TrialFigureView> {
  return {
    deviceId: str(d.deviceId), rolloutId: str(d.rolloutId), p50Ms: numOrNull(d.p50Ms), p95Ms: numOrNull(d.p95Ms),
    goldenPassed: typeof d.goldenPassed === 'boolean' ? d.goldenPassed : null, top1: numOrNull(d.top1), code: typeof d.code === 'string' ? d.code : null,
  };
}

function candidateView(c: CandidateFigures): Static<typeof CandidateFiguresView> {
  return {
    bundleId: str(c.bundleId), precision: str(c.precision), format: str(c.format), reference: c.reference === true, eligible: c.eligible === true,
    reason: str(c.reason), medianP95Ms: numOrNull(c.medianP95Ms), medianP50Ms: numOrNull(c.medianP50Ms),
    devices: Array.isArray(c.devices) ? c.devices.map(figureView) : [],
  };
}

export function variantChoiceView(x: { rolloutId: string; chosenAt: number; choice: VariantChoice }): VariantChoiceView {
  const c = x.choice;
  return {
    profile: str(c.profile), rolloutId: x.rolloutId, bundleId: str(c.bundleId), precision: str(c.precision),
    cause: c.cause === 'reused' || c.cause === 'fallback' ? c.cause : 'measured', reason: str(c.reason), chosenAt: new Date(x.chosenAt).toISOString(),
    tieMargin: numOrNull(c.tieMargin) ?? 0, budgetP95Ms: numOrNull(c.budgetP95Ms),
    hostPick: c.hostPick ? { bundleId: str(c.hostPick.bundleId), precision: str(c.hostPick.precision) } : null,
    candidates: Array.isArray(c.candidates) ? c.candidates.map(candidateView) : [],
    leftOut: Array.isArray(c.leftOut) ? c.leftOut.map((l) => ({ deviceId: str(l.deviceId), why: str(l.why) })) : [],
  };
}
