import { EventEmitter } from 'node:events';
import type { MqttClient } from 'mqtt';
import { deviceTopic, errorMessage, type DeviceTopicKind } from '@edgepack/protocol';

export interface DeviceLinkEvents {
  /** The MQTT session is up and the device's topics are subscribed. */
  connected: [];
  disconnected: [];
  /** A message on one of the device's subscribe kinds the agent itself does not handle (e.g. telemetry-ack). */
  message: [kind: DeviceTopicKind, payload: Buffer];
}

/**
 * The agent's MQTT connection as other device services (telemetry) see it: they publish on
 * the device's own topics and hear about connects and their messages, without a connection of
 * their own — the broker allows one session per device id, so there can be only one.
 */
export class DeviceLink extends EventEmitter<DeviceLinkEvents> {
  private client?: MqttClient;

  constructor(readonly deviceId: string) { super(); }

  get connected(): boolean {
    return this.client?.connected === true;
  }

  /**
   * Publishes at QoS 1; resolves once the broker has acknowledged (PUBACK). Rejects when not
   * connected, on failure, or when no PUBACK came within `timeoutMs` (a connection that died
   * with the message in flight must not leave the caller waiting forever).
   */
  publish(kind: DeviceTopicKind, payload: string | Buffer, timeoutMs = 15_000): Promise<void> {
    const c = this.client;
    if (!c?.connected) return Promise.reject(Object.assign(new Error('not connected'), { code: 'NOT_CONNECTED' }));
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(Object.assign(new Error(`no PUBACK within ${timeoutMs} ms`), { code: 'PUBLISH_TIMEOUT' })), timeoutMs);
      try {
        c.publish(deviceTopic(this.deviceId, kind), payload, { qos: 1 }, (err) => {
          clearTimeout(timer);
          if (err) reject(err);
          else resolve();
        });
      } catch (err) {
        clearTimeout(timer);
        reject(new Error(errorMessage(err)));
      }
    });
  }

  /** Called by the agent only. */
  attach(client: MqttClient | undefined): void {
    const was = this.connected;
    this.client = client;
    if (client?.connected) this.emit('connected');
    else if (was) this.emit('disconnected');
  }

  /** Called by the agent only: hands a message on to whichever service listens. */
  deliver(kind: DeviceTopicKind, payload: Buffer): void {
    this.emit('message', kind, payload);
  }
}
