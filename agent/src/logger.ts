/** Structured one-line JSON logs on stderr, the same shape as the orchestrator's. */
export interface Logger {
  error(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
  info(obj: object, msg?: string): void;
  debug(obj: object, msg?: string): void;
}

const LEVELS = { error: 50, warn: 40, info: 30, debug: 20 } as const;

export function createLogger(level: string, name: string): Logger {
  const min = LEVELS[level as keyof typeof LEVELS] ?? LEVELS.info;
  const emit = (lvl: keyof typeof LEVELS) => (obj: object, msg?: string) => {
    if (LEVELS[lvl] < min) return;
    process.stderr.write(JSON.stringify({ level: lvl, time: new Date().toISOString(), name, ...obj, ...(msg ? { msg } : {}) }) + '\n');
  };
  return { error: emit('error'), warn: emit('warn'), info: emit('info'), debug: emit('debug') };
}
