#!/usr/bin/env node
// `edgepack <command>`: each command lives in src/commands/<name>.ts and exports `run(argv)`.
// Commands are loaded lazily so `edgepack inspect` does not start a broker or open a database.
import { readFile } from 'node:fs/promises';

type CommandModule = { run(argv: string[]): Promise<number> };

const commands: Record<string, { summary: string; load: () => Promise<CommandModule> }> = {
  serve: { summary: 'run the orchestrator (HTTP API, MQTT broker, builds, rollouts)', load: () => import('./commands/serve.js') },
  inspect: { summary: 'show an ONNX model\'s IR, opsets, inputs/outputs, ops, parameters, MACs, sha256', load: () => import('./commands/inspect.js') },
  optimize: { summary: 'convert an ONNX model to fp16, int8-dynamic or int8-static (QDQ)', load: () => import('./commands/optimize.js') },
  evaluate: { summary: 'compare optimized models with the fp32 reference: accuracy, error, size, latency', load: () => import('./commands/evaluate.js') },
  keys: { summary: 'offline root keys and trust metadata: init, sign, rotate-online, rotate-root, verify', load: () => import('./commands/keys.js') },
  convert: { summary: 'convert an ONNX model to TFLite (fp32, int8-dynamic, full-integer int8)', load: () => import('./commands/convert.js') },
};

function usage(): string {
  const lines = Object.entries(commands).map(([name, c]) => `  ${name.padEnd(10)} ${c.summary}`);
  return `usage: edgepack <command> [options]\n\ncommands:\n${lines.join('\n')}\n\nRun 'edgepack <command> --help' for a command's options; 'edgepack --version' prints the version.`;
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === '--version' || name === '-v' || name === 'version') {
    const pkg = JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string };
    console.log(pkg.version);
    return 0;
  }
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    console.log(usage());
    return name ? 0 : 2;
  }
  const command = commands[name];
  if (!command) {
    console.error(`edgepack: unknown command '${name}'\n\n${usage()}`);
    return 2;
  }
  return (await command.load()).run(rest);
}

main(process.argv.slice(2)).then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    const e = err as { code?: string; message?: string };
    console.error(`edgepack: ${e.code ? `[${e.code}] ` : ''}${e.message ?? String(err)}`);
    process.exitCode = 1;
  },
);
