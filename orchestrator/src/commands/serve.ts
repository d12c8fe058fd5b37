import { ConfigError, SERVE_HELP, parseServeConfig } from '../config.js';
import { createLogger } from '../logger.js';
import { startServer } from '../server.js';

export async function run(argv: string[]): Promise<number> {
  let config;
  try {
    config = parseServeConfig(argv, process.env);
  } catch (err) {
    console.error(`edgepack serve: ${(err as Error).message}\n\n${SERVE_HELP}`);
    return 2;
  }
  if (config === 'help') {
    console.log(SERVE_HELP);
    return 0;
  }
  const log = createLogger(config.logLevel);
  // Errors that escape every handler are logged once, with their stack. A stray rejection does
  // not stop the fleet's orchestrator; an uncaught exception may have left state half-changed,
  // so it exits non-zero and the service manager restarts it.
  process.on('unhandledRejection', (err) => log.error({ err }, 'unhandled promise rejection'));
  process.on('uncaughtException', (err) => {
    log.fatal({ err }, 'uncaught exception; exiting');
    process.exit(1);
  });
  let server;
  try {
    server = await startServer(config, { log });
  } catch (err) {
    // A port clash or an unreadable data dir: say so and exit, rather than linger half-started.
    log.fatal({ err }, 'orchestrator failed to start');
    console.error(`edgepack serve: ${(err as Error).message}`);
    process.exit(1);
  }
  // Machine-readable start line: scripts and tests read the ports from it.
  console.log(JSON.stringify({
    event: 'listening', httpPort: server.httpPort, mqttPort: server.mqttPort,
    ...(server.plainHttpPort !== undefined ? { plainHttpPort: server.plainHttpPort, plainMqttPort: server.plainMqttPort } : {}),
    caFingerprint: server.caFingerprint, dataDir: config.dataDir,
  }));
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      log.info({ signal }, 'shutting down');
      server.close().then(resolve, (err) => { log.error({ err }, 'shutdown failed'); resolve(); });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
