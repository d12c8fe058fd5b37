// The error catalogue holds every code the sources raise, and nothing they do not. Checked on the
// source text of all four packages: the codes passed to error constructors, set as `code`,
// compared against, sent in notices and status reports, and every other SCREAMING_SNAKE string
// literal, so a code cannot slip in through a path this test did not think of.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readdir, readFile } from 'node:fs/promises';
import { join, relative } from 'node:path';
import { ERROR_CATALOGUE, ERROR_CODES, catalogueCode, catalogueEntry, isErrorCode } from '@edgepack/protocol';
import { repoRoot } from '../support/paths.js';

const PACKAGES = ['protocol', 'firmware-profiles', 'orchestrator', 'agent'];
const CATALOGUE_FILE = join('protocol', 'src', 'error-catalogue.ts');

/**
 * Literals that are not our error codes: environment variable names, ONNX attribute values, and
 * other software's codes (Node errnos, Fastify, SQLite, Node's HTTP parser), which our code reads
 * and translates (ENOSPC → DISK_FULL, FST_ERR_CTP_BODY_TOO_LARGE → PAYLOAD_TOO_LARGE) but never
 * raises as they are.
 */
const NOT_CODES = [/^EDGEPACK_[A-Z0-9_]+$/, /^SAME_(UPPER|LOWER)$/, /^E[A-Z]+$/, /^FST_ERR_[A-Z_]+$/, /^SQLITE_[A-Z_]+$/, /^HPE_[A-Z_]+$/, /^ERR_HTTP_[A-Z_]+$/];

async function sources(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await sources(p)));
    else if (e.name.endsWith('.ts')) out.push(p);
  }
  return out;
}

interface Use { code: string; where: string }

/** Code literals in one source text, each with file:line. */
export function codeLiterals(text: string, file: string): Use[] {
  const found: Use[] = [];
  const add = (code: string, index: number) => {
    if (!NOT_CODES.some((re) => re.test(code))) found.push({ code, where: `${file}:${text.slice(0, index).split('\n').length}` });
  };
  const CODE = `'([A-Z][A-Z0-9_]*)'`;
  const contexts = [
    new RegExp(`new\\s+\\w*Error\\(\\s*${CODE}`, 'g'), // new EdgepackError('X', …), new StepError('X', …)
    new RegExp(`super\\(\\s*${CODE}`, 'g'), // subclasses naming their code
    new RegExp(`\\bcode\\s*(?::|=|===|!==)\\s*${CODE}`, 'g'), // { code: 'X' }, readonly code = 'X', code === 'X'
    new RegExp(`\\b(?:notice|refuse|catalogueCode|closeAction|finishEarly)\\([^()]*?,\\s*${CODE}`, 'g'),
  ];
  for (const re of contexts) for (const m of text.matchAll(re)) add(m[1]!, m.index!);
  // Every other literal that looks like a code, wherever it is.
  for (const m of text.matchAll(/'([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)'/g)) add(m[1]!, m.index!);
  return found;
}

async function allUses(): Promise<{ uses: Use[]; texts: Map<string, string> }> {
  const root = repoRoot();
  const uses: Use[] = [];
  const texts = new Map<string, string>();
  for (const pkg of PACKAGES) {
    for (const file of await sources(join(root, pkg, 'src'))) {
      const rel = relative(root, file);
      if (rel === CATALOGUE_FILE) continue;
      const text = await readFile(file, 'utf8');
      texts.set(rel, text);
      uses.push(...codeLiterals(text, rel));
    }
  }
  return { uses, texts };
}

test('the scanner finds codes in every form the sources use', () => {
  const sample = [
    "throw new EdgepackError('ONE', 'x');",
    "throw new StepError(\n  'TWO', `y`);",
    "class A extends EdgepackError { constructor() { super('THREE', 'z'); } }",
    "const r = { ok: false, code: 'FOUR', reason };",
    "readonly code = 'FIVE';",
    "this.notice(client.id, 'SIX', why, topic);",
    "if (code === 'SEVEN') return;",
    "const x = 'EIGHT_NINE';",
    "const env = 'EDGEPACK_DATA_DIR';",
    "if (err.code === 'ENOENT') return;",
  ].join('\n');
  assert.deepEqual(codeLiterals(sample, 'f.ts').map((u) => u.code).sort(), ['EIGHT_NINE', 'FIVE', 'FOUR', 'ONE', 'SEVEN', 'SIX', 'THREE', 'TWO']);
});

test('every error code raised anywhere in the sources is in the catalogue', async () => {
  const { uses } = await allUses();
  assert.ok(uses.length > 150, `found only ${uses.length} code uses; is the scanner still reading the sources?`);
  const unknown = uses.filter((u) => !isErrorCode(u.code));
  assert.deepEqual(unknown.map((u) => `${u.code} at ${u.where}`), [], 'codes missing from protocol/src/error-catalogue.ts');
});

test('every catalogue code is used somewhere (no dead entries)', async () => {
  const { texts } = await allUses();
  const all = [...texts.values()].join('\n');
  const unused = ERROR_CODES.filter((c) => !all.includes(`'${c}'`));
  assert.deepEqual(unused, [], 'catalogue entries no source raises');
});

test('every entry has an HTTP error status, a retry flag and a one-line meaning', () => {
  assert.ok(ERROR_CODES.length >= 100);
  for (const code of ERROR_CODES) {
    const e = ERROR_CATALOGUE[code];
    assert.match(code, /^[A-Z][A-Z0-9]*(_[A-Z0-9]+)*$/);
    assert.ok(Number.isInteger(e.status) && e.status >= 400 && e.status <= 599, `${code}: status ${e.status}`);
    assert.equal(typeof e.retryable, 'boolean', code);
    assert.ok(e.meaning.length > 10 && e.meaning.length < 140 && !e.meaning.includes('\n'), `${code}: meaning must be one line`);
  }
});

test('every not-found is a 404 and every 404 is a not-found; conflicts are 409', () => {
  for (const code of ERROR_CODES) {
    const { status } = ERROR_CATALOGUE[code];
    if (/NOT_FOUND$|_NOT_IN_/.test(code)) assert.equal(status, 404, code);
    if (status === 404) assert.match(code, /NOT_FOUND$|_NOT_IN_/, `${code} is a 404 but not named as a not-found`);
    if (/_EXISTS$|NOT_READY$|^SUPERSEDED$/.test(code)) assert.equal(status, 409, code);
  }
  // The two the issue names: a missing dataset used to be a 400 while a missing model was a 404.
  assert.equal(ERROR_CATALOGUE.DATASET_NOT_FOUND.status, 404);
  assert.equal(ERROR_CATALOGUE.MODEL_NOT_FOUND.status, 404);
  // The code of the update machine's own error class (update-machine.ts keeps its class).
  assert.ok(isErrorCode('ILLEGAL_TRANSITION'));
});

test('catalogueCode keeps catalogue codes and replaces anything else with the fallback', () => {
  assert.equal(catalogueCode({ code: 'GOLDEN_MISMATCH' }, 'STEP_FAILED'), 'GOLDEN_MISMATCH');
  assert.equal(catalogueCode(Object.assign(new Error('x'), { code: 'ENOENT' }), 'STEP_FAILED'), 'STEP_FAILED');
  assert.equal(catalogueCode(new Error('no code'), 'BENCHMARK_FAILED'), 'BENCHMARK_FAILED');
  assert.equal(catalogueCode('DOWNLOAD_STALLED', 'STEP_FAILED'), 'DOWNLOAD_STALLED');
  assert.equal(catalogueCode(undefined, 'VERIFY_FAILED'), 'VERIFY_FAILED');
  assert.equal(catalogueEntry('toString'), undefined, 'prototype keys are not codes');
  assert.equal(isErrorCode('__proto__'), false);
});
