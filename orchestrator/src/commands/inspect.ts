// `edgepack inspect MODEL [--json]`
import { readFile } from 'node:fs/promises';
import { inspectModel, type ModelInspection, type TensorSignature } from '../onnx/inspect.js';

const USAGE = 'usage: edgepack inspect MODEL.onnx [--json]';

function fmtSig(s: TensorSignature): string {
  return `${s.name}: ${s.type}${s.hasShape ? `[${s.shape.join(',')}]` : '[?]'}`;
}

function fmtCount(n: number): string {
  if (n >= 1e9) return `${(n / 1e9).toFixed(2)} G`;
  if (n >= 1e6) return `${(n / 1e6).toFixed(2)} M`;
  if (n >= 1e3) return `${(n / 1e3).toFixed(1)} k`;
  return String(n);
}

export function formatInspection(file: string, r: ModelInspection): string {
  const lines = [
    `${file}`,
    `  format      onnx, IR ${r.irVersion}, producer ${r.producer.name || '?'} ${r.producer.version}`,
    `  opsets      ${r.opsets.map((o) => `${o.domain}:${o.version}`).join(', ')}`,
    `  inputs      ${r.inputs.map(fmtSig).join('; ')}`,
    `  outputs     ${r.outputs.map(fmtSig).join('; ')}`,
    `  nodes       ${r.nodeCount}: ${Object.entries(r.opHistogram).sort((a, b) => b[1] - a[1]).map(([k, v]) => `${k}×${v}`).join(' ')}`,
    `  parameters  ${fmtCount(r.parameterCount)} (${r.parameterCount})`,
    `  weights     ${Object.entries(r.weightBytes).map(([k, v]) => `${k} ${v} B`).join(', ') || 'none'}${r.externalDataTensors ? ` (${r.externalDataTensors} tensors in external data)` : ''}`,
    `  MACs        ${fmtCount(r.macs.total)} at batch 1${r.macs.unestimatedNodes.length ? ` (${r.macs.unestimatedNodes.length} nodes with non-static shapes not counted)` : ''}`,
    `  size        ${r.sizeBytes} B`,
    `  sha256      ${r.sha256}`,
  ];
  return lines.join('\n');
}

export async function run(argv: string[]): Promise<number> {
  const json = argv.includes('--json');
  const positional = argv.filter((a) => !a.startsWith('-'));
  if (argv.includes('--help') || argv.includes('-h')) {
    console.log(USAGE);
    return 0;
  }
  const unknown = argv.filter((a) => a.startsWith('-') && a !== '--json');
  if (positional.length !== 1 || unknown.length > 0) {
    console.error(USAGE);
    return 2;
  }
  const file = positional[0]!;
  const bytes = new Uint8Array(await readFile(file));
  const result = inspectModel(bytes);
  console.log(json ? JSON.stringify(result, null, 2) : formatInspection(file, result));
  return 0;
}
