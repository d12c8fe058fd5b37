import { mkdir, open, readFile, rm, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import {
  canMergeWindows, coalesceRanges, mergeWindows, rangeCovered, totalRequests, windowCount, windowRange,
  type SeqRange, type TelemetryGap, type TelemetryRequests, type TelemetryWindow,
} from '@edgepack/protocol';
import { writeFileAtomic } from '../durable-file.js';
import type { Logger } from '../logger.js';

export type SpoolEntry =
  | { kind: 'window'; window: TelemetryWindow; bytes: number }
  | { kind: 'gap'; gap: TelemetryGap; bytes: number };

export interface SpoolOptions {
  /** The spool's own directory (the agent uses <data-dir>/telemetry). */
  dir: string;
  /** The spool file never grows past this; see makeRoom. */
  capBytes: number;
  /**
   * Under pressure, windows are merged within aligned periods of these lengths, finest first:
   * by default 10 min, then 1 h, then 1 UTC day, matching the orchestrator's roll-ups.
   */
  mergeLevelsSec?: readonly number[];
  log: Logger;
  /** Epoch ms. */
  now: () => number;
}

export const MIN_SPOOL_BYTES = 16 * 1024;
export const DEFAULT_MERGE_LEVELS_SEC: readonly number[] = [600, 3600, 86_400];

interface SpoolState {
  /** The next seq to hand out; kept here so seqs are never reused, even once every window is acked. */
  nextSeq: number;
  /** Start of the window that is open (epoch ms), for the gap an unclean stop leaves. */
  openSince: number;
  /** False while the agent runs; true once it stopped after flushing its open window. */
  clean: boolean;
}

type Record_ = { w: TelemetryWindow } | { g: TelemetryGap } | { a: SeqRange[] };

/** One line per record: 8 hex digits of CRC-32 over the JSON, a space, the JSON. */
function line(rec: Record_): string {
  const json = JSON.stringify(rec);
  return `${crc32(json).toString(16).padStart(8, '0')} ${json}\n`;
}

function parseLine(text: string): Record_ | null {
  const sp = text.indexOf(' ');
  if (sp !== 8) return null;
  const json = text.slice(9);
  if (crc32(json).toString(16).padStart(8, '0') !== text.slice(0, 8)) return null;
  try {
    const r = JSON.parse(json) as Record_;
    return typeof r === 'object' && r !== null ? r : null;
  } catch {
    return null;
  }
}

function entryRange(e: SpoolEntry): SeqRange {
  return e.kind === 'window' ? windowRange(e.window) : [e.gap.seq, e.gap.lastSeq];
}

function addRequests(a: TelemetryRequests | undefined, b: TelemetryRequests | undefined): TelemetryRequests | undefined {
  if (!a) return b;
  if (!b) return a;
  return { ok: a.ok + b.ok, invalid: a.invalid + b.invalid, timeout: a.timeout + b.timeout, rejected: a.rejected + b.rejected, error: a.error + b.error };
}

function windowEntry(window: TelemetryWindow): SpoolEntry {
  return { kind: 'window', window, bytes: Buffer.byteLength(line({ w: window })) };
}

function gapEntry(gap: TelemetryGap): SpoolEntry {
  return { kind: 'gap', gap, bytes: Buffer.byteLength(line({ g: gap })) };
}

const iso = (ms: number) => new Date(Math.floor(ms / 1000) * 1000).toISOString().replace('.000Z', 'Z');

/**
 * Store and forward for telemetry, bounded and honest. Closed windows are appended to
 * spool.log and fsynced before anything else happens to them; they leave only when the
 * orchestrator acks them (after its commit). Acks are appended too; on start the log is
 * replayed (a torn or corrupt line is skipped and logged) and rewritten without the dead.
 *
 * The file never grows past `capBytes`: an append that would is preceded by a rewrite holding
 * only live entries, and if those alone are too many, the oldest windows are first merged
 * exactly into coarser ones (within aligned 10-min, then 1-h, then 1-day periods), and only
 * then the oldest are dropped, each drop becoming (or widening) a gap report that is itself
 * spooled and sent. A rewrite goes through a temp file and a rename, so for a moment the
 * directory holds both. Seqs are allocated here and persisted, so they survive restarts.
 */
export class TelemetrySpool {
  private entries: SpoolEntry[] = [];
  private fileBytes = 0;
  private fh?: FileHandle;
  private state: SpoolState;
  private tail: Promise<unknown> = Promise.resolve();
  /** Raw windows merged away and dropped, since this process started. */
  readonly stats = { mergedWindows: 0, droppedWindows: 0 };

  private constructor(private readonly o: SpoolOptions, state: SpoolState) {
    this.state = state;
  }

  private get file(): string { return join(this.o.dir, 'spool.log'); }
  private get stateFile(): string { return join(this.o.dir, 'state.json'); }

  /**
   * Opens (or creates) the spool. If the previous process did not stop cleanly, the counts of
   * the window it had open are lost: that is recorded as an `unclean-stop` gap with a seq of its own.
   */
  static async open(o: SpoolOptions): Promise<TelemetrySpool> {
    if (o.capBytes < MIN_SPOOL_BYTES) throw Object.assign(new Error(`the telemetry spool needs at least ${MIN_SPOOL_BYTES} bytes, got ${o.capBytes}`), { code: 'CONFIG_INVALID' });
    await mkdir(o.dir, { recursive: true, mode: 0o700 });
    const previous = await readState(join(o.dir, 'state.json'), o.now);
    const spool = new TelemetrySpool(o, previous ?? { nextSeq: 1, openSince: o.now(), clean: true });
    const { maxSeq, dead } = await spool.replay();
    spool.state.nextSeq = Math.max(spool.state.nextSeq, maxSeq + 1);
    if (dead) await spool.rewrite();
    if (previous && !previous.clean) {
      const seq = spool.state.nextSeq++;
      const gap: TelemetryGap = { seq, lastSeq: seq, windows: 1, from: iso(previous.openSince), to: iso(Math.max(previous.openSince, o.now())), reason: 'unclean-stop' };
      o.log.warn({ seq, from: gap.from, to: gap.to }, 'telemetry: the agent did not stop cleanly; the counts of the window it had open are lost and reported as a gap');
      await spool.add([gapEntry(gap)]);
    }
    spool.state.openSince = o.now();
    spool.state.clean = false;
    await spool.saveState();
    return spool;
  }

  private async replay(): Promise<{ maxSeq: number; dead: boolean }> {
    let text = '';
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    }
    const lines = text.split('\n');
    const torn = lines.pop() ?? ''; // after the last '\n': empty, or a write a crash cut short
    let bad = torn.length > 0 ? 1 : 0;
    let maxSeq = 0;
    let records = 0;
    const byRange: SpoolEntry[] = [];
    for (const l of lines) {
      const r = parseLine(l);
      if (!r) { bad++; continue; }
      records++;
      if ('w' in r) { byRange.push(windowEntry(r.w)); maxSeq = Math.max(maxSeq, windowRange(r.w)[1]); }
      else if ('g' in r) { byRange.push(gapEntry(r.g)); maxSeq = Math.max(maxSeq, r.g.lastSeq); }
      else if ('a' in r && Array.isArray(r.a)) {
        const acked = r.a;
        for (let i = byRange.length - 1; i >= 0; i--) if (rangeCovered(entryRange(byRange[i]!), acked)) byRange.splice(i, 1);
      }
    }
    // A rewrite may have merged entries that an older line also holds: keep one per seq range, the widest.
    byRange.sort((a, b) => entryRange(a)[0] - entryRange(b)[0] || entryRange(b)[1] - entryRange(a)[1]);
    for (const e of byRange) {
      const last = this.entries[this.entries.length - 1];
      if (last && entryRange(e)[0] <= entryRange(last)[1]) continue;
      this.entries.push(e);
    }
    this.fileBytes = Buffer.byteLength(text);
    if (bad > 0) this.o.log.warn({ file: this.file, skipped: bad }, 'telemetry spool: skipped lines that were torn or corrupt');
    return { maxSeq, dead: bad > 0 || records !== this.entries.length };
  }

  /** Hands out the next seq; it is persisted with the window that uses it. */
  allocSeq(): number {
    return this.state.nextSeq++;
  }

  /** Live entries, oldest first (read-only). */
  get pending(): readonly SpoolEntry[] { return this.entries; }
  get liveBytes(): number { return this.entries.reduce((n, e) => n + e.bytes, 0); }
  get bytesOnDisk(): number { return this.fileBytes; }
  get capBytes(): number { return this.o.capBytes; }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.tail.then(fn);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Appends closed windows durably (fsync) and records `openSince`: the end of the last one. */
  append(windows: TelemetryWindow[], openSince: number): Promise<void> {
    return this.serial(async () => {
      await this.add(windows.map(windowEntry));
      this.state.openSince = openSince;
      await this.saveState();
    });
  }

  private async add(fresh: SpoolEntry[]): Promise<void> {
    if (fresh.length === 0) return;
    this.entries.push(...fresh);
    const freshBytes = fresh.reduce((n, e) => n + e.bytes, 0);
    if (this.fileBytes + freshBytes <= this.o.capBytes) {
      await this.appendLines(fresh.map((e) => (e.kind === 'window' ? line({ w: e.window }) : line({ g: e.gap }))).join(''), true);
      return;
    }
    this.makeRoom();
    await this.rewrite();
  }

  /**
   * Removes every entry whose whole seq range is acked or refused. The ack is appended (not
   * fsynced: losing it only means the entries are sent and acked again) or, if that would pass
   * the cap, the file is rewritten without them.
   */
  acknowledge(ranges: readonly SeqRange[]): Promise<number> {
    return this.serial(async () => {
      const covered = coalesceRanges(ranges);
      const gone = this.entries.filter((e) => rangeCovered(entryRange(e), covered));
      if (gone.length === 0) return 0;
      this.entries = this.entries.filter((e) => !gone.includes(e));
      const rec = line({ a: coalesceRanges(gone.map(entryRange)) });
      if (this.entries.length === 0 || this.fileBytes + Buffer.byteLength(rec) > this.o.capBytes) await this.rewrite();
      else await this.appendLines(rec, false);
      return gone.length;
    });
  }

  /** Marks a clean stop: the open window was flushed, so no gap is due on the next start. */
  close(): Promise<void> {
    return this.serial(async () => {
      this.state.clean = true;
      await this.saveState();
      await this.fh?.close();
      this.fh = undefined;
    });
  }

  /**
   * Brings the live entries down to 3/4 of the cap (so that the appends after it are plain
   * appends again, not one rewrite each, which would wear a device's flash): merge windows
   * within ever coarser aligned periods, oldest first; then drop the oldest windows, folding
   * each into a gap report.
   */
  private makeRoom(): void {
    const cap = Math.floor(this.o.capBytes * 0.75);
    let live = this.liveBytes;
    for (const level of this.o.mergeLevelsSec ?? DEFAULT_MERGE_LEVELS_SEC) {
      const len = level * 1000;
      for (let i = 0; i < this.entries.length - 1 && live > cap;) {
        const a = this.entries[i]!;
        const b = this.entries[i + 1]!;
        if (a.kind === 'window' && b.kind === 'window' && canMergeWindows(a.window, b.window)
          && Math.floor(Date.parse(a.window.start) / len) === Math.floor((Date.parse(b.window.end) - 1) / len)) {
          const m = windowEntry(mergeWindows(a.window, b.window));
          live += m.bytes - a.bytes - b.bytes;
          this.entries.splice(i, 2, m);
          this.stats.mergedWindows += 1;
        } else {
          i++;
        }
      }
      if (live <= cap) break;
    }
    if (live > cap) this.o.log.warn({ liveBytes: live, capBytes: this.o.capBytes }, 'telemetry spool: full even after merging; dropping the oldest windows and reporting the gap');
    while (live > cap) {
      const j = this.entries.findIndex((e) => e.kind === 'window');
      if (j < 0) {
        // Only gaps left: fold them into one; they can always widen (see telemetryIngestAction).
        if (this.entries.length < 2) break;
        const g = this.entries.reduce<TelemetryGap>((acc, e) => (e.kind === 'gap' ? widen(acc, e.gap) : acc), (this.entries[0] as { gap: TelemetryGap }).gap);
        this.entries = [gapEntry(g)];
        live = this.liveBytes;
        continue;
      }
      const dropped = this.entries[j] as Extract<SpoolEntry, { kind: 'window' }>;
      const w = dropped.window;
      const [seq, lastSeq] = windowRange(w);
      let gap: TelemetryGap = { seq, lastSeq, windows: lastSeq - seq + 1, from: w.start, to: w.end, reason: 'spool-full', requests: { ...w.requests } };
      this.stats.droppedWindows += windowCount(w);
      this.o.log.warn({ seq, lastSeq, from: w.start, to: w.end, requests: totalRequests(w.requests) }, 'telemetry spool: dropped a window');
      const prev = this.entries[j - 1];
      if (prev?.kind === 'gap' && prev.gap.reason === 'spool-full') {
        gap = widen(prev.gap, gap);
        this.entries.splice(j - 1, 2, gapEntry(gap));
      } else {
        this.entries.splice(j, 1, gapEntry(gap));
      }
      live = this.liveBytes;
    }
  }

  private async appendLines(text: string, sync: boolean): Promise<void> {
    this.fh ??= await open(this.file, 'a', 0o600);
    await this.fh.appendFile(text);
    if (sync) await this.fh.sync();
    this.fileBytes += Buffer.byteLength(text);
  }

  /** Replaces the file with the live entries only (temp file, fsync, rename, fsync dir). */
  private async rewrite(): Promise<void> {
    await this.fh?.close();
    this.fh = undefined;
    const text = this.entries.map((e) => (e.kind === 'window' ? line({ w: e.window }) : line({ g: e.gap }))).join('');
    if (text.length === 0) await rm(this.file, { force: true });
    else await writeFileAtomic(this.file, text);
    this.fileBytes = Buffer.byteLength(text);
  }

  private saveState(): Promise<void> {
    return writeFileAtomic(this.stateFile, JSON.stringify(this.state));
  }
}

/** A gap covering both (and anything between: seqs in between that were acked stay stored; see telemetryIngestAction). */
function widen(a: TelemetryGap, b: TelemetryGap): TelemetryGap {
  const seq = Math.min(a.seq, b.seq);
  const lastSeq = Math.max(a.lastSeq, b.lastSeq);
  const requests = addRequests(a.requests, b.requests);
  return {
    seq, lastSeq, windows: lastSeq - seq + 1,
    from: Date.parse(a.from) <= Date.parse(b.from) ? a.from : b.from,
    to: Date.parse(a.to) >= Date.parse(b.to) ? a.to : b.to,
    reason: a.reason === b.reason ? a.reason : 'spool-full',
    ...(requests ? { requests } : {}),
  };
}

async function readState(file: string, now: () => number): Promise<SpoolState | null> {
  try {
    const s = JSON.parse(await readFile(file, 'utf8')) as Partial<SpoolState>;
    if (typeof s.nextSeq === 'number' && Number.isSafeInteger(s.nextSeq) && s.nextSeq >= 1) {
      return { nextSeq: s.nextSeq, openSince: typeof s.openSince === 'number' ? s.openSince : now(), clean: s.clean === true };
    }
  } catch { /* missing or unreadable: a fresh spool; the replay still finds the highest seq */ }
  return null;
}
