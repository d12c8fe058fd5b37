/**
 * Encoded chunk frames, kept by (bundle, file, index) up to a byte budget, least recently used
 * out first. A rollout sends the same few frames to every device of a profile: without the
 * cache each of 1,000 devices costs an open, a read, a close and a SHA-256 of every 64 KiB chunk;
 * with it, each frame is read and hashed once. Frames are immutable (bundles never change), and
 * concurrent asks for one frame share one read.
 */
export class ChunkFrameCache {
  private readonly frames = new Map<string, Buffer>();
  private readonly pending = new Map<string, Promise<Buffer>>();
  private bytes = 0;
  hits = 0;
  misses = 0;

  constructor(private readonly maxBytes = 32 << 20) {}

  async get(key: string, produce: () => Promise<Buffer>): Promise<Buffer> {
    const hit = this.frames.get(key);
    if (hit) {
      // Most recently used goes last: Map iteration order is insertion order.
      this.frames.delete(key);
      this.frames.set(key, hit);
      this.hits++;
      return hit;
    }
    const inFlight = this.pending.get(key);
    if (inFlight) {
      this.hits++;
      return inFlight;
    }
    this.misses++;
    const p = produce().then((frame) => {
      this.pending.delete(key);
      if (frame.length <= this.maxBytes) {
        this.frames.set(key, frame);
        this.bytes += frame.length;
        for (const [k, v] of this.frames) {
          if (this.bytes <= this.maxBytes) break;
          this.frames.delete(k);
          this.bytes -= v.length;
        }
      }
      return frame;
    }, (err: unknown) => {
      this.pending.delete(key);
      throw err;
    });
    this.pending.set(key, p);
    return p;
  }
}
