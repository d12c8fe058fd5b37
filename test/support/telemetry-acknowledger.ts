// A stand-in for the orchestrator's telemetry ingestion, built from protocol's own pieces (the
// validator, planTelemetryIngest, the ack) so that it behaves as the real receiver must:
// dedupe by seq range, let merges replace their parts, ack only what it has "committed".
import {
  DeviceTopic, createTelemetryValidator, deviceTopic, planTelemetryIngest, windowRange,
  type SeqRange, type TelemetryGap, type TelemetryWindow,
} from '@edgepack/protocol';
import type { Broker } from '@edgepack/orchestrator/mqtt/broker.js';

export interface Acknowledger {
  /** Stored windows by their seq range. */
  stored: Map<string, TelemetryWindow>;
  gaps: TelemetryGap[];
  /** Batches received, including those not acked. */
  batches: number;
  refusals: { code: string; reason: string }[];
  /** While false, batches are received but neither stored nor acked (a receiver that dies before its commit). */
  acking: boolean;
  okTotal(): number;
  detach(): void;
}

export function startAcknowledger(broker: Broker, deviceId: string): Acknowledger {
  const check = createTelemetryValidator();
  const topic = deviceTopic(deviceId, DeviceTopic.telemetry);
  const ackTopic = deviceTopic(deviceId, DeviceTopic.telemetryAck);
  const a: Acknowledger = {
    stored: new Map(), gaps: [], batches: 0, refusals: [], acking: true,
    okTotal: () => [...a.stored.values()].reduce((n, w) => n + w.requests.ok, 0),
    detach: () => broker.aedes.off('publish', onPublish),
  };
  const onPublish = (packet: { topic: string; payload: Buffer | string }, client: unknown) => {
    if (!client || packet.topic !== topic) return;
    a.batches++;
    const parsed = check.batch(packet.payload as Buffer, { deviceId, now: new Date() });
    if (!parsed.ok) { a.refusals.push({ code: parsed.code, reason: parsed.reason }); return; }
    if (!a.acking) return;
    const ranges: SeqRange[] = [...a.stored.values()].map(windowRange);
    const plan = planTelemetryIngest(parsed.value, ranges);
    // The "transaction": superseded parts out, new windows in, gaps recorded.
    for (const { window, supersedes } of plan.insert) {
      for (const r of supersedes) a.stored.delete(r.join('-'));
      a.stored.set(windowRange(window).join('-'), window);
    }
    a.gaps.push(...plan.gaps);
    for (const r of plan.refused) a.refusals.push({ code: r.code, reason: r.reason });
    // Only after the "commit": the ack.
    broker.aedes.publish({ cmd: 'publish', topic: ackTopic, payload: Buffer.from(JSON.stringify(plan.ack)), qos: 1, retain: false, dup: false } as never, () => undefined);
  };
  broker.aedes.on('publish', onPublish);
  return a;
}
