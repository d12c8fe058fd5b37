import { EdgepackError } from './errors.js';

/**
 * Canonical JSON: object keys sorted by UTF-16 code unit, no insignificant whitespace,
 * numbers and strings as JSON.stringify writes them. Both sides sign and verify over these
 * bytes, so anything that could serialise two ways (undefined, NaN, functions) is refused
 * instead of being dropped silently.
 */
export function canonicalJson(value: unknown): string {
  return write(value, '$');
}

export function canonicalBytes(value: unknown): Uint8Array {
  return new TextEncoder().encode(canonicalJson(value));
}

function write(value: unknown, path: string): string {
  if (value === null) return 'null';
  switch (typeof value) {
    case 'boolean':
      return value ? 'true' : 'false';
    case 'string':
      return JSON.stringify(value);
    case 'number':
      if (!Number.isFinite(value)) throw new EdgepackError('CANONICAL_JSON_INVALID', `${path} is ${value}; canonical JSON allows only finite numbers`);
      return JSON.stringify(value);
    case 'object': {
      if (Array.isArray(value)) return `[${value.map((v, i) => write(v, `${path}[${i}]`)).join(',')}]`;
      const proto = Object.getPrototypeOf(value);
      if (proto !== Object.prototype && proto !== null) {
        throw new EdgepackError('CANONICAL_JSON_INVALID', `${path} is a ${proto?.constructor?.name ?? 'non-plain object'}; canonical JSON takes plain objects only`);
      }
      const entries = Object.keys(value as object)
        .filter((k) => (value as Record<string, unknown>)[k] !== undefined)
        .sort()
        .map((k) => `${JSON.stringify(k)}:${write((value as Record<string, unknown>)[k], `${path}.${k}`)}`);
      return `{${entries.join(',')}}`;
    }
    default:
      throw new EdgepackError('CANONICAL_JSON_INVALID', `${path} is of type ${typeof value}, which JSON cannot hold`);
  }
}
