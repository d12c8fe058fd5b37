// The agent's chunked download against real files: order, duplicates, a disconnect half-way
// (a fresh downloader on the same dir, as after a restart) and a corrupted transfer.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CHUNK_SIZE, createChunkDecoder, encodeChunkFrame, type BundleFile } from '@edgepack/protocol';
import { ChunkDownload } from '@edgepack/agent/chunk-download.js';

const decode = createChunkDecoder();

function fileOf(bytes: Buffer): BundleFile {
  return { path: 'model.onnx', role: 'model', sha256: createHash('sha256').update(bytes).digest('hex'), length: bytes.length };
}

/** What the orchestrator would send for chunk `i`, through the real frame codec. */
function chunk(bytes: Buffer, file: BundleFile, i: number) {
  const frame = encodeChunkFrame({ bundleId: 'bdl_1', sha256: file.sha256, index: i, fileLength: bytes.length, bytes: bytes.subarray(i * CHUNK_SIZE, (i + 1) * CHUNK_SIZE) });
  const d = decode(frame);
  assert.ok(d.ok);
  return d;
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'edgepack-dl-'));
  try { await fn(dir); } finally { await rm(dir, { recursive: true, force: true }); }
}

test('downloads a multi-chunk file in windows, tolerating duplicates and out-of-order chunks', () => withDir(async (dir) => {
  const bytes = randomBytes(CHUNK_SIZE * 5 + 123);
  const file = fileOf(bytes);
  const asked: [number, number][] = [];
  const dl = new ChunkDownload('bdl_1', file, dir, (index, count) => {
    asked.push([index, count]);
    // Answer the window backwards and twice over, as a reconnecting broker might.
    const order = Array.from({ length: count }, (_, k) => index + count - 1 - k);
    setImmediate(() => { for (const i of [...order, ...order]) { const c = chunk(bytes, file, i); if (c.ok) void dl.accept(c.header, c.bytes); } });
  }, 2);
  await dl.run();
  assert.deepEqual(asked, [[0, 2], [2, 2], [4, 2]]);
  assert.deepEqual(await readFile(ChunkDownload.finalPath(dir, file.sha256)), bytes);
  assert.deepEqual((await readdir(dir)).sort(), [file.sha256]);
}));

test('after a disconnect half-way, a new download resumes at the first missing chunk', () => withDir(async (dir) => {
  const bytes = randomBytes(CHUNK_SIZE * 6);
  const file = fileOf(bytes);
  const first = new ChunkDownload('bdl_1', file, dir, () => undefined, 8);
  const running = first.run();
  for (const i of [0, 1, 2, 4]) { const c = chunk(bytes, file, i); if (c.ok) await first.accept(c.header, c.bytes); }
  // The connection drops here: chunk 3 never came, so 4 sits only in memory and is lost.
  first.fail(new Error('disconnected'));
  await assert.rejects(running, /disconnected/);
  assert.equal((await stat(join(dir, `${file.sha256}.part`))).size, 3 * CHUNK_SIZE);

  const asked: number[] = [];
  const second = new ChunkDownload('bdl_1', file, dir, (index, count) => {
    asked.push(index);
    setImmediate(() => { for (let i = index; i < index + count; i++) { const c = chunk(bytes, file, i); if (c.ok) void second.accept(c.header, c.bytes); } });
  }, 8);
  await second.run();
  assert.equal(asked[0], 3, 'resumes at the first chunk not on disk');
  assert.deepEqual(await readFile(ChunkDownload.finalPath(dir, file.sha256)), bytes);
}));

test('a transfer whose bytes do not match the manifest fails with FILE_HASH_MISMATCH and keeps nothing', () => withDir(async (dir) => {
  const bytes = randomBytes(CHUNK_SIZE + 10);
  const file = fileOf(bytes);
  const evil = Buffer.from(bytes);
  evil[5] ^= 1; // each chunk is self-consistent, the file is not what was signed
  const dl = new ChunkDownload('bdl_1', file, dir, (index, count) => {
    setImmediate(() => { for (let i = index; i < index + count; i++) { const c = chunk(evil, file, i); if (c.ok) void dl.accept(c.header, c.bytes); } });
  });
  await assert.rejects(dl.run(), (err: { code?: string }) => err.code === 'FILE_HASH_MISMATCH');
  assert.equal((await stat(join(dir, `${file.sha256}.part`))).size, 0);
  assert.ok(!(await readdir(dir)).includes(file.sha256));
}));

test('chunks for another file or with a different total length are not written', () => withDir(async (dir) => {
  const bytes = randomBytes(100);
  const file = fileOf(bytes);
  const other = randomBytes(100);
  const dl = new ChunkDownload('bdl_1', file, dir, () => {
    setImmediate(async () => {
      const o = decode(encodeChunkFrame({ bundleId: 'bdl_1', sha256: fileOf(other).sha256, index: 0, fileLength: 100, bytes: other }));
      if (o.ok) await dl.accept(o.header, o.bytes);
      const wrongLength = decode(encodeChunkFrame({ bundleId: 'bdl_1', sha256: file.sha256, index: 0, fileLength: 99, bytes: bytes.subarray(0, 99) }));
      if (wrongLength.ok) await dl.accept(wrongLength.header, wrongLength.bytes);
    });
  });
  await assert.rejects(dl.run(), (err: { code?: string }) => err.code === 'FILE_LENGTH_MISMATCH');
}));

test('slow retrieval (TUF): a trickle that beats every stall timeout still fails under the rate floor; a fast transfer under the same floor completes', () => withDir(async (dir) => {
  const bytes = randomBytes(CHUNK_SIZE * 40);
  const file = fileOf(bytes);
  const floor = { minBytesPerSec: 4 * CHUNK_SIZE * 1000 / 150, windowMs: 150 }; // 4 chunks per 150 ms window
  // The attacker's broker: one chunk every 60 ms, always within the (10 s) stall timeout.
  let next = 0;
  const slow = new ChunkDownload('bdl_1', file, join(dir, 'slow'), () => undefined, 8);
  const done = slow.run();
  const trickle = setInterval(() => { const c = chunk(bytes, file, next++); if (c.ok) void slow.accept(c.header, c.bytes); }, 60);
  const checks: string[] = [];
  try {
    await new Promise<void>((resolve) => {
      const watch = setInterval(() => {
        const check = slow.checkStall(10_000, 6, floor);
        checks.push(check);
        if (check === 'too-slow') {
          clearInterval(watch);
          slow.fail(new Error(`too slow: ${Math.round(slow.lastWindowRate!)} bytes/s`));
          resolve();
        }
      }, 20);
    });
  } finally {
    clearInterval(trickle);
  }
  await assert.rejects(done, /too slow/);
  assert.ok(!checks.includes('reasked'), 'every chunk came within the stall timeout');
  assert.ok(slow.lastWindowRate! < floor.minBytesPerSec && slow.lastWindowRate! > 0, `the last window's rate ${slow.lastWindowRate}`);

  // Without a floor the same trickle is only ever 'progressing'.
  const unbounded = new ChunkDownload('bdl_1', file, join(dir, 'unbounded'), () => undefined, 8);
  void unbounded.run().catch(() => undefined);
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(unbounded.checkStall(10_000, 6, { minBytesPerSec: 0, windowMs: 150 }), 'progressing');
  assert.equal(unbounded.checkStall(10_000, 6), 'progressing');
  unbounded.fail(new Error('done'));

  // A transfer answered at once is never judged too slow: a second-long window at a floor of one
  // chunk a second, which a loaded host's fsyncs still beat many times over.
  const small = bytes.subarray(0, CHUNK_SIZE * 8);
  const smallFile = fileOf(small);
  const gentle = { minBytesPerSec: CHUNK_SIZE, windowMs: 1000 };
  const fast = new ChunkDownload('bdl_1', smallFile, join(dir, 'fast'), (index, count) => {
    setImmediate(() => { for (let i = index; i < index + count; i++) { const c = chunk(small, smallFile, i); if (c.ok) void fast.accept(c.header, c.bytes); } });
  }, 4);
  const watch = setInterval(() => { if (fast.checkStall(10_000, 6, gentle) === 'too-slow') fast.fail(new Error('judged too slow')); }, 20);
  try {
    await fast.run();
  } finally {
    clearInterval(watch);
  }
  assert.deepEqual(await readFile(join(dir, 'fast', smallFile.sha256)), small);
}));
