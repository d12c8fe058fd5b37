// Issue-3 optimizer targets, measured in one run as ratios against fp32 (onnxruntime-node,
// single-threaded, side by side): accuracy on fashion_test1k, file size, output cosine and p50
// latency on mobilenet_v2 (random weights, seeded random inputs), and quantization time.
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decodeModel, encodeModel } from '@edgepack/orchestrator/onnx/onnx-model.js';
import { loadLabels, loadNpyDataset, type Dataset } from '@edgepack/orchestrator/optimizer/dataset.js';
import { evaluateModels, type EvaluationResult } from '@edgepack/orchestrator/optimizer/evaluate.js';
import { optimizeModel, type OptimizeOptions } from '@edgepack/orchestrator/optimizer/optimize.js';

function sharedModels(): string | undefined {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  while (!existsSync(path.join(dir, 'tsconfig.base.json'))) {
    const up = path.dirname(dir);
    if (up === dir) return undefined;
    dir = up;
  }
  const shared = path.resolve(dir, '../shared/models');
  return existsSync(path.join(shared, 'mobilenet_v2.onnx')) ? shared : undefined;
}

/** Seeded standard-normal samples (Box–Muller over an LCG), standing in for images. */
function gaussian(count: number, seed: number): Float32Array {
  let a = seed >>> 0;
  const next = (): number => { a = (Math.imul(a, 1664525) + 1013904223) >>> 0; return (a + 1) / 4294967297; };
  const out = new Float32Array(count);
  for (let i = 0; i < count; i += 2) {
    const r = Math.sqrt(-2 * Math.log(next()));
    const t = 2 * Math.PI * next();
    out[i] = r * Math.cos(t);
    if (i + 1 < count) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

interface Row {
  model: string;
  variant: string;
  quantS: string;
  size: string;
  top1: string;
  drop: string;
  cosMin: string;
  p50: string;
  target: string;
}

function row(model: string, variant: string, ms: number, r: EvaluationResult, target: string): Row {
  return {
    model,
    variant,
    quantS: (ms / 1000).toFixed(2),
    size: `${r.sizeRatio.toFixed(3)}x`,
    top1: r.candidateTop1 !== undefined ? `${(r.candidateTop1 * 100).toFixed(1)}% (fp32 ${(r.referenceTop1! * 100).toFixed(1)}%)` : `agree ${(r.top1Agreement * 100).toFixed(1)}%`,
    drop: r.top1DropPoints !== undefined ? `${r.top1DropPoints.toFixed(2)} pt` : '-',
    cosMin: r.cosineMin.toFixed(5),
    p50: r.latency ? `${r.latency.ratio.toFixed(3)}x (${r.latency.candidateP50Ms.toFixed(2)}/${r.latency.referenceP50Ms.toFixed(2)} ms)` : '-',
    target,
  };
}

function printTable(rows: Row[]): void {
  const cols: (keyof Row)[] = ['model', 'variant', 'quantS', 'size', 'top1', 'drop', 'cosMin', 'p50', 'target'];
  const head: Record<keyof Row, string> = {
    model: 'model', variant: 'variant', quantS: 'quant s', size: 'size/fp32', top1: 'top-1', drop: 'drop',
    cosMin: 'cos min', p50: 'p50 lat/fp32', target: 'issue-3 target',
  };
  const width = (c: keyof Row): number => Math.max(head[c].length, ...rows.map((r) => r[c].length));
  const line = (r: Record<keyof Row, string>): string => cols.map((c) => r[c].padEnd(width(c))).join('  ');
  console.log(line(head));
  console.log(cols.map((c) => '-'.repeat(width(c))).join('  '));
  for (const r of rows) console.log(line(r));
}

async function variant(
  name: string, fp32: Uint8Array, options: OptimizeOptions, data: Dataset, labels: number[] | undefined, runs: number,
): Promise<{ ms: number; result: EvaluationResult }> {
  const t0 = performance.now();
  const { model } = await optimizeModel(decodeModel(fp32), options);
  const bytes = encodeModel(model);
  const ms = performance.now() - t0;
  const result = await evaluateModels(fp32, bytes, data, { ...(labels ? { labels, labelsSource: `${name} labels` } : {}), latencyRuns: runs });
  return { ms, result };
}

export async function run(): Promise<void> {
  const dir = sharedModels();
  if (!dir) {
    console.log('skipped: shared models not found at <repo>/../shared/models');
    return;
  }
  const rows: Row[] = [];
  const test = await loadNpyDataset(path.join(dir, 'fashion_test1k.npy'));
  const labels = await loadLabels(path.join(dir, 'fashion_test1k.labels.npy'));
  const calib = await loadNpyDataset(path.join(dir, 'fashion_calib256.npy'));

  const cnn = new Uint8Array(await readFile(path.join(dir, 'fashion_cnn.onnx')));
  let v = await variant('fashion_cnn', cnn, { precision: 'int8-static', calibration: calib, method: 'minmax', perChannel: true }, test, labels, 200);
  rows.push(row('fashion_cnn', 'int8-static S8S8 minmax pc', v.ms, v.result, 'drop<=0.3, size<=0.27'));
  v = await variant('fashion_cnn', cnn, { precision: 'int8-static', calibration: calib, method: 'entropy', perChannel: true }, test, labels, 200);
  rows.push(row('fashion_cnn', 'int8-static S8S8 entropy pc', v.ms, v.result, '-'));
  v = await variant('fashion_cnn', cnn, { precision: 'fp16' }, test, labels, 200);
  rows.push(row('fashion_cnn', 'fp16', v.ms, v.result, '-'));

  const mlp = new Uint8Array(await readFile(path.join(dir, 'fashion_mlp.onnx')));
  v = await variant('fashion_mlp', mlp, { precision: 'int8-dynamic' }, test, labels, 200);
  rows.push(row('fashion_mlp', 'int8-dynamic', v.ms, v.result, 'drop<=0.3, size<=0.27'));
  v = await variant('fashion_mlp', mlp, { precision: 'int8-static', calibration: calib }, test, labels, 200);
  rows.push(row('fashion_mlp', 'int8-static S8S8 minmax pc', v.ms, v.result, '-'));

  // mobilenet_v2 has random weights and no data set: seeded Gaussian inputs, 64 for calibration
  // and 16 different ones for evaluation.
  const mb = new Uint8Array(await readFile(path.join(dir, 'mobilenet_v2.onnx')));
  const per = 3 * 224 * 224;
  const mbCalib: Dataset = { source: 'gaussian(seed 1)', shape: [64, 3, 224, 224], data: gaussian(64 * per, 1) };
  const mbEval: Dataset = { source: 'gaussian(seed 2)', shape: [16, 3, 224, 224], data: gaussian(16 * per, 2) };
  // Per-tensor is the mobilenet target row: per-channel needs 7-bit pointwise weights on non-VNNI
  // x86 (saturating u8×s8 kernels), which costs more accuracy than per-channel scales win back.
  v = await variant('mobilenet_v2', mb, { precision: 'int8-static', calibration: mbCalib, activationType: 'uint8', perChannel: false }, mbEval, undefined, 30);
  rows.push(row('mobilenet_v2', 'int8-static U8S8 minmax pt', v.ms, v.result, 'size<=0.28, cos>=0.999, p50<=0.91, <30 s'));
  v = await variant('mobilenet_v2', mb, { precision: 'int8-static', calibration: mbCalib, activationType: 'uint8' }, mbEval, undefined, 30);
  rows.push(row('mobilenet_v2', 'int8-static U8S8 minmax pc', v.ms, v.result, '-'));
  v = await variant('mobilenet_v2', mb, { precision: 'int8-static', calibration: mbCalib }, mbEval, undefined, 30);
  rows.push(row('mobilenet_v2', 'int8-static S8S8 minmax pc', v.ms, v.result, '-'));
  v = await variant('mobilenet_v2', mb, { precision: 'fp16' }, mbEval, undefined, 10);
  rows.push(row('mobilenet_v2', 'fp16', v.ms, v.result, 'size<=0.51, cos>=0.999'));
  printTable(rows);
  console.log('ratios: candidate/fp32 (lower is smaller/faster); latency single-threaded, interleaved, batch 1.');
}
