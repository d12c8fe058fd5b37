// `edgepack convert` end to end in-process: file in, .tflite out, nothing written on failure.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { GraphBuilder, buildTinyMlpModel } from '@edgepack/orchestrator/onnx/graph-builder.js';
import { DataType } from '@edgepack/orchestrator/onnx/tensor.js';
import { run } from '@edgepack/orchestrator/commands/convert.js';
import { inspectTflite } from '@edgepack/orchestrator/tflite/reader.js';

test('edgepack convert writes an fp32 .tflite that inspects with the ONNX IO names', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-convert-'));
  try {
    const src = path.join(dir, 'mlp.onnx');
    const out = path.join(dir, 'mlp.tflite');
    await writeFile(src, buildTinyMlpModel());
    const log = console.log;
    console.log = () => {};
    try {
      assert.equal(await run([src, '-o', out, '--precision', 'fp32', '--json']), 0);
    } finally {
      console.log = log;
    }
    const info = inspectTflite(new Uint8Array(await readFile(out)));
    assert.deepEqual(info.inputs.map((i) => [i.name, i.shape]), [['input', [1, 28, 28, 1]]]);
    assert.deepEqual(info.outputs.map((o) => [o.name, o.shape]), [['output', [1, 10]]]);
    assert.equal(info.operators.FULLY_CONNECTED, 2);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('edgepack convert refuses an unsupported model without writing the output', async () => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'edgepack-convert-'));
  try {
    const g = new GraphBuilder();
    const x = g.input('x', DataType.FLOAT, [1, 4]);
    g.node('Erf', [x], ['y'], {}, { name: 'the_erf' });
    g.output('y', DataType.FLOAT);
    const src = path.join(dir, 'erf.onnx');
    const out = path.join(dir, 'erf.tflite');
    await writeFile(src, g.encode());
    await assert.rejects(run([src, '-o', out]), (e: { code?: string }) => e.code === 'TFLITE_UNSUPPORTED_OPS');
    assert.equal(existsSync(out), false);
    const err = console.error;
    console.error = () => {};
    try {
      assert.equal(await run([src]), 2);
      assert.equal(await run([src, '-o', out, '--precision', 'int4']), 2);
    } finally {
      console.error = err;
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
