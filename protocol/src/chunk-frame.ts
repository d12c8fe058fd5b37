import { createHash } from 'node:crypto';
import { CHUNK_SIZE, ChunkHeaderSchema, type ChunkHeader } from './messages.js';
import { Validator } from './validate.js';
import { PROTOCOL_VERSION } from './version.js';

/**
 * Chunk frames are binary, not base64-in-JSON, to keep the 33% overhead off the wire:
 *   uint32 BE header length | header JSON (ChunkHeader) | chunk bytes
 */
export function encodeChunkFrame(args: { bundleId: string; sha256: string; index: number; fileLength: number; bytes: Uint8Array }): Buffer {
  const total = Math.max(1, Math.ceil(args.fileLength / CHUNK_SIZE));
  const header: ChunkHeader = {
    v: PROTOCOL_VERSION,
    bundleId: args.bundleId,
    sha256: args.sha256,
    index: args.index,
    total,
    offset: args.index * CHUNK_SIZE,
    length: args.bytes.byteLength,
    chunkSha256: createHash('sha256').update(args.bytes).digest('hex'),
    fileLength: args.fileLength,
  };
  const headerBytes = Buffer.from(JSON.stringify(header));
  const prefix = Buffer.alloc(4);
  prefix.writeUInt32BE(headerBytes.length);
  return Buffer.concat([prefix, headerBytes, args.bytes]);
}

export type DecodedChunk = { ok: true; header: ChunkHeader; bytes: Buffer } | { ok: false; code: string; reason: string };

export function createChunkDecoder(): (frame: Uint8Array) => DecodedChunk {
  const headerValidator = new Validator('chunk header', ChunkHeaderSchema);
  return (frame) => {
    const buf = Buffer.from(frame.buffer, frame.byteOffset, frame.byteLength);
    if (buf.length < 4) return { ok: false, code: 'CHUNK_INVALID', reason: 'chunk frame shorter than its length prefix' };
    const headerLength = buf.readUInt32BE(0);
    if (headerLength > 4096 || 4 + headerLength > buf.length) return { ok: false, code: 'CHUNK_INVALID', reason: `chunk header length ${headerLength} does not fit the ${buf.length}-byte frame` };
    const parsed = headerValidator.parse(buf.subarray(4, 4 + headerLength));
    if (!parsed.ok) return { ok: false, code: 'CHUNK_INVALID', reason: `chunk header: ${parsed.reason}` };
    const bytes = buf.subarray(4 + headerLength);
    const header = parsed.value;
    if (bytes.length !== header.length) return { ok: false, code: 'CHUNK_INVALID', reason: `chunk ${header.index} carries ${bytes.length} bytes, header says ${header.length}` };
    if (createHash('sha256').update(bytes).digest('hex') !== header.chunkSha256) {
      return { ok: false, code: 'CHUNK_HASH_MISMATCH', reason: `chunk ${header.index} of ${header.sha256} does not match its own hash` };
    }
    return { ok: true, header, bytes };
  };
}
