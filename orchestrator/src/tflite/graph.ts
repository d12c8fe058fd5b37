// Mutable TFLite graph under construction: the converter appends tensors and operators, later
// passes (activation fusion, BatchNorm folding, quantization) edit them, and `toModel()` yields
// the plain TfliteModel the writer serialises.
import type { TfliteModel, TfliteOperator, TfliteTensor } from './model.js';
import { TensorType } from './schema.js';

export class TfliteGraph {
  readonly tensors: TfliteTensor[] = [];
  readonly operators: TfliteOperator[] = [];
  inputs: number[] = [];
  outputs: number[] = [];
  private readonly names = new Set<string>();

  /** Tensor names must be unique for signature lookup; later duplicates get a suffix. */
  uniqueName(name: string): string {
    let candidate = name;
    for (let k = 1; this.names.has(candidate); k++) candidate = `${name}_${k}`;
    this.names.add(candidate);
    return candidate;
  }

  addTensor(t: TfliteTensor): number {
    this.tensors.push({ ...t, name: this.uniqueName(t.name) });
    return this.tensors.length - 1;
  }

  activation(name: string, shape: number[], type: TensorType = TensorType.FLOAT32): number {
    return this.addTensor({ name, type, shape: [...shape] });
  }

  constFloat(name: string, shape: number[], values: Float32Array): number {
    return this.addTensor({ name, type: TensorType.FLOAT32, shape: [...shape], data: bytesOf(values) });
  }

  constInt32(name: string, shape: number[], values: readonly number[]): number {
    return this.addTensor({ name, type: TensorType.INT32, shape: [...shape], data: bytesOf(Int32Array.from(values)) });
  }

  addOperator(op: TfliteOperator): number {
    this.operators.push(op);
    return this.operators.length - 1;
  }

  /** Renames a tensor (e.g. to the ONNX output name), freeing its old name. */
  rename(index: number, name: string): void {
    const t = this.tensors[index];
    this.names.delete(t.name);
    t.name = this.uniqueName(name);
  }

  /** Index of the operator producing a tensor, or -1 for inputs and constants. */
  producerOf(tensor: number): number {
    for (let i = this.operators.length - 1; i >= 0; i--) if (this.operators[i].outputs.includes(tensor)) return i;
    return -1;
  }

  consumersOf(tensor: number): number[] {
    const out: number[] = [];
    this.operators.forEach((op, i) => {
      if (op.inputs.includes(tensor)) out.push(i);
    });
    return out;
  }

  /** Drops operators and tensors that no graph output depends on. */
  prune(): void {
    const live = new Set<number>(this.outputs);
    const keepOps: boolean[] = new Array(this.operators.length).fill(false);
    for (let i = this.operators.length - 1; i >= 0; i--) {
      const op = this.operators[i];
      if (op.outputs.some((o) => live.has(o))) {
        keepOps[i] = true;
        for (const t of op.inputs) if (t >= 0) live.add(t);
      }
    }
    for (const t of this.inputs) live.add(t);
    const remap = new Map<number, number>();
    const tensors = this.tensors.filter((_, i) => live.has(i));
    this.tensors.forEach((_, i) => {
      if (live.has(i)) remap.set(i, remap.size);
    });
    const ops = this.operators.filter((_, i) => keepOps[i]).map((op) => ({
      ...op,
      inputs: op.inputs.map((t) => (t < 0 ? t : remap.get(t)!)),
      outputs: op.outputs.map((t) => remap.get(t)!),
    }));
    this.tensors.splice(0, this.tensors.length, ...tensors);
    this.operators.splice(0, this.operators.length, ...ops);
    this.inputs = this.inputs.map((t) => remap.get(t)!);
    this.outputs = this.outputs.map((t) => remap.get(t)!);
  }

  toModel(description?: string): TfliteModel {
    return {
      ...(description ? { description } : {}),
      tensors: this.tensors.map((t) => ({ ...t })),
      operators: this.operators.map((o) => ({ ...o })),
      inputs: [...this.inputs],
      outputs: [...this.outputs],
    };
  }
}

export function bytesOf(values: Float32Array | Int32Array | Int8Array | Uint8Array): Uint8Array {
  return new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength) as ArrayBuffer);
}

/** Float view of a float32 constant tensor's bytes (copied when misaligned). */
export function floatsOf(t: TfliteTensor): Float32Array {
  const d = t.data!;
  if (d.byteOffset % 4 === 0) return new Float32Array(d.buffer, d.byteOffset, d.byteLength / 4);
  return new Float32Array(d.slice().buffer);
}
