// int8 dynamic quantization in the node patterns onnxruntime's quantize_dynamic emits, so ORT
// fuses them (DynamicQuantizeMatMul / MatMulIntegerToFloat) at load time:
//   x ─DynamicQuantizeLinear─▶ (xq, xs, xzp)
//   MatMulInteger(xq, Wq, xzp, Wzp) ─Cast(float)─▶ Mul(·, Mul(xs, Ws)) [─Add(bias)]
// Weights are int8 symmetric; float weights are dropped once nothing else reads them.

import { defaultOpsetVersion, type ModelProto, type NodeProto, type TensorProto } from '../onnx/onnx-model.js';
import { attrFloat, attrInt, inferShapes } from '../onnx/shape-inference.js';
import { DataType, makeTensor, readTensorAsFloat32 } from '../onnx/tensor.js';
import { cleanupModel, removeDeadNodes, type CleanupReport } from './cleanup.js';
import { cloneModel, dequantizeSharedWeights, initializerMap, nameAllocator } from './graph-utils.js';
import { quantizeWeight } from './quant-math.js';

export interface NodeDecision {
  node: string;
  opType: string;
  /** What it became, e.g. 'MatMulInteger' or 'QDQ'. */
  as?: string;
  /** Why it was left in float32. */
  reason?: string;
}

export interface DynamicQuantOptions {
  /** Per-channel weights for MatMul/Gemm (per output column). Default false. */
  perChannel?: boolean;
  /** Op types to quantize. Default MatMul, Gemm, Conv, Gather. */
  opTypes?: readonly string[];
  /** Node names to leave in float32. */
  excludeNodes?: readonly string[];
  /** Run the Identity/Constant clean-up first (default true). */
  cleanup?: boolean;
  /**
   * 7-bit weights ([-64, 64]). DynamicQuantizeLinear yields full-range uint8 activations, and
   * x86 CPUs without VNNI multiply u8×s8 pairs with a saturating int16 add, so full-range
   * weights overflow in ORT's integer kernels. Default true; pass false on ARM/VNNI hosts.
   */
  reduceRange?: boolean;
}

export interface DynamicQuantReport {
  cleanup?: CleanupReport;
  quantized: NodeDecision[];
  skipped: NodeDecision[];
  /** Ops outside dynamic quantization's scope, left float32 as they were (op type → count). */
  notCovered: Record<string, number>;
  /** Float weights also read by unquantized nodes, now stored as int8 + DequantizeLinear. */
  sharedWeightsDequantized: string[];
}

export function countOp(into: Record<string, number>, n: NodeProto): void {
  const key = n.domain && n.domain !== 'ai.onnx' ? `${n.domain}:${n.opType}` : n.opType;
  into[key] = (into[key] ?? 0) + 1;
}

const DEFAULT_OPS = ['MatMul', 'Gemm', 'Conv', 'Gather', 'LSTM'];
const NOT_SUPPORTED: Record<string, string> = {
  GRU: 'GRU has no integer kernel in onnxruntime; kept float32',
  Attention: 'fused Attention is not quantized; kept float32',
};

export function quantizeDynamic(input: ModelProto, options: DynamicQuantOptions = {}): { model: ModelProto; report: DynamicQuantReport } {
  const report: DynamicQuantReport = { quantized: [], skipped: [], notCovered: {}, sharedWeightsDequantized: [] };
  let model: ModelProto;
  if (options.cleanup ?? true) {
    const c = cleanupModel(input);
    model = c.model;
    report.cleanup = c.report;
  } else model = cloneModel(input);
  const g = model.graph;
  const opset = defaultOpsetVersion(model) ?? 0;
  if (opset < 11) {
    // DynamicQuantizeLinear needs opset 11; raising the opset could change other ops' semantics.
    for (const n of g.node) {
      if ((options.opTypes ?? DEFAULT_OPS).includes(n.opType)) {
        report.skipped.push({ node: n.name || n.output[0] || n.opType, opType: n.opType, reason: `model opset ${opset} < 11 (DynamicQuantizeLinear unavailable)` });
      }
    }
    return { model, report };
  }
  const opTypes = new Set(options.opTypes ?? DEFAULT_OPS);
  const exclude = new Set(options.excludeNodes ?? []);
  const inits = initializerMap(g);
  const graphInputs = new Set(g.input.map((v) => v.name));
  const types = inferShapes(model);
  const newName = nameAllocator(g);
  const isConst = (name: string | undefined): TensorProto | undefined =>
    name && !graphInputs.has(name) ? inits.get(name) : undefined;

  // One DynamicQuantizeLinear per activation, shared by all its quantized consumers.
  const dql = new Map<string, [string, string, string]>();
  const weightCache = new Map<string, { q: string; s: string; zp: string; perChannel: boolean }>();
  const quantizedWeightNames: string[] = [];
  let needMsDomain = false;
  const out: NodeProto[] = [];
  const addInit = (t: TensorProto): string => {
    g.initializer.push(t);
    inits.set(t.name ?? '', t);
    return t.name ?? '';
  };

  const quantizeActivation = (x: string): [string, string, string] => {
    let r = dql.get(x);
    if (!r) {
      r = [newName(`${x}_quantized`), newName(`${x}_scale`), newName(`${x}_zero_point`)];
      out.push({ input: [x], output: [...r], name: newName(`${x}_QuantizeLinear`), opType: 'DynamicQuantizeLinear', attribute: [] });
      dql.set(x, r);
    }
    return r;
  };

  /** Quantized weight laid out [K, N] for MatMulInteger (transposed when needed). */
  const quantizeMatrix = (w: TensorProto, transpose: boolean, perChannel: boolean) => {
    const key = `${w.name}|${transpose}|${perChannel}`;
    const hit = weightCache.get(key);
    if (hit) return hit;
    quantizedWeightNames.push(w.name ?? '');
    let values = readTensorAsFloat32(w);
    let dims = [...w.dims];
    if (transpose) {
      const [r, c] = dims as [number, number];
      const t = new Float32Array(values.length);
      for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) t[j * r + i] = values[i * c + j]!;
      values = t;
      dims = [c, r];
    }
    const q = quantizeWeight(values, dims, 'int8', { ...(perChannel ? { axis: dims.length - 1 } : {}), reduceRange: options.reduceRange ?? true });
    const base = transpose ? `${w.name}_T` : w.name ?? 'w';
    const names = {
      q: addInit(makeTensor(newName(`${base}_quantized`), DataType.INT8, dims, q.data)),
      s: addInit(makeTensor(newName(`${base}_scale`), DataType.FLOAT, perChannel ? [q.scales.length] : [], q.scales)),
      zp: addInit(makeTensor(newName(`${base}_zero_point`), DataType.INT8, perChannel ? [q.zeroPoints.length] : [], q.zeroPoints)),
      perChannel,
    };
    weightCache.set(key, names);
    return names;
  };

  /** MatMulInteger → Cast → Mul(scales) → optional Add(bias), writing `output`. */
  const emitMatMulInteger = (label: string, x: string, w: { q: string; s: string; zp: string }, output: string, bias?: string): void => {
    const [xq, xs, xzp] = quantizeActivation(x);
    const mmOut = newName(`${output}_MatMulInteger_output`);
    out.push({ input: [xq, w.q, xzp, w.zp], output: [mmOut], name: newName(`${label}_MatMulInteger`), opType: 'MatMulInteger', attribute: [] });
    const castOut = newName(`${output}_cast_output`);
    out.push({ input: [mmOut], output: [castOut], name: newName(`${label}_cast`), opType: 'Cast', attribute: [{ name: 'to', type: 2, i: DataType.FLOAT }] });
    const scalesMul = newName(`${label}_scales_mul_output`);
    out.push({ input: [xs, w.s], output: [scalesMul], name: newName(`${label}_scales_mul`), opType: 'Mul', attribute: [] });
    const mulOut = bias ? newName(`${output}_output_scale_mul_output`) : output;
    out.push({ input: [castOut, scalesMul], output: [mulOut], name: newName(`${label}_output_scale_mul`), opType: 'Mul', attribute: [] });
    if (bias) out.push({ input: [mulOut, bias], output: [output], name: newName(`${label}_bias_add`), opType: 'Add', attribute: [] });
  };

  for (const n of g.node) {
    const label = n.name || n.output[0] || n.opType;
    const skip = (reason: string): void => {
      report.skipped.push({ node: label, opType: n.opType, reason });
      out.push(n);
    };
    if (n.domain && n.domain !== 'ai.onnx') { countOp(report.notCovered, n); out.push(n); continue; }
    if (NOT_SUPPORTED[n.opType]) { skip(NOT_SUPPORTED[n.opType]!); continue; }
    if (!opTypes.has(n.opType)) { countOp(report.notCovered, n); out.push(n); continue; }
    if (n.name && exclude.has(n.name)) { skip('excluded by name'); continue; }
    const xType = types.get(n.input[0] ?? '')?.elemType;

    if (n.opType === 'MatMul') {
      const w = isConst(n.input[1]);
      if (!w || w.dataType !== DataType.FLOAT) { skip('second input is not a constant float32 weight'); continue; }
      if (xType !== DataType.FLOAT) { skip('activation is not float32'); continue; }
      if (w.dims.length !== 2) { skip(`weight has rank ${w.dims.length}; only 2-D weights are quantized`); continue; }
      emitMatMulInteger(label, n.input[0]!, quantizeMatrix(w, false, options.perChannel ?? false), n.output[0]!);
      report.quantized.push({ node: label, opType: n.opType, as: 'MatMulInteger' });
    } else if (n.opType === 'Gemm') {
      const w = isConst(n.input[1]);
      if (!w || w.dataType !== DataType.FLOAT || w.dims.length !== 2) { skip('B is not a constant 2-D float32 weight'); continue; }
      if (xType !== DataType.FLOAT) { skip('activation is not float32'); continue; }
      if (attrInt(n, 'transA', 0) !== 0) { skip('transA=1 is not supported'); continue; }
      const alpha = attrFloat(n, 'alpha', 1);
      const beta = attrFloat(n, 'beta', 1);
      if (alpha !== 1) { skip(`alpha=${alpha} is not supported`); continue; }
      let bias: string | undefined;
      if (n.input[2]) {
        const c = isConst(n.input[2]);
        if (!c || c.dataType !== DataType.FLOAT) { skip('C is not a constant float32 bias'); continue; }
        if (beta === 1) bias = n.input[2];
        else bias = addInit(makeTensor(newName(`${c.name}_scaled`), DataType.FLOAT, c.dims, readTensorAsFloat32(c).map((v) => v * beta)));
      }
      emitMatMulInteger(label, n.input[0]!, quantizeMatrix(w, attrInt(n, 'transB', 0) === 1, options.perChannel ?? false), n.output[0]!, bias);
      report.quantized.push({ node: label, opType: n.opType, as: 'MatMulInteger' });
    } else if (n.opType === 'Conv') {
      const w = isConst(n.input[1]);
      if (!w || w.dataType !== DataType.FLOAT) { skip('weight is not a constant float32 tensor'); continue; }
      if (xType !== DataType.FLOAT) { skip('activation is not float32'); continue; }
      const bias = n.input[2] ? isConst(n.input[2]) : undefined;
      if (n.input[2] && !bias) { skip('bias is not constant'); continue; }
      // ConvInteger takes a per-tensor activation scale and the output scale must broadcast over
      // [N,C,H,W]; weights stay per-tensor here, as in ORT.
      const key = `${w.name}|conv`;
      let wq = weightCache.get(key);
      if (!wq) {
        quantizedWeightNames.push(w.name ?? '');
        const q = quantizeWeight(readTensorAsFloat32(w), w.dims, 'int8', { reduceRange: options.reduceRange ?? true });
        wq = {
          q: addInit(makeTensor(newName(`${w.name}_quantized`), DataType.INT8, w.dims, q.data)),
          s: addInit(makeTensor(newName(`${w.name}_scale`), DataType.FLOAT, [], q.scales)),
          zp: addInit(makeTensor(newName(`${w.name}_zero_point`), DataType.INT8, [], q.zeroPoints)),
          perChannel: false,
        };
        weightCache.set(key, wq);
      }
      const [xq, xs, xzp] = quantizeActivation(n.input[0]!);
      const output = n.output[0]!;
      const convOut = newName(`${output}_output_quantized`);
      out.push({ ...n, input: [xq, wq.q, xzp, wq.zp], output: [convOut], name: newName(`${label}_quant`), opType: 'ConvInteger' });
      const castOut = newName(`${output}_cast_output`);
      out.push({ input: [convOut], output: [castOut], name: newName(`${label}_cast`), opType: 'Cast', attribute: [{ name: 'to', type: 2, i: DataType.FLOAT }] });
      const scalesMul = newName(`${label}_scales_mul_output`);
      out.push({ input: [xs, wq.s], output: [scalesMul], name: newName(`${label}_scales_mul`), opType: 'Mul', attribute: [] });
      const mulOut = bias ? newName(`${output}_output_scale_mul_output`) : output;
      out.push({ input: [castOut, scalesMul], output: [mulOut], name: newName(`${label}_output_scale_mul`), opType: 'Mul', attribute: [] });
      if (bias) {
        const spatial = w.dims.length - 2;
        const b = addInit(makeTensor(newName(`${bias.name}_reshaped`), DataType.FLOAT, [bias.dims[0]!, ...new Array<number>(spatial).fill(1)], readTensorAsFloat32(bias)));
        out.push({ input: [mulOut, b], output: [output], name: newName(`${label}_bias_add`), opType: 'Add', attribute: [] });
      }
      report.quantized.push({ node: label, opType: n.opType, as: 'ConvInteger' });
    } else if (n.opType === 'LSTM') {
      // → com.microsoft DynamicQuantizeLSTM, as ORT's LSTMQuant: int8 W/R transposed to
      // [dirs, in, 4H] / [dirs, H, 4H], scales per direction (or per gate row when per-channel).
      const w = isConst(n.input[1]);
      const r = isConst(n.input[2]);
      if (!w || !r || w.dataType !== DataType.FLOAT || r.dataType !== DataType.FLOAT || w.dims.length !== 3 || r.dims.length !== 3) {
        skip('W and R are not constant 3-D float32 weights'); continue;
      }
      if (attrInt(n, 'layout', 0) !== 0) { skip('layout=1 is not supported by DynamicQuantizeLSTM'); continue; }
      if (xType !== DataType.FLOAT) { skip('input is not float32'); continue; }
      const pc = options.perChannel ?? false;
      const rr = options.reduceRange ?? true;
      const quantLstmWeight = (t: TensorProto): { q: string; s: string; zp: string } => {
        const [dirs, rows, cols] = t.dims as [number, number, number];
        const q = quantizeWeight(readTensorAsFloat32(t), pc ? [dirs * rows, cols] : [dirs, rows * cols], 'int8', { axis: 0, reduceRange: rr });
        const transposed = new Int8Array(q.data.length);
        for (let d = 0; d < dirs; d++) {
          for (let i = 0; i < rows; i++) {
            for (let j = 0; j < cols; j++) transposed[d * rows * cols + j * rows + i] = q.data[d * rows * cols + i * cols + j]!;
          }
        }
        quantizedWeightNames.push(t.name ?? '');
        const sdims = pc ? [dirs, rows] : [dirs];
        return {
          q: addInit(makeTensor(newName(`${t.name}_quantized`), DataType.INT8, [dirs, cols, rows], transposed)),
          s: addInit(makeTensor(newName(`${t.name}_scale`), DataType.FLOAT, sdims, q.scales)),
          zp: addInit(makeTensor(newName(`${t.name}_zero_point`), DataType.INT8, sdims, q.zeroPoints)),
        };
      };
      const wq = quantLstmWeight(w);
      const rq = quantLstmWeight(r);
      const rest = Array.from({ length: 5 }, (_, i) => n.input[3 + i] ?? '');
      out.push({
        ...n,
        input: [n.input[0]!, wq.q, rq.q, ...rest, wq.s, wq.zp, rq.s, rq.zp],
        name: newName(`${label}_quant`),
        opType: 'DynamicQuantizeLSTM',
        domain: 'com.microsoft',
      });
      needMsDomain = true;
      report.quantized.push({ node: label, opType: n.opType, as: 'com.microsoft:DynamicQuantizeLSTM' });
    } else if (n.opType === 'Gather') {
      const data = isConst(n.input[0]);
      if (!data || data.dataType !== DataType.FLOAT) { skip('data is not a constant float32 table'); continue; }
      if (attrInt(n, 'axis', 0) !== 0) { skip('axis != 0 is not supported'); continue; }
      const q = quantizeWeight(readTensorAsFloat32(data), data.dims, 'int8');
      quantizedWeightNames.push(data.name ?? '');
      const qName = addInit(makeTensor(newName(`${data.name}_quantized`), DataType.INT8, data.dims, q.data));
      const sName = addInit(makeTensor(newName(`${data.name}_scale`), DataType.FLOAT, [], q.scales));
      const zName = addInit(makeTensor(newName(`${data.name}_zero_point`), DataType.INT8, [], q.zeroPoints));
      const gOut = newName(`${n.output[0]}_quantized`);
      out.push({ ...n, input: [qName, n.input[1]!], output: [gOut] });
      out.push({ input: [gOut, sName, zName], output: [n.output[0]!], name: newName(`${label}_DequantizeLinear`), opType: 'DequantizeLinear', attribute: [] });
      report.quantized.push({ node: label, opType: n.opType, as: 'Gather+DequantizeLinear' });
    } else {
      out.push(n);
    }
  }
  g.node = out;
  if (needMsDomain && !model.opsetImport.some((o) => o.domain === 'com.microsoft')) {
    model.opsetImport.push({ domain: 'com.microsoft', version: 1 });
  }
  // Float weights nobody reads any more are dropped here, so no weight is stored twice.
  removeDeadNodes(model);
  report.sharedWeightsDequantized = dequantizeSharedWeights(model, quantizedWeightNames, (t) => {
    const q = quantizeWeight(readTensorAsFloat32(t), t.dims, 'int8');
    return { data: q.data as Int8Array, scale: q.scales[0]! };
  });
  return { model, report };
}
