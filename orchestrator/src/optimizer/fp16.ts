// float32 → float16 conversion with Cast nodes at the model boundary (keep_io_types) and around
// ops that must stay float32.

import type { ModelProto, NodeProto, TensorProto } from '../onnx/onnx-model.js';
import { FLOAT16_MAX, float32ToFloat16Bits } from '@edgepack/protocol';
import { inferShapes } from '../onnx/shape-inference.js';
import { DataType, makeTensor, readTensorAsFloat32 } from '../onnx/tensor.js';
import { cloneModel, consumersOf, nameAllocator, topologicalSort } from './graph-utils.js';

/** Ops kept in float32, as in onnxconverter-common's float16 converter. */
export const DEFAULT_FP16_BLOCK_LIST: readonly string[] = [
  'ArrayFeatureExtractor', 'Binarizer', 'CastMap', 'CategoryMapper', 'DictVectorizer', 'FeatureVectorizer', 'Imputer',
  'LabelEncoder', 'LinearClassifier', 'LinearRegressor', 'Normalizer', 'OneHotEncoder', 'RandomUniformLike',
  'RandomNormalLike', 'RandomUniform', 'RandomNormal', 'EyeLike', 'SVMClassifier', 'SVMRegressor', 'Scaler',
  'TreeEnsembleClassifier', 'TreeEnsembleRegressor', 'ZipMap', 'NonMaxSuppression', 'TopK', 'RoiAlign', 'Resize',
  'Range', 'CumSum', 'Min', 'Max', 'Upsample',
];

export interface Fp16Options {
  /** Keep float32 graph inputs/outputs, with Casts at the boundary (default true). */
  keepIoTypes?: boolean;
  /** Op types kept in float32 (default DEFAULT_FP16_BLOCK_LIST). */
  blockList?: readonly string[];
  /** Node names kept in float32. */
  blockNodes?: readonly string[];
}

export interface Fp16Report {
  initializersConverted: number;
  /** Values with |x| > 65504, clamped to ±65504. */
  clampedValues: number;
  /** Non-zero values below float16's smallest subnormal, which become 0. */
  underflowedValues: number;
  castsInserted: number;
  keptFp32: { node: string; opType: string; reason: string }[];
}

function toFp16Tensor(t: TensorProto, name: string, counts: { clamped: number; underflow: number }): TensorProto {
  const src = readTensorAsFloat32(t);
  const out = new Uint16Array(src.length);
  for (let i = 0; i < src.length; i++) {
    let v = src[i]!;
    if (v > FLOAT16_MAX) { v = FLOAT16_MAX; counts.clamped++; }
    else if (v < -FLOAT16_MAX) { v = -FLOAT16_MAX; counts.clamped++; }
    else if (v !== 0 && Math.abs(v) < 2 ** -25) counts.underflow++;
    out[i] = float32ToFloat16Bits(v);
  }
  return { ...makeTensor(name, DataType.FLOAT16, t.dims, out), ...(t.docString ? { docString: t.docString } : {}) };
}

export function convertToFloat16(input: ModelProto, options: Fp16Options = {}): { model: ModelProto; report: Fp16Report } {
  const keepIo = options.keepIoTypes ?? true;
  const blockOps = new Set(options.blockList ?? DEFAULT_FP16_BLOCK_LIST);
  const blockNames = new Set(options.blockNodes ?? []);
  const model = cloneModel(input);
  const g = model.graph;
  const types = inferShapes(model);
  const isFloat = (name: string): boolean => !!name && types.get(name)?.elemType === DataType.FLOAT;
  const report: Fp16Report = { initializersConverted: 0, clampedValues: 0, underflowedValues: 0, castsInserted: 0, keptFp32: [] };
  const newName = nameAllocator(g);

  const blocked = new Set<NodeProto>();
  for (const n of g.node) {
    const label = n.name || n.output[0] || n.opType;
    let reason: string | undefined;
    if (n.domain && n.domain !== 'ai.onnx') reason = `custom domain '${n.domain}'`;
    else if (blockOps.has(n.opType)) reason = 'op in the float32 block list';
    else if (n.name && blockNames.has(n.name)) reason = 'node excluded by name';
    else if (n.attribute.some((a) => a.g || a.graphs)) reason = 'has subgraphs';
    else if (n.output.some((o) => o && !types.get(o)?.elemType)) {
      reason = 'output type unknown to shape inference';
    }
    if (reason) {
      blocked.add(n);
      report.keptFp32.push({ node: label, opType: n.opType, reason });
    }
  }

  // Representation of every float tensor: true = float16.
  const half = new Map<string, boolean>();
  const consumers = consumersOf(g);
  const inits = new Map(g.initializer.map((t) => [t.name ?? '', t]));
  for (const v of g.input) if (!inits.has(v.name) && isFloat(v.name)) half.set(v.name, !keepIo);
  const counts = { clamped: 0, underflow: 0 };
  g.initializer = g.initializer.map((t) => {
    const name = t.name ?? '';
    if (t.dataType !== DataType.FLOAT) return t;
    const users = consumers.get(name) ?? [];
    const graphInput = g.input.some((v) => v.name === name);
    if (graphInput || (users.length > 0 && users.every((u) => blocked.has(u)))) {
      half.set(name, false);
      return t;
    }
    half.set(name, true);
    report.initializersConverted++;
    return toFp16Tensor(t, name, counts);
  });
  report.clampedValues = counts.clamped;
  report.underflowedValues = counts.underflow;

  const out: NodeProto[] = [];
  const castCache = new Map<string, string>();
  const castTo = (name: string, toHalf: boolean): string => {
    const key = `${name}|${toHalf}`;
    const cached = castCache.get(key);
    if (cached) return cached;
    const o = newName(`${name}_${toHalf ? 'fp16' : 'fp32'}`);
    out.push({ input: [name], output: [o], name: newName(`Cast_${o}`), opType: 'Cast', attribute: [{ name: 'to', type: 2, i: toHalf ? DataType.FLOAT16 : DataType.FLOAT }] });
    report.castsInserted++;
    castCache.set(key, o);
    return o;
  };

  for (const n of g.node) {
    const isBlocked = blocked.has(n);
    n.input = n.input.map((i) => {
      if (!i || !half.has(i)) return i;
      const wantHalf = !isBlocked;
      return half.get(i) === wantHalf ? i : castTo(i, wantHalf);
    });
    if (!isBlocked) {
      if (n.opType === 'Cast') {
        const to = n.attribute.find((a) => a.name === 'to');
        if (to && to.i === DataType.FLOAT) to.i = DataType.FLOAT16;
      }
      if (n.opType === 'ConstantOfShape' || n.opType === 'Constant') {
        for (const a of n.attribute) {
          if (a.t && a.t.dataType === DataType.FLOAT) a.t = toFp16Tensor(a.t, a.t.name ?? '', counts);
          if (a.name === 'value_float' && a.f !== undefined) {
            Object.assign(a, { name: 'value', type: 4, t: toFp16Tensor(makeTensor('', DataType.FLOAT, [], [a.f]), '', counts) });
            delete a.f;
          }
          if (a.name === 'value_floats' && a.floats) {
            Object.assign(a, { name: 'value', type: 4, t: toFp16Tensor(makeTensor('', DataType.FLOAT, [a.floats.length], a.floats), '', counts) });
            delete a.floats;
          }
        }
      }
    }
    out.push(n);
    for (const o of n.output) if (o && isFloat(o)) half.set(o, !isBlocked);
  }
  report.clampedValues = counts.clamped;
  report.underflowedValues = counts.underflow;

  // Graph outputs: rename the producing tensor and cast back when representations differ.
  for (const v of g.output) {
    if (!half.has(v.name)) continue;
    const wantHalf = !keepIo;
    if (half.get(v.name) === wantHalf) continue;
    const inner = newName(`${v.name}_${wantHalf ? 'fp32' : 'fp16'}`);
    for (const n of out) {
      n.output = n.output.map((o) => (o === v.name ? inner : o));
      n.input = n.input.map((i) => (i === v.name ? inner : i));
    }
    out.push({ input: [inner], output: [v.name], name: newName(`Cast_${v.name}`), opType: 'Cast', attribute: [{ name: 'to', type: 2, i: wantHalf ? DataType.FLOAT16 : DataType.FLOAT }] });
    report.castsInserted++;
  }
  g.node = out;
  if (!keepIo) {
    for (const v of [...g.input, ...g.output]) {
      const tt = v.type?.tensorType;
      if (tt && tt.elemType === DataType.FLOAT && half.get(v.name)) v.type = { ...v.type, tensorType: { ...tt, elemType: DataType.FLOAT16 } };
    }
  }
  g.valueInfo = g.valueInfo.map((v) => {
    const tt = v.type?.tensorType;
    if (tt?.elemType === DataType.FLOAT && half.get(v.name)) return { ...v, type: { ...v.type, tensorType: { ...tt, elemType: DataType.FLOAT16 } } };
    return v;
  });
  topologicalSort(g);
  return { model, report };
}
