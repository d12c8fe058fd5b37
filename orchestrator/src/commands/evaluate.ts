// `edgepack evaluate CANDIDATE --reference FP32 --data X.npy [--labels Y.npy]`
import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { inspectModel } from '../onnx/inspect.js';
import { checkDataset, loadDataset, loadLabels } from '../optimizer/dataset.js';
import { evaluateModels, type EvaluationResult } from '../optimizer/evaluate.js';

const USAGE = `usage: edgepack evaluate CANDIDATE.onnx [CANDIDATE2.onnx ...] --reference FP32.onnx --data X.npy|DIR
         [--labels Y.npy] [--runs 20] [--json]`;

function row(name: string, r: EvaluationResult): string {
  const pct = (x: number | undefined): string => (x === undefined ? '-' : `${(x * 100).toFixed(2)}%`);
  return [
    name,
    r.candidateTop1 !== undefined ? `top1 ${pct(r.candidateTop1)} (ref ${pct(r.referenceTop1)}, drop ${r.top1DropPoints!.toFixed(2)} pt)` : '',
    `agree ${pct(r.top1Agreement)}`,
    `maxAbs ${r.maxAbsError.toExponential(2)}`,
    `meanAbs ${r.meanAbsError.toExponential(2)}`,
    `cos ${r.cosineMean.toFixed(5)} (min ${r.cosineMin.toFixed(5)})`,
    `size ${r.sizeRatio.toFixed(3)}x`,
    r.latency ? `p50 ${r.latency.candidateP50Ms.toFixed(2)} ms vs ${r.latency.referenceP50Ms.toFixed(2)} ms = ${r.latency.ratio.toFixed(3)}x` : '',
  ].filter(Boolean).join('  ');
}

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        reference: { type: 'string' },
        data: { type: 'string' },
        labels: { type: 'string' },
        runs: { type: 'string' },
        json: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const v = args.values;
  if (v.help) { console.log(USAGE); return 0; }
  if (args.positionals.length === 0 || !v.reference || !v.data) { console.error(USAGE); return 2; }
  const reference = new Uint8Array(await readFile(v.reference));
  const info = inspectModel(reference);
  const data = await loadDataset(v.data);
  checkDataset(data, info.inputs[0]!);
  const labels = v.labels ? await loadLabels(v.labels) : undefined;
  const results: Record<string, EvaluationResult> = {};
  for (const file of args.positionals) {
    const candidate = new Uint8Array(await readFile(file));
    results[file] = await evaluateModels(reference, candidate, data, {
      ...(labels ? { labels, labelsSource: v.labels! } : {}),
      ...(v.runs ? { latencyRuns: Number(v.runs) } : {}),
    });
    if (!v.json) console.log(row(file, results[file]!));
  }
  if (v.json) console.log(JSON.stringify({ reference: v.reference, data: v.data, results }, null, 2));
  return 0;
}
