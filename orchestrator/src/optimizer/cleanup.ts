// Pre-quantization clean-up, the part of onnxruntime's quant_pre_process that decides speed:
// PyTorch exports route Conv biases and shared weights through Identity nodes and Clip bounds
// through Constant nodes; quantizers look for initializers and see neither, so biases stay float
// and ORT cannot fuse QLinearConv.

import type { ModelProto, NodeProto, TensorProto } from '../onnx/onnx-model.js';
import { attr, attrFloat } from '../onnx/shape-inference.js';
import { DataType, makeTensor, readTensorAsFloat32 } from '../onnx/tensor.js';
import { cloneModel, consumersOf, initializerMap, producersOf, replaceInput, subgraphReferences } from './graph-utils.js';

export interface CleanupReport {
  constantsToInitializers: number;
  identitiesRemoved: number;
  dropoutsRemoved: number;
  batchNormsFolded: number;
  deadNodesRemoved: number;
  unusedInitializersRemoved: number;
  initializerInputsRemoved: number;
}

function constantNodeTensor(n: NodeProto): TensorProto | undefined {
  const name = n.output[0]!;
  const v = attr(n, 'value');
  if (v?.t) return { ...v.t, name };
  const vf = attr(n, 'value_float');
  if (vf?.f !== undefined) return makeTensor(name, DataType.FLOAT, [], [vf.f]);
  const vfs = attr(n, 'value_floats');
  if (vfs?.floats) return makeTensor(name, DataType.FLOAT, [vfs.floats.length], vfs.floats);
  const vi = attr(n, 'value_int');
  if (vi?.i !== undefined) return makeTensor(name, DataType.INT64, [], [vi.i]);
  const vis = attr(n, 'value_ints');
  if (vis?.ints) return makeTensor(name, DataType.INT64, [vis.ints.length], vis.ints);
  return undefined; // sparse_value / string values: leave the node alone
}

/** Returns a cleaned copy of the model; the input is not modified. */
export function cleanupModel(input: ModelProto): { model: ModelProto; report: CleanupReport } {
  const model = cloneModel(input);
  const g = model.graph;
  const report: CleanupReport = {
    constantsToInitializers: 0, identitiesRemoved: 0, dropoutsRemoved: 0, batchNormsFolded: 0,
    deadNodesRemoved: 0, unusedInitializersRemoved: 0, initializerInputsRemoved: 0,
  };
  const graphOutputs = new Set(g.output.map((o) => o.name));
  const captured = subgraphReferences(g);

  // Constant → initializer.
  const keep: NodeProto[] = [];
  for (const n of g.node) {
    const t = n.opType === 'Constant' && (!n.domain || n.domain === 'ai.onnx') && !graphOutputs.has(n.output[0]!) ? constantNodeTensor(n) : undefined;
    if (t) {
      g.initializer.push(t);
      report.constantsToInitializers++;
    } else keep.push(n);
  }
  g.node = keep;

  // Identity / inference-mode Dropout: consumers read the input directly.
  const bypass = (n: NodeProto): boolean => {
    const src = n.input[0];
    const dst = n.output[0];
    if (!src || !dst || graphOutputs.has(dst) || captured.has(dst)) return false;
    const cons = consumersOf(g).get(dst) ?? [];
    replaceInput(cons, dst, src);
    return true;
  };
  g.node = g.node.filter((n) => {
    if (n.domain && n.domain !== 'ai.onnx') return true;
    if (n.opType === 'Identity' && bypass(n)) {
      report.identitiesRemoved++;
      return false;
    }
    if (n.opType === 'Dropout' && (n.output.length < 2 || !n.output[1]) && bypass(n)) {
      report.dropoutsRemoved++;
      return false;
    }
    return true;
  });

  report.batchNormsFolded = foldConvBatchNorm(model);
  const dead = removeDeadNodes(model);
  report.deadNodesRemoved = dead.nodes;
  report.unusedInitializersRemoved = dead.initializers;

  // IR ≥ 4 allows initializers outside graph.input; listing them there makes them overridable
  // inputs, which blocks constant-based rewrites in ORT and in our quantizer.
  if (model.irVersion >= 4) {
    const inits = new Set(g.initializer.map((t) => t.name ?? ''));
    const before = g.input.length;
    g.input = g.input.filter((v) => !inits.has(v.name));
    report.initializerInputsRemoved = before - g.input.length;
  }
  return { model, report };
}

/** Folds BatchNormalization into a preceding Conv whose output it alone consumes. */
function foldConvBatchNorm(model: ModelProto): number {
  const g = model.graph;
  const inits = initializerMap(g);
  const producers = producersOf(g);
  const consumers = consumersOf(g);
  const graphOutputs = new Set(g.output.map((o) => o.name));
  const removed = new Set<NodeProto>();
  let folded = 0;
  for (const bn of g.node) {
    if (bn.opType !== 'BatchNormalization' || bn.output.length > 1 && bn.output.slice(1).some((o) => o)) continue;
    const conv = producers.get(bn.input[0]!);
    if (!conv || conv.opType !== 'Conv' || (conv.domain && conv.domain !== 'ai.onnx')) continue;
    if ((consumers.get(conv.output[0]!) ?? []).length !== 1 || graphOutputs.has(conv.output[0]!)) continue;
    const w = inits.get(conv.input[1]!);
    const [scale, bias, mean, variance] = bn.input.slice(1, 5).map((n) => inits.get(n));
    if (!w || !scale || !bias || !mean || !variance || w.dataType !== DataType.FLOAT) continue;
    const b = conv.input[2] ? inits.get(conv.input[2]) : undefined;
    if (conv.input[2] && !b) continue;
    // A weight shared with another node cannot be rescaled in place.
    if ((consumers.get(w.name ?? '') ?? []).length !== 1) continue;
    const eps = attrFloat(bn, 'epsilon', 1e-5);
    const wd = readTensorAsFloat32(w);
    const s = readTensorAsFloat32(scale), bb = readTensorAsFloat32(bias), m = readTensorAsFloat32(mean), v = readTensorAsFloat32(variance);
    const cout = w.dims[0]!;
    const per = wd.length / cout;
    const oldB = b ? readTensorAsFloat32(b) : new Float32Array(cout);
    const newB = new Float32Array(cout);
    const newW = new Float32Array(wd.length);
    for (let c = 0; c < cout; c++) {
      const k = s[c]! / Math.sqrt(v[c]! + eps);
      for (let j = 0; j < per; j++) newW[c * per + j] = wd[c * per + j]! * k;
      newB[c] = (oldB[c]! - m[c]!) * k + bb[c]!;
    }
    const wName = `${w.name}_bnfolded`;
    const bName = `${conv.name || conv.output[0]}_bnfolded_bias`;
    g.initializer.push(makeTensor(wName, DataType.FLOAT, w.dims, newW), makeTensor(bName, DataType.FLOAT, [cout], newB));
    conv.input = [conv.input[0]!, wName, bName];
    conv.output = [bn.output[0]!];
    removed.add(bn);
    folded++;
  }
  g.node = g.node.filter((n) => !removed.has(n));
  return folded;
}

/** Drops nodes that do not contribute to any graph output, then unused initializers. */
export function removeDeadNodes(model: ModelProto): { nodes: number; initializers: number } {
  const g = model.graph;
  const needed = new Set<string>(g.output.map((o) => o.name));
  for (const r of subgraphReferences(g)) needed.add(r);
  const keep: NodeProto[] = [];
  for (let i = g.node.length - 1; i >= 0; i--) {
    const n = g.node[i]!;
    if (n.output.some((o) => o && needed.has(o))) {
      keep.push(n);
      for (const x of n.input) if (x) needed.add(x);
    }
  }
  const nodes = g.node.length - keep.length;
  g.node = keep.reverse();
  const inputs = new Set(g.input.map((v) => v.name));
  const before = g.initializer.length;
  g.initializer = g.initializer.filter((t) => needed.has(t.name ?? '') || inputs.has(t.name ?? ''));
  // An initializer still listed in graph.input but unused is harmless; drop it from both only if IR ≥ 4.
  return { nodes, initializers: before - g.initializer.length };
}
