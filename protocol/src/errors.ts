import type { ErrorCode } from './error-catalogue.js';

/**
 * Every failure that crosses a module boundary carries a stable `code` from the error
 * catalogue (error-catalogue.ts). Callers branch on `code`, never on message text, so messages
 * can be improved without breaking anyone. The one base class for errors with a code: HTTP
 * status and retryability come from the catalogue, not from the thrower.
 */
export class EdgepackError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;
  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.name = new.target.name;
    this.code = code;
    if (details) this.details = details;
  }
}

export function errorCode(err: unknown): string | undefined {
  return typeof err === 'object' && err !== null && typeof (err as { code?: unknown }).code === 'string'
    ? (err as { code: string }).code
    : undefined;
}

export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
