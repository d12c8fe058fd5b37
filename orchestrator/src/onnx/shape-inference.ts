// Static shape and type inference for the ops that matter to inspection and quantization.
// Deliberately partial: an op it does not know yields an unknown shape (never a wrong one), and
// everything downstream degrades to "unknown" rather than guessing.

import type { AttributeProto, GraphProto, ModelProto, NodeProto, TensorProto, ValueInfoProto } from './onnx-model.js';
import { DataType, readTensorAsNumbers } from './tensor.js';

export type Dim = number | string;

export interface ValueShape {
  elemType?: number;
  /** undefined = unknown rank. */
  shape?: Dim[];
}

export interface ShapeInferenceOptions {
  /** Values for symbolic dims (e.g. { batch: 1 }). */
  bindings?: Record<string, number>;
  /** Bind every symbolic dim of graph inputs to this value (inspect uses 1). */
  defaultSymbolValue?: number;
}

export function attr(node: NodeProto, name: string): AttributeProto | undefined {
  return node.attribute.find((a) => a.name === name);
}

export function attrInt(node: NodeProto, name: string, dflt: number): number {
  return attr(node, name)?.i ?? dflt;
}

export function attrInts(node: NodeProto, name: string): number[] | undefined {
  return attr(node, name)?.ints;
}

export function attrFloat(node: NodeProto, name: string, dflt: number): number {
  return attr(node, name)?.f ?? dflt;
}

export function attrString(node: NodeProto, name: string, dflt: string): string {
  const s = attr(node, name)?.s;
  return s ? new TextDecoder().decode(s) : dflt;
}

function fromValueInfo(v: ValueInfoProto, opts: ShapeInferenceOptions): ValueShape {
  const tt = v.type?.tensorType;
  if (!tt) return {};
  const out: ValueShape = {};
  if (tt.elemType !== undefined) out.elemType = tt.elemType;
  if (tt.shape) {
    out.shape = tt.shape.dims.map((d) => {
      if (d.value !== undefined) return d.value;
      const p = d.param ?? '?';
      const bound = opts.bindings?.[p];
      if (bound !== undefined) return bound;
      return opts.defaultSymbolValue ?? p;
    });
  }
  return out;
}

const isNum = (d: Dim | undefined): d is number => typeof d === 'number';

function broadcast(a: Dim[], b: Dim[]): Dim[] {
  const n = Math.max(a.length, b.length);
  const out: Dim[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x === 1) out.push(y);
    else if (y === 1) out.push(x);
    else if (isNum(x) && isNum(y)) out.push(Math.max(x, y));
    else out.push(isNum(x) ? x : y);
  }
  return out;
}

function normAxis(axis: number, rank: number): number {
  return axis < 0 ? axis + rank : axis;
}

function poolLike(node: NodeProto, x: Dim[], outChannels: Dim, kernel: number[]): Dim[] | undefined {
  const spatial = x.length - 2;
  const strides = attrInts(node, 'strides') ?? new Array<number>(spatial).fill(1);
  const dil = attrInts(node, 'dilations') ?? new Array<number>(spatial).fill(1);
  let pads = attrInts(node, 'pads') ?? new Array<number>(spatial * 2).fill(0);
  const autoPad = attrString(node, 'auto_pad', 'NOTSET');
  const ceil = attrInt(node, 'ceil_mode', 0) === 1;
  const out: Dim[] = [x[0]!, outChannels];
  for (let i = 0; i < spatial; i++) {
    const inD = x[i + 2];
    if (!isNum(inD)) { out.push('?'); continue; }
    const s = strides[i] ?? 1;
    if (autoPad === 'SAME_UPPER' || autoPad === 'SAME_LOWER') { out.push(Math.ceil(inD / s)); continue; }
    if (autoPad === 'VALID') pads = new Array<number>(spatial * 2).fill(0);
    const k = (kernel[i]! - 1) * (dil[i] ?? 1) + 1;
    const span = inD + (pads[i] ?? 0) + (pads[i + spatial] ?? 0) - k;
    out.push((ceil ? Math.ceil(span / s) : Math.floor(span / s)) + 1);
  }
  return out;
}

/**
 * Infers element types and shapes of every value in the main graph. Graph inputs, initializers,
 * value_info and outputs seed the map; declared value_info wins over inference where present.
 */
export function inferShapes(model: ModelProto, options: ShapeInferenceOptions = {}): Map<string, ValueShape> {
  return inferGraphShapes(model.graph, options);
}

export function inferGraphShapes(graph: GraphProto, options: ShapeInferenceOptions = {}): Map<string, ValueShape> {
  const shapes = new Map<string, ValueShape>();
  const consts = new Map<string, TensorProto>();
  for (const t of graph.initializer) {
    shapes.set(t.name ?? '', { elemType: t.dataType, shape: [...t.dims] });
    consts.set(t.name ?? '', t);
  }
  for (const v of graph.input) if (!shapes.has(v.name)) shapes.set(v.name, fromValueInfo(v, options));
  const declared = new Map<string, ValueShape>();
  for (const v of [...graph.valueInfo, ...graph.output]) declared.set(v.name, fromValueInfo(v, options));

  const constInts = (name: string | undefined): number[] | undefined => {
    if (!name) return undefined;
    const t = consts.get(name);
    if (!t) return undefined;
    try {
      return readTensorAsNumbers(t);
    } catch {
      return undefined;
    }
  };

  for (const node of graph.node) {
    const ins = node.input.map((n) => (n ? shapes.get(n) : undefined));
    const x = ins[0];
    const xs = x?.shape;
    const results: ValueShape[] = [];
    const same = (): ValueShape => ({ ...(x?.elemType !== undefined ? { elemType: x.elemType } : {}), ...(xs ? { shape: [...xs] } : {}) });
    const withShape = (shape: Dim[] | undefined, elemType = x?.elemType): ValueShape => ({
      ...(elemType !== undefined ? { elemType } : {}), ...(shape ? { shape } : {}),
    });
    const domain = node.domain ?? '';
    if (domain !== '' && domain !== 'ai.onnx') {
      // Custom-domain ops: only declared value_info can tell.
    } else switch (node.opType) {
      case 'Constant': {
        const t = attr(node, 'value')?.t;
        if (t) {
          consts.set(node.output[0]!, t);
          results.push({ elemType: t.dataType, shape: [...t.dims] });
        } else {
          const vf = attr(node, 'value_float'); const vi = attr(node, 'value_int');
          const vfs = attr(node, 'value_floats'); const vis = attr(node, 'value_ints');
          if (vf) results.push({ elemType: DataType.FLOAT, shape: [] });
          else if (vi) results.push({ elemType: DataType.INT64, shape: [] });
          else if (vfs) results.push({ elemType: DataType.FLOAT, shape: [vfs.floats?.length ?? 0] });
          else if (vis) results.push({ elemType: DataType.INT64, shape: [vis.ints?.length ?? 0] });
        }
        break;
      }
      case 'Identity': case 'Relu': case 'LeakyRelu': case 'Sigmoid': case 'Tanh': case 'Clip': case 'Elu':
      case 'Selu': case 'HardSigmoid': case 'HardSwish': case 'Softplus': case 'Exp': case 'Log': case 'Sqrt':
      case 'Neg': case 'Abs': case 'Reciprocal': case 'Erf': case 'Softmax': case 'LogSoftmax': case 'Gelu':
      case 'BatchNormalization': case 'InstanceNormalization': case 'LayerNormalization': case 'LRN':
      case 'Dropout': case 'Floor': case 'Ceil': case 'Round': case 'Sin': case 'Cos': case 'Mish':
      case 'DequantizeLinear': case 'QuantizeLinear': case 'PRelu': case 'Not': case 'Sign': case 'CumSum':
        if (node.opType === 'DequantizeLinear') results.push(withShape(xs ? [...xs] : undefined, ins[1]?.elemType ?? DataType.FLOAT));
        else if (node.opType === 'QuantizeLinear') results.push(withShape(xs ? [...xs] : undefined, ins[2]?.elemType ?? DataType.UINT8));
        else if (node.opType === 'PRelu' && xs && ins[1]?.shape) results.push(withShape(broadcast(xs, ins[1].shape)));
        else results.push(same());
        break;
      case 'Cast': results.push(withShape(xs ? [...xs] : undefined, attrInt(node, 'to', 0))); break;
      case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow': case 'Max': case 'Min': case 'Sum': case 'Mean':
      case 'Where': case 'Equal': case 'Less': case 'Greater': case 'And': case 'Or': case 'Mod': case 'LessOrEqual':
      case 'GreaterOrEqual': {
        let shape: Dim[] | undefined = [];
        for (const i of ins) shape = shape && i?.shape ? broadcast(shape, i.shape) : undefined;
        const cmp = ['Equal', 'Less', 'Greater', 'And', 'Or', 'LessOrEqual', 'GreaterOrEqual'].includes(node.opType);
        const et = node.opType === 'Where' ? ins[1]?.elemType : cmp ? DataType.BOOL : x?.elemType;
        results.push(withShape(shape, et));
        break;
      }
      case 'Conv': case 'ConvInteger': case 'QLinearConv': {
        const wIdx = node.opType === 'QLinearConv' ? 3 : 1;
        const ws = ins[wIdx]?.shape;
        if (xs && ws) {
          const kernel = attrInts(node, 'kernel_shape') ?? ws.slice(2).map(Number);
          const et = node.opType === 'ConvInteger' ? DataType.INT32 : node.opType === 'QLinearConv' ? ins[7]?.elemType : x?.elemType;
          results.push(withShape(poolLike(node, xs, ws[0]!, kernel), et));
        } else results.push({});
        break;
      }
      case 'ConvTranspose': {
        const ws = ins[1]?.shape;
        if (xs && ws && xs.slice(2).every(isNum)) {
          const spatial = xs.length - 2;
          const strides = attrInts(node, 'strides') ?? new Array<number>(spatial).fill(1);
          const pads = attrInts(node, 'pads') ?? new Array<number>(spatial * 2).fill(0);
          const outPad = attrInts(node, 'output_padding') ?? new Array<number>(spatial).fill(0);
          const dil = attrInts(node, 'dilations') ?? new Array<number>(spatial).fill(1);
          const kernel = attrInts(node, 'kernel_shape') ?? ws.slice(2).map(Number);
          const group = attrInt(node, 'group', 1);
          const explicit = attrInts(node, 'output_shape');
          const out: Dim[] = [xs[0]!, isNum(ws[1]) ? ws[1] * group : '?'];
          for (let i = 0; i < spatial; i++) {
            out.push(explicit?.[i] ?? (strides[i]! * ((xs[i + 2] as number) - 1) + outPad[i]! + ((kernel[i]! - 1) * dil[i]! + 1) - pads[i]! - pads[i + spatial]!));
          }
          results.push(withShape(out));
        } else results.push({});
        break;
      }
      case 'MaxPool': case 'AveragePool': case 'LpPool': {
        const kernel = attrInts(node, 'kernel_shape');
        results.push(xs && kernel ? withShape(poolLike(node, xs, xs[1]!, kernel)) : {});
        if (node.output.length > 1) results.push(withShape(results[0]?.shape, DataType.INT64));
        break;
      }
      case 'GlobalAveragePool': case 'GlobalMaxPool':
        results.push(withShape(xs ? [xs[0]!, xs[1]!, ...xs.slice(2).map(() => 1)] : undefined));
        break;
      case 'Flatten': {
        if (xs) {
          const axis = normAxis(attrInt(node, 'axis', 1), xs.length);
          const prod = (ds: Dim[]): Dim => (ds.every(isNum) ? ds.reduce((a, b) => a * b, 1) : '?');
          results.push(withShape([prod(xs.slice(0, axis)), prod(xs.slice(axis))]));
        } else results.push({});
        break;
      }
      case 'Gemm': {
        const ws = ins[1]?.shape;
        if (xs && ws && xs.length === 2 && ws.length === 2) {
          const m = attrInt(node, 'transA', 0) ? xs[1]! : xs[0]!;
          const n = attrInt(node, 'transB', 0) ? ws[0]! : ws[1]!;
          results.push(withShape([m, n]));
        } else results.push({});
        break;
      }
      case 'MatMul': case 'MatMulInteger': case 'QLinearMatMul': {
        const bIdx = node.opType === 'QLinearMatMul' ? 3 : 1;
        const bs = ins[bIdx]?.shape;
        const et = node.opType === 'MatMulInteger' ? DataType.INT32 : node.opType === 'QLinearMatMul' ? ins[7]?.elemType : x?.elemType;
        if (xs && bs && xs.length >= 1 && bs.length >= 1) {
          const a = xs.length === 1 ? [1, xs[0]!] : xs;
          const b = bs.length === 1 ? [bs[0]!, 1] : bs;
          const batch = broadcast(a.slice(0, -2), b.slice(0, -2));
          const out = [...batch, ...(xs.length === 1 ? [] : [a[a.length - 2]!]), ...(bs.length === 1 ? [] : [b[b.length - 1]!])];
          results.push(withShape(out, et));
        } else results.push(withShape(undefined, et));
        break;
      }
      case 'DynamicQuantizeLinear':
        results.push(withShape(xs ? [...xs] : undefined, DataType.UINT8), { elemType: DataType.FLOAT, shape: [] }, { elemType: DataType.UINT8, shape: [] });
        break;
      case 'Transpose': {
        if (xs) {
          const perm = attrInts(node, 'perm') ?? xs.map((_, i) => xs.length - 1 - i);
          results.push(withShape(perm.map((p) => xs[p]!)));
        } else results.push({});
        break;
      }
      case 'Reshape': {
        const target = constInts(node.input[1]);
        if (target && xs) {
          const allowZero = attrInt(node, 'allowzero', 0) === 1;
          const out: Dim[] = target.map((d, i) => (d === 0 && !allowZero ? xs[i]! : d));
          const known = out.filter((d): d is number => isNum(d) && d !== -1);
          const minus = out.indexOf(-1);
          if (minus >= 0) {
            const total = xs.every(isNum) ? xs.reduce((a, b) => a * b, 1) : undefined;
            out[minus] = total !== undefined ? total / known.reduce((a, b) => a * b, 1) : '?';
          }
          results.push(withShape(out));
        } else results.push(withShape(target ? target.map((d) => (d > 0 ? d : '?')) : undefined));
        break;
      }
      case 'Concat': {
        if (ins.every((i) => i?.shape)) {
          const axis = normAxis(attrInt(node, 'axis', 0), ins[0]!.shape!.length);
          const out = [...ins[0]!.shape!];
          const parts = ins.map((i) => i!.shape![axis]);
          out[axis] = parts.every(isNum) ? parts.reduce((a, b) => (a as number) + (b as number), 0) : '?';
          results.push(withShape(out));
        } else results.push(withShape(undefined));
        break;
      }
      case 'Squeeze': case 'Unsqueeze': {
        const axes = attrInts(node, 'axes') ?? constInts(node.input[1]);
        if (xs && axes) {
          if (node.opType === 'Squeeze') {
            const norm = axes.map((a) => normAxis(a, xs.length));
            results.push(withShape(xs.filter((_, i) => !norm.includes(i))));
          } else {
            const rank = xs.length + axes.length;
            const norm = axes.map((a) => normAxis(a, rank)).sort((a, b) => a - b);
            const out: Dim[] = [];
            let j = 0;
            for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : xs[j++]!);
            results.push(withShape(out));
          }
        } else results.push(withShape(undefined));
        break;
      }
      case 'ReduceMean': case 'ReduceSum': case 'ReduceMax': case 'ReduceMin': case 'ReduceProd': case 'ReduceL2': {
        const axes = attrInts(node, 'axes') ?? constInts(node.input[1]);
        const keep = attrInt(node, 'keepdims', 1) === 1;
        if (xs && axes) {
          const norm = axes.map((a) => normAxis(a, xs.length));
          const out: Dim[] = [];
          xs.forEach((d, i) => { if (!norm.includes(i)) out.push(d); else if (keep) out.push(1); });
          results.push(withShape(out));
        } else results.push(withShape(undefined));
        break;
      }
      case 'Shape': results.push({ elemType: DataType.INT64, shape: [xs ? xs.length : '?'] }); break;
      case 'Gather': {
        const idx = ins[1]?.shape;
        if (xs && idx) {
          const axis = normAxis(attrInt(node, 'axis', 0), xs.length);
          results.push(withShape([...xs.slice(0, axis), ...idx, ...xs.slice(axis + 1)]));
        } else results.push(withShape(undefined));
        break;
      }
      // Element type follows input 0; the shape needs values we do not track.
      case 'Slice': case 'Expand': case 'Tile': case 'Pad': case 'Resize': case 'Upsample': case 'GatherElements':
      case 'GatherND': case 'ScatterND': case 'ReverseSequence': case 'DepthToSpace': case 'SpaceToDepth': case 'TopK':
        results.push(withShape(undefined));
        if (node.opType === 'TopK') results.push({ elemType: DataType.INT64 });
        break;
      case 'Split':
        for (let i = 0; i < node.output.length; i++) results.push(withShape(undefined));
        break;
      case 'ConstantOfShape':
        results.push({ elemType: attr(node, 'value')?.t?.dataType ?? DataType.FLOAT });
        break;
      case 'LSTM': case 'GRU': case 'RNN':
        for (let i = 0; i < node.output.length; i++) results.push(withShape(undefined));
        break;
      default:
        // Unknown op: types of outputs unknown unless declared.
        break;
    }
    node.output.forEach((o, i) => {
      if (!o) return;
      const inferred = results[i] ?? {};
      const decl = declared.get(o);
      const merged: ValueShape = { ...inferred };
      if (decl?.elemType !== undefined) merged.elemType = decl.elemType;
      if (decl?.shape && (!inferred.shape || decl.shape.every(isNum))) merged.shape = decl.shape;
      shapes.set(o, merged);
    });
  }
  for (const [name, decl] of declared) if (!shapes.has(name)) shapes.set(name, decl);
  return shapes;
}

/** Product of a static shape, or undefined when any dim is symbolic/unknown. */
export function staticSize(shape: Dim[] | undefined): number | undefined {
  if (!shape || !shape.every(isNum)) return undefined;
  return shape.reduce((a: number, b) => a * (b as number), 1);
}
