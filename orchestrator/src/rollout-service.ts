import { EdgepackError, PROTOCOL_VERSION, signCanonical, signDesired, type DesiredState, type SignedManifest, type SignedRoot, type StatusReport } from '@edgepack/protocol';
import { applyStatusReport, closeAction, rolloutStatus } from './core/action-transition.js';
import { planRollout } from './core/rollout-plan.js';
import type { Store } from './db/store.js';
import type { RolloutRecord, RolloutTarget } from './records.js';
import { newId } from './ids.js';
import type { Logger } from './logger.js';

export interface DesiredPublisher {
  publishDesired(deviceId: string, desired: DesiredState): Promise<void>;
}

/**
 * Executes rollout plans: persists them, publishes each device's desired state, and folds
 * device reports back into actions. The decisions are in core/; this is the glue to IO.
 */
export class RolloutService {
  constructor(private readonly deps: {
    store: Store; log: Logger; now: () => Date; publisher: DesiredPublisher; signingSecretKey: string;
    /** The online key's id and the root chain sent with every desired state (trust-chain.ts). */
    trust?: { keyId: string; roots: () => SignedRoot[] };
  }) {}

  async create(buildId: string, target: RolloutTarget): Promise<RolloutRecord> {
    const { store, now } = this.deps;
    const build = store.getBuild(buildId);
    if (!build) throw new EdgepackError('BUILD_NOT_FOUND', `build ${buildId} not found`);
    if (build.status === 'queued' || build.status === 'running') throw new EdgepackError('BUILD_NOT_READY', `build ${buildId} is still ${build.status}`);
    const plan = planRollout({ target, devices: store.listDevices(), artifacts: build.artifacts });
    const at = now().toISOString();
    const rollout: RolloutRecord = { id: newId('rol'), buildId, status: 'running', target, createdAt: at, finishedAt: null };
    const actions = plan.actions.map((a) => ({
      rolloutId: rollout.id, deviceId: a.deviceId, groupPosition: a.groupPosition, bundleId: a.bundleId, state: a.state,
      code: a.code ?? null, reason: a.reason ?? null, result: null, updatedAt: at,
    }));
    const superseded = actions.flatMap((a) => store.openActionsForDevice(a.deviceId));
    store.transaction(() => {
      for (const old of superseded) store.upsertAction(closeAction(old, 'SUPERSEDED', `superseded by rollout ${rollout.id}`, at));
      store.insertRollout(rollout, actions, plan.groups);
    });
    for (const rid of new Set(superseded.map((a) => a.rolloutId))) this.refreshStatus(rid);
    this.refreshStatus(rollout.id);
    for (const a of actions) if (a.state === 'pending') await this.deliver(a.deviceId, rollout.id, a.bundleId!);
    return store.getRollout(rollout.id)!;
  }

  private async deliver(deviceId: string, rolloutId: string, bundleId: string): Promise<void> {
    const { store } = this.deps;
    const bundle = store.getBundle(bundleId);
    if (!bundle) throw new EdgepackError('BUNDLE_NOT_FOUND', `bundle ${bundleId} not found`);
    // One seq per action, kept: a re-publish is then a duplicate the device recognises.
    let seq = store.getActionSeq(rolloutId, deviceId);
    if (seq === null) {
      seq = store.nextDesiredSeq(deviceId);
      store.setActionSeq(rolloutId, deviceId, seq);
    }
    const desired: DesiredState = signDesired({
      v: PROTOCOL_VERSION,
      deviceId,
      seq,
      rolloutId,
      bundle: this.currentlySigned({ manifest: bundle.manifest, signature: bundle.signature }),
      issuedAt: this.deps.now().toISOString(),
    }, this.deps.signingSecretKey);
    const roots = this.deps.trust?.roots();
    await this.deps.publisher.publishDesired(deviceId, roots ? { ...desired, roots } : desired);
  }

  /**
   * A bundle built before the online key was rotated is signed by a key devices now refuse:
   * sign it again with the current key (its content, and so its file hashes, unchanged).
   */
  private currentlySigned(b: SignedManifest): SignedManifest {
    const keyId = this.deps.trust?.keyId;
    if (!keyId || b.manifest.keyId === keyId) return b;
    const manifest = { ...b.manifest, keyId };
    return { manifest, signature: signCanonical(manifest, this.deps.signingSecretKey) };
  }

  /** Re-publishes every device's latest desired state, e.g. after a restart emptied the broker's retained store. */
  async republishAll(): Promise<number> {
    let n = 0;
    for (const d of this.deps.store.listDevices()) {
      const a = this.deps.store.latestActionForDevice(d.id);
      if (a?.bundleId) {
        await this.deliver(d.id, a.rolloutId, a.bundleId);
        n++;
      }
    }
    return n;
  }

  /** A revoked device will report nothing more: close what it had under way. */
  onDeviceRevoked(deviceId: string): void {
    const at = this.deps.now().toISOString();
    const open = this.deps.store.openActionsForDevice(deviceId);
    for (const a of open) this.deps.store.upsertAction(closeAction(a, 'DEVICE_REVOKED', 'the device was revoked', at));
    for (const rid of new Set(open.map((a) => a.rolloutId))) this.refreshStatus(rid);
  }

  /** Applies a validated report from `deviceId`; returns why it was ignored, if it was. */
  onStatus(deviceId: string, report: StatusReport): string | null {
    const { store, now, log } = this.deps;
    if (report.deviceId !== deviceId) return `report names device ${report.deviceId} but came from ${deviceId}`;
    const action = store.getAction(report.rolloutId, deviceId);
    if (!action) return `no action for rollout ${report.rolloutId} on this device`;
    const decision = applyStatusReport(action, report, now().toISOString());
    if (decision.kind === 'ignore') {
      log.debug({ deviceId, rolloutId: report.rolloutId, state: report.state }, `status ignored: ${decision.reason}`);
      return null; // duplicates and stale reports are normal, not errors worth a notice
    }
    store.transaction(() => {
      store.upsertAction(decision.next);
      if (decision.next.state === 'active') store.setActiveBundle(deviceId, decision.next.bundleId);
    });
    log.info({ deviceId, rolloutId: report.rolloutId, state: report.state, code: report.code }, 'device state');
    this.refreshStatus(report.rolloutId);
    return null;
  }

  private refreshStatus(rolloutId: string): void {
    const { store, now } = this.deps;
    const status = rolloutStatus(store.listActions(rolloutId));
    const current = store.getRollout(rolloutId);
    if (current && current.status !== status) store.setRolloutStatus(rolloutId, status, status === 'running' ? null : now().toISOString());
  }
}
