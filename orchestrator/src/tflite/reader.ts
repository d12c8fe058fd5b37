// Reads just enough of a .tflite flatbuffer to describe an upload: schema version, IO tensors,
// operator histogram and size. Walks the tables by schema field slot with the flatbuffers
// ByteBuffer primitives rather than generated code.
import { ByteBuffer } from 'flatbuffers';
import { EdgepackError } from '@edgepack/protocol/errors.js';
import { TENSOR_TYPE_NAMES, TFLITE_FILE_IDENTIFIER, builtinOperatorName } from './schema.js';

export interface TfliteTensorSummary {
  name: string;
  dtype: string;
  shape: number[];
  /** Shape with -1 for dynamic dims, when the model records one. */
  shapeSignature?: number[];
  quantization?: { scale: number[]; zeroPoint: number[]; quantizedDimension: number };
}

export interface TfliteInspection {
  format: 'tflite';
  schemaVersion: number;
  sizeBytes: number;
  description?: string;
  subgraphCount: number;
  inputs: TfliteTensorSummary[];
  outputs: TfliteTensorSummary[];
  /** Operator name → count in the main subgraph. */
  operators: Record<string, number>;
  operatorCount: number;
  tensorCount: number;
  /** Bytes held in constant buffers (weights). */
  constantBytes: number;
}

/** A flatbuffer table: position plus helpers reading fields by schema slot. */
class Table {
  constructor(readonly bb: ByteBuffer, readonly pos: number) {}
  private field(slot: number): number {
    return this.bb.__offset(this.pos, 4 + 2 * slot);
  }
  has(slot: number): boolean {
    return this.field(slot) !== 0;
  }
  uint8(slot: number, dflt = 0): number {
    const o = this.field(slot);
    return o ? this.bb.readUint8(this.pos + o) : dflt;
  }
  int8(slot: number, dflt = 0): number {
    const o = this.field(slot);
    return o ? this.bb.readInt8(this.pos + o) : dflt;
  }
  int32(slot: number, dflt = 0): number {
    const o = this.field(slot);
    return o ? this.bb.readInt32(this.pos + o) : dflt;
  }
  uint32(slot: number, dflt = 0): number {
    const o = this.field(slot);
    return o ? this.bb.readUint32(this.pos + o) : dflt;
  }
  string(slot: number): string | undefined {
    const o = this.field(slot);
    return o ? (this.bb.__string(this.pos + o) as string) : undefined;
  }
  table(slot: number): Table | undefined {
    const o = this.field(slot);
    return o ? new Table(this.bb, this.bb.__indirect(this.pos + o)) : undefined;
  }
  /**
   * Start and length of a vector field, or undefined when absent. The length comes from the
   * file, so it is checked against the buffer before anything is allocated for it: a corrupt
   * length would otherwise ask for billions of elements.
   */
  vector(slot: number, elementBytes = 4): { start: number; length: number } | undefined {
    const o = this.field(slot);
    if (!o) return undefined;
    const start = this.bb.__vector(this.pos + o);
    const length = this.bb.__vector_len(this.pos + o);
    if (start < 0 || length < 0 || start + length * elementBytes > this.bb.capacity()) {
      throw invalid(`vector of ${length} elements at byte ${start} runs past the end of the ${this.bb.capacity()}-byte file`);
    }
    return { start, length };
  }
  tables(slot: number): Table[] {
    const v = this.vector(slot);
    if (!v) return [];
    return Array.from({ length: v.length }, (_, i) => new Table(this.bb, this.bb.__indirect(v.start + 4 * i)));
  }
  int32s(slot: number): number[] {
    const v = this.vector(slot);
    return v ? Array.from({ length: v.length }, (_, i) => this.bb.readInt32(v.start + 4 * i)) : [];
  }
  float32s(slot: number): number[] {
    const v = this.vector(slot);
    return v ? Array.from({ length: v.length }, (_, i) => this.bb.readFloat32(v.start + 4 * i)) : [];
  }
  int64s(slot: number): number[] {
    const v = this.vector(slot, 8);
    return v ? Array.from({ length: v.length }, (_, i) => Number(this.bb.readInt64(v.start + 8 * i))) : [];
  }
}

function invalid(message: string): EdgepackError {
  return new EdgepackError('TFLITE_INVALID_FILE', message);
}

/** Summarises a .tflite file. Throws TFLITE_INVALID_FILE when it is not one. */
export function inspectTflite(bytes: Uint8Array): TfliteInspection {
  if (bytes.byteLength < 16) throw invalid(`file is ${bytes.byteLength} bytes, too small for a TFLite model`);
  const bb = new ByteBuffer(bytes);
  if (!bb.__has_identifier(TFLITE_FILE_IDENTIFIER)) {
    throw invalid(`file identifier is '${bb.getBufferIdentifier()}', expected '${TFLITE_FILE_IDENTIFIER}'`);
  }
  try {
    const model = new Table(bb, bb.readInt32(0));
    const codes = model.tables(1).map((c) => Math.max(c.int8(0), c.int32(3)));
    const subgraphs = model.tables(2);
    if (subgraphs.length === 0) throw invalid('model has no subgraphs');
    const main = subgraphs[0];
    const tensors = main.tables(0);
    const summarize = (index: number): TfliteTensorSummary => {
      const t = tensors[index];
      if (!t) throw invalid(`subgraph IO refers to missing tensor ${index}`);
      const summary: TfliteTensorSummary = {
        name: t.string(3) ?? `tensor_${index}`,
        dtype: TENSOR_TYPE_NAMES[t.int8(1)] ?? `type_${t.int8(1)}`,
        shape: t.int32s(0),
      };
      if (t.has(7)) summary.shapeSignature = t.int32s(7);
      const q = t.table(4);
      if (q && q.has(2)) summary.quantization = { scale: q.float32s(2), zeroPoint: q.int64s(3), quantizedDimension: q.int32(6) };
      return summary;
    };
    const operators: Record<string, number> = {};
    const ops = main.tables(3);
    for (const op of ops) {
      const code = codes[op.uint32(0)];
      const name = code === undefined ? 'UNKNOWN' : builtinOperatorName(code);
      operators[name] = (operators[name] ?? 0) + 1;
    }
    let constantBytes = 0;
    for (const buf of model.tables(4)) constantBytes += buf.vector(0, 1)?.length ?? 0;
    const description = model.string(3);
    return {
      format: 'tflite',
      schemaVersion: model.uint32(0),
      sizeBytes: bytes.byteLength,
      ...(description !== undefined ? { description } : {}),
      subgraphCount: subgraphs.length,
      inputs: main.int32s(1).map(summarize),
      outputs: main.int32s(2).map(summarize),
      operators,
      operatorCount: ops.length,
      tensorCount: tensors.length,
      constantBytes,
    };
  } catch (err) {
    if (err instanceof EdgepackError) throw err;
    throw invalid(`malformed TFLite flatbuffer: ${err instanceof Error ? err.message : String(err)}`);
  }
}
