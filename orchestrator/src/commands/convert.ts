// `edgepack convert IN.onnx -o OUT.tflite --precision fp32|int8-dynamic|int8 [--calibration X.npy]`
import { readFile, writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import { EdgepackError } from '@edgepack/protocol/errors.js';
import { loadNpyDataset } from '../optimizer/dataset.js';
import { TFLITE_PRECISIONS, convertOnnxToTflite, type TflitePrecision } from '../tflite/convert.js';

const USAGE = `usage: edgepack convert IN.onnx -o OUT.tflite [options]

options:
  -o, --output FILE          output .tflite path (required)
  --precision P              fp32 (default) | int8-dynamic | int8
  --calibration X.npy        float32 samples [N, ...] in the ONNX input layout (required for int8)
  --calibration-samples N    use at most N calibration samples (default 64)
  --method M                 calibration: minmax (default), percentile or entropy
  --keep-nchw-io             keep NCHW model inputs/outputs (default: NHWC)
  --int8-io                  int8: int8 model IO instead of float IO with QUANTIZE/DEQUANTIZE
  --batch N                  batch size fixed into the model (default 1)
  --json                     print the result as JSON`;

export async function run(argv: string[]): Promise<number> {
  let args;
  try {
    args = parseArgs({
      args: argv,
      allowPositionals: true,
      options: {
        output: { type: 'string', short: 'o' },
        precision: { type: 'string', default: 'fp32' },
        calibration: { type: 'string' },
        'calibration-samples': { type: 'string', default: '64' },
        method: { type: 'string' },
        'keep-nchw-io': { type: 'boolean', default: false },
        'int8-io': { type: 'boolean', default: false },
        batch: { type: 'string', default: '1' },
        json: { type: 'boolean', default: false },
        help: { type: 'boolean', short: 'h', default: false },
      },
    });
  } catch (err) {
    console.error(`${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = args;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const precision = values.precision as TflitePrecision;
  if (values.method && !['minmax', 'percentile', 'entropy'].includes(values.method)) {
    throw new EdgepackError('CLI_USAGE', `--method must be minmax, percentile or entropy, got '${values.method}'`);
  }
  const samples = Number(values['calibration-samples']);
  const batch = Number(values.batch);
  if (positionals.length !== 1 || !values.output || !TFLITE_PRECISIONS.includes(precision) || !(samples > 0) || !(batch > 0)) {
    console.error(USAGE);
    return 2;
  }
  if (precision === 'int8' && !values.calibration) {
    throw new EdgepackError('TFLITE_CALIBRATION_REQUIRED', '--precision int8 needs --calibration X.npy');
  }
  const onnx = new Uint8Array(await readFile(positionals[0]));
  const calibration = values.calibration ? { ...(await loadNpyDataset(values.calibration)), maxSamples: samples } : undefined;
  const started = performance.now();
  // Conversion validates everything (unsupported ops included) before the output is written.
  const result = await convertOnnxToTflite(onnx, {
    precision,
    keepNchwIo: values['keep-nchw-io'],
    int8Io: values['int8-io'],
    batch,
    ...(calibration ? { calibration } : {}),
    ...(values.method ? { method: values.method as 'minmax' | 'percentile' | 'entropy' } : {}),
  });
  await writeFile(values.output, result.tflite);
  const seconds = (performance.now() - started) / 1000;
  const summary = {
    input: positionals[0],
    output: values.output,
    precision,
    inputLayout: result.inputLayout,
    inputs: result.inputs,
    outputs: result.outputs,
    operators: result.operators,
    onnxBytes: onnx.byteLength,
    tfliteBytes: result.tflite.byteLength,
    seconds: Number(seconds.toFixed(2)),
  };
  if (values.json) console.log(JSON.stringify(summary, null, 2));
  else {
    const ops = Object.entries(result.operators).map(([k, v]) => `${k}×${v}`).join(' ');
    console.log(
      `${values.output}: ${precision}, ${result.tflite.byteLength} B (${((result.tflite.byteLength / onnx.byteLength) * 100).toFixed(1)}% of ONNX), ` +
        `input layout ${result.inputLayout}, ${ops}, ${summary.seconds} s`,
    );
  }
  return 0;
}
