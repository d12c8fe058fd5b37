// Builds ONNX models in code: for tests, the demo, and per-op conversion tests.

import { AttributeType, encodeModel, type AttributeProto, type ModelProto, type NodeProto, type TensorProto, type ValueInfoProto } from './onnx-model.js';
import { encodeUtf8 } from './protobuf-wire.js';
import { DataType, makeTensor, type TensorArray } from './tensor.js';
import { seededRandom } from '../seeded-random.js';

/** Explicit attribute values, for when a plain number would be ambiguous (1 vs 1.0). */
export type AttributeValue =
  | number | string | number[] | string[] | TensorProto
  | { int: number } | { float: number } | { ints: number[] } | { floats: number[] } | { tensor: TensorProto };

export function makeAttribute(name: string, value: AttributeValue): AttributeProto {
  if (typeof value === 'number') {
    return Number.isInteger(value) ? { name, type: AttributeType.INT, i: value } : { name, type: AttributeType.FLOAT, f: value };
  }
  if (typeof value === 'string') return { name, type: AttributeType.STRING, s: encodeUtf8(value) };
  if (Array.isArray(value)) {
    if (value.every((v) => typeof v === 'string')) return { name, type: AttributeType.STRINGS, strings: (value as string[]).map(encodeUtf8) };
    const nums = value as number[];
    return nums.every(Number.isInteger) ? { name, type: AttributeType.INTS, ints: nums } : { name, type: AttributeType.FLOATS, floats: nums };
  }
  if ('int' in value) return { name, type: AttributeType.INT, i: value.int };
  if ('float' in value) return { name, type: AttributeType.FLOAT, f: value.float };
  if ('ints' in value) return { name, type: AttributeType.INTS, ints: value.ints };
  if ('floats' in value) return { name, type: AttributeType.FLOATS, floats: value.floats };
  if ('tensor' in value) return { name, type: AttributeType.TENSOR, t: value.tensor };
  return { name, type: AttributeType.TENSOR, t: value };
}

export function makeValueInfo(name: string, elemType: number, shape?: readonly (number | string)[]): ValueInfoProto {
  return {
    name,
    type: {
      tensorType: {
        elemType,
        ...(shape ? { shape: { dims: shape.map((d) => (typeof d === 'number' ? { value: d } : { param: d })) } } : {}),
      },
    },
  };
}

export interface GraphBuilderOptions {
  graphName?: string;
  /** ai.onnx opset (default 13, what the shared models use). */
  opset?: number;
  irVersion?: number;
  producerName?: string;
}

export class GraphBuilder {
  private readonly nodes: NodeProto[] = [];
  private readonly inits: TensorProto[] = [];
  private readonly inputs: ValueInfoProto[] = [];
  private readonly outputs: ValueInfoProto[] = [];
  private readonly opsets = new Map<string, number>();
  private counter = 0;

  constructor(private readonly options: GraphBuilderOptions = {}) {
    this.opsets.set('', options.opset ?? 13);
  }

  opset(domain: string, version: number): this {
    this.opsets.set(domain, version);
    return this;
  }

  input(name: string, elemType: number, shape?: readonly (number | string)[]): string {
    this.inputs.push(makeValueInfo(name, elemType, shape));
    return name;
  }

  output(name: string, elemType: number, shape?: readonly (number | string)[]): string {
    this.outputs.push(makeValueInfo(name, elemType, shape));
    return name;
  }

  initializer(name: string, dataType: number, dims: readonly number[], data: TensorArray | readonly number[]): string {
    this.inits.push(makeTensor(name, dataType, dims, data));
    return name;
  }

  /** Adds a node; returns its output names (generated when `outputs` is a count). */
  node(
    opType: string,
    inputs: readonly string[],
    outputs: readonly string[] | number = 1,
    attributes: Record<string, AttributeValue> = {},
    opts: { name?: string; domain?: string } = {},
  ): string[] {
    const id = this.counter++;
    const outs = typeof outputs === 'number'
      ? Array.from({ length: outputs }, (_, i) => `${opType.toLowerCase()}_${id}_out${i}`)
      : [...outputs];
    const node: NodeProto = {
      input: [...inputs],
      output: outs,
      name: opts.name ?? `${opType}_${id}`,
      opType,
      attribute: Object.entries(attributes).map(([k, v]) => makeAttribute(k, v)),
    };
    if (opts.domain) node.domain = opts.domain;
    this.nodes.push(node);
    return outs;
  }

  build(): ModelProto {
    return {
      irVersion: this.options.irVersion ?? 7,
      producerName: this.options.producerName ?? 'edgepack',
      graph: {
        name: this.options.graphName ?? 'graph',
        node: this.nodes.map((n) => ({ ...n })),
        initializer: [...this.inits],
        input: [...this.inputs],
        output: [...this.outputs],
        valueInfo: [],
      },
      opsetImport: [...this.opsets].map(([domain, version]) => (domain ? { domain, version } : { version })),
    };
  }

  encode(): Uint8Array {
    return encodeModel(this.build());
  }
}

export { seededRandom };

/** Uniform(-limit, limit) weights with He-style scaling for a fan-in. */
export function seededWeights(rand: () => number, count: number, fanIn: number): Float32Array {
  const limit = Math.sqrt(6 / fanIn);
  const out = new Float32Array(count);
  for (let i = 0; i < count; i++) out[i] = (rand() * 2 - 1) * limit;
  return out;
}

export interface TinyMlpOptions {
  hidden?: number;
  seed?: number;
}

/**
 * A small float32 MLP shaped like the Fashion-MNIST models: input `input` [batch,1,28,28] →
 * Flatten → Gemm → Relu → Gemm → `output` [batch,10]. Weights are seeded, so bytes are stable.
 */
export function buildTinyMlpModelProto(options: TinyMlpOptions = {}): ModelProto {
  const hidden = options.hidden ?? 32;
  const rand = seededRandom(options.seed ?? 42);
  const b = new GraphBuilder({ graphName: 'tiny_mlp', opset: 13 });
  b.input('input', DataType.FLOAT, ['batch', 1, 28, 28]);
  b.initializer('fc1.weight', DataType.FLOAT, [hidden, 784], seededWeights(rand, hidden * 784, 784));
  b.initializer('fc1.bias', DataType.FLOAT, [hidden], seededWeights(rand, hidden, hidden).map((v) => v * 0.1));
  b.initializer('fc2.weight', DataType.FLOAT, [10, hidden], seededWeights(rand, 10 * hidden, hidden));
  b.initializer('fc2.bias', DataType.FLOAT, [10], seededWeights(rand, 10, 10).map((v) => v * 0.1));
  const [flat] = b.node('Flatten', ['input'], ['flatten_out'], { axis: 1 });
  const [h] = b.node('Gemm', [flat!, 'fc1.weight', 'fc1.bias'], ['fc1_out'], { alpha: { float: 1 }, beta: { float: 1 }, transB: 1 });
  const [r] = b.node('Relu', [h!], ['relu_out']);
  b.node('Gemm', [r!, 'fc2.weight', 'fc2.bias'], ['output'], { alpha: { float: 1 }, beta: { float: 1 }, transB: 1 });
  b.output('output', DataType.FLOAT, ['batch', 10]);
  return b.build();
}

export function buildTinyMlpModel(options: TinyMlpOptions = {}): Uint8Array {
  return encodeModel(buildTinyMlpModelProto(options));
}
