import { pino, type DestinationStream } from 'pino';

/** What the agent's modules log through; a pino logger is one, and so is a test's recorder. */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

/**
 * The agent's logger: pino, one JSON line per event on stderr (stdout carries only the
 * machine-readable start line), the same shape and levels as the orchestrator's.
 */
export function createLogger(level: string, name: string, destination?: DestinationStream): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    // Errors logged as { err } keep their type, message, code and stack.
    serializers: { err: pino.stdSerializers.err },
  }, destination ?? pino.destination({ fd: 2, sync: true }));
}
