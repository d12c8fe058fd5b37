/**
 * MQTT topic names. Every device topic lives under `edgepack/v1/devices/<deviceId>/`, so the
 * broker's authorizer can decide ownership from the topic alone.
 *
 * Orchestrator → device: desired (retained), chunk, notice, telemetry-ack.
 * Device → orchestrator: status, heartbeat, chunk-request, presence (also the last will),
 * telemetry (inference telemetry windows; see telemetry.ts), trial-report (a trial's figures).
 *
 * Telemetry has topics of its own, apart from the heartbeat, so "device dead" (no heartbeat)
 * and "telemetry pipeline stuck" (heartbeats, but no acked windows) can be told apart.
 */
export const TOPIC_ROOT = 'edgepack/v1/devices';

export const DeviceTopic = {
  desired: 'desired',
  chunk: 'chunk',
  notice: 'notice',
  status: 'status',
  heartbeat: 'heartbeat',
  chunkRequest: 'chunk-request',
  presence: 'presence',
  /** Device → orchestrator: a TelemetryBatch of closed windows and gap reports (QoS 1). */
  telemetry: 'telemetry',
  /** Orchestrator → device: a TelemetryAck, sent after the windows are committed (QoS 1). */
  telemetryAck: 'telemetry-ack',
  /** Device → orchestrator: a TrialReport, the outcome of a desired state of kind `trial` (QoS 1). */
  trialReport: 'trial-report',
} as const;
export type DeviceTopicKind = (typeof DeviceTopic)[keyof typeof DeviceTopic];

/** Topics a device may subscribe to: only what the orchestrator sends it. */
export const DEVICE_SUBSCRIBE_KINDS: readonly DeviceTopicKind[] = [DeviceTopic.desired, DeviceTopic.chunk, DeviceTopic.notice, DeviceTopic.telemetryAck];
/** Topics a device may publish on: only what it reports about itself. */
export const DEVICE_PUBLISH_KINDS: readonly DeviceTopicKind[] = [DeviceTopic.status, DeviceTopic.heartbeat, DeviceTopic.chunkRequest, DeviceTopic.presence, DeviceTopic.telemetry, DeviceTopic.trialReport];

const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

export function isValidDeviceId(id: string): boolean {
  return DEVICE_ID_PATTERN.test(id);
}

export function deviceTopic(deviceId: string, kind: DeviceTopicKind): string {
  if (!isValidDeviceId(deviceId)) throw new Error(`invalid device id for a topic: ${JSON.stringify(deviceId)}`);
  return `${TOPIC_ROOT}/${deviceId}/${kind}`;
}

/** Splits a concrete topic; returns null for anything that is not exactly one device topic. */
export function parseDeviceTopic(topic: string): { deviceId: string; kind: DeviceTopicKind } | null {
  const prefix = `${TOPIC_ROOT}/`;
  if (!topic.startsWith(prefix)) return null;
  const rest = topic.slice(prefix.length).split('/');
  if (rest.length !== 2) return null;
  const [deviceId, kind] = rest as [string, string];
  if (!isValidDeviceId(deviceId)) return null;
  if (!(Object.values(DeviceTopic) as string[]).includes(kind)) return null;
  return { deviceId, kind: kind as DeviceTopicKind };
}
