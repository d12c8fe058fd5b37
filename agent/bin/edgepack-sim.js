#!/usr/bin/env node
// A committed source, not a build output: npm links workspace bins before `prepare` has built
// dist/, and skips a link whose target does not exist yet. This file always exists, so
// `npx edgepack-sim` works on a fresh clone; it only hands over to the built CLI.
import { existsSync } from 'node:fs';

const cli = new URL('../dist/sim/sim-cli.js', import.meta.url);
if (!existsSync(cli)) {
  console.error('edgepack-sim: ' + cli.pathname + ' is not built yet; run `npm install` (or `npm run build`) in the repository first');
  process.exit(1);
}
await import(cli.href);
