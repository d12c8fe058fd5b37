// The package boundaries the architecture promises, checked on the source: the agent installs
// without orchestrator dependencies, and protocol/ is the only code the two sides share.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { builtinModules } from 'node:module';
import { repoRoot } from '../support/paths.js';

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

/** Bare package names a package's source imports (static and dynamic), without node: builtins. */
async function importedPackages(pkg: string): Promise<Map<string, string>> {
  const found = new Map<string, string>();
  for (const file of await sources(join(repoRoot(), pkg, 'src'))) {
    const text = await readFile(file, 'utf8');
    for (const m of text.matchAll(/(?:from\s+|import\s*\(\s*)['"]([^'"]+)['"]/g)) {
      const spec = m[1]!;
      if (spec.startsWith('.') || spec.startsWith('node:') || builtinModules.includes(spec)) continue;
      const name = spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!;
      found.set(name, file);
    }
  }
  return found;
}

async function declared(pkg: string): Promise<Set<string>> {
  const json = JSON.parse(await readFile(join(repoRoot(), pkg, 'package.json'), 'utf8')) as { dependencies?: Record<string, string> };
  return new Set(Object.keys(json.dependencies ?? {}));
}

for (const pkg of ['protocol', 'firmware-profiles', 'agent', 'orchestrator']) {
  test(`${pkg}: every package its source imports is one of its declared dependencies`, async () => {
    const deps = await declared(pkg);
    for (const [name, file] of await importedPackages(pkg)) assert.ok(deps.has(name), `${file} imports ${name}, which ${pkg}/package.json does not declare`);
  });
}

test('the agent depends on nothing orchestrator-only and never on the orchestrator', async () => {
  const deps = await declared('agent');
  for (const banned of ['@edgepack/orchestrator', '@edgepack/firmware-profiles', 'fastify', 'aedes', 'better-sqlite3', 'node-cron', 'flatbuffers']) {
    assert.ok(!deps.has(banned), `agent/package.json depends on ${banned}`);
  }
});

test('protocol/ depends on neither side', async () => {
  const imported = await importedPackages('protocol');
  for (const name of imported.keys()) assert.ok(!name.startsWith('@edgepack/'), `protocol imports ${name}`);
});

/** Relative imports of one source file, resolved against the repository (`.js` specifiers name `.ts` sources). */
async function relativeImports(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8');
  return [...text.matchAll(/(?:from\s+|import\s*\(\s*)['"](\.[^'"]+)['"]/g)].map((m) => join(file, '..', m[1]!.replace(/\.js$/, '.ts')));
}

test('orchestrator core/ decides over record types and never reaches the database', async () => {
  const src = join(repoRoot(), 'orchestrator/src');
  for (const file of await sources(join(src, 'core'))) {
    for (const target of await relativeImports(file)) {
      assert.ok(!target.startsWith(join(src, 'db')), `${file} imports ${target}; core/ may use records.ts, never db/`);
      assert.ok(target.startsWith(join(src, 'core')) || target === join(src, 'records.ts'), `${file} imports ${target}; core/ imports only core/ and records.ts`);
    }
  }
});

test('records.ts is plain data: it imports nothing but wire types from protocol/', async () => {
  const text = await readFile(join(repoRoot(), 'orchestrator/src/records.ts'), 'utf8');
  for (const m of text.matchAll(/^\s*import\s+(type\s+)?[^;]*?from\s+['"]([^'"]+)['"]/gm)) {
    assert.ok(m[1] && m[2] === '@edgepack/protocol', `records.ts imports ${m[0].trim()}; only \`import type … from '@edgepack/protocol'\` is allowed`);
  }
});

test('orchestrator core/ never reads the clock or draws random numbers: time comes in as an argument, randomness from a seed', async () => {
  const src = join(repoRoot(), 'orchestrator/src/core');
  for (const file of await sources(src)) {
    const text = (await readFile(file, 'utf8')).replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, '');
    for (const banned of [/\bDate\.now\s*\(/, /\bnew Date\s*\(\s*\)/, /\bMath\.random\s*\(/, /\bperformance\.now\s*\(/]) {
      assert.ok(!banned.test(text), `${file} uses ${banned.source}; decide over an injected now and a seeded PRNG`);
    }
  }
});

test('HTTP route plugins never import app.ts (no import circle) and never check roles themselves', async () => {
  const http = join(repoRoot(), 'orchestrator/src/http');
  const routes = await sources(join(http, 'routes'));
  assert.ok(routes.length >= 5, 'route plugins found');
  for (const file of routes) {
    for (const target of await relativeImports(file)) assert.notEqual(target, join(http, 'app.ts'), `${file} imports app.ts`);
    const text = await readFile(file, 'utf8');
    // Access is declared in route options and enforced by one hook; handlers do not decide it.
    assert.doesNotMatch(text, /requireAdmin|\.role\s*[!=]==|'UNAUTHORIZED'|'FORBIDDEN'/, `${file} decides access itself`);
  }
});

test('the agent verifies bundles and desired states only through the root chain (TrustVerifier), never against a single key', async () => {
  for (const file of await sources(join(repoRoot(), 'agent/src'))) {
    const text = await readFile(file, 'utf8');
    for (const direct of ['createManifestVerifier', 'verifyDesiredSignature', 'verifyCanonical']) {
      assert.ok(!text.includes(direct), `${file} uses ${direct}; verify through TrustVerifier so the trusted root decides which keys count`);
    }
  }
});

test('use cases live in services/: the rollout, device and enrollment routes only translate HTTP, and services know nothing of HTTP', async () => {
  const src = join(repoRoot(), 'orchestrator/src');
  for (const name of ['rollouts', 'devices', 'enrollment']) {
    const file = join(src, 'http/routes', `${name}.ts`);
    const text = await readFile(file, 'utf8');
    // No store access and no database: every read and write goes through a service.
    assert.doesNotMatch(text, /\bstore\b|\bdeps\.store\b/, `${file} reaches the store; call a service`);
    for (const target of await relativeImports(file)) assert.ok(!target.startsWith(join(src, 'db')), `${file} imports ${target}`);
  }
  for (const file of await sources(join(src, 'services'))) {
    for (const target of await relativeImports(file)) {
      assert.ok(!target.startsWith(join(src, 'http')) && !target.startsWith(join(src, 'mqtt')), `${file} imports ${target}; services are called by the edges, never the other way round`);
    }
  }
});
