// File IO at the edge: read a model from disk, resolving external tensor data next to it.

import { readFile, stat, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { ModelExternalDataError, ModelTooLargeError } from './errors.js';
import { decodeModel, encodeModel, type DecodeModelOptions, type GraphProto, type ModelProto, type TensorProto } from './onnx-model.js';
import { dataTypeSize, isExternal, tensorElementCount } from './tensor.js';

export interface ReadModelOptions extends DecodeModelOptions {
  /**
   * Directory external data locations are relative to (default: the model's directory).
   * Pass `false` to leave external tensors unresolved (tensor readers then throw MODEL_EXTERNAL_DATA).
   */
  externalDataDir?: string | false;
}

export async function readModelFile(file: string, options: ReadModelOptions = {}): Promise<ModelProto> {
  const maxBytes = options.maxBytes;
  if (maxBytes !== undefined) {
    const st = await stat(file);
    if (st.size > maxBytes) throw new ModelTooLargeError(st.size, maxBytes);
  }
  const bytes = new Uint8Array(await readFile(file));
  const model = decodeModel(bytes, options);
  if (options.externalDataDir !== false) {
    await loadExternalData(model, options.externalDataDir ?? path.dirname(file), options.maxBytes);
  }
  return model;
}

export async function writeModelFile(file: string, model: ModelProto): Promise<Uint8Array> {
  const bytes = encodeModel(model);
  await writeFile(file, bytes);
  return bytes;
}

function* allTensors(g: GraphProto): Generator<TensorProto> {
  yield* g.initializer;
  for (const n of g.node) {
    for (const a of n.attribute) {
      if (a.t) yield a.t;
      if (a.tensors) yield* a.tensors;
      if (a.g) yield* allTensors(a.g);
      if (a.graphs) for (const sg of a.graphs) yield* allTensors(sg);
    }
  }
}

/**
 * Inlines every external tensor's bytes into raw_data. Locations must stay inside `baseDir`
 * (an uploaded model must not make the orchestrator read arbitrary files).
 */
export async function loadExternalData(model: ModelProto, baseDir: string, maxTotalBytes?: number): Promise<number> {
  const root = path.resolve(baseDir);
  const cache = new Map<string, Uint8Array>();
  let loaded = 0;
  let total = 0;
  for (const t of allTensors(model.graph)) {
    if (!isExternal(t)) continue;
    const name = t.name ?? '';
    const kv = new Map((t.externalData ?? []).map((e) => [e.key, e.value]));
    const location = kv.get('location');
    if (!location) throw new ModelExternalDataError(name, `tensor '${name}' is marked external but has no location`);
    const full = path.resolve(root, location);
    if (full !== root && !full.startsWith(root + path.sep)) {
      throw new ModelExternalDataError(name, `tensor '${name}' external location '${location}' points outside ${root}`);
    }
    let data = cache.get(full);
    if (!data) {
      try {
        data = new Uint8Array(await readFile(full));
      } catch (err) {
        throw new ModelExternalDataError(name, `tensor '${name}': cannot read external data file '${location}': ${(err as Error).message}`);
      }
      cache.set(full, data);
    }
    const offset = Number(kv.get('offset') ?? '0');
    const size = dataTypeSize(t.dataType);
    const length = kv.has('length') ? Number(kv.get('length')) : size !== undefined ? size * tensorElementCount(t) : data.length - offset;
    if (!(offset >= 0 && length >= 0 && offset + length <= data.length)) {
      throw new ModelExternalDataError(name, `tensor '${name}': external range ${offset}+${length} exceeds '${location}' (${data.length} bytes)`);
    }
    total += length;
    if (maxTotalBytes !== undefined && total > maxTotalBytes) throw new ModelTooLargeError(total, maxTotalBytes);
    t.rawData = data.subarray(offset, offset + length);
    delete t.externalData;
    delete t.dataLocation;
    loaded++;
  }
  return loaded;
}
