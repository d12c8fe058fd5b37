// Model inspection: pure function over the model bytes (no IO), used by the CLI and by the
// model-upload endpoint.

import { createHash } from 'node:crypto';
import { decodeModel, type DecodeModelOptions, type ModelProto, type NodeProto, type ValueInfoProto } from './onnx-model.js';
import { attrInt, inferShapes, type Dim, type ValueShape } from './shape-inference.js';
import { DataType, dataTypeName, isExternal, tensorElementCount, tensorPayloadBytes, type DTypeName } from './tensor.js';

export interface TensorSignature {
  name: string;
  /** Element type; 'unknown' for non-tensor values (sequences, maps) or missing types. */
  type: DTypeName;
  /** Static dims as numbers, symbolic dims as their parameter name ('?' when unnamed). Empty = scalar. */
  shape: Dim[];
  /** False when the model declares no shape at all (unknown rank). */
  hasShape: boolean;
}

export interface MacEstimate {
  /** Multiply-accumulates at batch 1 for Conv, ConvTranspose, Gemm and MatMul. */
  total: number;
  byOp: Record<string, number>;
  /** Conv/Gemm/MatMul nodes whose shapes could not be inferred statically (not counted). */
  unestimatedNodes: string[];
}

export interface ModelInspection {
  format: 'onnx';
  irVersion: number;
  producer: { name: string; version: string };
  /** ai.onnx opset version (undefined if the model imports no default domain). */
  opset: number | undefined;
  opsets: { domain: string; version: number }[];
  inputs: TensorSignature[];
  outputs: TensorSignature[];
  nodeCount: number;
  opHistogram: Record<string, number>;
  /** Elements in initializers, excluding int64 tensors (shape/axis constants, not weights). */
  parameterCount: number;
  /** Initializer payload bytes by dtype, including int64 constants. */
  weightBytes: Partial<Record<DTypeName, number>>;
  weightBytesTotal: number;
  externalDataTensors: number;
  macs: MacEstimate;
  sizeBytes: number;
  sha256: string;
}

function signature(v: ValueInfoProto): TensorSignature {
  const tt = v.type?.tensorType;
  return {
    name: v.name,
    type: tt?.elemType !== undefined ? dataTypeName(tt.elemType) : 'unknown',
    shape: tt?.shape ? tt.shape.dims.map((d) => d.value ?? d.param ?? '?') : [],
    hasShape: tt?.shape !== undefined,
  };
}

function prod(ds: readonly Dim[]): number | undefined {
  let p = 1;
  for (const d of ds) {
    if (typeof d !== 'number') return undefined;
    p *= d;
  }
  return p;
}

/** MACs of one node, given inferred shapes; undefined when shapes are not static. */
export function nodeMacs(node: NodeProto, shapes: Map<string, ValueShape>): number | undefined {
  const get = (i: number): Dim[] | undefined => (node.input[i] ? shapes.get(node.input[i]!)?.shape : undefined);
  const out = shapes.get(node.output[0] ?? '')?.shape;
  switch (node.opType) {
    case 'Conv': case 'ConvInteger': case 'QLinearConv': {
      const w = get(node.opType === 'QLinearConv' ? 3 : 1);
      if (!w || !out) return undefined;
      // Weight is [Cout, Cin/group, k...]: each output element costs Cin/group × prod(k) MACs.
      const perOut = prod(w.slice(1));
      const outCount = prod(out);
      return perOut !== undefined && outCount !== undefined ? perOut * outCount : undefined;
    }
    case 'ConvTranspose': {
      const x = get(0);
      const w = get(1);
      if (!x || !w) return undefined;
      // Each input element scatters into Cout/group × prod(k) outputs.
      const perIn = prod(w.slice(1));
      const inCount = prod(x);
      return perIn !== undefined && inCount !== undefined ? perIn * inCount : undefined;
    }
    case 'Gemm': {
      const a = get(0);
      if (!a || a.length !== 2 || !out) return undefined;
      const k = attrInt(node, 'transA', 0) ? a[0] : a[1];
      const outCount = prod(out);
      return typeof k === 'number' && outCount !== undefined ? k * outCount : undefined;
    }
    case 'MatMul': case 'MatMulInteger': case 'QLinearMatMul': {
      const a = get(0);
      if (!a || !out) return undefined;
      const k = a[a.length - 1];
      const outCount = prod(out);
      return typeof k === 'number' && outCount !== undefined ? k * outCount : undefined;
    }
    default:
      return undefined;
  }
}

const MAC_OPS = new Set(['Conv', 'ConvInteger', 'QLinearConv', 'ConvTranspose', 'Gemm', 'MatMul', 'MatMulInteger', 'QLinearMatMul']);

export function estimateMacs(model: ModelProto): MacEstimate {
  // Batch 1 assumption: every symbolic input dim is bound to 1.
  const shapes = inferShapes(model, { defaultSymbolValue: 1 });
  const byOp: Record<string, number> = {};
  const unestimatedNodes: string[] = [];
  let total = 0;
  for (const node of model.graph.node) {
    if (!MAC_OPS.has(node.opType)) continue;
    const m = nodeMacs(node, shapes);
    if (m === undefined) {
      unestimatedNodes.push(node.name || `${node.opType}#${unestimatedNodes.length}`);
      continue;
    }
    total += m;
    byOp[node.opType] = (byOp[node.opType] ?? 0) + m;
  }
  return { total, byOp, unestimatedNodes };
}

export function inspectDecodedModel(model: ModelProto, bytes: Uint8Array): ModelInspection {
  const g = model.graph;
  const initNames = new Set(g.initializer.map((t) => t.name ?? ''));
  const opHistogram: Record<string, number> = {};
  for (const n of g.node) {
    const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : n.opType;
    opHistogram[key] = (opHistogram[key] ?? 0) + 1;
  }
  let parameterCount = 0;
  let weightBytesTotal = 0;
  let externalDataTensors = 0;
  const weightBytes: Partial<Record<DTypeName, number>> = {};
  for (const t of g.initializer) {
    const name = dataTypeName(t.dataType);
    let bytesOf = tensorPayloadBytes(t);
    if (isExternal(t)) {
      externalDataTensors++;
      const len = t.externalData?.find((e) => e.key === 'length')?.value;
      bytesOf = len ? Number(len) : 0;
    }
    weightBytes[name] = (weightBytes[name] ?? 0) + bytesOf;
    weightBytesTotal += bytesOf;
    if (t.dataType !== DataType.INT64) parameterCount += tensorElementCount(t);
  }
  const defaultOpset = model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
  return {
    format: 'onnx',
    irVersion: model.irVersion,
    producer: { name: model.producerName ?? '', version: model.producerVersion ?? '' },
    opset: defaultOpset?.version,
    opsets: model.opsetImport.map((o) => ({ domain: o.domain || 'ai.onnx', version: o.version })),
    inputs: g.input.filter((v) => !initNames.has(v.name)).map(signature),
    outputs: g.output.map(signature),
    nodeCount: g.node.length,
    opHistogram,
    parameterCount,
    weightBytes,
    weightBytesTotal,
    externalDataTensors,
    macs: estimateMacs(model),
    sizeBytes: bytes.length,
    sha256: createHash('sha256').update(bytes).digest('hex'),
  };
}

/** Inspects ONNX model bytes. Throws the onnx errors (`.code` MODEL_*) for bad input. */
export function inspectModel(bytes: Uint8Array, options: DecodeModelOptions = {}): ModelInspection {
  return inspectDecodedModel(decodeModel(bytes, options), bytes);
}
