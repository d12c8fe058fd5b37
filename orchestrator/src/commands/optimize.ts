// `edgepack optimize IN.onnx -o OUT.onnx --precision fp16|int8-dynamic|int8-static [...]`
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { readModelFile } from '../onnx/model-file.js';
import { encodeModel } from '../onnx/onnx-model.js';
import type { CalibrationMethod } from '../optimizer/calibrate.js';
import { loadDataset } from '../optimizer/dataset.js';
import { optimizeModel, PRECISIONS, type OptimizeOptions, type Precision } from '../optimizer/optimize.js';

const USAGE = `usage: edgepack optimize IN.onnx -o OUT.onnx --precision fp16|int8-dynamic|int8-static
         [--calibration X.npy|DIR] [--method minmax|percentile|entropy] [--percentile 99.999]
         [--per-channel | --per-tensor] [--activation-type int8|uint8] [--reduce-range auto|on|off]
         [--exclude-nodes A,B] [--max-samples N] [--no-keep-io-types] [--report REPORT.json]
Writes the model and a JSON report (default OUT.onnx.report.json).`;

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o' },
        precision: { type: 'string' },
        calibration: { type: 'string' },
        method: { type: 'string' },
        percentile: { type: 'string' },
        'per-channel': { type: 'boolean' },
        'per-tensor': { type: 'boolean' },
        'activation-type': { type: 'string' },
        'reduce-range': { type: 'string' },
        'exclude-nodes': { type: 'string' },
        'max-samples': { type: 'string' },
        'no-keep-io-types': { type: 'boolean' },
        report: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const v = args.values;
  if (v.help) { console.log(USAGE); return 0; }
  const input = args.positionals[0];
  const precision = v.precision as Precision | undefined;
  if (!input || args.positionals.length !== 1 || !v.output || !precision || !PRECISIONS.includes(precision)) {
    console.error(USAGE);
    return 2;
  }
  const method = v.method as CalibrationMethod | undefined;
  if (method && !['minmax', 'percentile', 'entropy'].includes(method)) { console.error(`unknown --method '${method}'\n${USAGE}`); return 2; }
  const act = v['activation-type'];
  if (act && act !== 'int8' && act !== 'uint8') { console.error(`unknown --activation-type '${act}'\n${USAGE}`); return 2; }
  const rr = v['reduce-range'];
  if (rr && !['auto', 'on', 'off'].includes(rr)) { console.error(`unknown --reduce-range '${rr}'\n${USAGE}`); return 2; }

  const model = await readModelFile(input);
  const options: OptimizeOptions = { precision };
  if (v.calibration) options.calibration = await loadDataset(v.calibration);
  if (method) options.method = method;
  if (v.percentile) options.percentile = Number(v.percentile);
  if (v['per-channel']) options.perChannel = true;
  if (v['per-tensor']) options.perChannel = false;
  if (act) options.activationType = act as 'int8' | 'uint8';
  if (rr) options.reduceRange = rr === 'auto' ? 'auto' : rr === 'on';
  if (v['exclude-nodes']) options.excludeNodes = v['exclude-nodes'].split(',').map((s) => s.trim()).filter(Boolean);
  if (v['max-samples']) options.maxCalibrationSamples = Number(v['max-samples']);
  if (v['no-keep-io-types']) options.keepIoTypes = false;

  const { model: out, report } = await optimizeModel(model, options);
  const bytes = encodeModel(out);
  await writeFile(v.output, bytes);
  const reportPath = v.report ?? `${v.output}.report.json`;
  await writeFile(reportPath, JSON.stringify({ input, output: v.output, outputBytes: bytes.length, ...report }, null, 2));
  const outside = Object.values(report.notCovered ?? {}).reduce((a, b) => a + b, 0);
  console.log(`${v.output}: ${precision}, ${bytes.length} bytes, ${report.quantized.length} nodes converted, ${report.skipped.length} skipped with a reason, ${outside} outside this precision's patterns (see ${reportPath}), ${report.timings.totalMs} ms`);
  return 0;
}
