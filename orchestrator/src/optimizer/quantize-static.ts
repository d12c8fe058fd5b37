// int8 static quantization in QDQ format, laid out the way onnxruntime's QDQ quantizer does it
// so ORT's graph optimizer fuses QLinearConv / QLinearMatMul / QGemm / QLinearAdd at load time:
//   - activations get QuantizeLinear→DequantizeLinear right after their producer;
//   - weights are stored int8 (per-channel on Conv axis 0 and Gemm/MatMul output axis) with only a DQ;
//   - biases are int32 with scale = input_scale × weight_scale;
//   - Relu/Clip are dropped and their producer takes their output range (asymmetric activations only);
//   - pass-through ops (MaxPool, Reshape, …) reuse their input's parameters.

import type { ModelProto, NodeProto, TensorProto } from '../onnx/onnx-model.js';
import { defaultOpsetVersion } from '../onnx/onnx-model.js';
import { attrFloat, attrInt, inferShapes } from '../onnx/shape-inference.js';
import type { TensorSignature } from '../onnx/inspect.js';
import { DataType, makeTensor, readTensorAsFloat32 } from '../onnx/tensor.js';
import { calibrate, type CalibrationOptions, type TensorRange } from './calibrate.js';
import { cleanupModel, removeDeadNodes, type CleanupReport } from './cleanup.js';
import { checkDataset, DatasetError, type Dataset } from './dataset.js';
import { consumersOf, dequantizeSharedWeights, initializerMap, nameAllocator, producersOf, topologicalSort } from './graph-utils.js';
import { computeQParams, quantizeBias, quantizeWeight, type QParams, type QType } from './quant-math.js';
import { countOp, type NodeDecision } from './quantize-dynamic.js';

export interface StaticQuantOptions extends CalibrationOptions {
  /**
   * Activation type: 'int8' (S8S8, default) or 'uint8' (U8S8). Weights are always int8.
   * On x86 without VNNI prefer 'uint8': ORT converts s8 Q/DQ pairs to u8 at load time only when
   * a Q feeds a single DQ, so s8 tensors with several consumers (residual Adds) stay unfused
   * (mobilenet_v2: 1.05x fp32 latency with int8, 0.77x with uint8). One Q/DQ pair per consumer
   * does not help: it gives the producer several Qs, which blocks its own fusion.
   */
  activationType?: QType;
  /** Per-channel weights (Conv axis 0, Gemm/MatMul output axis). Default true. */
  perChannel?: boolean;
  /**
   * 7-bit weights ([-64, 64]). x86 CPUs without VNNI multiply u8×s8 pairs with a saturating
   * int16 add (vpmaddubsw), so full-range weights against full-range activations overflow in
   * ORT's fused kernels even though the QDQ graph itself is exact. 'auto' (default): every
   * GEMM-backed weight when per-channel (each channel then reaches ±127; depthwise Conv keeps
   * 8 bits, its kernel accumulates in int32 directly), otherwise only layers fed straight
   * from a graph input (raw data spans the whole range; post-ReLU data rarely does). On ARM or
   * VNNI hosts pass false for the extra bit.
   */
  reduceRange?: boolean | 'auto';
  excludeNodes?: readonly string[];
  /** Op types eligible for quantization (default: all supported). */
  opTypes?: readonly string[];
}

export interface StaticQuantReport {
  cleanup: CleanupReport;
  calibration: { method: string; samples: number; tensors: number; ms: number };
  quantized: NodeDecision[];
  skipped: NodeDecision[];
  removedActivations: string[];
  /** Ops left float32 because no QDQ pattern covers them, or their input is float (op type → count). */
  notCovered: Record<string, number>;
  /** Float weights also read by unquantized nodes, now stored as int8 + DequantizeLinear. */
  sharedWeightsDequantized: string[];
}

const WEIGHTED = new Set(['Conv', 'Gemm', 'MatMul']);
/** Ops with their own output parameters (ORT has QLinear kernels for them). */
const OWN_PARAMS = new Set(['Add', 'Mul', 'GlobalAveragePool', 'AveragePool', 'Concat', 'Sigmoid', 'LeakyRelu']);
/** Ops that move int8 values without arithmetic: output reuses the input's parameters. */
const DIRECT_8BIT = new Set(['MaxPool', 'Flatten', 'Reshape', 'Transpose', 'Squeeze', 'Unsqueeze', 'Resize', 'Slice', 'Gather', 'Split']);
const REMOVABLE = new Set(['Relu', 'Clip']);
export const STATIC_SUPPORTED_OPS: readonly string[] = [...WEIGHTED, ...OWN_PARAMS, ...DIRECT_8BIT, ...REMOVABLE];

interface Plan {
  /** Node → how it is quantized. */
  kind: Map<NodeProto, 'weighted' | 'own' | 'direct'>;
  /** Activation tensors that need calibrated parameters. */
  calibrate: Set<string>;
  /** Relu/Clip nodes to drop: producer output renamed to the activation's output. */
  removable: Map<NodeProto, NodeProto>;
}

function clipBounds(n: NodeProto, inits: Map<string, TensorProto>): [number, number] {
  if (n.input.length > 1 || !n.attribute.some((a) => a.name === 'min')) {
    const read = (name: string | undefined, d: number): number => {
      const t = name ? inits.get(name) : undefined;
      return t ? readTensorAsFloat32(t)[0] ?? d : name ? NaN : d;
    };
    return [read(n.input[1], -Infinity), read(n.input[2], Infinity)];
  }
  return [attrFloat(n, 'min', -Infinity), attrFloat(n, 'max', Infinity)];
}

export async function quantizeStatic(
  input: ModelProto, data: Dataset, inputSignature: TensorSignature, options: StaticQuantOptions = {},
): Promise<{ model: ModelProto; report: StaticQuantReport }> {
  checkDataset(data, inputSignature);
  const { model, report: cleanup } = cleanupModel(input);
  const g = model.graph;
  const opset = defaultOpsetVersion(model) ?? 0;
  const actType: QType = options.activationType ?? 'int8';
  // Per-channel DequantizeLinear (axis attribute) needs opset 13.
  const perChannel = (options.perChannel ?? true) && opset >= 13;
  const exclude = new Set(options.excludeNodes ?? []);
  const allowed = new Set(options.opTypes ?? STATIC_SUPPORTED_OPS);
  const inits = initializerMap(g);
  const graphInputs = new Set(g.input.map((v) => v.name));
  const graphOutputs = new Set(g.output.map((v) => v.name));
  const types = inferShapes(model);
  const isFloatAct = (name: string | undefined): boolean =>
    !!name && !inits.has(name) && types.get(name)?.elemType === DataType.FLOAT;
  const constFloat = (name: string | undefined): TensorProto | undefined => {
    const t = name && !graphInputs.has(name) ? inits.get(name) : undefined;
    return t && t.dataType === DataType.FLOAT ? t : undefined;
  };
  const report: StaticQuantReport = {
    cleanup, calibration: { method: options.method ?? 'minmax', samples: 0, tensors: 0, ms: 0 },
    quantized: [], skipped: [], removedActivations: [], notCovered: {}, sharedWeightsDequantized: [],
  };
  if (opset < 10) {
    for (const n of g.node) if (WEIGHTED.has(n.opType)) report.skipped.push({ node: n.name || n.opType, opType: n.opType, reason: `opset ${opset} < 10 has no QuantizeLinear` });
    return { model, report };
  }

  // --- Plan which nodes are quantized (before calibration: it decides what to measure).
  const plan: Plan = { kind: new Map(), calibrate: new Set(), removable: new Map() };
  const quantizedTensors = new Set<string>();
  const label = (n: NodeProto): string => n.name || n.output[0] || n.opType;
  for (const n of g.node) {
    const skip = (reason: string): void => { report.skipped.push({ node: label(n), opType: n.opType, reason }); };
    if (n.domain && n.domain !== 'ai.onnx') {
      if (n.domain !== 'ai.onnx.ml') skip(`custom domain '${n.domain}': left untouched`);
      continue;
    }
    if (REMOVABLE.has(n.opType)) continue;
    if (!allowed.has(n.opType)) { countOp(report.notCovered, n); continue; }
    if (n.name && exclude.has(n.name)) { skip('excluded by name'); continue; }
    if (WEIGHTED.has(n.opType)) {
      if (!isFloatAct(n.input[0])) { skip('input is not a float32 activation'); continue; }
      const w = constFloat(n.input[1]);
      if (n.opType === 'Conv' && !w) { skip('weight is not a constant float32 tensor'); continue; }
      if (n.opType === 'Gemm') {
        if (!w || w.dims.length !== 2) { skip('B is not a constant 2-D float32 weight'); continue; }
        if (attrInt(n, 'transA', 0) !== 0) { skip('transA=1 is not supported'); continue; }
        if (n.input[2] && !constFloat(n.input[2])) { skip('C is not a constant float32 bias'); continue; }
      }
      if (n.opType === 'MatMul' && !w && !isFloatAct(n.input[1])) { skip('second input is neither a float32 weight nor activation'); continue; }
      if (n.opType === 'MatMul' && w && w.dims.length !== 2) { skip(`weight rank ${w.dims.length} is not supported`); continue; }
      plan.kind.set(n, 'weighted');
      plan.calibrate.add(n.input[0]!);
      if (n.opType === 'MatMul' && !w) plan.calibrate.add(n.input[1]!);
      plan.calibrate.add(n.output[0]!);
    } else if (OWN_PARAMS.has(n.opType)) {
      const acts = n.input.filter((i) => i);
      if (!acts.every(isFloatAct) || !isFloatAct(n.output[0])) { skip('inputs are not all float32 activations (constant operand)'); continue; }
      plan.kind.set(n, 'own');
      for (const i of acts) plan.calibrate.add(i);
      plan.calibrate.add(n.output[0]!);
    } else if (DIRECT_8BIT.has(n.opType)) {
      if (!isFloatAct(n.input[0])) continue;
      plan.kind.set(n, 'direct');
    }
  }
  // Relu/Clip whose producer is quantized and which are that producer's only consumer.
  const consumers = consumersOf(g);
  const producers = producersOf(g);
  for (const n of g.node) {
    if (!REMOVABLE.has(n.opType) || !allowed.has(n.opType) || actType === undefined) continue;
    const x = n.input[0]!;
    const p = producers.get(x);
    if (!p || !(plan.kind.get(p) === 'weighted' || plan.kind.get(p) === 'own')) continue;
    if ((consumers.get(x) ?? []).length !== 1 || graphOutputs.has(x)) continue;
    if (n.opType === 'Clip') {
      const [lo] = clipBounds(n, inits);
      if (!(lo <= 0)) continue; // a positive lower bound is not expressible by a range that includes 0
    }
    plan.removable.set(n, p);
    plan.calibrate.delete(x);
    plan.calibrate.add(n.output[0]!);
  }

  // --- Calibrate.
  const t0 = performance.now();
  const tensors = [...plan.calibrate];
  // A model with a fixed batch dim can only be fed batches of exactly that size.
  const fixedBatch = typeof inputSignature.shape[0] === 'number' ? inputSignature.shape[0] : undefined;
  const calibOptions = fixedBatch !== undefined && options.batchSize === undefined ? { ...options, batchSize: fixedBatch } : options;
  if (fixedBatch !== undefined && data.shape[0]! % fixedBatch !== 0) {
    throw new DatasetError('DATASET_MISMATCH', `${data.source}: ${data.shape[0]} samples cannot be split into batches of ${fixedBatch}, the fixed batch size of model input '${inputSignature.name}'`);
  }
  const ranges = tensors.length > 0 ? await calibrate(model, tensors, inputSignature.name, data, calibOptions) : new Map<string, TensorRange>();
  report.calibration = {
    method: options.method ?? 'minmax',
    samples: Math.min(options.maxSamples ?? Infinity, data.shape[0]!),
    tensors: tensors.length,
    ms: Math.round(performance.now() - t0),
  };
  if (ranges.size === 0 && tensors.length > 0) throw new DatasetError('DATASET_EMPTY', `${data.source}: calibration produced no ranges`);

  // --- Rewrite.
  const newName = nameAllocator(g);
  const params = new Map<string, QParams>();
  const addInit = (t: TensorProto): string => { g.initializer.push(t); inits.set(t.name ?? '', t); return t.name ?? ''; };
  const zpType = actType === 'int8' ? DataType.INT8 : DataType.UINT8;
  const qdqFor = new Map<string, string>(); // tensor → DQ output name
  const extraNodes: NodeProto[] = [];
  const renamedOutputs = new Map<string, string>(); // graph output name → inner pre-Q name

  // Drop removable activations: producer writes the activation's output directly.
  for (const [act, prod] of plan.removable) {
    prod.output = prod.output.map((o) => (o === act.input[0] ? act.output[0]! : o));
    report.removedActivations.push(label(act));
  }
  g.node = g.node.filter((n) => !plan.removable.has(n));
  for (const n of g.node) if (REMOVABLE.has(n.opType)) countOp(report.notCovered, n);

  const paramsFor = (t: string): QParams | undefined => {
    let p = params.get(t);
    if (!p) {
      const r = ranges.get(t);
      if (!r || !Number.isFinite(r.min) || !Number.isFinite(r.max)) return undefined;
      p = computeQParams(r.min, r.max, actType, false);
      params.set(t, p);
    }
    return p;
  };
  const quantizeActivation = (t: string, p: QParams): string => {
    const hit = qdqFor.get(t);
    if (hit) return hit;
    // Short generated names: on small models names are a visible share of the file.
    const s = addInit(makeTensor(newName(`${t}_scale`), DataType.FLOAT, [], [p.scale]));
    const z = addInit(makeTensor(newName(`${t}_zp`), zpType, [], [p.zeroPoint]));
    let src = t;
    let dq = newName(`${t}_dq`);
    if (graphOutputs.has(t)) {
      // Keep the graph output's name on the DQ output; the producer writes an inner tensor.
      src = newName(`${t}_float`);
      renamedOutputs.set(t, src);
      dq = t;
    }
    const q = newName(`${t}_q`);
    extraNodes.push({ input: [src, s, z], output: [q], name: newName(`Q_${qdqFor.size}`), opType: 'QuantizeLinear', attribute: [] });
    extraNodes.push({ input: [q, s, z], output: [dq], name: newName(`DQ_${qdqFor.size}`), opType: 'DequantizeLinear', attribute: [] });
    qdqFor.set(t, dq);
    quantizedTensors.add(t);
    return dq;
  };
  const weightCache = new Map<string, { dq: string; scales: Float32Array }>();
  const quantizeWeightInput = (w: TensorProto, axis: number | undefined, reduceRange: boolean): { dq: string; scales: Float32Array } => {
    const key = `${w.name}|${axis}|${reduceRange}`;
    const hit = weightCache.get(key);
    if (hit) return hit;
    const q = quantizeWeight(readTensorAsFloat32(w), w.dims, 'int8', { ...(axis === undefined ? {} : { axis }), reduceRange });
    const pc = axis !== undefined;
    const qn = addInit(makeTensor(newName(`${w.name}_q`), DataType.INT8, w.dims, q.data));
    const sn = addInit(makeTensor(newName(`${w.name}_scale`), DataType.FLOAT, pc ? [q.scales.length] : [], q.scales));
    const zn = addInit(makeTensor(newName(`${w.name}_zp`), DataType.INT8, pc ? [q.zeroPoints.length] : [], q.zeroPoints));
    const dq = newName(`${w.name}_dq`);
    extraNodes.push({
      input: [qn, sn, zn], output: [dq], name: newName(`DQ_w${weightCache.size}`), opType: 'DequantizeLinear',
      attribute: pc ? [{ name: 'axis', type: 2, i: axis }] : [],
    });
    const r = { dq, scales: q.scales };
    weightCache.set(key, r);
    return r;
  };

  const rewired = new Map<NodeProto, string[]>(); // node → new inputs
  let biasCount = 0;
  for (const n of g.node) {
    const kind = plan.kind.get(n);
    if (!kind) continue;
    const out0 = n.output[0]!;
    if (kind === 'direct') {
      const p = params.get(n.input[0]!);
      if (!p || !quantizedTensors.has(n.input[0]!)) { countOp(report.notCovered, n); continue; }
      // Output shares the input's parameters, so ORT can run the op on int8 data directly.
      params.set(out0, p);
      report.quantized.push({ node: label(n), opType: n.opType, as: 'QDQ (input parameters)' });
      continue;
    }
    const inParams = n.input.map((i) => (i && isFloatAct(i) ? paramsFor(i) : undefined));
    const outParams = paramsFor(out0);
    if (!outParams || inParams.some((p, idx) => isFloatAct(n.input[idx]) && !p)) {
      report.skipped.push({ node: label(n), opType: n.opType, reason: 'no calibration range (tensor never produced during calibration)' });
      continue;
    }
    for (let idx = 0; idx < n.input.length; idx++) {
      const p = inParams[idx];
      if (p && !quantizedTensors.has(n.input[idx]!)) quantizeActivation(n.input[idx]!, p);
    }
    quantizeActivation(out0, outParams);
    if (kind === 'weighted') {
      const newInputs = [...n.input];
      const w = constFloat(n.input[1]);
      if (w) {
        let axis: number | undefined;
        if (perChannel) {
          if (n.opType === 'Conv') axis = 0;
          else if (n.opType === 'Gemm') axis = attrInt(n, 'transB', 0) === 1 ? 0 : 1;
          else axis = 1;
        }
        const rr = options.reduceRange ?? 'auto';
        // Depthwise convolutions run on a direct int32 kernel, not the saturating u8×s8 GEMM.
        const depthwise = n.opType === 'Conv' && w.dims[1] === 1 && attrInt(n, 'group', 1) > 1;
        const wq = quantizeWeightInput(w, axis, rr === 'auto' ? (perChannel && !depthwise) || graphInputs.has(n.input[0]!) : rr);
        newInputs[1] = wq.dq;
        const b = n.opType !== 'MatMul' ? constFloat(n.input[2]) : undefined;
        const outChannels = n.opType === 'Conv' ? w.dims[0]! : n.opType === 'Gemm' ? (attrInt(n, 'transB', 0) === 1 ? w.dims[0]! : w.dims[1]!) : 0;
        const beta = n.opType === 'Gemm' ? attrFloat(n, 'beta', 1) : 1;
        const alpha = n.opType === 'Gemm' ? attrFloat(n, 'alpha', 1) : 1;
        if (b && b.dims.length === 1 && b.dims[0] === outChannels && beta === 1 && alpha === 1) {
          const xs = inParams[0]!.scale;
          const bq = quantizeBias(readTensorAsFloat32(b), xs, wq.scales);
          const pc = wq.scales.length > 1;
          const bn = addInit(makeTensor(newName(`${b.name}_q`), DataType.INT32, b.dims, bq.data));
          const bs = addInit(makeTensor(newName(`${b.name}_scale`), DataType.FLOAT, pc ? [bq.scales.length] : [], pc ? bq.scales : bq.scales.subarray(0, 1)));
          const bdq = newName(`${b.name}_dq`);
          // Zero point omitted: int32 bias zero point is 0 by definition, and 4 B per channel is not free.
          extraNodes.push({
            input: [bn, bs], output: [bdq], name: newName(`DQ_b${biasCount++}`), opType: 'DequantizeLinear',
            attribute: pc ? [{ name: 'axis', type: 2, i: 0 }] : [],
          });
          newInputs[2] = bdq;
        } else if (b) {
          report.skipped.push({ node: label(n), opType: n.opType, reason: 'bias kept float32 (not 1-D per output channel, or alpha/beta ≠ 1)' });
        }
      }
      rewired.set(n, newInputs);
    }
    report.quantized.push({ node: label(n), opType: n.opType, as: 'QDQ' });
  }

  // Consumers read DQ outputs; quantized nodes read their rewired weight/bias inputs.
  for (const n of g.node) {
    const base = rewired.get(n) ?? n.input;
    n.input = base.map((i) => (i && qdqFor.has(i) && !renamedOutputs.has(i) ? qdqFor.get(i)! : i));
    n.output = n.output.map((o) => renamedOutputs.get(o) ?? o);
  }
  // Q nodes for renamed graph outputs already read the inner name; DQ outputs carry the graph name.
  g.node.push(...extraNodes);
  topologicalSort(g);
  // Float weights/biases replaced by int8/int32 copies are no longer referenced: drop them.
  removeDeadNodes(model);
  report.sharedWeightsDequantized = dequantizeSharedWeights(model, [...weightCache.keys()].map((k) => k.slice(0, k.indexOf('|'))), (t) => {
    const q = quantizeWeight(readTensorAsFloat32(t), t.dims, 'int8');
    return { data: q.data as Int8Array, scale: q.scales[0]! };
  });
  // value_info for tensors whose producer moved can be stale; ORT re-infers shapes anyway.
  g.valueInfo = g.valueInfo.filter((v) => !renamedOutputs.has(v.name));
  return { model, report };
}
