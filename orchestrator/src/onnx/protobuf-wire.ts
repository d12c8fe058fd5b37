// Minimal protobuf wire-format reader/writer.
// Hand-rolled rather than protobufjs because protobufjs drops unknown fields, and an optimizer
// that silently loses fields from a newer onnx.proto would corrupt models it does not understand.

import { EdgepackError } from '@edgepack/protocol';

export const WireType = {
  Varint: 0,
  Fixed64: 1,
  LengthDelimited: 2,
  StartGroup: 3,
  EndGroup: 4,
  Fixed32: 5,
} as const;
export type WireType = (typeof WireType)[keyof typeof WireType];

/** A field the schema did not recognise, kept verbatim (tag included) so it can be written back. */
export interface UnknownField {
  fieldNumber: number;
  wireType: number;
  raw: Uint8Array;
}

export class ProtobufDecodeError extends EdgepackError {
  declare readonly code: 'PROTOBUF_DECODE';
  constructor(message: string, readonly truncated: boolean) {
    super('PROTOBUF_DECODE', message);
  }
}

const textDecoder = new TextDecoder('utf-8');
const textEncoder = new TextEncoder();

export class ProtoReader {
  pos: number;
  readonly end: number;
  private readonly view: DataView;

  constructor(readonly buf: Uint8Array, start = 0, end = buf.length) {
    this.pos = start;
    this.end = end;
    this.view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  }

  get done(): boolean {
    return this.pos >= this.end;
  }

  private truncated(what: string): never {
    throw new ProtobufDecodeError(`unexpected end of data while reading ${what} at byte ${this.pos}`, true);
  }

  /** Returns [fieldNumber, wireType]. */
  readTag(): [number, number] {
    const tag = this.readVarint();
    const fieldNumber = Math.floor(tag / 8);
    const wireType = tag % 8;
    if (fieldNumber === 0) throw new ProtobufDecodeError(`invalid field number 0 at byte ${this.pos}`, false);
    if (wireType > 5) throw new ProtobufDecodeError(`invalid wire type ${wireType} at byte ${this.pos}`, false);
    return [fieldNumber, wireType];
  }

  /**
   * Unsigned varint as a JS number. Values above 2^53 lose precision; use readVarintBigInt where
   * the full 64-bit range matters.
   */
  readVarint(): number {
    let result = 0;
    let mul = 1;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.truncated('varint');
      const b = this.buf[this.pos++]!;
      result += (b & 0x7f) * mul;
      if (b < 0x80) return result;
      mul *= 128;
    }
    throw new ProtobufDecodeError(`varint longer than 10 bytes at byte ${this.pos}`, false);
  }

  readVarintBigInt(): bigint {
    let result = 0n;
    let shift = 0n;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.end) this.truncated('varint');
      const b = this.buf[this.pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if (b < 0x80) return BigInt.asUintN(64, result);
      shift += 7n;
    }
    throw new ProtobufDecodeError(`varint longer than 10 bytes at byte ${this.pos}`, false);
  }

  /**
   * Signed int64 (two's complement varint) as a number. Values beyond ±2^53 are rounded; INT64_MAX
   * and INT64_MIN round to ±2^63, which the writer maps back to the exact extremes.
   */
  readInt64(): number {
    const start = this.pos;
    const fast = this.readVarint();
    if (fast <= Number.MAX_SAFE_INTEGER) return fast;
    // Negative or huge: re-read exactly so the two's complement sign is not lost to rounding.
    this.pos = start;
    return Number(BigInt.asIntN(64, this.readVarintBigInt()));
  }

  readInt32(): number {
    // int32 negatives are sign-extended to 10-byte varints.
    return Number(BigInt.asIntN(32, this.readVarintBigInt()));
  }

  readBool(): boolean {
    return this.readVarint() !== 0;
  }

  readFixed32(): number {
    if (this.pos + 4 > this.end) this.truncated('fixed32');
    const v = this.view.getUint32(this.pos, true);
    this.pos += 4;
    return v;
  }

  readFloat(): number {
    if (this.pos + 4 > this.end) this.truncated('float');
    const v = this.view.getFloat32(this.pos, true);
    this.pos += 4;
    return v;
  }

  readDouble(): number {
    if (this.pos + 8 > this.end) this.truncated('double');
    const v = this.view.getFloat64(this.pos, true);
    this.pos += 8;
    return v;
  }

  readFixed64BigInt(): bigint {
    if (this.pos + 8 > this.end) this.truncated('fixed64');
    const v = this.view.getBigUint64(this.pos, true);
    this.pos += 8;
    return v;
  }

  /** Length-delimited payload as a view into the source buffer (no copy). */
  readBytes(): Uint8Array {
    const len = this.readVarint();
    if (this.pos + len > this.end) this.truncated(`length-delimited field of ${len} bytes`);
    const out = this.buf.subarray(this.pos, this.pos + len);
    this.pos += len;
    return out;
  }

  readString(): string {
    return textDecoder.decode(this.readBytes());
  }

  /** A sub-reader over the next length-delimited payload. */
  readMessage(): ProtoReader {
    const len = this.readVarint();
    if (this.pos + len > this.end) this.truncated(`embedded message of ${len} bytes`);
    const sub = new ProtoReader(this.buf, this.pos, this.pos + len);
    this.pos += len;
    return sub;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WireType.Varint:
        this.readVarintBigInt();
        return;
      case WireType.Fixed64:
        if (this.pos + 8 > this.end) this.truncated('fixed64');
        this.pos += 8;
        return;
      case WireType.LengthDelimited: {
        this.readBytes();
        return;
      }
      case WireType.Fixed32:
        if (this.pos + 4 > this.end) this.truncated('fixed32');
        this.pos += 4;
        return;
      case WireType.StartGroup: {
        // Groups are deprecated but legal; skip until the matching end tag.
        for (;;) {
          if (this.pos >= this.end) this.truncated('group');
          const [, wt] = this.readTag();
          if (wt === WireType.EndGroup) return;
          this.skip(wt);
        }
      }
      default:
        throw new ProtobufDecodeError(`cannot skip wire type ${wireType} at byte ${this.pos}`, false);
    }
  }

  /** Skips the field whose tag started at tagStart and returns it verbatim. */
  captureUnknown(tagStart: number, fieldNumber: number, wireType: number): UnknownField {
    this.skip(wireType);
    return { fieldNumber, wireType, raw: this.buf.slice(tagStart, this.pos) };
  }

  /** Repeated scalar that may be packed or not: calls `each` once per element. */
  readRepeated(wireType: number, scalarWireType: number, readOne: () => void): void {
    if (wireType === WireType.LengthDelimited && scalarWireType !== WireType.LengthDelimited) {
      const len = this.readVarint();
      const stop = this.pos + len;
      if (stop > this.end) this.truncated(`packed field of ${len} bytes`);
      while (this.pos < stop) readOne();
      if (this.pos !== stop) throw new ProtobufDecodeError(`packed field overran its length at byte ${this.pos}`, false);
    } else if (wireType === scalarWireType) {
      readOne();
    } else {
      throw new ProtobufDecodeError(`wire type ${wireType} does not match expected ${scalarWireType} at byte ${this.pos}`, false);
    }
  }

  /** Packed payload as a view (for bulk float/double decoding). */
  readPackedView(): Uint8Array {
    return this.readBytes();
  }
}

/**
 * Writer that accumulates chunks; nested messages are written as separate writers whose chunks
 * are spliced in, so large payloads (raw_data) are copied only once, at finish().
 */
export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private cur = new Uint8Array(256);
  private curLen = 0;
  private total = 0;

  get length(): number {
    return this.total;
  }

  private ensure(n: number): void {
    if (this.curLen + n <= this.cur.length) return;
    this.flushCur();
    this.cur = new Uint8Array(Math.max(256, n, this.cur.length * 2 > 65536 ? 65536 : this.cur.length * 2));
  }

  private flushCur(): void {
    if (this.curLen > 0) {
      this.chunks.push(this.cur.subarray(0, this.curLen));
      this.cur = new Uint8Array(this.cur.length);
      this.curLen = 0;
    }
  }

  private byte(b: number): void {
    this.cur[this.curLen++] = b;
    this.total++;
  }

  tag(fieldNumber: number, wireType: number): this {
    this.varint(fieldNumber * 8 + wireType);
    return this;
  }

  /** Unsigned varint from a non-negative number (< 2^53). */
  varint(v: number): this {
    if (v < 0 || !Number.isFinite(v)) return this.varintBigInt(BigInt.asUintN(64, BigInt(Math.trunc(v))));
    this.ensure(10);
    while (v >= 128) {
      this.byte((v % 128) | 0x80);
      v = Math.floor(v / 128);
    }
    this.byte(v);
    return this;
  }

  varintBigInt(v: bigint): this {
    let u = BigInt.asUintN(64, v);
    this.ensure(10);
    while (u >= 128n) {
      this.byte(Number(u & 0x7fn) | 0x80);
      u >>= 7n;
    }
    this.byte(Number(u));
    return this;
  }

  /** Signed int64 from a number; out-of-range values saturate to INT64_MIN/INT64_MAX. */
  int64(v: number): this {
    if (v >= 0 && v <= Number.MAX_SAFE_INTEGER) return this.varint(v);
    return this.varintBigInt(int64FromNumber(v));
  }

  int32(v: number): this {
    if (v >= 0) return this.varint(v);
    return this.varintBigInt(BigInt(v));
  }

  fixed32(v: number): this {
    this.ensure(4);
    new DataView(this.cur.buffer, this.cur.byteOffset).setUint32(this.curLen, v >>> 0, true);
    this.curLen += 4;
    this.total += 4;
    return this;
  }

  float(v: number): this {
    this.ensure(4);
    new DataView(this.cur.buffer, this.cur.byteOffset).setFloat32(this.curLen, v, true);
    this.curLen += 4;
    this.total += 4;
    return this;
  }

  double(v: number): this {
    this.ensure(8);
    new DataView(this.cur.buffer, this.cur.byteOffset).setFloat64(this.curLen, v, true);
    this.curLen += 8;
    this.total += 8;
    return this;
  }

  fixed64BigInt(v: bigint): this {
    this.ensure(8);
    new DataView(this.cur.buffer, this.cur.byteOffset).setBigUint64(this.curLen, BigInt.asUintN(64, v), true);
    this.curLen += 8;
    this.total += 8;
    return this;
  }

  /** Appends bytes verbatim; large arrays are referenced, not copied. */
  raw(bytes: Uint8Array): this {
    if (bytes.length <= 64) {
      this.ensure(bytes.length);
      this.cur.set(bytes, this.curLen);
      this.curLen += bytes.length;
      this.total += bytes.length;
    } else {
      this.flushCur();
      this.chunks.push(bytes);
      this.total += bytes.length;
    }
    return this;
  }

  bytesField(fieldNumber: number, bytes: Uint8Array): this {
    this.tag(fieldNumber, WireType.LengthDelimited).varint(bytes.length).raw(bytes);
    return this;
  }

  stringField(fieldNumber: number, s: string): this {
    return this.bytesField(fieldNumber, textEncoder.encode(s));
  }

  messageField(fieldNumber: number, child: ProtoWriter): this {
    this.tag(fieldNumber, WireType.LengthDelimited).varint(child.total);
    this.flushCur();
    child.flushCur();
    for (const c of child.chunks) this.chunks.push(c);
    this.total += child.total;
    return this;
  }

  unknown(fields: readonly UnknownField[] | undefined): this {
    if (fields) for (const f of fields) this.raw(f.raw);
    return this;
  }

  finish(): Uint8Array {
    this.flushCur();
    if (this.chunks.length === 1) return this.chunks[0]!;
    const out = new Uint8Array(this.total);
    let off = 0;
    for (const c of this.chunks) {
      out.set(c, off);
      off += c.length;
    }
    return out;
  }
}

const INT64_MAX = 9223372036854775807n;
const INT64_MIN = -9223372036854775808n;

export function int64FromNumber(v: number): bigint {
  if (Number.isNaN(v)) return 0n;
  if (v >= 9223372036854775807) return INT64_MAX;
  if (v <= -9223372036854775808) return INT64_MIN;
  return BigInt(Math.trunc(v));
}

export function encodeUtf8(s: string): Uint8Array {
  return textEncoder.encode(s);
}

export function decodeUtf8(b: Uint8Array): string {
  return textDecoder.decode(b);
}
