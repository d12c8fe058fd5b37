import { DEVICE_PUBLISH_KINDS, DEVICE_SUBSCRIBE_KINDS, parseDeviceTopic } from '@edgepack/protocol';

export type AclDecision = { allow: true } | { allow: false; reason: string };

/**
 * Pure MQTT access rules for device clients. A device may publish only its own reports and
 * subscribe only to what the orchestrator sends it. Wildcards are refused outright: a filter
 * like `edgepack/v1/devices/+/desired` would otherwise read every device's desired state.
 */
export function canPublish(clientDeviceId: string, topic: string): AclDecision {
  const t = parseDeviceTopic(topic);
  if (!t) return { allow: false, reason: `topic ${topic} is not a device topic` };
  if (t.deviceId !== clientDeviceId) return { allow: false, reason: `device ${clientDeviceId} may not publish for device ${t.deviceId}` };
  if (!DEVICE_PUBLISH_KINDS.includes(t.kind)) return { allow: false, reason: `devices may not publish on ${t.kind}` };
  return { allow: true };
}

export function canSubscribe(clientDeviceId: string, filter: string): AclDecision {
  // MQTT 3.1.1 §4.7.1: '+' and '#' are wildcards; '$' topics are broker-internal (§4.7.2).
  if (/[+#]/.test(filter) || filter.startsWith('$')) return { allow: false, reason: `wildcard or system filter ${filter} refused` };
  const t = parseDeviceTopic(filter);
  if (!t) return { allow: false, reason: `filter ${filter} is not a device topic` };
  if (t.deviceId !== clientDeviceId) return { allow: false, reason: `device ${clientDeviceId} may not subscribe to device ${t.deviceId}` };
  if (!DEVICE_SUBSCRIBE_KINDS.includes(t.kind)) return { allow: false, reason: `devices may not subscribe to ${t.kind}` };
  return { allow: true };
}
