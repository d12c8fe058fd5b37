// The demo's --selection flag and its per-profile table (orchestrator/src/demo.ts), without running the demo.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { choiceTable, parseDemoArgs } from '@edgepack/orchestrator/demo.js';

test('--selection host|device (default host); anything else is refused, naming the flag', () => {
  assert.deepEqual(parseDemoArgs([]), { selection: 'host' });
  assert.deepEqual(parseDemoArgs(['--selection', 'device']), { selection: 'device' });
  assert.deepEqual(parseDemoArgs(['--selection=host']), { selection: 'host' });
  assert.throws(() => parseDemoArgs(['--selection', 'devices']), /--selection takes host or device/);
  assert.throws(() => parseDemoArgs(['--selection']), /--selection takes host or device/);
  assert.throws(() => parseDemoArgs(['--fast']), /unknown argument --fast/);
});

test('the table gives per profile the host\'s pick beside the devices\' pick, with each candidate\'s median p95 on the devices', () => {
  const lines = choiceTable([{
    profile: 'raspberry-pi-5', hostPick: { precision: 'fp32' }, precision: 'int8-static', cause: 'measured',
    candidates: [
      { precision: 'int8-static', medianP95Ms: 4.4, eligible: true, devices: [{ p95Ms: 4.4 }] },
      { precision: 'fp32', medianP95Ms: 9.1, eligible: true, devices: [{ p95Ms: 9.1 }] },
      { precision: 'int8-dynamic', medianP95Ms: null, eligible: false, devices: [] },
    ],
  }]);
  assert.match(lines[0]!, /profile\s+host pick\s+devices' pick\s+cause/);
  assert.match(lines[2]!, /^raspberry-pi-5\s+fp32\s+int8-static\s+measured\s+int8-static 4\.400 \(1 dev\), fp32 9\.100 \(1 dev\), int8-dynamic -✗ \(0 dev\)/);
});
