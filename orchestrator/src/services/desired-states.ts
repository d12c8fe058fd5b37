import { PROTOCOL_VERSION, errorMessage, signCanonical, signDesired, type DesiredState, type SignedManifest, type SignedRoot } from '@edgepack/protocol';
import type { Store } from '../db/store.js';
import type { DesiredIntent, DesiredTrialIntent, RolloutStore } from '../db/rollout-store.js';
import type { BundleRecord } from '../records.js';
import type { Logger } from '../logger.js';

/** The MQTT edge: puts a device's desired state on its retained topic (or clears it). */
export interface DesiredPublisher {
  /** `desired` is the exact signed message (JSON text), published as it is. */
  publishDesired(deviceId: string, desired: string): Promise<void>;
  clearDesired(deviceId: string): Promise<void>;
}

/** One desired state to send: an intent already written with its decision (see RolloutStore.allocateDesired). */
export interface DesiredSend {
  deviceId: string;
  seq: number;
  rolloutId: string;
  /** null: take the desired state back without naming a bundle (the device runs none to name). */
  bundleId: string | null;
  /** A trial (issue 10): `bundleId` is its reference; every candidate is measured, none installed. */
  trial?: DesiredTrialIntent | null;
}

/** The trust chain (trust-chain.ts): the online key's id, and the roots every desired state carries. */
export interface DesiredTrust {
  keyId: string;
  roots: () => SignedRoot[];
}

/** Signing ~10k/s on node:crypto: 100 per batch keeps each slice of the event loop around 10 ms. */
const SIGN_BATCH = 100;

const yieldToLoop = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Carries out desired-state intents: signs each envelope, keeps the signed message with the
 * intent, and publishes it. The decisions were committed before anything gets here, so a crash
 * in the middle leaves intents that `republishAll` signs and sends after the restart, with the
 * seq they were given: nothing is lost and nothing is sent under two seqs.
 *
 * Sends run one batch list at a time, in the order they were asked for, so a device's newer
 * desired state can never be overtaken on the retained topic by an older one; and an intent
 * replaced by a newer one before it was signed is skipped.
 */
export class DesiredStates {
  private chain: Promise<void> = Promise.resolve();
  private readonly bundles = new Map<string, SignedManifest>();

  constructor(private readonly deps: {
    store: Store; rollouts: RolloutStore; publisher: DesiredPublisher; signingSecretKey: string; now: () => Date; log: Logger;
    trust?: DesiredTrust;
  }) {}

  private get keyId(): string | null {
    return this.deps.trust?.keyId ?? null;
  }

  /** Queues the sends; resolves once they (and everything queued before them) are published. */
  send(items: readonly DesiredSend[]): Promise<void> {
    if (items.length === 0) return this.chain;
    // One device twice in one list: only its last intent is current.
    const last = new Map<string, DesiredSend>();
    for (const it of items) last.set(it.deviceId, it);
    const run = this.chain.then(() => this.carryOut([...last.values()]));
    this.chain = run.catch(() => undefined);
    return run;
  }

  /** Resolves once every send queued so far is done. */
  idle(): Promise<void> {
    return this.chain;
  }

  /**
   * A bundle as devices get it: signed by the current online key. One built before the key was
   * rotated is signed again (its content, and so its file hashes, unchanged); once per bundle.
   */
  private bundle(id: string): SignedManifest | undefined {
    let b = this.bundles.get(id);
    if (!b) {
      const rec: BundleRecord | undefined = this.deps.store.getBundle(id);
      if (!rec) return undefined;
      const keyId = this.keyId;
      if (!keyId || rec.manifest.keyId === keyId) b = { manifest: rec.manifest, signature: rec.signature };
      else {
        const manifest = { ...rec.manifest, keyId };
        b = { manifest, signature: signCanonical(manifest, this.deps.signingSecretKey) };
      }
      this.bundles.set(id, b);
      // Bundles are immutable; a small cache is enough for a rollout's few bundles.
      if (this.bundles.size > 256) this.bundles.delete(this.bundles.keys().next().value!);
    }
    return b;
  }

  /** Signs one intent's envelope (without the roots, which carry their own signatures); null when its bundle is gone. */
  private sign(it: { deviceId: string; seq: number; rolloutId: string; bundleId: string; trial?: DesiredTrialIntent | null }): string | null {
    const bundle = this.bundle(it.bundleId);
    if (!bundle) return null;
    let trial: DesiredState['trial'];
    if (it.trial) {
      const candidates: SignedManifest[] = [];
      for (const id of it.trial.candidates) {
        const c = this.bundle(id);
        if (!c) return null;
        candidates.push(c);
      }
      trial = { candidates, rounds: it.trial.rounds, referenceBundleId: it.trial.referenceBundleId };
    }
    const desired: DesiredState = signDesired({
      v: PROTOCOL_VERSION, deviceId: it.deviceId, seq: it.seq, rolloutId: it.rolloutId, bundle, issuedAt: this.deps.now().toISOString(),
      ...(trial ? { kind: 'trial' as const, trial } : {}),
    }, this.deps.signingSecretKey);
    return JSON.stringify(desired);
  }

  /** The message as published: the signed desired state with the current root chain added. */
  private withRoots(signed: string): string {
    const roots = this.deps.trust?.roots();
    return roots ? `${signed.slice(0, -1)},"roots":${JSON.stringify(roots)}}` : signed;
  }

  private async carryOut(items: DesiredSend[]): Promise<void> {
    const { rollouts, publisher, log } = this.deps;
    for (let i = 0; i < items.length; i += SIGN_BATCH) {
      if (i > 0) await yieldToLoop();
      const batch = items.slice(i, i + SIGN_BATCH);
      const ready: { deviceId: string; text: string | null }[] = [];
      rollouts.transaction(() => {
        for (const it of batch) {
          if (it.bundleId === null) {
            if (rollouts.desiredIntent(it.deviceId)?.seq === it.seq) ready.push({ deviceId: it.deviceId, text: null });
            continue;
          }
          const text = this.sign({ ...it, bundleId: it.bundleId });
          if (text === null) {
            log.error({ deviceId: it.deviceId, bundleId: it.bundleId }, 'desired state not sent: its bundle is gone');
            continue;
          }
          if (rollouts.storeSigned(it.deviceId, it.seq, text, this.keyId)) ready.push({ deviceId: it.deviceId, text });
        }
      });
      await Promise.all(ready.map((r) => (r.text === null ? publisher.clearDesired(r.deviceId) : publisher.publishDesired(r.deviceId, this.withRoots(r.text)))
        .catch((err) => log.error({ deviceId: r.deviceId, err: errorMessage(err) }, 'publishing the desired state failed; the restart republish or the next decision sends it'))));
    }
  }

  /**
   * After a restart (the broker's retained store is empty): every device's latest desired state
   * again. One already signed goes out as before (the same signed envelope, with the current
   * root chain); an intent the crash caught before it was signed, or one signed by an online key
   * rotated out since, is signed now, with its own seq.
   */
  async republishAll(): Promise<{ republished: number; signed: number }> {
    const intents = this.deps.rollouts.desiredIntents();
    const unsigned: DesiredIntent[] = [];
    const ready: DesiredIntent[] = [];
    for (const it of intents) (it.signed !== null && it.signedSeq === it.seq && it.signedKey === this.keyId ? ready : unsigned).push(it);
    for (let i = 0; i < ready.length; i += 200) {
      if (i > 0) await yieldToLoop();
      await Promise.all(ready.slice(i, i + 200).map((it) => this.deps.publisher.publishDesired(it.deviceId, this.withRoots(it.signed!))
        .catch((err) => this.deps.log.error({ deviceId: it.deviceId, err: errorMessage(err) }, 'republish failed'))));
    }
    const republished = ready.length;
    await this.send(unsigned.map((it) => ({ deviceId: it.deviceId, seq: it.seq, rolloutId: it.rolloutId, bundleId: it.bundleId, trial: it.trial })));
    return { republished: republished + unsigned.length, signed: unsigned.length };
  }
}
