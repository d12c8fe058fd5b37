import { type TSchema, type Static } from '@sinclair/typebox';
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler';
import type { ErrorCode } from './error-catalogue.js';

export type Parsed<T> = { ok: true; value: T } | { ok: false; code: ErrorCode; reason: string };

/**
 * A compiled validator for one schema. Compiled once per schema by whoever owns the schema
 * (no module-level cache), then reused for every message.
 */
export class Validator<S extends TSchema> {
  private readonly check: TypeCheck<S>;
  constructor(readonly name: string, schema: S) {
    this.check = TypeCompiler.Compile(schema);
  }

  /** Validates an already-parsed value; unknown fields stay in place and are ignored. */
  validate(value: unknown): Parsed<Static<S>> {
    if (this.check.Check(value)) return { ok: true, value: value as Static<S> };
    const first = this.check.Errors(value).First();
    const where = first?.path || '(root)';
    return { ok: false, code: 'MESSAGE_INVALID', reason: `${this.name}: ${where} ${first?.message ?? 'is invalid'}` };
  }

  /** Parses and validates a JSON payload, refusing oversized or non-JSON input with a reason. */
  parse(payload: Uint8Array | string, maxBytes = 1 << 20): Parsed<Static<S>> {
    const size = typeof payload === 'string' ? Buffer.byteLength(payload) : payload.byteLength;
    if (size > maxBytes) return { ok: false, code: 'MESSAGE_TOO_LARGE', reason: `${this.name}: ${size} bytes exceeds the ${maxBytes}-byte limit` };
    let value: unknown;
    try {
      value = JSON.parse(typeof payload === 'string' ? payload : Buffer.from(payload).toString('utf8'));
    } catch (err) {
      return { ok: false, code: 'MESSAGE_NOT_JSON', reason: `${this.name}: payload is not JSON (${(err as Error).message})` };
    }
    return this.validate(value);
  }
}
