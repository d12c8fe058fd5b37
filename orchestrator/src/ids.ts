import { randomBytes } from 'node:crypto';

/** Readable, prefix-typed ids ("dev_3f2a…"); the characters are safe inside MQTT topics and URLs. */
export function newId(prefix: 'dev' | 'mdl' | 'bld' | 'bdl' | 'rol' | 'dts' | 'tok'): string {
  return `${prefix}_${randomBytes(8).toString('hex')}`;
}
