// ONNX → TFLite side by side: size, accuracy against the float ONNX model, conversion time, and
// LiteRT p50 latency next to onnxruntime-node's for the same model (both single-threaded: the
// LiteRT.js wasm build is single-threaded, so ORT runs with one intra-op thread too).
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import * as ort from 'onnxruntime-node';
import { loadLabels, loadNpyDataset } from '@edgepack/orchestrator/optimizer/dataset.js';
import { convertOnnxToTflite, type TflitePrecision } from '@edgepack/orchestrator/tflite/convert.js';
import { openLiteRtSession } from '@edgepack/orchestrator/tflite/litert-runner.js';
import { argmax, cosine, maxAbsDiff, randomData, runConverted, sharedModelsDir } from '../unit/tflite-fixtures.js';

interface Row {
  model: string;
  precision: string;
  bytes: number;
  ratio: string;
  maxAbsErr: string;
  cosine: string;
  top1: string;
  convertS: string;
  litertP50: string;
  ortP50: string;
}

function p50(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function ortP50(onnx: Uint8Array, x: Float32Array, dims: number[], runs: number): Promise<{ ms: number; out: Float32Array }> {
  const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1, interOpNumThreads: 1 });
  try {
    const feeds = { [session.inputNames[0]]: new ort.Tensor('float32', x, dims) };
    let out = (await session.run(feeds))[session.outputNames[0]].data as Float32Array;
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      out = (await session.run(feeds))[session.outputNames[0]].data as Float32Array;
      times.push(performance.now() - t);
    }
    return { ms: p50(times), out };
  } finally {
    await session.release();
  }
}

async function benchModel(
  rows: Row[],
  name: string,
  onnx: Uint8Array,
  dims: number[],
  precisions: TflitePrecision[],
  calibration: { data: Float32Array; shape: number[]; maxSamples?: number },
  evalSet: { data: Float32Array; labels: number[] } | undefined,
  runs: number,
): Promise<void> {
  const per = dims.slice(1).reduce((a, b) => a * b, 1);
  const probe = evalSet ? evalSet.data.slice(0, per) : randomData(per, 42);
  const ref = await ortP50(onnx, probe, dims, runs);
  let ortTop1 = '';
  if (evalSet) {
    const session = await ort.InferenceSession.create(onnx, { intraOpNumThreads: 1 });
    const n = evalSet.labels.length;
    const out = (await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', evalSet.data, [n, ...dims.slice(1)]) }))[session.outputNames[0]].data as Float32Array;
    const k = out.length / n;
    let correct = 0;
    for (let i = 0; i < n; i++) if (argmax(out.subarray(i * k, (i + 1) * k)) === evalSet.labels[i]) correct++;
    ortTop1 = (correct / n).toFixed(3);
    await session.release();
  }
  rows.push({ model: name, precision: 'onnx fp32', bytes: onnx.byteLength, ratio: '1.00', maxAbsErr: '-', cosine: '-', top1: ortTop1, convertS: '-', litertP50: '-', ortP50: ref.ms.toFixed(2) });
  for (const precision of precisions) {
    const t0 = performance.now();
    const conv = await convertOnnxToTflite(onnx, { precision, calibration });
    const convertS = ((performance.now() - t0) / 1000).toFixed(2);
    const session = await openLiteRtSession(conv.tflite);
    try {
      const [out] = await runConverted(session, conv, probe, dims);
      const times: number[] = [];
      for (let i = 0; i < runs; i++) {
        const t = performance.now();
        await runConverted(session, conv, probe, dims);
        times.push(performance.now() - t);
      }
      let top1 = '';
      if (evalSet) {
        let correct = 0;
        for (let i = 0; i < evalSet.labels.length; i++) {
          const [o] = await runConverted(session, conv, evalSet.data.slice(i * per, (i + 1) * per), dims);
          if (argmax(o) === evalSet.labels[i]) correct++;
        }
        top1 = (correct / evalSet.labels.length).toFixed(3);
      }
      rows.push({
        model: name,
        precision: `tflite ${precision}`,
        bytes: conv.tflite.byteLength,
        ratio: (conv.tflite.byteLength / onnx.byteLength).toFixed(2),
        maxAbsErr: maxAbsDiff(out, ref.out).toExponential(2),
        cosine: cosine(out, ref.out).toFixed(6),
        top1,
        convertS,
        litertP50: p50(times).toFixed(2),
        ortP50: '',
      });
    } finally {
      session.close();
    }
  }
}

function printTable(rows: Row[]): void {
  const cols: [keyof Row, string][] = [
    ['model', 'model'], ['precision', 'artifact'], ['bytes', 'bytes'], ['ratio', 'x onnx'], ['maxAbsErr', 'max|err|'],
    ['cosine', 'cosine'], ['top1', 'top-1'], ['convertS', 'convert s'], ['litertP50', 'LiteRT p50 ms'], ['ortP50', 'ORT p50 ms'],
  ];
  const width = cols.map(([k, h]) => Math.max(h.length, ...rows.map((r) => String(r[k]).length)));
  const line = (vals: string[]) => `| ${vals.map((v, i) => v.padEnd(width[i])).join(' | ')} |`;
  console.log(line(cols.map(([, h]) => h)));
  console.log(`|${width.map((w) => '-'.repeat(w + 2)).join('|')}|`);
  for (const r of rows) console.log(line(cols.map(([k]) => String(r[k]))));
}

export async function run(): Promise<void> {
  const dir = sharedModelsDir();
  if (!dir) {
    console.log('tflite bench skipped: shared models not found at <repo root>/../shared/models');
    return;
  }
  const rows: Row[] = [];
  const load = async (f: string) => new Uint8Array(await readFile(path.join(dir, f)));
  const calib = await loadNpyDataset(path.join(dir, 'fashion_calib256.npy'));
  const test1k = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const labels = await loadLabels(path.join(dir, 'fashion_test1k.labels.npy'));
  const evalSet = { data: test1k.data, labels };
  for (const name of ['fashion_cnn', 'fashion_mlp']) {
    await benchModel(rows, name, await load(`${name}.onnx`), [1, 1, 28, 28], ['fp32', 'int8-dynamic', 'int8'], calib, evalSet, 50);
  }
  // mobilenet_v2 has random weights: accuracy is cosine vs ONNX fp32; calibration on 64 seeded inputs.
  const mnCalib = { data: randomData(64 * 3 * 224 * 224, 3), shape: [64, 3, 224, 224] };
  await benchModel(rows, 'mobilenet_v2', await load('mobilenet_v2.onnx'), [1, 3, 224, 224], ['fp32', 'int8-dynamic', 'int8'], mnCalib, undefined, 20);
  console.log('\nONNX → TFLite (LiteRT.js wasm vs onnxruntime-node, both 1 thread, batch 1)\n');
  printTable(rows);
}
