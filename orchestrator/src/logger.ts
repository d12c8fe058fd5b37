/**
 * A tiny structured logger with the same call shape as pino (`log.info(obj, msg)`), so a
 * Fastify logger and ours interleave. Writes one JSON line per event to stderr.
 */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

const LEVELS = { fatal: 60, error: 50, warn: 40, info: 30, debug: 20 } as const;

export function createLogger(level: string, name = 'edgepack', write: (line: string) => void = (l) => process.stderr.write(l)): Logger {
  const min = LEVELS[level as keyof typeof LEVELS] ?? LEVELS.info;
  const emit = (lvl: keyof typeof LEVELS) => (obj: object, msg?: string) => {
    if (LEVELS[lvl] < min) return;
    write(JSON.stringify({ level: lvl, time: new Date().toISOString(), name, ...obj, ...(msg ? { msg } : {}) }) + '\n');
  };
  return { error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug') };
}
