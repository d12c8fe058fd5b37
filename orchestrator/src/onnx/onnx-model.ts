// Typed decode/encode of the ONNX protobuf messages (field numbers from onnx/onnx.proto).
// Fields this schema does not model are kept verbatim in `unknownFields` and written back, so a
// model from a newer exporter survives a round trip. Known fields are written in field-number
// order, as protobuf's C++ serializer does, which makes round trips byte-identical for models
// written by onnx/PyTorch.

import {
  ProtoReader,
  ProtoWriter,
  ProtobufDecodeError,
  WireType,
  decodeUtf8,
  type UnknownField,
} from './protobuf-wire.js';
import {
  ModelInvalidError,
  ModelNotOnnxError,
  ModelTooLargeError,
  ModelTruncatedError,
} from './errors.js';

export interface StringStringEntry {
  key: string;
  value: string;
  unknownFields?: UnknownField[];
}

export interface OperatorSetId {
  /** Empty string (or absent) means the default ai.onnx domain. */
  domain?: string;
  version: number;
  unknownFields?: UnknownField[];
}

export interface TensorProto {
  dims: number[];
  dataType: number;
  name?: string;
  docString?: string;
  rawData?: Uint8Array;
  floatData?: Float32Array;
  int32Data?: Int32Array;
  stringData?: Uint8Array[];
  int64Data?: BigInt64Array;
  doubleData?: Float64Array;
  uint64Data?: BigUint64Array;
  externalData?: StringStringEntry[];
  /** 0 = DEFAULT, 1 = EXTERNAL. */
  dataLocation?: number;
  metadataProps?: StringStringEntry[];
  unknownFields?: UnknownField[];
}

export interface Dimension {
  value?: number;
  param?: string;
  denotation?: string;
  unknownFields?: UnknownField[];
}

export interface TensorShape {
  dims: Dimension[];
  unknownFields?: UnknownField[];
}

export interface TensorTypeProto {
  elemType?: number;
  /** Absent shape means unknown rank; an empty dims list means a scalar. */
  shape?: TensorShape;
  unknownFields?: UnknownField[];
}

export interface TypeProto {
  tensorType?: TensorTypeProto;
  /** sequence_type, map_type, optional_type, sparse_tensor_type are kept as unknown fields. */
  denotation?: string;
  unknownFields?: UnknownField[];
}

export interface ValueInfoProto {
  name: string;
  type?: TypeProto;
  docString?: string;
  metadataProps?: StringStringEntry[];
  unknownFields?: UnknownField[];
}

export const AttributeType = {
  UNDEFINED: 0,
  FLOAT: 1,
  INT: 2,
  STRING: 3,
  TENSOR: 4,
  GRAPH: 5,
  FLOATS: 6,
  INTS: 7,
  STRINGS: 8,
  TENSORS: 9,
  GRAPHS: 10,
  SPARSE_TENSOR: 11,
  SPARSE_TENSORS: 12,
  TYPE_PROTO: 13,
  TYPE_PROTOS: 14,
} as const;

export interface AttributeProto {
  name: string;
  type?: number;
  f?: number;
  i?: number;
  s?: Uint8Array;
  t?: TensorProto;
  g?: GraphProto;
  tp?: TypeProto;
  floats?: number[];
  ints?: number[];
  strings?: Uint8Array[];
  tensors?: TensorProto[];
  graphs?: GraphProto[];
  typeProtos?: TypeProto[];
  docString?: string;
  refAttrName?: string;
  unknownFields?: UnknownField[];
}

export interface NodeProto {
  input: string[];
  output: string[];
  name?: string;
  opType: string;
  domain?: string;
  overload?: string;
  attribute: AttributeProto[];
  docString?: string;
  metadataProps?: StringStringEntry[];
  unknownFields?: UnknownField[];
}

export interface GraphProto {
  node: NodeProto[];
  name?: string;
  initializer: TensorProto[];
  docString?: string;
  input: ValueInfoProto[];
  output: ValueInfoProto[];
  valueInfo: ValueInfoProto[];
  metadataProps?: StringStringEntry[];
  unknownFields?: UnknownField[];
}

export interface ModelProto {
  irVersion: number;
  producerName?: string;
  producerVersion?: string;
  domain?: string;
  modelVersion?: number;
  docString?: string;
  graph: GraphProto;
  opsetImport: OperatorSetId[];
  metadataProps?: StringStringEntry[];
  /** training_info, functions and newer fields live here untouched. */
  unknownFields?: UnknownField[];
}

// ---------------------------------------------------------------------------------------------
// Decoding

function pushUnknown<T extends { unknownFields?: UnknownField[] }>(
  msg: T, r: ProtoReader, tagStart: number, field: number, wt: number,
): void {
  (msg.unknownFields ??= []).push(r.captureUnknown(tagStart, field, wt));
}

function expectWire(wt: number, expected: number, what: string): void {
  if (wt !== expected) throw new ProtobufDecodeError(`${what}: wire type ${wt}, expected ${expected}`, false);
}

function decodeStringStringEntry(r: ProtoReader): StringStringEntry {
  const m: StringStringEntry = { key: '', value: '' };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.LengthDelimited) m.key = r.readString();
    else if (f === 2 && wt === WireType.LengthDelimited) m.value = r.readString();
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

function decodeOperatorSetId(r: ProtoReader): OperatorSetId {
  const m: OperatorSetId = { version: 0 };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.LengthDelimited) m.domain = r.readString();
    else if (f === 2 && wt === WireType.Varint) m.version = r.readInt64();
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

function readPackedFloats(r: ProtoReader, wt: number, into: number[]): void {
  if (wt === WireType.LengthDelimited) {
    const bytes = r.readBytes();
    if (bytes.length % 4 !== 0) throw new ProtobufDecodeError('packed float field length is not a multiple of 4', false);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let o = 0; o < bytes.length; o += 4) into.push(dv.getFloat32(o, true));
  } else {
    expectWire(wt, WireType.Fixed32, 'float');
    into.push(r.readFloat());
  }
}

function readPackedDoubles(r: ProtoReader, wt: number, into: number[]): void {
  if (wt === WireType.LengthDelimited) {
    const bytes = r.readBytes();
    if (bytes.length % 8 !== 0) throw new ProtobufDecodeError('packed double field length is not a multiple of 8', false);
    const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    for (let o = 0; o < bytes.length; o += 8) into.push(dv.getFloat64(o, true));
  } else {
    expectWire(wt, WireType.Fixed64, 'double');
    into.push(r.readDouble());
  }
}

function readRepeatedVarint<T>(r: ProtoReader, wt: number, read: () => T, into: T[]): void {
  r.readRepeated(wt, WireType.Varint, () => into.push(read()));
}

export function decodeTensor(r: ProtoReader): TensorProto {
  const m: TensorProto = { dims: [], dataType: 0 };
  let floats: number[] | undefined;
  let int32s: number[] | undefined;
  let int64s: bigint[] | undefined;
  let doubles: number[] | undefined;
  let uint64s: bigint[] | undefined;
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    switch (f) {
      case 1: readRepeatedVarint(r, wt, () => r.readInt64(), m.dims); break;
      case 2: expectWire(wt, WireType.Varint, 'data_type'); m.dataType = r.readInt32(); break;
      case 4: readPackedFloats(r, wt, (floats ??= [])); break;
      case 5: readRepeatedVarint(r, wt, () => r.readInt32(), (int32s ??= [])); break;
      case 6: expectWire(wt, WireType.LengthDelimited, 'string_data'); (m.stringData ??= []).push(r.readBytes()); break;
      case 7: readRepeatedVarint(r, wt, () => BigInt.asIntN(64, r.readVarintBigInt()), (int64s ??= [])); break;
      case 8: expectWire(wt, WireType.LengthDelimited, 'name'); m.name = r.readString(); break;
      case 9: expectWire(wt, WireType.LengthDelimited, 'raw_data'); m.rawData = r.readBytes(); break;
      case 10: readPackedDoubles(r, wt, (doubles ??= [])); break;
      case 11: readRepeatedVarint(r, wt, () => r.readVarintBigInt(), (uint64s ??= [])); break;
      case 12: expectWire(wt, WireType.LengthDelimited, 'doc_string'); m.docString = r.readString(); break;
      case 13: expectWire(wt, WireType.LengthDelimited, 'external_data'); (m.externalData ??= []).push(decodeStringStringEntry(r.readMessage())); break;
      case 14: expectWire(wt, WireType.Varint, 'data_location'); m.dataLocation = r.readInt32(); break;
      case 16: expectWire(wt, WireType.LengthDelimited, 'metadata_props'); (m.metadataProps ??= []).push(decodeStringStringEntry(r.readMessage())); break;
      default: pushUnknown(m, r, start, f, wt);
    }
  }
  if (floats) m.floatData = Float32Array.from(floats);
  if (int32s) m.int32Data = Int32Array.from(int32s);
  if (int64s) m.int64Data = BigInt64Array.from(int64s);
  if (doubles) m.doubleData = Float64Array.from(doubles);
  if (uint64s) m.uint64Data = BigUint64Array.from(uint64s);
  return m;
}

function decodeDimension(r: ProtoReader): Dimension {
  const m: Dimension = {};
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.Varint) m.value = r.readInt64();
    else if (f === 2 && wt === WireType.LengthDelimited) m.param = r.readString();
    else if (f === 3 && wt === WireType.LengthDelimited) m.denotation = r.readString();
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

function decodeShape(r: ProtoReader): TensorShape {
  const m: TensorShape = { dims: [] };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.LengthDelimited) m.dims.push(decodeDimension(r.readMessage()));
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

function decodeTensorType(r: ProtoReader): TensorTypeProto {
  const m: TensorTypeProto = {};
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.Varint) m.elemType = r.readInt32();
    else if (f === 2 && wt === WireType.LengthDelimited) m.shape = decodeShape(r.readMessage());
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

export function decodeTypeProto(r: ProtoReader): TypeProto {
  const m: TypeProto = {};
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.LengthDelimited) m.tensorType = decodeTensorType(r.readMessage());
    else if (f === 6 && wt === WireType.LengthDelimited) m.denotation = r.readString();
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

function decodeValueInfo(r: ProtoReader): ValueInfoProto {
  const m: ValueInfoProto = { name: '' };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    if (f === 1 && wt === WireType.LengthDelimited) m.name = r.readString();
    else if (f === 2 && wt === WireType.LengthDelimited) m.type = decodeTypeProto(r.readMessage());
    else if (f === 3 && wt === WireType.LengthDelimited) m.docString = r.readString();
    else if (f === 4 && wt === WireType.LengthDelimited) (m.metadataProps ??= []).push(decodeStringStringEntry(r.readMessage()));
    else pushUnknown(m, r, start, f, wt);
  }
  return m;
}

function decodeAttribute(r: ProtoReader): AttributeProto {
  const m: AttributeProto = { name: '' };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    switch (f) {
      case 1: expectWire(wt, WireType.LengthDelimited, 'name'); m.name = r.readString(); break;
      case 2: expectWire(wt, WireType.Fixed32, 'f'); m.f = r.readFloat(); break;
      case 3: expectWire(wt, WireType.Varint, 'i'); m.i = r.readInt64(); break;
      case 4: expectWire(wt, WireType.LengthDelimited, 's'); m.s = r.readBytes(); break;
      case 5: expectWire(wt, WireType.LengthDelimited, 't'); m.t = decodeTensor(r.readMessage()); break;
      case 6: expectWire(wt, WireType.LengthDelimited, 'g'); m.g = decodeGraph(r.readMessage()); break;
      case 7: readPackedFloats(r, wt, (m.floats ??= [])); break;
      case 8: readRepeatedVarint(r, wt, () => r.readInt64(), (m.ints ??= [])); break;
      case 9: expectWire(wt, WireType.LengthDelimited, 'strings'); (m.strings ??= []).push(r.readBytes()); break;
      case 10: expectWire(wt, WireType.LengthDelimited, 'tensors'); (m.tensors ??= []).push(decodeTensor(r.readMessage())); break;
      case 11: expectWire(wt, WireType.LengthDelimited, 'graphs'); (m.graphs ??= []).push(decodeGraph(r.readMessage())); break;
      case 13: expectWire(wt, WireType.LengthDelimited, 'doc_string'); m.docString = r.readString(); break;
      case 14: expectWire(wt, WireType.LengthDelimited, 'tp'); m.tp = decodeTypeProto(r.readMessage()); break;
      case 15: expectWire(wt, WireType.LengthDelimited, 'type_protos'); (m.typeProtos ??= []).push(decodeTypeProto(r.readMessage())); break;
      case 20: expectWire(wt, WireType.Varint, 'type'); m.type = r.readInt32(); break;
      case 21: expectWire(wt, WireType.LengthDelimited, 'ref_attr_name'); m.refAttrName = r.readString(); break;
      default: pushUnknown(m, r, start, f, wt);
    }
  }
  return m;
}

function decodeNode(r: ProtoReader): NodeProto {
  const m: NodeProto = { input: [], output: [], opType: '', attribute: [] };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    switch (f) {
      case 1: expectWire(wt, WireType.LengthDelimited, 'input'); m.input.push(r.readString()); break;
      case 2: expectWire(wt, WireType.LengthDelimited, 'output'); m.output.push(r.readString()); break;
      case 3: expectWire(wt, WireType.LengthDelimited, 'name'); m.name = r.readString(); break;
      case 4: expectWire(wt, WireType.LengthDelimited, 'op_type'); m.opType = r.readString(); break;
      case 5: expectWire(wt, WireType.LengthDelimited, 'attribute'); m.attribute.push(decodeAttribute(r.readMessage())); break;
      case 6: expectWire(wt, WireType.LengthDelimited, 'doc_string'); m.docString = r.readString(); break;
      case 7: expectWire(wt, WireType.LengthDelimited, 'domain'); m.domain = r.readString(); break;
      case 8: expectWire(wt, WireType.LengthDelimited, 'overload'); m.overload = r.readString(); break;
      case 9: expectWire(wt, WireType.LengthDelimited, 'metadata_props'); (m.metadataProps ??= []).push(decodeStringStringEntry(r.readMessage())); break;
      default: pushUnknown(m, r, start, f, wt);
    }
  }
  return m;
}

export function decodeGraph(r: ProtoReader): GraphProto {
  const m: GraphProto = { node: [], initializer: [], input: [], output: [], valueInfo: [] };
  while (!r.done) {
    const start = r.pos;
    const [f, wt] = r.readTag();
    switch (f) {
      case 1: expectWire(wt, WireType.LengthDelimited, 'node'); m.node.push(decodeNode(r.readMessage())); break;
      case 2: expectWire(wt, WireType.LengthDelimited, 'name'); m.name = r.readString(); break;
      case 5: expectWire(wt, WireType.LengthDelimited, 'initializer'); m.initializer.push(decodeTensor(r.readMessage())); break;
      case 10: expectWire(wt, WireType.LengthDelimited, 'doc_string'); m.docString = r.readString(); break;
      case 11: expectWire(wt, WireType.LengthDelimited, 'input'); m.input.push(decodeValueInfo(r.readMessage())); break;
      case 12: expectWire(wt, WireType.LengthDelimited, 'output'); m.output.push(decodeValueInfo(r.readMessage())); break;
      case 13: expectWire(wt, WireType.LengthDelimited, 'value_info'); m.valueInfo.push(decodeValueInfo(r.readMessage())); break;
      case 16: expectWire(wt, WireType.LengthDelimited, 'metadata_props'); (m.metadataProps ??= []).push(decodeStringStringEntry(r.readMessage())); break;
      default: pushUnknown(m, r, start, f, wt);
    }
  }
  return m;
}

export interface DecodeModelOptions {
  /** Reject inputs larger than this many bytes (default: protobuf's 2 GiB hard limit). */
  maxBytes?: number;
}

export const DEFAULT_MAX_MODEL_BYTES = 2 ** 31 - 1;

/** Highest IR version we accept as plausible; generous so newer exporters still load. */
const MAX_SANE_IR_VERSION = 64;
const MAX_SANE_OPSET_VERSION = 1000;

/**
 * Decodes and validates an ONNX ModelProto. Protobuf is lenient enough that many random byte
 * strings decode to *something*, so the essentials (ir_version, graph, opset_import) are checked.
 * Raw tensor data is returned as views into `bytes`: do not mutate `bytes` afterwards.
 */
export function decodeModel(input: Uint8Array, options: DecodeModelOptions = {}): ModelProto {
  // A Node Buffer's slice() is a view, not a copy; code downstream copies raw tensor data with
  // slice() to realign it, so hand out plain Uint8Array views whose slice() really copies.
  const bytes = Buffer.isBuffer(input) ? new Uint8Array(input.buffer, input.byteOffset, input.byteLength) : input;
  const maxBytes = options.maxBytes ?? DEFAULT_MAX_MODEL_BYTES;
  if (bytes.length > maxBytes) throw new ModelTooLargeError(bytes.length, maxBytes);
  if (bytes.length === 0) throw new ModelNotOnnxError('file is empty, not an ONNX model');

  const r = new ProtoReader(bytes);
  const m: Partial<ModelProto> & { opsetImport: OperatorSetId[] } = { opsetImport: [] };
  // Track whether what was read so far looks like ONNX, to tell a truncated model from garbage.
  let sawPlausibleIr = false;
  try {
    while (!r.done) {
      const start = r.pos;
      const [f, wt] = r.readTag();
      switch (f) {
        case 1:
          expectWire(wt, WireType.Varint, 'ir_version');
          m.irVersion = r.readInt64();
          sawPlausibleIr = m.irVersion >= 1 && m.irVersion <= MAX_SANE_IR_VERSION;
          break;
        case 2: expectWire(wt, WireType.LengthDelimited, 'producer_name'); m.producerName = r.readString(); break;
        case 3: expectWire(wt, WireType.LengthDelimited, 'producer_version'); m.producerVersion = r.readString(); break;
        case 4: expectWire(wt, WireType.LengthDelimited, 'domain'); m.domain = r.readString(); break;
        case 5: expectWire(wt, WireType.Varint, 'model_version'); m.modelVersion = r.readInt64(); break;
        case 6: expectWire(wt, WireType.LengthDelimited, 'doc_string'); m.docString = r.readString(); break;
        case 7: expectWire(wt, WireType.LengthDelimited, 'graph'); m.graph = decodeGraph(r.readMessage()); break;
        case 8: expectWire(wt, WireType.LengthDelimited, 'opset_import'); m.opsetImport.push(decodeOperatorSetId(r.readMessage())); break;
        case 14: expectWire(wt, WireType.LengthDelimited, 'metadata_props'); (m.metadataProps ??= []).push(decodeStringStringEntry(r.readMessage())); break;
        default: pushUnknown(m, r, start, f, wt);
      }
    }
  } catch (err) {
    if (!(err instanceof ProtobufDecodeError)) throw err;
    if (err.truncated && sawPlausibleIr) {
      throw new ModelTruncatedError(`model file is truncated (${bytes.length} bytes): ${err.message}`);
    }
    throw new ModelNotOnnxError(`not an ONNX model: the bytes are not a valid ModelProto (${err.message})`);
  }

  if (m.irVersion === undefined) {
    throw new ModelNotOnnxError('not an ONNX model: no ir_version field');
  }
  if (!sawPlausibleIr) {
    throw new ModelNotOnnxError(`not an ONNX model: ir_version ${m.irVersion} is out of range 1..${MAX_SANE_IR_VERSION}`);
  }
  if (!m.graph) {
    throw new ModelInvalidError('ONNX model has no graph (file truncated, or not a model)');
  }
  // IR 1-2 predate opset_import; everything a current runtime loads has one.
  if (m.irVersion >= 3 && m.opsetImport.length === 0) {
    throw new ModelInvalidError('ONNX model has no opset_import (file truncated, or not a model)');
  }
  for (const o of m.opsetImport) {
    if (!(o.version >= 1 && o.version <= MAX_SANE_OPSET_VERSION)) {
      throw new ModelInvalidError(`ONNX model imports domain '${o.domain ?? ''}' at invalid opset version ${o.version}`);
    }
  }
  for (const n of m.graph.node) {
    if (!n.opType) throw new ModelInvalidError(`ONNX model has a node without op_type${n.name ? ` ('${n.name}')` : ''}`);
  }
  return m as ModelProto;
}

// ---------------------------------------------------------------------------------------------
// Encoding

function encodeStringStringEntry(m: StringStringEntry): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, m.key).stringField(2, m.value);
  return w.unknown(m.unknownFields);
}

function writeEntries(w: ProtoWriter, field: number, entries: StringStringEntry[] | undefined): void {
  if (entries) for (const e of entries) w.messageField(field, encodeStringStringEntry(e));
}

function encodeOperatorSetId(m: OperatorSetId): ProtoWriter {
  const w = new ProtoWriter();
  if (m.domain !== undefined) w.stringField(1, m.domain);
  w.tag(2, WireType.Varint).int64(m.version);
  return w.unknown(m.unknownFields);
}

function packedBytes(arr: ArrayBufferView): Uint8Array {
  return new Uint8Array(arr.buffer, arr.byteOffset, arr.byteLength);
}

export function encodeTensor(m: TensorProto): ProtoWriter {
  const w = new ProtoWriter();
  // dims is a plain (unpacked) repeated int64 in onnx.proto.
  for (const d of m.dims) w.tag(1, WireType.Varint).int64(d);
  w.tag(2, WireType.Varint).int32(m.dataType);
  if (m.floatData && m.floatData.length > 0) w.bytesField(4, packedBytes(m.floatData));
  if (m.int32Data && m.int32Data.length > 0) {
    const inner = new ProtoWriter();
    for (const v of m.int32Data) inner.int32(v);
    w.messageField(5, inner);
  }
  if (m.stringData) for (const s of m.stringData) w.bytesField(6, s);
  if (m.int64Data && m.int64Data.length > 0) {
    const inner = new ProtoWriter();
    for (const v of m.int64Data) inner.varintBigInt(v);
    w.messageField(7, inner);
  }
  if (m.name !== undefined) w.stringField(8, m.name);
  if (m.rawData !== undefined) w.bytesField(9, m.rawData);
  if (m.doubleData && m.doubleData.length > 0) w.bytesField(10, packedBytes(m.doubleData));
  if (m.uint64Data && m.uint64Data.length > 0) {
    const inner = new ProtoWriter();
    for (const v of m.uint64Data) inner.varintBigInt(v);
    w.messageField(11, inner);
  }
  if (m.docString !== undefined) w.stringField(12, m.docString);
  writeEntries(w, 13, m.externalData);
  if (m.dataLocation !== undefined) w.tag(14, WireType.Varint).int32(m.dataLocation);
  writeEntries(w, 16, m.metadataProps);
  return w.unknown(m.unknownFields);
}

function encodeDimension(m: Dimension): ProtoWriter {
  const w = new ProtoWriter();
  if (m.value !== undefined) w.tag(1, WireType.Varint).int64(m.value);
  if (m.param !== undefined) w.stringField(2, m.param);
  if (m.denotation !== undefined) w.stringField(3, m.denotation);
  return w.unknown(m.unknownFields);
}

function encodeTypeProto(m: TypeProto): ProtoWriter {
  const w = new ProtoWriter();
  if (m.tensorType) {
    const t = m.tensorType;
    const tw = new ProtoWriter();
    if (t.elemType !== undefined) tw.tag(1, WireType.Varint).int32(t.elemType);
    if (t.shape) {
      const sw = new ProtoWriter();
      for (const d of t.shape.dims) sw.messageField(1, encodeDimension(d));
      sw.unknown(t.shape.unknownFields);
      tw.messageField(2, sw);
    }
    tw.unknown(t.unknownFields);
    w.messageField(1, tw);
  }
  if (m.denotation !== undefined) w.stringField(6, m.denotation);
  return w.unknown(m.unknownFields);
}

function encodeValueInfo(m: ValueInfoProto): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, m.name);
  if (m.type) w.messageField(2, encodeTypeProto(m.type));
  if (m.docString !== undefined) w.stringField(3, m.docString);
  writeEntries(w, 4, m.metadataProps);
  return w.unknown(m.unknownFields);
}

function encodeAttribute(m: AttributeProto): ProtoWriter {
  const w = new ProtoWriter();
  w.stringField(1, m.name);
  if (m.f !== undefined) w.tag(2, WireType.Fixed32).float(m.f);
  if (m.i !== undefined) w.tag(3, WireType.Varint).int64(m.i);
  if (m.s !== undefined) w.bytesField(4, m.s);
  if (m.t) w.messageField(5, encodeTensor(m.t));
  if (m.g) w.messageField(6, encodeGraph(m.g));
  // floats and ints are plain (unpacked) repeated fields in onnx.proto.
  if (m.floats) for (const v of m.floats) w.tag(7, WireType.Fixed32).float(v);
  if (m.ints) for (const v of m.ints) w.tag(8, WireType.Varint).int64(v);
  if (m.strings) for (const s of m.strings) w.bytesField(9, s);
  if (m.tensors) for (const t of m.tensors) w.messageField(10, encodeTensor(t));
  if (m.graphs) for (const g of m.graphs) w.messageField(11, encodeGraph(g));
  if (m.docString !== undefined) w.stringField(13, m.docString);
  if (m.tp) w.messageField(14, encodeTypeProto(m.tp));
  if (m.typeProtos) for (const t of m.typeProtos) w.messageField(15, encodeTypeProto(t));
  if (m.type !== undefined) w.tag(20, WireType.Varint).int32(m.type);
  if (m.refAttrName !== undefined) w.stringField(21, m.refAttrName);
  return w.unknown(m.unknownFields);
}

function encodeNode(m: NodeProto): ProtoWriter {
  const w = new ProtoWriter();
  for (const s of m.input) w.stringField(1, s);
  for (const s of m.output) w.stringField(2, s);
  if (m.name !== undefined) w.stringField(3, m.name);
  w.stringField(4, m.opType);
  for (const a of m.attribute) w.messageField(5, encodeAttribute(a));
  if (m.docString !== undefined) w.stringField(6, m.docString);
  if (m.domain !== undefined) w.stringField(7, m.domain);
  if (m.overload !== undefined) w.stringField(8, m.overload);
  writeEntries(w, 9, m.metadataProps);
  return w.unknown(m.unknownFields);
}

export function encodeGraph(m: GraphProto): ProtoWriter {
  const w = new ProtoWriter();
  for (const n of m.node) w.messageField(1, encodeNode(n));
  if (m.name !== undefined) w.stringField(2, m.name);
  for (const t of m.initializer) w.messageField(5, encodeTensor(t));
  if (m.docString !== undefined) w.stringField(10, m.docString);
  for (const v of m.input) w.messageField(11, encodeValueInfo(v));
  for (const v of m.output) w.messageField(12, encodeValueInfo(v));
  for (const v of m.valueInfo) w.messageField(13, encodeValueInfo(v));
  writeEntries(w, 16, m.metadataProps);
  return w.unknown(m.unknownFields);
}

export function encodeModel(m: ModelProto): Uint8Array {
  const w = new ProtoWriter();
  w.tag(1, WireType.Varint).int64(m.irVersion);
  if (m.producerName !== undefined) w.stringField(2, m.producerName);
  if (m.producerVersion !== undefined) w.stringField(3, m.producerVersion);
  if (m.domain !== undefined) w.stringField(4, m.domain);
  if (m.modelVersion !== undefined) w.tag(5, WireType.Varint).int64(m.modelVersion);
  if (m.docString !== undefined) w.stringField(6, m.docString);
  w.messageField(7, encodeGraph(m.graph));
  for (const o of m.opsetImport) w.messageField(8, encodeOperatorSetId(o));
  writeEntries(w, 14, m.metadataProps);
  w.unknown(m.unknownFields);
  return w.finish();
}

// ---------------------------------------------------------------------------------------------
// Small queries used across the optimizer

export function decodeUtf8Attr(a: AttributeProto): string | undefined {
  return a.s ? decodeUtf8(a.s) : undefined;
}

/** Opset version of the default (ai.onnx) domain, or undefined if it is not imported. */
export function defaultOpsetVersion(model: ModelProto): number | undefined {
  return model.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx')?.version;
}
