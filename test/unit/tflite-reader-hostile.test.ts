// inspectTflite runs on uploads, inside the orchestrator's request handler: a corrupt file
// must end in TFLITE_INVALID_FILE, never in a multi-gigabyte allocation that kills the process.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { convertOnnxToTflite } from '@edgepack/orchestrator/tflite/convert.js';
import { inspectTflite } from '@edgepack/orchestrator/tflite/reader.js';

test('every 32-bit word of a model\'s tables set to a huge length is refused or read, never allocated', async () => {
  const { tflite } = await convertOnnxToTflite(buildTinyMlpModel({ seed: 4, hidden: 8 }), { precision: 'fp32' });
  assert.equal(inspectTflite(tflite).format, 'tflite');
  let refused = 0;
  // The tables, vtables and vector headers sit before the weight buffers; the tail holds the rest.
  const positions = [...Array(Math.min(4096, tflite.length) / 4).keys()].map((i) => i * 4)
    .concat([...Array(256).keys()].map((i) => tflite.length - 4 - i * 4).filter((p) => p >= 4096));
  for (const pos of positions) {
    const evil = new Uint8Array(tflite);
    new DataView(evil.buffer).setInt32(pos, 0x7fffffff, true);
    try {
      inspectTflite(evil);
    } catch (err) {
      assert.equal((err as { code?: string }).code, 'TFLITE_INVALID_FILE', `byte ${pos}: ${(err as Error).message}`);
      refused++;
    }
  }
  assert.ok(refused > 0, 'some corruptions are detected');
});
