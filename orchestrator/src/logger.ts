import { pino, type DestinationStream, type Logger as PinoLogger } from 'pino';

/**
 * The orchestrator's one logger: pino, handed to Fastify as its logger instance, so request
 * logs (with their request id) and the broker's, builds' and cron's logs are one JSON-lines
 * stream on stderr. stdout carries only the machine-readable `listening` line.
 */
export type Logger = PinoLogger;

export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;

/**
 * `authorization` is redacted wherever a request or its headers are logged: the admin token
 * and device credentials must never reach a log file.
 */
export const REDACTED_PATHS = ['req.headers.authorization', 'headers.authorization', 'authorization', 'req.headers.cookie'];

export function createLogger(level: string, destination?: DestinationStream, name = 'edgepack'): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    redact: { paths: REDACTED_PATHS, censor: '[redacted]' },
    // `err` keeps an error's type, message, code and stack.
    serializers: { err: pino.stdSerializers.err },
  }, destination ?? pino.destination({ fd: 2, sync: true }));
}
