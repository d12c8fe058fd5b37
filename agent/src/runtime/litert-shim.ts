// LiteRT.js 2.5 ships an emscripten loader built for browsers and web workers. In Node 20 it
// only loads when a few worker/CommonJS globals exist before `loadLiteRt(wasmDir)`: it checks
// `self` to pick the worker code path, then calls `importScripts(path)` to evaluate the glue JS,
// which in turn uses `require` and `__dirname` to read the .wasm next to it. Its INFO/WARNING
// lines go to emscripten's `Module.printErr`, which we route to the caller's logger.
// Everything here touches globals, so it runs only when a runner is first created, never at import.
import { createRequire } from 'node:module';
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';

export type LiteRtModule = typeof import('@litertjs/core');
export type LiteRtInstance = Awaited<ReturnType<LiteRtModule['loadLiteRt']>>;

export interface LiteRtLoadOptions {
  /** Receives the runtime's own log lines (INFO/WARNING from the wasm build). */
  log?: (line: string) => void;
}

const packageRequire = createRequire(import.meta.url);

/** Directory holding the LiteRT.js wasm builds, with a trailing slash as loadLiteRt expects. */
export function liteRtWasmDir(): string {
  const main = packageRequire.resolve('@litertjs/core');
  return path.resolve(path.dirname(main), '..', 'wasm') + path.sep;
}

/**
 * Sets the loader globals and returns a function restoring any that the host had already
 * defined (e.g. `node -e` defines `require` and `__dirname`), once the wasm is instantiated.
 */
function installLoaderGlobals(wasmDir: string, log: (line: string) => void): () => void {
  const g = globalThis as Record<string, unknown>;
  const wanted: Record<string, unknown> = {
    self: globalThis,
    require: packageRequire,
    __dirname: wasmDir,
    importScripts: (file: string) => vm.runInThisContext(fs.readFileSync(file, 'utf8'), { filename: file }),
  };
  const previous = new Map<string, unknown>();
  for (const [key, value] of Object.entries(wanted)) {
    if (g[key] !== undefined) previous.set(key, g[key]);
    g[key] = value;
  }
  const mod = (g.Module ??= {}) as Record<string, unknown>;
  mod.printErr ??= log;
  return () => {
    for (const [key, value] of previous) g[key] = value;
  };
}

/**
 * Loads LiteRT.js once per process. The library itself keeps a process-wide instance and throws
 * when loaded twice, so we reuse its own promise instead of keeping state of our own.
 */
export async function loadLiteRtRuntime(options: LiteRtLoadOptions = {}): Promise<{ lib: LiteRtModule; liteRt: LiteRtInstance }> {
  const lib = await import('@litertjs/core');
  const existing = lib.getGlobalLiteRtPromise();
  if (existing) return { lib, liteRt: await existing };
  const wasmDir = liteRtWasmDir();
  const restoreGlobals = installLoaderGlobals(wasmDir, options.log ?? (() => {}));
  // loadLiteRt probes for WebGPU and warns once through console.warn; that is expected in Node.
  const warn = console.warn;
  console.warn = (...args: unknown[]) => options.log?.(args.map(String).join(' '));
  try {
    return { lib, liteRt: await lib.loadLiteRt(wasmDir) };
  } finally {
    console.warn = warn;
    restoreGlobals();
  }
}
