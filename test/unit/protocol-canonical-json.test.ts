import { test } from 'node:test';
import assert from 'node:assert/strict';
import { canonicalBytes, canonicalJson } from '@edgepack/protocol';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return (err as { code?: string }).code;
  }
  return undefined;
}

test('key order does not change the output; keys come out sorted', () => {
  const a = canonicalJson({ b: 1, a: 2, c: 3 });
  const b = canonicalJson({ c: 3, a: 2, b: 1 });
  assert.equal(a, '{"a":2,"b":1,"c":3}');
  assert.equal(a, b);
});

test('keys sort by UTF-16 code unit (uppercase before lowercase, digits first)', () => {
  assert.equal(canonicalJson({ b: 0, B: 0, a: 0, '1': 0, _: 0 }), '{"1":0,"B":0,"_":0,"a":0,"b":0}');
});

test('nested objects are sorted at every depth and have no whitespace', () => {
  const x = { z: { y: [3, { q: true, p: null }], x: 'v' }, a: { d: { c: 1, b: 2 } } };
  const y = { a: { d: { b: 2, c: 1 } }, z: { x: 'v', y: [3, { p: null, q: true }] } };
  const expected = '{"a":{"d":{"b":2,"c":1}},"z":{"x":"v","y":[3,{"p":null,"q":true}]}}';
  assert.equal(canonicalJson(x), expected);
  assert.equal(canonicalJson(y), expected);
  assert.deepEqual(JSON.parse(expected), x);
});

test('arrays keep their order (order is significant)', () => {
  assert.equal(canonicalJson([3, 1, 2]), '[3,1,2]');
  assert.notEqual(canonicalJson([1, 2]), canonicalJson([2, 1]));
  assert.equal(canonicalJson([]), '[]');
  assert.equal(canonicalJson({}), '{}');
  assert.equal(canonicalJson([[], {}, [null]]), '[[],{},[null]]');
});

test('scalars serialise as JSON.stringify does', () => {
  assert.equal(canonicalJson(null), 'null');
  assert.equal(canonicalJson(true), 'true');
  assert.equal(canonicalJson(false), 'false');
  assert.equal(canonicalJson(0), '0');
  assert.equal(canonicalJson(-0), '0');
  assert.equal(canonicalJson(1.5e-7), JSON.stringify(1.5e-7));
  assert.equal(canonicalJson(1e21), JSON.stringify(1e21));
  assert.equal(canonicalJson('a"b\\c\n'), JSON.stringify('a"b\\c\n'));
});

test('undefined object values are dropped, so {a:1,b:undefined} equals {a:1}', () => {
  assert.equal(canonicalJson({ a: 1, b: undefined }), canonicalJson({ a: 1 }));
});

test('Object.create(null) objects are plain enough', () => {
  const o = Object.create(null) as Record<string, unknown>;
  o.y = 1;
  o.x = 2;
  assert.equal(canonicalJson(o), '{"x":2,"y":1}');
});

test('NaN and ±Infinity are refused with CANONICAL_JSON_INVALID, also when nested', () => {
  for (const bad of [NaN, Infinity, -Infinity]) {
    assert.equal(codeOf(() => canonicalJson(bad)), 'CANONICAL_JSON_INVALID');
    assert.equal(codeOf(() => canonicalJson({ a: { b: [1, bad] } })), 'CANONICAL_JSON_INVALID');
  }
});

test('undefined inside an array is refused (JSON.stringify would silently write null)', () => {
  assert.equal(codeOf(() => canonicalJson([1, undefined, 2])), 'CANONICAL_JSON_INVALID');
  assert.equal(codeOf(() => canonicalJson({ list: [undefined] })), 'CANONICAL_JSON_INVALID');
  assert.equal(codeOf(() => canonicalJson(undefined)), 'CANONICAL_JSON_INVALID');
});

test('functions, symbols and bigints are refused', () => {
  assert.equal(codeOf(() => canonicalJson(() => 1)), 'CANONICAL_JSON_INVALID');
  assert.equal(codeOf(() => canonicalJson({ f: function named() {} })), 'CANONICAL_JSON_INVALID');
  assert.equal(codeOf(() => canonicalJson([Symbol('s')])), 'CANONICAL_JSON_INVALID');
  assert.equal(codeOf(() => canonicalJson({ n: 10n })), 'CANONICAL_JSON_INVALID');
});

test('class instances (Date, Map, typed arrays, user classes) are refused', () => {
  class Point { constructor(readonly x = 1) {} }
  const cases: unknown[] = [new Date(0), new Map([[1, 2]]), new Set([1]), new Uint8Array([1]), new Point(), /re/, new String('s'), Buffer.from('x')];
  for (const c of cases) {
    assert.equal(codeOf(() => canonicalJson(c)), 'CANONICAL_JSON_INVALID', `top-level ${Object.prototype.toString.call(c)}`);
    assert.equal(codeOf(() => canonicalJson({ nested: [c] })), 'CANONICAL_JSON_INVALID', `nested ${Object.prototype.toString.call(c)}`);
  }
});

test('unicode strings: non-ASCII, astral plane and control characters round-trip', () => {
  const s = 'héllo — 日本語 🚀 \u0000\u001f \u2028';
  const out = canonicalJson({ s });
  assert.deepEqual(JSON.parse(out), { s });
  // canonicalBytes is the UTF-8 encoding of the canonical string
  const bytes = canonicalBytes({ s });
  assert.deepEqual(Buffer.from(bytes), Buffer.from(out, 'utf8'));
  assert.equal(new TextDecoder().decode(bytes), out);
});

test('unicode keys are sorted by UTF-16 code unit, not by code point', () => {
  // U+FF5E (fullwidth tilde) is one code unit 0xFF5E; U+1F680 is a surrogate pair starting 0xD83D.
  // By code unit the rocket (0xD83D…) sorts before 0xFF5E; by code point it would sort after.
  const out = canonicalJson({ '\uFF5E': 1, '🚀': 2, é: 3, a: 4 });
  assert.equal(out, '{"a":4,"é":3,"🚀":2,"～":1}');
});

test('canonicalBytes of equal values is byte-identical regardless of construction', () => {
  const a = canonicalBytes({ k: [1, 'x', { m: 2, l: 1 }], j: 'ü' });
  const b = canonicalBytes(JSON.parse('{"j":"ü","k":[1,"x",{"l":1,"m":2}]}'));
  assert.deepEqual(Buffer.from(a), Buffer.from(b));
});
