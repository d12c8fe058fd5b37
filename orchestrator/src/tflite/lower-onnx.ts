// Lowers an ONNX graph (as PyTorch exports CNNs and MLPs) to a float32 TFLite graph.
// Activations of rank 4 are kept NHWC inside the TFLite graph; `Value.nhwc` records which
// tensors are permuted so axes, weights and broadcast constants are remapped consistently and
// TRANSPOSE is inserted only where a layout-sensitive op meets the other layout.
// Shape-computing subgraphs (Shape/Gather/Unsqueeze/Concat...) are folded as constants because
// the batch dimension is fixed at conversion time.
import { EdgepackError } from '@edgepack/protocol/errors.js';
import type { AttributeProto, GraphProto, ModelProto, NodeProto } from '../onnx/onnx-model.js';
import { decodeUtf8Attr, defaultOpsetVersion } from '../onnx/onnx-model.js';
import { DataType, readTensorAsFloat32, readTensorAsNumbers } from '../onnx/tensor.js';
import { TfliteGraph, floatsOf } from './graph.js';
import { NCHW_TO_NHWC, NHWC_TO_NCHW, ONNX_AXIS_TO_NHWC, broadcastShapes, permuteShape, sizeOf, transposeData } from './layout.js';
import type { TfliteOperator } from './model.js';
import { Activation, BuiltinOperator, Padding } from './schema.js';

export interface LowerOptions {
  /** Fixed batch size substituted for a symbolic batch dimension. Default 1. */
  batch?: number;
  /** Keep NCHW model inputs/outputs, transposing at the boundary. Default false (NHWC IO). */
  keepNchwIo?: boolean;
}

export interface LoweredIo {
  name: string;
  /** Shape of the TFLite tensor. */
  shape: number[];
  /** Layout of a 4-D tensor as the TFLite model sees it. */
  layout: 'NHWC' | 'NCHW' | 'none';
}

export interface LoweredGraph {
  graph: TfliteGraph;
  inputs: LoweredIo[];
  outputs: LoweredIo[];
}

interface Value {
  tensor: number;
  /** Logical ONNX shape. */
  shape: number[];
  /** True when the TFLite tensor is the NHWC permutation of this rank-4 ONNX value. */
  nhwc: boolean;
  /**
   * Set on a [N, C·H·W] flatten whose TFLite data is in H,W,C order (no transpose emitted);
   * only a FULLY_CONNECTED consumer may read it, permuting its weight columns to match.
   */
  hwcOf?: [number, number, number];
}

interface Const {
  dims: number[];
  data: Float32Array | number[];
  float: boolean;
}

/** ONNX op types the converter lowers to TFLite ops. */
const LOWERED_OPS = new Set([
  'Conv', 'BatchNormalization', 'Gemm', 'MatMul', 'Relu', 'Clip', 'LeakyRelu', 'Sigmoid', 'Tanh',
  'HardSwish', 'Add', 'Sub', 'Mul', 'Div', 'MaxPool', 'AveragePool', 'GlobalAveragePool',
  'Flatten', 'Reshape', 'Transpose', 'Concat', 'Pad', 'Softmax', 'ReduceMean', 'Identity',
  'Constant', 'Dropout',
]);
/** Op types accepted only when all their inputs are constants (folded at conversion time). */
const FOLDED_OPS = new Set(['Shape', 'Gather', 'Unsqueeze', 'Squeeze', 'Cast', 'ConstantOfShape']);

export interface UnsupportedOp {
  opType: string;
  nodes: string[];
  reason?: string;
}

function nodeLabel(node: NodeProto, index: number): string {
  return node.name && node.name.length > 0 ? node.name : `${node.opType}_${index}`;
}

/** Lists every op the converter cannot handle, grouped by op type with node names. */
export function findUnsupportedOps(model: ModelProto): UnsupportedOp[] {
  const byType = new Map<string, UnsupportedOp>();
  const add = (opType: string, node: string, reason?: string) => {
    const key = reason ? `${opType}: ${reason}` : opType;
    const entry = byType.get(key) ?? { opType, nodes: [], ...(reason ? { reason } : {}) };
    entry.nodes.push(node);
    byType.set(key, entry);
  };
  model.graph.node.forEach((node, i) => {
    const label = nodeLabel(node, i);
    if (node.domain && node.domain !== '' && node.domain !== 'ai.onnx') return add(`${node.domain}::${node.opType}`, label);
    if (!LOWERED_OPS.has(node.opType) && !FOLDED_OPS.has(node.opType)) return add(node.opType, label);
    const a = attrs(node);
    if (node.opType === 'Conv' && a.int('group', 1) !== 1) {
      // Depthwise is checked again once channel counts are known.
      if (a.ints('kernel_shape', []).length > 2) add(node.opType, label, 'only 2-D convolution is supported');
    }
    if ((node.opType === 'Conv' || node.opType === 'MaxPool' || node.opType === 'AveragePool') && a.ints('kernel_shape', [0, 0]).length !== 2) {
      add(node.opType, label, 'only 2-D kernels are supported');
    }
    if ((node.opType === 'MaxPool' || node.opType === 'AveragePool') && a.int('ceil_mode', 0) !== 0) add(node.opType, label, 'ceil_mode=1 is not supported');
    if (node.opType === 'Gemm' && a.int('transA', 0) !== 0) add(node.opType, label, 'transA=1 is not supported');
    if (node.opType === 'Pad' && (a.str('mode') ?? 'constant') !== 'constant') add(node.opType, label, `mode=${a.str('mode')} is not supported`);
  });
  return [...byType.values()];
}

export function unsupportedOpsError(list: UnsupportedOp[]): EdgepackError {
  const lines = list.map((u) => `  ${u.opType}${u.reason ? ` (${u.reason})` : ''}: ${u.nodes.join(', ')}`);
  return new EdgepackError(
    'TFLITE_UNSUPPORTED_OPS',
    `the model uses ${list.length} op type(s) the TFLite converter does not support:\n${lines.join('\n')}`,
    { unsupported: list },
  );
}

interface Attrs {
  int(name: string, dflt: number): number;
  float(name: string, dflt: number): number;
  ints(name: string, dflt: number[]): number[];
  str(name: string): string | undefined;
  tensor(name: string): AttributeProto['t'];
  has(name: string): boolean;
}

function attrs(node: NodeProto): Attrs {
  const find = (name: string) => node.attribute.find((a) => a.name === name);
  return {
    int: (name, dflt) => find(name)?.i ?? dflt,
    float: (name, dflt) => find(name)?.f ?? dflt,
    ints: (name, dflt) => find(name)?.ints ?? dflt,
    str: (name) => {
      const a = find(name);
      return a ? decodeUtf8Attr(a) : undefined;
    },
    tensor: (name) => find(name)?.t,
    has: (name) => find(name) !== undefined,
  };
}

const FUSABLE: ReadonlySet<number> = new Set([
  BuiltinOperator.CONV_2D, BuiltinOperator.DEPTHWISE_CONV_2D, BuiltinOperator.FULLY_CONNECTED,
  BuiltinOperator.ADD, BuiltinOperator.SUB, BuiltinOperator.MUL,
]);

class Lowering {
  readonly g = new TfliteGraph();
  readonly values = new Map<string, Value>();
  readonly consts = new Map<string, Const>();
  /** How many nodes (plus graph outputs) read each ONNX value; fusion needs exactly one. */
  readonly uses = new Map<string, number>();
  private readonly transposeCache = new Map<string, number>();
  readonly opset: number;

  constructor(private readonly graph: GraphProto, model: ModelProto, private readonly options: Required<LowerOptions>) {
    this.opset = defaultOpsetVersion(model) ?? 13;
    for (const n of graph.node) for (const i of n.input) if (i) this.uses.set(i, (this.uses.get(i) ?? 0) + 1);
    for (const o of graph.output) this.uses.set(o.name, (this.uses.get(o.name) ?? 0) + 1);
  }

  fail(node: NodeProto, reason: string): never {
    throw unsupportedOpsError([{ opType: node.opType, nodes: [node.name ?? ''], reason }]);
  }

  // ---- values and constants -------------------------------------------------------------

  isConst(name: string): boolean {
    return this.consts.has(name);
  }

  constOf(node: NodeProto, name: string): Const {
    const c = this.consts.get(name);
    if (!c) this.fail(node, `input '${name}' must be a constant`);
    return c;
  }

  value(node: NodeProto, name: string): Value {
    const v = this.values.get(name);
    if (v) return v;
    const c = this.consts.get(name);
    if (c) {
      // A constant used as a full activation operand (rare): materialise it.
      const t = c.float ? this.g.constFloat(name, c.dims, c.data as Float32Array) : this.g.constInt32(name, c.dims, c.data as number[]);
      const val = { tensor: t, shape: c.dims, nhwc: false };
      this.values.set(name, val);
      return val;
    }
    this.fail(node, `input '${name}' is not produced by any node`);
  }

  /** The value as an NHWC tensor (rank 4), transposing once if it is currently NCHW. */
  nhwc(v: Value): number {
    if (v.nhwc) return v.tensor;
    return this.transposed(v.tensor, NCHW_TO_NHWC, permuteShape(v.shape, NCHW_TO_NHWC), 'nhwc');
  }

  /** The value in plain ONNX layout. */
  plain(v: Value): number {
    if (!v.nhwc) return v.tensor;
    return this.transposed(v.tensor, NHWC_TO_NCHW, v.shape, 'nchw');
  }

  private transposed(tensor: number, perm: number[], outShape: number[], tag: string): number {
    const key = `${tensor}/${perm.join(',')}`;
    const hit = this.transposeCache.get(key);
    if (hit !== undefined) return hit;
    const name = this.g.tensors[tensor].name;
    const permT = this.g.constInt32(`${name}/perm_${tag}`, [perm.length], perm);
    const out = this.g.activation(`${name}/${tag}`, outShape);
    this.g.addOperator({ opcode: BuiltinOperator.TRANSPOSE, version: 1, inputs: [tensor, permT], outputs: [out], options: { type: 'TransposeOptions' } });
    this.transposeCache.set(key, out);
    return out;
  }

  define(name: string, tensor: number, shape: number[], nhwc: boolean): void {
    this.values.set(name, { tensor, shape, nhwc });
  }

  tflShape(shape: number[], nhwc: boolean): number[] {
    return nhwc ? permuteShape(shape, NCHW_TO_NHWC) : [...shape];
  }

  // ---- graph IO ---------------------------------------------------------------------------

  inputs(): LoweredIo[] {
    const inits = new Set(this.graph.initializer.map((t) => t.name));
    const io: LoweredIo[] = [];
    for (const vi of this.graph.input) {
      if (inits.has(vi.name)) continue;
      const tt = vi.type?.tensorType;
      if (tt?.elemType !== DataType.FLOAT) {
        throw new EdgepackError('TFLITE_UNSUPPORTED_INPUT', `model input '${vi.name}' is not float32; only float32 inputs are supported`);
      }
      const dims = (tt.shape?.dims ?? []).map((d, i) => {
        if (d.value !== undefined && d.value > 0) return d.value;
        if (i === 0) return this.options.batch;
        throw new EdgepackError('TFLITE_DYNAMIC_SHAPE', `model input '${vi.name}' has a symbolic dimension ${i} ('${d.param ?? '?'}'); only the batch dimension may be symbolic`);
      });
      const asNhwc = dims.length === 4 && !this.options.keepNchwIo;
      const t = this.g.activation(vi.name, this.tflShape(dims, asNhwc));
      this.g.inputs.push(t);
      this.define(vi.name, t, dims, asNhwc);
      io.push({ name: vi.name, shape: this.tflShape(dims, asNhwc), layout: dims.length === 4 ? (asNhwc ? 'NHWC' : 'NCHW') : 'none' });
    }
    return io;
  }

  outputs(): LoweredIo[] {
    const io: LoweredIo[] = [];
    for (const vo of this.graph.output) {
      const v = this.values.get(vo.name);
      if (!v) throw new EdgepackError('TFLITE_INVALID_GRAPH', `graph output '${vo.name}' is constant or not produced; nothing to convert`);
      const wantNhwc = v.shape.length === 4 && !this.options.keepNchwIo;
      let t = wantNhwc ? this.nhwc(v) : this.plain(v);
      if (this.g.inputs.includes(t) || this.g.outputs.includes(t)) {
        // An output aliasing an input or another output needs its own tensor.
        const out = this.g.activation(vo.name, this.g.tensors[t].shape);
        const shapeT = this.g.constInt32(`${vo.name}/shape`, [this.g.tensors[t].shape.length], this.g.tensors[t].shape);
        this.g.addOperator({ opcode: BuiltinOperator.RESHAPE, version: 1, inputs: [t, shapeT], outputs: [out], options: { type: 'ReshapeOptions', newShape: this.g.tensors[t].shape } });
        t = out;
      }
      this.g.rename(t, vo.name);
      this.g.outputs.push(t);
      io.push({ name: this.g.tensors[t].name, shape: [...this.g.tensors[t].shape], layout: v.shape.length === 4 ? (wantNhwc ? 'NHWC' : 'NCHW') : 'none' });
    }
    return io;
  }

  loadInitializers(): void {
    for (const t of this.graph.initializer) {
      const float = t.dataType === DataType.FLOAT || t.dataType === DataType.FLOAT16 || t.dataType === DataType.DOUBLE;
      this.consts.set(t.name ?? '', { dims: [...t.dims], data: float ? readTensorAsFloat32(t) : readTensorAsNumbers(t), float });
    }
  }

  // ---- fusion helpers ---------------------------------------------------------------------

  /** The operator that produced `name` if it can absorb a following op (single use, not an output). */
  fusableProducer(name: string): TfliteOperator | undefined {
    const v = this.values.get(name);
    if (!v || (this.uses.get(name) ?? 0) !== 1) return undefined;
    const idx = this.g.producerOf(v.tensor);
    if (idx < 0) return undefined;
    const op = this.g.operators[idx];
    if (!FUSABLE.has(op.opcode) || !op.options || !('activation' in op.options) || op.options.activation !== Activation.NONE) return undefined;
    return op;
  }

  /** Fuses `activation` into the producer of `input` when possible; returns true on success. */
  tryFuseActivation(node: NodeProto, activation: Activation): boolean {
    const input = node.input[0];
    const op = this.fusableProducer(input);
    if (!op || !op.options || !('activation' in op.options)) return false;
    op.options = { ...op.options, activation } as TfliteOperator['options'];
    const v = this.values.get(input)!;
    this.g.rename(v.tensor, node.output[0]);
    this.define(node.output[0], v.tensor, v.shape, v.nhwc);
    return true;
  }

  unary(node: NodeProto, opcode: number, options?: TfliteOperator['options'], version = 1): void {
    const v = this.value(node, node.input[0]);
    const out = this.g.activation(node.output[0], this.g.tensors[v.tensor].shape);
    this.g.addOperator({ opcode: opcode as TfliteOperator['opcode'], version, inputs: [v.tensor], outputs: [out], ...(options ? { options } : {}) });
    this.define(node.output[0], out, v.shape, v.nhwc);
  }

  // ---- constants as operands ----------------------------------------------------------------

  /** A constant broadcast operand placed against a value of rank `rank` in layout `nhwc`. */
  constOperand(name: string, c: Const, rank: number, nhwc: boolean): number {
    let dims = c.dims;
    let data = c.float ? (c.data as Float32Array) : Float32Array.from(c.data as number[]);
    if (nhwc) {
      dims = [...new Array<number>(Math.max(0, 4 - dims.length)).fill(1), ...dims];
      data = transposeData(data, dims, NCHW_TO_NHWC);
      dims = permuteShape(dims, NCHW_TO_NHWC);
    } else if (dims.length > rank) {
      dims = dims.slice(dims.length - rank);
    }
    return this.g.constFloat(name, dims, data);
  }

  // ---- ops ----------------------------------------------------------------------------------

  lower(node: NodeProto): void {
    const inputsConst = node.input.every((i) => i === '' || this.isConst(i));
    if (node.opType === 'Constant') return this.constant(node);
    if (node.opType === 'Identity' || node.opType === 'Dropout') return this.alias(node);
    if (node.opType === 'Shape') return this.shape(node);
    if (inputsConst && this.fold(node)) return;
    if (FOLDED_OPS.has(node.opType)) this.fail(node, 'only supported on constant inputs');
    switch (node.opType) {
      case 'Conv': return this.conv(node);
      case 'BatchNormalization': return this.batchNorm(node);
      case 'Gemm': return this.gemm(node);
      case 'MatMul': return this.matmul(node);
      case 'Relu':
        if (!this.tryFuseActivation(node, Activation.RELU)) this.unary(node, BuiltinOperator.RELU);
        return;
      case 'Clip': return this.clip(node);
      case 'LeakyRelu':
        return this.unary(node, BuiltinOperator.LEAKY_RELU, { type: 'LeakyReluOptions', alpha: attrs(node).float('alpha', 0.01) });
      case 'Sigmoid': return this.unary(node, BuiltinOperator.LOGISTIC);
      case 'Tanh': return this.unary(node, BuiltinOperator.TANH);
      case 'HardSwish': return this.unary(node, BuiltinOperator.HARD_SWISH, { type: 'HardSwishOptions' });
      case 'Add': case 'Sub': case 'Mul': case 'Div': return this.binary(node);
      case 'MaxPool': case 'AveragePool': return this.pool(node);
      case 'GlobalAveragePool': return this.globalAveragePool(node);
      case 'ReduceMean': return this.reduceMean(node);
      case 'Flatten': return this.flatten(node);
      case 'Reshape': return this.reshape(node);
      case 'Transpose': return this.transpose(node);
      case 'Concat': return this.concat(node);
      case 'Pad': return this.pad(node);
      case 'Softmax': return this.softmax(node);
      default: this.fail(node, 'no lowering for this op');
    }
  }

  constant(node: NodeProto): void {
    const a = attrs(node);
    const t = a.tensor('value');
    if (t) {
      const float = t.dataType === DataType.FLOAT || t.dataType === DataType.FLOAT16 || t.dataType === DataType.DOUBLE;
      this.consts.set(node.output[0], { dims: [...t.dims], data: float ? readTensorAsFloat32(t) : readTensorAsNumbers(t), float });
    } else if (a.has('value_float')) {
      this.consts.set(node.output[0], { dims: [], data: Float32Array.of(a.float('value_float', 0)), float: true });
    } else if (a.has('value_int')) {
      this.consts.set(node.output[0], { dims: [], data: [a.int('value_int', 0)], float: false });
    } else if (a.has('value_ints')) {
      const v = a.ints('value_ints', []);
      this.consts.set(node.output[0], { dims: [v.length], data: v, float: false });
    } else {
      this.fail(node, 'Constant without a supported value attribute');
    }
  }

  alias(node: NodeProto): void {
    const src = node.input[0];
    const c = this.consts.get(src);
    if (c) this.consts.set(node.output[0], c);
    else {
      const v = this.value(node, src);
      this.values.set(node.output[0], v);
      // Readers of the alias plus other readers of the source: fusion must see them all.
      this.uses.set(node.output[0], (this.uses.get(src) ?? 1) - 1 + (this.uses.get(node.output[0]) ?? 0));
    }
  }

  shape(node: NodeProto): void {
    const src = node.input[0];
    const dims = this.consts.get(src)?.dims ?? this.value(node, src).shape;
    this.consts.set(node.output[0], { dims: [dims.length], data: [...dims], float: false });
  }

  /** Evaluates shape arithmetic on constants. Returns false when the op is not foldable here. */
  fold(node: NodeProto): boolean {
    const a = attrs(node);
    const c = (i: number) => this.consts.get(node.input[i])!;
    const set = (dims: number[], data: Float32Array | number[], float: boolean) => this.consts.set(node.output[0], { dims, data, float });
    const nums = (k: Const) => Array.from(k.data as ArrayLike<number>);
    switch (node.opType) {
      case 'Cast': {
        const to = a.int('to', DataType.FLOAT);
        const float = to === DataType.FLOAT || to === DataType.DOUBLE || to === DataType.FLOAT16;
        const x = c(0);
        set(x.dims, float ? Float32Array.from(nums(x)) : nums(x).map(Math.trunc), float);
        return true;
      }
      case 'Unsqueeze': {
        const x = c(0);
        const axes = this.opset >= 13 ? nums(c(1)) : a.ints('axes', []);
        const rank = x.dims.length + axes.length;
        const norm = axes.map((ax) => (ax < 0 ? ax + rank : ax));
        const dims: number[] = [];
        let k = 0;
        for (let i = 0; i < rank; i++) dims.push(norm.includes(i) ? 1 : x.dims[k++]);
        set(dims, x.data, x.float);
        return true;
      }
      case 'Squeeze': {
        const x = c(0);
        const axes = this.opset >= 13 && node.input[1] ? nums(c(1)) : a.ints('axes', []);
        const norm = axes.map((ax) => (ax < 0 ? ax + x.dims.length : ax));
        set(x.dims.filter((d, i) => (norm.length ? !norm.includes(i) : d !== 1)), x.data, x.float);
        return true;
      }
      case 'Gather': {
        const x = c(0);
        const idx = nums(c(1));
        const axis = a.int('axis', 0);
        if (x.dims.length !== 1 || axis !== 0) return false;
        const vals = idx.map((i) => nums(x)[i < 0 ? i + x.dims[0] : i]);
        set(c(1).dims, x.float ? Float32Array.from(vals) : vals, x.float);
        return true;
      }
      case 'Concat': {
        const parts = node.input.map((_, i) => c(i));
        if (parts.some((p) => p.dims.length !== 1)) return false;
        const vals = parts.flatMap(nums);
        set([vals.length], parts[0].float ? Float32Array.from(vals) : vals, parts[0].float);
        return true;
      }
      case 'ConstantOfShape': {
        const dims = nums(c(0));
        const t = a.tensor('value');
        const fill = t ? readTensorAsNumbers(t)[0] : 0;
        const float = !t || t.dataType === DataType.FLOAT;
        const n = sizeOf(dims);
        set(dims, float ? new Float32Array(n).fill(fill) : new Array<number>(n).fill(fill), float);
        return true;
      }
      case 'Add': case 'Sub': case 'Mul': case 'Div': {
        const x = c(0);
        const y = c(1);
        if (sizeOf(x.dims) !== 1 && sizeOf(y.dims) !== 1 && x.dims.join() !== y.dims.join()) return false;
        const xs = nums(x);
        const ys = nums(y);
        const n = Math.max(xs.length, ys.length);
        const f = { Add: (p: number, q: number) => p + q, Sub: (p: number, q: number) => p - q, Mul: (p: number, q: number) => p * q, Div: (p: number, q: number) => p / q }[node.opType]!;
        const float = x.float || y.float;
        const out = Array.from({ length: n }, (_, i) => {
          const r = f(xs[xs.length === 1 ? 0 : i], ys[ys.length === 1 ? 0 : i]);
          return float ? r : Math.trunc(r);
        });
        set(xs.length >= ys.length ? x.dims : y.dims, float ? Float32Array.from(out) : out, float);
        return true;
      }
      case 'Reshape': {
        const x = c(0);
        set(resolveReshape(x.dims, nums(c(1)), a.int('allowzero', 0) === 1), x.data, x.float);
        return true;
      }
      default:
        return false;
    }
  }

  /** Returns [begin, end] padding per spatial dim and whether it equals TFLite SAME. */
  spatialPadding(node: NodeProto, inHW: number[], kernel: number[], strides: number[], dilations: number[]): { pads: number[]; same: boolean; valid: boolean } {
    const a = attrs(node);
    const autoPad = a.str('auto_pad') ?? 'NOTSET';
    const samePads: number[] = [0, 0, 0, 0];
    for (let i = 0; i < 2; i++) {
      const out = Math.ceil(inHW[i] / strides[i]);
      const total = Math.max((out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - inHW[i], 0);
      samePads[i] = Math.floor(total / 2);
      samePads[i + 2] = total - samePads[i];
    }
    let pads: number[];
    if (autoPad === 'SAME_UPPER') pads = samePads;
    else if (autoPad === 'VALID') pads = [0, 0, 0, 0];
    else if (autoPad === 'SAME_LOWER') pads = [samePads[2], samePads[3], samePads[0], samePads[1]];
    else pads = a.ints('pads', [0, 0, 0, 0]);
    const valid = pads.every((p) => p === 0);
    const same = pads.every((p, i) => p === samePads[i]);
    return { pads, same, valid };
  }

  /** Explicit PAD (or PADV2 with `value`) on an NHWC tensor; returns the padded tensor. */
  explicitPad(name: string, input: number, pads: number[], value?: number): number {
    const s = this.g.tensors[input].shape;
    const [top, left, bottom, right] = pads;
    const padsT = this.g.constInt32(`${name}/pads`, [4, 2], [0, 0, top, bottom, left, right, 0, 0]);
    const out = this.g.activation(`${name}/padded`, [s[0], s[1] + top + bottom, s[2] + left + right, s[3]]);
    if (value === undefined) {
      this.g.addOperator({ opcode: BuiltinOperator.PAD, version: 1, inputs: [input, padsT], outputs: [out], options: { type: 'PadOptions' } });
    } else {
      const v = this.g.constFloat(`${name}/pad_value`, [], Float32Array.of(value));
      this.g.addOperator({ opcode: BuiltinOperator.PADV2, version: 1, inputs: [input, padsT, v], outputs: [out], options: { type: 'PadV2Options' } });
    }
    return out;
  }

  conv(node: NodeProto): void {
    const a = attrs(node);
    const x = this.value(node, node.input[0]);
    if (x.shape.length !== 4) this.fail(node, `input rank ${x.shape.length}; only 2-D convolution (rank 4) is supported`);
    const w = this.constOf(node, node.input[1]);
    const [cout, cinPerGroup, kh, kw] = w.dims;
    const cin = x.shape[1];
    const group = a.int('group', 1);
    const depthwise = group > 1 && group === cin && cinPerGroup === 1;
    if (group > 1 && !depthwise) this.fail(node, `grouped convolution with group=${group} and ${cin} input channels; only group=1 or group=channels is supported`);
    const strides = a.ints('strides', [1, 1]);
    const dil = a.ints('dilations', [1, 1]);
    const bias = node.input[2] ? (this.constOf(node, node.input[2]).data as Float32Array) : new Float32Array(cout);
    const inHW = [x.shape[2], x.shape[3]];
    const pad = this.spatialPadding(node, inHW, [kh, kw], strides, dil);
    let input = this.nhwc(x);
    let padding: Padding = Padding.VALID;
    if (pad.same && !pad.valid) padding = Padding.SAME;
    else if (!pad.valid) input = this.explicitPad(node.output[0], input, pad.pads);
    const inS = this.g.tensors[input].shape;
    const oh = Math.floor((inS[1] - (padding === Padding.SAME ? 1 : (kh - 1) * dil[0] + 1)) / strides[0]) + 1;
    const ow = Math.floor((inS[2] - (padding === Padding.SAME ? 1 : (kw - 1) * dil[1] + 1)) / strides[1]) + 1;
    const outShape = [x.shape[0], cout, oh, ow];
    const wData = w.data as Float32Array;
    // ONNX OIHW → TFLite OHWI (conv) or 1HWO (depthwise).
    const tflW = depthwise
      ? this.g.constFloat(`${node.input[1]}`, [1, kh, kw, cout], transposeData(wData, [cout, 1, kh, kw], [1, 2, 3, 0]))
      : this.g.constFloat(`${node.input[1]}`, [cout, kh, kw, cinPerGroup], transposeData(wData, w.dims, [0, 2, 3, 1]));
    const tflB = this.g.constFloat(node.input[2] || `${node.output[0]}/bias`, [cout], Float32Array.from(bias));
    const out = this.g.activation(node.output[0], permuteShape(outShape, NCHW_TO_NHWC));
    const common = { padding, strideW: strides[1], strideH: strides[0], activation: Activation.NONE, dilationW: dil[1], dilationH: dil[0] };
    this.g.addOperator(
      depthwise
        ? { opcode: BuiltinOperator.DEPTHWISE_CONV_2D, version: 1, inputs: [input, tflW, tflB], outputs: [out], options: { type: 'DepthwiseConv2DOptions', depthMultiplier: cout / cin, ...common } }
        : { opcode: BuiltinOperator.CONV_2D, version: 1, inputs: [input, tflW, tflB], outputs: [out], options: { type: 'Conv2DOptions', ...common } },
    );
    this.define(node.output[0], out, outShape, true);
  }

  batchNorm(node: NodeProto): void {
    const a = attrs(node);
    const eps = a.float('epsilon', 1e-5);
    const [scale, bias, mean, variance] = [1, 2, 3, 4].map((i) => this.constOf(node, node.input[i]).data as Float32Array);
    const C = scale.length;
    const mul = new Float32Array(C);
    const add = new Float32Array(C);
    for (let c = 0; c < C; c++) {
      mul[c] = scale[c] / Math.sqrt(variance[c] + eps);
      add[c] = bias[c] - mean[c] * mul[c];
    }
    const producer = this.fusableProducer(node.input[0]);
    if (producer && (producer.opcode === BuiltinOperator.CONV_2D || producer.opcode === BuiltinOperator.DEPTHWISE_CONV_2D)) {
      // Fold into the convolution: scale each output channel's weights and bias.
      const w = floatsOf(this.g.tensors[producer.inputs[1]]);
      const b = floatsOf(this.g.tensors[producer.inputs[2]]);
      const perOut = w.length / C;
      const depthwise = producer.opcode === BuiltinOperator.DEPTHWISE_CONV_2D;
      for (let i = 0; i < w.length; i++) w[i] *= mul[depthwise ? i % C : Math.floor(i / perOut)];
      for (let c = 0; c < C; c++) b[c] = b[c] * mul[c] + add[c];
      const v = this.values.get(node.input[0])!;
      this.g.rename(v.tensor, node.output[0]);
      this.define(node.output[0], v.tensor, v.shape, v.nhwc);
      return;
    }
    const x = this.value(node, node.input[0]);
    const cdims = [C, ...new Array<number>(Math.max(0, x.shape.length - 2)).fill(1)];
    const mulT = this.constOperand(`${node.output[0]}/scale`, { dims: cdims, data: mul, float: true }, x.shape.length, x.nhwc);
    const addT = this.constOperand(`${node.output[0]}/shift`, { dims: cdims, data: add, float: true }, x.shape.length, x.nhwc);
    const tshape = this.g.tensors[x.tensor].shape;
    const mid = this.g.activation(`${node.output[0]}/scaled`, tshape);
    const out = this.g.activation(node.output[0], tshape);
    this.g.addOperator({ opcode: BuiltinOperator.MUL, version: 1, inputs: [x.tensor, mulT], outputs: [mid], options: { type: 'MulOptions', activation: Activation.NONE } });
    this.g.addOperator({ opcode: BuiltinOperator.ADD, version: 1, inputs: [mid, addT], outputs: [out], options: { type: 'AddOptions', activation: Activation.NONE } });
    this.define(node.output[0], out, x.shape, x.nhwc);
  }

  fullyConnected(node: NodeProto, x: Value, weightsOI: Float32Array, O: number, I: number, bias: Float32Array, weightName: string): void {
    const input = this.plain(x);
    if (x.hwcOf) {
      // Input columns arrive in H,W,C order; reorder each weight row from C,H,W to match.
      const [C, H, W] = x.hwcOf;
      const reordered = new Float32Array(weightsOI.length);
      for (let o = 0; o < O; o++) {
        for (let c = 0; c < C; c++) {
          for (let h = 0; h < H; h++) {
            for (let w = 0; w < W; w++) reordered[o * I + (h * W + w) * C + c] = weightsOI[o * I + (c * H + h) * W + w];
          }
        }
      }
      weightsOI = reordered;
    }
    const keepNumDims = x.shape.length > 2;
    const outShape = [...x.shape.slice(0, -1), O];
    const w = this.g.constFloat(weightName, [O, I], weightsOI);
    const b = this.g.constFloat(`${weightName}/bias`, [O], bias);
    const out = this.g.activation(node.output[0], outShape);
    this.g.addOperator({ opcode: BuiltinOperator.FULLY_CONNECTED, version: 1, inputs: [input, w, b], outputs: [out], options: { type: 'FullyConnectedOptions', activation: Activation.NONE, keepNumDims } });
    this.define(node.output[0], out, outShape, false);
  }

  gemm(node: NodeProto): void {
    const a = attrs(node);
    const x = this.value(node, node.input[0]);
    if (x.shape.length !== 2) this.fail(node, `input rank ${x.shape.length}; Gemm needs rank 2`);
    const B = this.constOf(node, node.input[1]);
    const alpha = a.float('alpha', 1);
    const beta = a.float('beta', 1);
    const transB = a.int('transB', 0) === 1;
    let w = B.data as Float32Array;
    const [O, I] = transB ? B.dims : [B.dims[1], B.dims[0]];
    if (!transB) w = transposeData(w, B.dims, [1, 0]);
    if (alpha !== 1) w = w.map((v) => v * alpha);
    const bias = new Float32Array(O);
    if (node.input[2]) {
      const C = this.constOf(node, node.input[2]);
      const cd = C.data as Float32Array;
      if (cd.length !== 1 && cd.length !== O) this.fail(node, `bias of shape [${C.dims.join(',')}] does not broadcast per output`);
      for (let o = 0; o < O; o++) bias[o] = beta * cd[cd.length === 1 ? 0 : o];
    }
    this.fullyConnected(node, x, w, O, I, bias, node.input[1]);
  }

  matmul(node: NodeProto): void {
    const x = this.value(node, node.input[0]);
    const B = this.constOf(node, node.input[1]);
    if (B.dims.length !== 2) this.fail(node, 'only MatMul with a constant 2-D right operand is supported');
    const [I, O] = B.dims;
    this.fullyConnected(node, x, transposeData(B.data as Float32Array, B.dims, [1, 0]), O, I, new Float32Array(O), node.input[1]);
  }

  clip(node: NodeProto): void {
    const a = attrs(node);
    const bound = (idx: number, attr: string, dflt: number) => {
      if (this.opset >= 11) return node.input[idx] ? (this.constOf(node, node.input[idx]).data as ArrayLike<number>)[0] : dflt;
      return a.float(attr, dflt);
    };
    const lo = bound(1, 'min', -Infinity);
    const hi = bound(2, 'max', Infinity);
    if (lo === 0 && hi === 6) {
      if (!this.tryFuseActivation(node, Activation.RELU6)) this.unary(node, BuiltinOperator.RELU6);
      return;
    }
    if (lo === 0 && hi === Infinity) {
      if (!this.tryFuseActivation(node, Activation.RELU)) this.unary(node, BuiltinOperator.RELU);
      return;
    }
    const x = this.value(node, node.input[0]);
    const shape = this.g.tensors[x.tensor].shape;
    let cur = x.tensor;
    if (lo !== -Infinity) {
      const c = this.g.constFloat(`${node.output[0]}/min`, [], Float32Array.of(lo));
      const t = this.g.activation(`${node.output[0]}/lower`, shape);
      this.g.addOperator({ opcode: BuiltinOperator.MAXIMUM, version: 1, inputs: [cur, c], outputs: [t], options: { type: 'MaximumMinimumOptions' } });
      cur = t;
    }
    if (hi !== Infinity) {
      const c = this.g.constFloat(`${node.output[0]}/max`, [], Float32Array.of(hi));
      const t = this.g.activation(`${node.output[0]}/upper`, shape);
      this.g.addOperator({ opcode: BuiltinOperator.MINIMUM, version: 1, inputs: [cur, c], outputs: [t], options: { type: 'MaximumMinimumOptions' } });
      cur = t;
    }
    this.g.rename(cur, node.output[0]);
    this.define(node.output[0], cur, x.shape, x.nhwc);
  }

  binary(node: NodeProto): void {
    let kind = node.opType;
    const [n0, n1] = node.input;
    const c0 = this.consts.get(n0);
    let c1 = this.consts.get(n1);
    if (kind === 'Div' && c1 && c1.float) {
      // Division by a constant becomes multiplication: TFLite has no int8 DIV kernel.
      c1 = { ...c1, data: (c1.data as Float32Array).map((v) => 1 / v) };
      kind = 'Mul';
    }
    const opcode = { Add: BuiltinOperator.ADD, Sub: BuiltinOperator.SUB, Mul: BuiltinOperator.MUL, Div: BuiltinOperator.DIV }[kind]!;
    const optionsType = `${kind}Options` as 'AddOptions';
    const v0 = c0 ? undefined : this.value(node, n0);
    const v1 = c1 ? undefined : this.value(node, n1);
    const shape0 = c0?.dims ?? v0!.shape;
    const shape1 = c1?.dims ?? v1!.shape;
    const outShape = broadcastShapes(shape0, shape1);
    if (!outShape) this.fail(node, `shapes [${shape0.join(',')}] and [${shape1.join(',')}] do not broadcast`);
    // Work in NHWC when a rank-4 activation is involved and every activation operand is rank 4.
    const acts = [v0, v1].filter((v): v is Value => v !== undefined);
    const useNhwc = outShape.length === 4 && acts.some((v) => v.nhwc) && acts.every((v) => v.shape.length === 4);
    const operand = (v: Value | undefined, c: Const | undefined, name: string) => {
      if (c) return this.constOperand(`${node.output[0]}/${name}`, c, outShape.length, useNhwc);
      return useNhwc ? this.nhwc(v!) : this.plain(v!);
    };
    const t0 = operand(v0, c0, 'a');
    const t1 = operand(v1, c1, 'b');
    const out = this.g.activation(node.output[0], this.tflShape(outShape, useNhwc));
    this.g.addOperator({ opcode, version: 1, inputs: [t0, t1], outputs: [out], options: { type: optionsType, activation: Activation.NONE } });
    this.define(node.output[0], out, outShape, useNhwc);
  }

  pool(node: NodeProto): void {
    const a = attrs(node);
    const x = this.value(node, node.input[0]);
    if (x.shape.length !== 4) this.fail(node, 'only 2-D pooling is supported');
    const [kh, kw] = a.ints('kernel_shape', []);
    const strides = a.ints('strides', [1, 1]);
    const dil = a.ints('dilations', [1, 1]);
    if (dil.some((d) => d !== 1)) this.fail(node, 'dilated pooling is not supported');
    const isMax = node.opType === 'MaxPool';
    const pad = this.spatialPadding(node, [x.shape[2], x.shape[3]], [kh, kw], strides, [1, 1]);
    let input = this.nhwc(x);
    let padding: Padding = Padding.VALID;
    if (pad.same && !pad.valid) padding = Padding.SAME;
    else if (!pad.valid) {
      if (isMax) input = this.explicitPad(node.output[0], input, pad.pads, -3.4028234663852886e38);
      else if (a.int('count_include_pad', 0) === 1) input = this.explicitPad(node.output[0], input, pad.pads);
      else this.fail(node, 'AveragePool padding that is neither SAME nor zero needs count_include_pad=1');
    }
    const inS = this.g.tensors[input].shape;
    const oh = padding === Padding.SAME ? Math.ceil(inS[1] / strides[0]) : Math.floor((inS[1] - kh) / strides[0]) + 1;
    const ow = padding === Padding.SAME ? Math.ceil(inS[2] / strides[1]) : Math.floor((inS[2] - kw) / strides[1]) + 1;
    const outShape = [x.shape[0], x.shape[1], oh, ow];
    const out = this.g.activation(node.output[0], permuteShape(outShape, NCHW_TO_NHWC));
    this.g.addOperator({
      opcode: isMax ? BuiltinOperator.MAX_POOL_2D : BuiltinOperator.AVERAGE_POOL_2D,
      version: 1,
      inputs: [input],
      outputs: [out],
      options: { type: 'Pool2DOptions', padding, strideW: strides[1], strideH: strides[0], filterW: kw, filterH: kh, activation: Activation.NONE },
    });
    this.define(node.output[0], out, outShape, true);
  }

  mean(node: NodeProto, x: Value, onnxAxes: number[], keepDims: boolean): void {
    const rank = x.shape.length;
    const norm = onnxAxes.map((ax) => (ax < 0 ? ax + rank : ax)).sort();
    const nhwc = x.nhwc && keepDims;
    const input = nhwc ? x.tensor : this.plain(x);
    const tflAxes = nhwc ? norm.map((ax) => ONNX_AXIS_TO_NHWC[ax]).sort() : norm;
    const outShape = keepDims ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i));
    const axesT = this.g.constInt32(`${node.output[0]}/axes`, [tflAxes.length], tflAxes);
    const out = this.g.activation(node.output[0], this.tflShape(outShape, nhwc));
    this.g.addOperator({ opcode: BuiltinOperator.MEAN, version: 1, inputs: [input, axesT], outputs: [out], options: { type: 'ReducerOptions', keepDims } });
    this.define(node.output[0], out, outShape, nhwc);
  }

  globalAveragePool(node: NodeProto): void {
    const x = this.value(node, node.input[0]);
    if (x.shape.length !== 4) this.fail(node, 'only rank-4 GlobalAveragePool is supported');
    this.mean(node, { ...x, tensor: this.nhwc(x), nhwc: true }, [2, 3], true);
  }

  reduceMean(node: NodeProto): void {
    const a = attrs(node);
    const x = this.value(node, node.input[0]);
    const axes = node.input[1] ? (this.constOf(node, node.input[1]).data as number[]) : a.ints('axes', x.shape.map((_, i) => i));
    this.mean(node, x, Array.from(axes), a.int('keepdims', 1) === 1);
  }

  /** RESHAPE of a value to `outShape` in plain layout, skipping the transpose when order is unaffected. */
  reshapeTo(node: NodeProto, x: Value, outShape: number[]): void {
    // NHWC and NCHW hold elements in the same order when C is 1 or H and W are both 1.
    const orderSafe = x.nhwc && (x.shape[1] === 1 || (x.shape[2] === 1 && x.shape[3] === 1));
    const input = orderSafe ? x.tensor : this.plain(x);
    const shapeT = this.g.constInt32(`${node.output[0]}/shape`, [outShape.length], outShape);
    const out = this.g.activation(node.output[0], outShape);
    this.g.addOperator({ opcode: BuiltinOperator.RESHAPE, version: 1, inputs: [input, shapeT], outputs: [out], options: { type: 'ReshapeOptions', newShape: outShape } });
    this.define(node.output[0], out, outShape, false);
  }

  flatten(node: NodeProto): void {
    const x = this.value(node, node.input[0]);
    const axisRaw = attrs(node).int('axis', 1);
    const axis = axisRaw < 0 ? axisRaw + x.shape.length : axisRaw;
    const outShape = [sizeOf(x.shape.slice(0, axis)), sizeOf(x.shape.slice(axis))];
    const orderSafe = x.shape[1] === 1 || (x.shape[2] === 1 && x.shape[3] === 1);
    if (x.nhwc && axis === 1 && !orderSafe && this.feedsOnlyDenseLayer(node.output[0])) {
      // Flatten NHWC data as is and let the dense layer absorb the order change in its weights:
      // no TRANSPOSE, which Edge TPU and MCU targets handle poorly.
      const shapeT = this.g.constInt32(`${node.output[0]}/shape`, [2], outShape);
      const out = this.g.activation(node.output[0], outShape);
      this.g.addOperator({ opcode: BuiltinOperator.RESHAPE, version: 1, inputs: [x.tensor, shapeT], outputs: [out], options: { type: 'ReshapeOptions', newShape: outShape } });
      this.values.set(node.output[0], { tensor: out, shape: outShape, nhwc: false, hwcOf: [x.shape[1], x.shape[2], x.shape[3]] });
      return;
    }
    this.reshapeTo(node, x, outShape);
  }

  /** True when `name` is read by exactly one Gemm/MatMul (as its data input) with constant weights. */
  feedsOnlyDenseLayer(name: string): boolean {
    if ((this.uses.get(name) ?? 0) !== 1) return false;
    const consumer = this.graph.node.find((n) => n.input.includes(name));
    if (!consumer || (consumer.opType !== 'Gemm' && consumer.opType !== 'MatMul')) return false;
    return consumer.input[0] === name && this.isConst(consumer.input[1]) && !consumer.input.slice(1).includes(name);
  }

  reshape(node: NodeProto): void {
    const x = this.value(node, node.input[0]);
    const target = this.constOf(node, node.input[1]).data as number[];
    this.reshapeTo(node, x, resolveReshape(x.shape, Array.from(target), attrs(node).int('allowzero', 0) === 1));
  }

  transpose(node: NodeProto): void {
    const x = this.value(node, node.input[0]);
    const rank = x.shape.length;
    const perm = attrs(node).ints('perm', x.shape.map((_, i) => rank - 1 - i));
    const outShape = permuteShape(x.shape, perm);
    // Compose with the layout permutation so one TRANSPOSE yields the plain result.
    const tflPerm = x.nhwc ? perm.map((p) => ONNX_AXIS_TO_NHWC[p]) : perm;
    const permT = this.g.constInt32(`${node.output[0]}/perm`, [rank], tflPerm);
    const out = this.g.activation(node.output[0], outShape);
    this.g.addOperator({ opcode: BuiltinOperator.TRANSPOSE, version: 1, inputs: [x.tensor, permT], outputs: [out], options: { type: 'TransposeOptions' } });
    this.define(node.output[0], out, outShape, false);
  }

  concat(node: NodeProto): void {
    const axisRaw = attrs(node).int('axis', 0);
    const parts = node.input.map((n) => ({ c: this.consts.get(n), v: this.consts.has(n) ? undefined : this.value(node, n), n }));
    const first = parts.find((p) => p.v)!.v!;
    const rank = first.shape.length;
    const axis = axisRaw < 0 ? axisRaw + rank : axisRaw;
    const useNhwc = rank === 4 && parts.some((p) => p.v?.nhwc);
    const tensors = parts.map((p, i) => (p.c ? this.constOperand(`${node.output[0]}/const${i}`, p.c, rank, useNhwc) : useNhwc ? this.nhwc(p.v!) : this.plain(p.v!)));
    const shapes = parts.map((p) => p.c?.dims ?? p.v!.shape);
    const outShape = [...first.shape];
    outShape[axis] = shapes.reduce((s, d) => s + d[axis], 0);
    const out = this.g.activation(node.output[0], this.tflShape(outShape, useNhwc));
    this.g.addOperator({ opcode: BuiltinOperator.CONCATENATION, version: 1, inputs: tensors, outputs: [out], options: { type: 'ConcatenationOptions', axis: useNhwc ? ONNX_AXIS_TO_NHWC[axis] : axis, activation: Activation.NONE } });
    this.define(node.output[0], out, outShape, useNhwc);
  }

  pad(node: NodeProto): void {
    const a = attrs(node);
    const x = this.value(node, node.input[0]);
    const rank = x.shape.length;
    const pads = this.opset >= 11 ? Array.from(this.constOf(node, node.input[1]).data as ArrayLike<number>) : a.ints('pads', []);
    const value = this.opset >= 11 ? (node.input[2] ? (this.constOf(node, node.input[2]).data as ArrayLike<number>)[0] : 0) : a.float('value', 0);
    const onnxPairs = Array.from({ length: rank }, (_, i) => [pads[i], pads[i + rank]]);
    const tflPairs = x.nhwc ? NCHW_TO_NHWC.map((d) => onnxPairs[d]) : onnxPairs;
    const padsT = this.g.constInt32(`${node.output[0]}/pads`, [rank, 2], tflPairs.flat());
    const outShape = x.shape.map((d, i) => d + onnxPairs[i][0] + onnxPairs[i][1]);
    const out = this.g.activation(node.output[0], this.tflShape(outShape, x.nhwc));
    if (value === 0) {
      this.g.addOperator({ opcode: BuiltinOperator.PAD, version: 1, inputs: [x.tensor, padsT], outputs: [out], options: { type: 'PadOptions' } });
    } else {
      const v = this.g.constFloat(`${node.output[0]}/value`, [], Float32Array.of(value));
      this.g.addOperator({ opcode: BuiltinOperator.PADV2, version: 1, inputs: [x.tensor, padsT, v], outputs: [out], options: { type: 'PadV2Options' } });
    }
    this.define(node.output[0], out, outShape, x.nhwc);
  }

  softmax(node: NodeProto): void {
    const x = this.value(node, node.input[0]);
    const rank = x.shape.length;
    const axisRaw = attrs(node).int('axis', this.opset >= 13 ? -1 : 1);
    const axis = axisRaw < 0 ? axisRaw + rank : axisRaw;
    if (this.opset < 13 && axis !== rank - 1) this.fail(node, 'opset < 13 Softmax is only supported over the last axis');
    let input: number;
    let nhwc: boolean;
    if (x.nhwc && axis === 1) {
      input = x.tensor;
      nhwc = true;
    } else if (axis === rank - 1) {
      input = this.plain(x);
      nhwc = false;
    } else {
      this.fail(node, `Softmax over axis ${axis} of a rank-${rank} tensor; only the channel or last axis is supported`);
    }
    const out = this.g.activation(node.output[0], this.g.tensors[input].shape);
    // beta defaults to 0 in the schema, which would silently give a uniform output.
    this.g.addOperator({ opcode: BuiltinOperator.SOFTMAX, version: 1, inputs: [input], outputs: [out], options: { type: 'SoftmaxOptions', beta: 1 } });
    this.define(node.output[0], out, x.shape, nhwc);
  }
}

export function resolveReshape(inShape: number[], target: number[], allowZero: boolean): number[] {
  const out = target.map((d, i) => (d === 0 && !allowZero ? inShape[i] : d));
  const known = out.filter((d) => d !== -1).reduce((a, b) => a * b, 1);
  return out.map((d) => (d === -1 ? sizeOf(inShape) / known : d));
}

/** Lowers an ONNX model to a float32 TFLite graph. Throws TFLITE_UNSUPPORTED_OPS before any work. */
export function lowerOnnxToTflite(model: ModelProto, options: LowerOptions = {}): LoweredGraph {
  const unsupported = findUnsupportedOps(model);
  if (unsupported.length) throw unsupportedOpsError(unsupported);
  const l = new Lowering(model.graph, model, { batch: options.batch ?? 1, keepNchwIo: options.keepNchwIo ?? false });
  l.loadInitializers();
  const inputs = l.inputs();
  for (const node of model.graph.node) l.lower(node);
  const outputs = l.outputs();
  l.g.prune();
  return { graph: l.g, inputs, outputs };
}

