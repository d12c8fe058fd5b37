import { test } from 'node:test';
import assert from 'node:assert/strict';
import { computeQParams, qRange, quantizeBias, quantizeWeight, roundHalfEven } from '@edgepack/orchestrator/optimizer/quant-math.js';

test('round half to even, as numpy', () => {
  assert.deepEqual([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4, 2.6].map(roundHalfEven), [0, 2, 2, -0, -2, -2, 2, 3]);
});

test('activation parameters: range always includes 0; uint8 and int8 asymmetric', () => {
  // All-positive range: rmin is pulled to 0, so zero point is qmin.
  assert.deepEqual(computeQParams(1, 5.1, 'uint8', false), { scale: Math.fround(5.1 / 255), zeroPoint: 0 });
  assert.deepEqual(computeQParams(1, 5.1, 'int8', false), { scale: Math.fround(5.1 / 255), zeroPoint: -128 });
  // All-negative range: rmax pulled to 0.
  assert.equal(computeQParams(-2, -1, 'uint8', false).zeroPoint, 255);
  const p = computeQParams(-1, 3, 'uint8', false);
  assert.equal(p.scale, Math.fround(4 / 255));
  assert.equal(p.zeroPoint, roundHalfEven(0 - Math.fround(-1 / p.scale)));
  assert.equal(p.zeroPoint, 64);
  // Degenerate range: scale 1, zero point 0 (ORT's guard against division by zero).
  assert.deepEqual(computeQParams(0, 0, 'int8', false), { scale: 1, zeroPoint: 0 });
});

test('symmetric int8 uses [-127, 127] with zero point 0; reduce range keeps 7 bits', () => {
  assert.deepEqual(qRange('int8', true), [-127, 127]);
  assert.deepEqual(qRange('int8', false), [-128, 127]);
  assert.deepEqual(qRange('int8', true, true), [-64, 64]);
  const p = computeQParams(-0.5, 2.54, 'int8', true);
  assert.equal(p.zeroPoint, 0);
  assert.equal(p.scale, Math.fround(5.08 / 254));
  const w = quantizeWeight(Float32Array.from([-0.5, 2.54, 1.27, 0]), [4], 'int8');
  assert.deepEqual(Array.from(w.data), [-25, 127, 64, 0]); // 1.27/0.02 = 63.5 → 64 (half to even)
  assert.deepEqual(Array.from(w.zeroPoints), [0]);
});

test('per-channel weights: one scale per slice along the axis', () => {
  // [2 out, 3 in], axis 0.
  const w = quantizeWeight(Float32Array.from([1, -2, 0.5, 10, 5, -2.5]), [2, 3], 'int8', { axis: 0 });
  assert.deepEqual(Array.from(w.scales), [Math.fround(4 / 254), Math.fround(20 / 254)]);
  assert.deepEqual(Array.from(w.data), [64, -127, 32, 127, 64, -32]);
  // axis 1 of [2, 3]: columns.
  const c = quantizeWeight(Float32Array.from([1, -2, 0.5, 10, 5, -2.5]), [2, 3], 'int8', { axis: 1 });
  assert.equal(c.scales.length, 3);
  assert.equal(c.data[3], 127);
  assert.equal(c.data[1], -51);
});

test('bias is int32 with scale = input_scale × weight_scale', () => {
  const b = quantizeBias(Float32Array.from([0.1, -0.3]), 0.02, Float32Array.from([0.5, 0.25]));
  assert.deepEqual(Array.from(b.scales), [Math.fround(0.01), Math.fround(0.005)]);
  assert.deepEqual(Array.from(b.data), [10, -60]);
});
