import { ConfigError, SERVE_HELP, parseServeConfig } from '../config.js';
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
  const server = await startServer(config);
  // Machine-readable start line: scripts and tests read the ports from it.
  console.log(JSON.stringify({ event: 'listening', httpPort: server.httpPort, mqttPort: server.mqttPort, dataDir: config.dataDir }));
  await new Promise<void>((resolve) => {
    const stop = (signal: string) => {
      console.error(`edgepack: ${signal} received, shutting down`);
      server.close().then(resolve, (err) => { console.error(err); resolve(); });
    };
    process.once('SIGINT', () => stop('SIGINT'));
    process.once('SIGTERM', () => stop('SIGTERM'));
  });
  return 0;
}
