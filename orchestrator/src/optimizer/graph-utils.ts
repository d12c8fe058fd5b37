// Small graph queries shared by the transforms.

import type { GraphProto, ModelProto, NodeProto, TensorProto } from '../onnx/onnx-model.js';

/**
 * Structural copy of a model so transforms never mutate their input. Tensor payloads (rawData)
 * are shared, not copied: transforms treat them as immutable and replace whole tensors.
 */
export function cloneModel(m: ModelProto): ModelProto {
  return { ...m, opsetImport: m.opsetImport.map((o) => ({ ...o })), graph: cloneGraph(m.graph) };
}

export function cloneGraph(g: GraphProto): GraphProto {
  return {
    ...g,
    node: g.node.map(cloneNode),
    initializer: g.initializer.map((t) => ({ ...t, dims: [...t.dims] })),
    input: g.input.map((v) => ({ ...v })),
    output: g.output.map((v) => ({ ...v })),
    valueInfo: g.valueInfo.map((v) => ({ ...v })),
  };
}

export function cloneNode(n: NodeProto): NodeProto {
  return { ...n, input: [...n.input], output: [...n.output], attribute: n.attribute.map((a) => ({ ...a })) };
}

/** Names referenced from inside subgraphs (If/Loop/Scan bodies) — outer scope values they capture. */
export function subgraphReferences(g: GraphProto): Set<string> {
  const refs = new Set<string>();
  const visit = (sg: GraphProto): void => {
    for (const n of sg.node) {
      for (const i of n.input) if (i) refs.add(i);
      for (const a of n.attribute) {
        if (a.g) visit(a.g);
        if (a.graphs) a.graphs.forEach(visit);
      }
    }
    for (const o of sg.output) refs.add(o.name);
  };
  for (const n of g.node) {
    for (const a of n.attribute) {
      if (a.g) visit(a.g);
      if (a.graphs) a.graphs.forEach(visit);
    }
  }
  return refs;
}

export function consumersOf(g: GraphProto): Map<string, NodeProto[]> {
  const map = new Map<string, NodeProto[]>();
  for (const n of g.node) {
    for (const i of n.input) {
      if (!i) continue;
      const list = map.get(i);
      if (list) {
        if (!list.includes(n)) list.push(n);
      } else map.set(i, [n]);
    }
  }
  return map;
}

export function producersOf(g: GraphProto): Map<string, NodeProto> {
  const map = new Map<string, NodeProto>();
  for (const n of g.node) for (const o of n.output) if (o) map.set(o, n);
  return map;
}

export function initializerMap(g: GraphProto): Map<string, TensorProto> {
  return new Map(g.initializer.map((t) => [t.name ?? '', t]));
}

export function replaceInput(nodes: readonly NodeProto[], from: string, to: string): void {
  for (const n of nodes) n.input = n.input.map((i) => (i === from ? to : i));
}

/** Generates names not already present in the graph. */
export function nameAllocator(g: GraphProto): (base: string) => string {
  const used = new Set<string>();
  for (const n of g.node) {
    if (n.name) used.add(n.name);
    for (const o of n.output) used.add(o);
    for (const i of n.input) used.add(i);
  }
  for (const t of g.initializer) used.add(t.name ?? '');
  for (const v of [...g.input, ...g.output, ...g.valueInfo]) used.add(v.name);
  return (base: string) => {
    let name = base;
    for (let k = 1; used.has(name); k++) name = `${base}_${k}`;
    used.add(name);
    return name;
  };
}

/** Orders nodes so every input is produced before use (stable for already-sorted graphs). */
export function topologicalSort(g: GraphProto): void {
  const available = new Set<string>(['']);
  for (const t of g.initializer) available.add(t.name ?? '');
  for (const v of g.input) available.add(v.name);
  // Values captured by subgraphs from the outer scope are resolved by the runtime.
  const pending = [...g.node];
  const out: NodeProto[] = [];
  while (pending.length > 0) {
    let progressed = false;
    for (let i = 0; i < pending.length; ) {
      const n = pending[i]!;
      if (n.input.every((x) => available.has(x))) {
        out.push(n);
        for (const o of n.output) available.add(o);
        pending.splice(i, 1);
        progressed = true;
      } else i++;
    }
    if (!progressed) {
      // Inputs from nowhere (malformed, or outer-scope names): keep the original relative order.
      out.push(...pending);
      break;
    }
  }
  g.node = out;
}

/**
 * A float weight that was quantized for some consumers but is still read by others (shared or
 * tied weights) would otherwise be stored twice. Each such survivor is replaced by an int8 copy
 * and a DequantizeLinear that produces the original name, so no float copy remains.
 */
export function dequantizeSharedWeights(
  model: ModelProto,
  quantizedNames: Iterable<string>,
  quantize: (t: TensorProto) => { data: Int8Array; scale: number },
): string[] {
  const g = model.graph;
  const inits = initializerMap(g);
  const used = new Set(g.node.flatMap((n) => n.input));
  const graphInputs = new Set(g.input.map((v) => v.name));
  const replaced: string[] = [];
  const newName = nameAllocator(g);
  const extra: NodeProto[] = [];
  for (const name of new Set(quantizedNames)) {
    const t = inits.get(name);
    if (!t || !used.has(name) || graphInputs.has(name)) continue;
    const q = quantize(t);
    const qName = newName(`${name}_shared_q`);
    const sName = newName(`${name}_shared_scale`);
    g.initializer = g.initializer.filter((x) => x !== t);
    g.initializer.push(
      { name: qName, dataType: 3, dims: [...t.dims], rawData: new Uint8Array(q.data.buffer, q.data.byteOffset, q.data.byteLength) },
      { name: sName, dataType: 1, dims: [], rawData: new Uint8Array(Float32Array.of(q.scale).buffer) },
    );
    extra.push({ input: [qName, sName], output: [name], name: newName(`DQ_${name}`), opType: 'DequantizeLinear', attribute: [] });
    replaced.push(name);
  }
  // Producers first, so the graph stays topologically sorted.
  g.node = [...extra, ...g.node];
  return replaced;
}
