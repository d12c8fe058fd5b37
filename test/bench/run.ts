// `npm run bench`: runs every test/bench/*.bench.js (or those named on the command line) in
// turn. Each prints its own table of side-by-side ratios measured in the same run.
import { readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const dir = dirname(fileURLToPath(import.meta.url));
const wanted = process.argv.slice(2);
const files = (await readdir(dir)).filter((f) => f.endsWith('.bench.js')).filter((f) => wanted.length === 0 || wanted.some((w) => f.startsWith(w))).sort();
if (files.length === 0) {
  console.error(`no benchmarks match ${wanted.join(' ')}`);
  process.exitCode = 2;
}
for (const f of files) {
  console.log(`\n=== ${f.replace(/\.bench\.js$/, '')} ===`);
  const mod = (await import(pathToFileURL(join(dir, f)).href)) as { run(): Promise<void> };
  await mod.run();
}
