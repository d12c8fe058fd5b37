// Produces, measures and picks one artifact per profile. Runs inside the build worker thread:
// it reads the upload and datasets from the blob store, writes chosen artifacts and golden
// files back to it, and returns plain data for the main thread to sign and record.
import { readFile } from 'node:fs/promises';
import { performance } from 'node:perf_hooks';
import ort from 'onnxruntime-node';
import type { Profile } from '@edgepack/firmware-profiles';
import { EdgepackError, encodeTensor, errorMessage, type GoldenFile, type TensorSpec } from '@edgepack/protocol';
import { BlobStore } from '../blob-store.js';
import { decodeModel, type ModelProto } from '../onnx/onnx-model.js';
import { inferShapes, staticSize } from '../onnx/shape-inference.js';
import { checkDataset, checkLabels, loadLabels, loadNpyDataset, sampleCount, takeSamples, type Dataset } from '../optimizer/dataset.js';
import { evaluateModels } from '../optimizer/evaluate.js';
import { optimizeModelBytes } from '../optimizer/optimize.js';
import { inspectModel } from '../onnx/inspect.js';
import { convertOnnxToTflite } from '../tflite/convert.js';
import { openLiteRtSession } from '../tflite/litert-runner.js';
import { NCHW_TO_NHWC, transposeData } from '../tflite/layout.js';
import { computeOnnxGolden, goldenInputs } from './golden-samples.js';
import { candidatesFor, judgeCandidate, type Candidate, type CandidateDecision, type CandidateMetrics } from './variant-selection.js';

export interface BuildJob {
  blobDir: string;
  model: { sha256: string; sizeBytes: number; format: 'onnx' | 'tflite'; inputs: TensorSpec[]; outputs: TensorSpec[]; precision?: Candidate['precision'] };
  profiles: Profile[];
  /** Blob sha256s of uploaded .npy datasets. */
  data: { calibration?: string; evaluation?: string; labels?: string };
  /** `device` (issue 10): keep every candidate that meets the accuracy, size and RAM budgets, not only the host's pick. Default host. */
  selection?: 'host' | 'device';
}

/** One candidate a `device` build keeps for a profile: its own model file and golden samples. */
export interface KeptCandidate {
  format: 'onnx' | 'tflite';
  precision: Candidate['precision'];
  layout: string;
  modelFile: { sha256: string; length: number };
  golden: { sha256: string; length: number; count: number };
  io: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  reason: string;
  metrics: CandidateMetrics;
  /** What host selection picks (the first candidate that meets every budget, host latency included). */
  hostPick: boolean;
  /** The trial's reference: fp32 if kept, else the first kept. */
  reference: boolean;
}

export interface ArtifactOutcome {
  profile: string;
  status: 'built' | 'skipped' | 'failed';
  reason?: string;
  format?: 'onnx' | 'tflite';
  precision?: Candidate['precision'];
  layout?: string;
  modelFile?: { sha256: string; length: number };
  golden?: { sha256: string; length: number; count: number };
  io?: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  decisions: CandidateDecision[];
  /** A `device` build: every kept candidate, in the profile's order (the fields above are the host's pick, or the reference without one). */
  candidates?: KeptCandidate[];
}

export type Progress = (p: { step: string; done: number; total: number }) => void;

/** Evaluation inputs per sample cost: enough for a stable top-1 figure, bounded for big inputs. */
function evaluationCap(ds: Dataset): number {
  const perSample = ds.data.length / Math.max(1, sampleCount(ds));
  return perSample > 100_000 ? 128 : 1000;
}

interface Produced {
  bytes: Uint8Array;
  sha256?: string;
  metrics: CandidateMetrics;
  io: { inputs: TensorSpec[]; outputs: TensorSpec[] };
  layout: string;
  tfliteInputPerm?: number[];
  report?: unknown;
}

export async function buildArtifacts(job: BuildJob, progress: Progress = () => undefined): Promise<ArtifactOutcome[]> {
  const blobs = new BlobStore(job.blobDir);
  const original = new Uint8Array(await readFile(blobs.path(job.model.sha256)));
  if (job.model.format === 'tflite') return packageTfliteUpload(job, blobs, original);

  const proto = decodeModel(original);
  const input = inspectModel(original).inputs[0]!;
  const calibration = job.data.calibration ? await loadNpyDataset(blobs.path(job.data.calibration)) : undefined;
  if (calibration) checkDataset(calibration, input);
  let evalData: Dataset | undefined;
  let labels: number[] | undefined;
  let dataKind: CandidateMetrics['data'] = 'synthetic';
  if (job.data.evaluation) {
    evalData = await loadNpyDataset(blobs.path(job.data.evaluation));
    checkDataset(evalData, input);
    dataKind = 'evaluation';
    if (job.data.labels) {
      labels = await loadLabels(blobs.path(job.data.labels));
      checkLabels(evalData, labels, 'labels');
    }
  } else if (calibration) {
    evalData = calibration;
    dataKind = 'calibration';
  } else {
    // Enough samples that one flipped arg-max is not by itself a 1% disagreement.
    evalData = syntheticDataset(job.model.inputs[0]!, 256);
  }
  const cap = evaluationCap(evalData);
  if (sampleCount(evalData) > cap) {
    evalData = takeSamples(evalData, cap);
    labels = labels?.slice(0, cap);
  }

  const largest = largestActivationElements(proto);
  const cache = new Map<string, Promise<Produced>>();
  const goldenCache = new Map<string, Promise<{ sha256: string; length: number; count: number }>>();
  let referenceOutputs: Promise<Float32Array> | undefined;

  const produce = (c: Candidate): Promise<Produced> => {
    const key = `${c.format}:${c.precision}`;
    let p = cache.get(key);
    if (!p) {
      p = c.format === 'onnx'
        ? produceOnnx(c, original, proto, calibration, evalData!, labels, dataKind, largest)
        : produceTflite(c, original, calibration, evalData!, labels, dataKind, largest, () => (referenceOutputs ??= onnxOutputs(original, evalData!)));
      cache.set(key, p);
    }
    return p;
  };

  const goldenOf = (c: Candidate, p: Produced): Promise<{ sha256: string; length: number; count: number }> => {
    const key = `${c.format}:${c.precision}`;
    let golden = goldenCache.get(key);
    if (!golden) {
      golden = (async () => {
        const g = c.format === 'onnx' ? await computeOnnxGolden(p.bytes, p.io.inputs) : await computeTfliteGolden(p.bytes, job.model.inputs, p.tfliteInputPerm);
        const bytes = Buffer.from(JSON.stringify(g));
        const put = await blobs.putBytes(bytes);
        return { sha256: put.sha256, length: put.sizeBytes, count: g.samples.length };
      })();
      goldenCache.set(key, golden);
    }
    return golden;
  };
  const modelBlobOf = async (p: Produced): Promise<{ sha256: string; length: number }> => {
    const modelBlob = p.sha256 ? { sha256: p.sha256, length: p.bytes.length } : await blobs.putBytes(p.bytes).then((r) => ({ sha256: r.sha256, length: r.sizeBytes }));
    p.sha256 = modelBlob.sha256;
    return modelBlob;
  };

  const device = job.selection === 'device';
  const outcomes: ArtifactOutcome[] = [];
  let done = 0;
  for (const profile of job.profiles) {
    progress({ step: `profile ${profile.id}`, done, total: job.profiles.length });
    const candidates = candidatesFor(profile, 'onnx');
    const decisions: CandidateDecision[] = [];
    let chosen: { c: Candidate; p: Produced } | undefined;
    /** A device build: every candidate meeting the budgets but the host's latency. */
    const kept: { c: Candidate; p: Produced; reason: string }[] = [];
    for (const c of candidates) {
      const t0 = performance.now();
      try {
        const p = await produce(c);
        const verdict = judgeCandidate(profile, c, p.metrics);
        decisions.push({ ...c, ...verdict, metrics: p.metrics, ms: Math.round(performance.now() - t0) });
        if (verdict.accepted && !chosen) chosen = { c, p };
        if (!device) {
          if (verdict.accepted) break;
          continue;
        }
        const onDevice = verdict.accepted ? verdict : judgeCandidate(profile, c, p.metrics, { hostLatency: false });
        if (onDevice.accepted) kept.push({ c, p, reason: onDevice.reason });
      } catch (err) {
        decisions.push({ ...c, accepted: false, reason: errorMessage(err), ms: Math.round(performance.now() - t0) });
      }
    }
    const built = chosen ?? (kept.length ? (kept.find((k) => k.c.precision === 'fp32') ?? kept[0]!) : undefined);
    if (!built) {
      const why = candidates.length === 0
        ? `profile ${profile.id} takes ${profile.formats.join('/')} at ${profile.precisions.join('/')}; nothing to build from an ONNX upload`
        : `no variant met the profile's budgets: ${decisions.map((d) => `${d.format} ${d.precision}: ${d.reason}`).join('; ')}`;
      outcomes.push({ profile: profile.id, status: 'skipped', reason: why, decisions });
      done++;
      continue;
    }
    const { c, p } = built;
    const golden = await goldenOf(c, p);
    const modelBlob = await modelBlobOf(p);
    let keptOut: KeptCandidate[] | undefined;
    if (device) {
      const reference = kept.find((k) => k.c.precision === 'fp32') ?? kept[0]!;
      keptOut = [];
      for (const k of kept) {
        keptOut.push({
          format: k.c.format, precision: k.c.precision, layout: k.p.layout, modelFile: await modelBlobOf(k.p), golden: await goldenOf(k.c, k.p), io: k.p.io,
          reason: k.reason, metrics: k.p.metrics, hostPick: chosen?.c === k.c, reference: k === reference,
        });
      }
    }
    outcomes.push({
      profile: profile.id, status: 'built', format: c.format, precision: c.precision, layout: p.layout,
      modelFile: modelBlob, golden, io: p.io, decisions, ...(keptOut ? { candidates: keptOut } : {}),
    });
    done++;
  }
  progress({ step: 'done', done, total: job.profiles.length });
  return outcomes;
}

async function produceOnnx(c: Candidate, original: Uint8Array, proto: ModelProto, calibration: Dataset | undefined, evalData: Dataset,
  labels: number[] | undefined, dataKind: CandidateMetrics['data'], largest: number): Promise<Produced> {
  const io = { inputs: inspectIo(original).inputs, outputs: inspectIo(original).outputs };
  if (c.precision === 'fp32') {
    // The upload itself: the reference every other variant is measured against.
    return {
      bytes: original, io, layout: 'NCHW',
      metrics: { sizeBytes: original.length, sizeRatio: 1, estimatedRamBytes: onnxRam(original.length, largest), samples: 0, data: dataKind, top1Agreement: 1, maxAbsError: 0, cosineMin: 1 },
    };
  }
  if (c.precision === 'int8-static' && !calibration) throw new EdgepackError('CALIBRATION_REQUIRED', 'int8-static needs calibration data: upload it with POST /v1/models/:id/datasets?kind=calibration');
  const { bytes, report } = await optimizeModelBytes(proto, {
    precision: c.precision as 'fp16' | 'int8-dynamic' | 'int8-static',
    ...(calibration ? { calibration } : {}),
    // U8S8 (uint8 activations, int8 weights) is onnxruntime's own default and what its x86
    // kernels fuse fully (S8S8 leaves residual-Add convs unfused, slower than fp32); its arm64
    // kernels take it as well, so one choice serves every ONNX profile.
    ...(c.precision === 'int8-static' ? { activationType: 'uint8' as const } : {}),
  });
  // 100 interleaved runs: the ratio decides selection, and small models sit near 1.0.
  const e = await evaluateModels(original, bytes, evalData, { ...(labels ? { labels } : {}), latencyRuns: 100 });
  return {
    bytes, io, layout: 'NCHW', report,
    metrics: {
      sizeBytes: bytes.length, sizeRatio: e.sizeRatio, estimatedRamBytes: onnxRam(bytes.length, largest), samples: e.samples, data: dataKind,
      top1Agreement: e.top1Agreement, maxAbsError: e.maxAbsError, cosineMin: e.cosineMin,
      ...(e.top1DropPoints !== undefined ? { referenceTop1: e.referenceTop1!, candidateTop1: e.candidateTop1!, top1DropPoints: e.top1DropPoints } : {}),
      ...(e.latency ? { latencyRatio: e.latency.ratio } : {}),
    },
  };
}

async function produceTflite(c: Candidate, original: Uint8Array, calibration: Dataset | undefined, evalData: Dataset, labels: number[] | undefined,
  dataKind: CandidateMetrics['data'], largest: number, reference: () => Promise<Float32Array>): Promise<Produced> {
  if (c.precision === 'int8' && !calibration) throw new EdgepackError('CALIBRATION_REQUIRED', 'full-integer int8 needs calibration data: upload it with POST /v1/models/:id/datasets?kind=calibration');
  const conv = await convertOnnxToTflite(original, {
    precision: c.precision as 'fp32' | 'int8-dynamic' | 'int8',
    ...(calibration ? { calibration: { data: calibration.data, shape: calibration.shape, maxSamples: 64 } } : {}),
  });
  const perm = conv.inputs[0]?.layout === 'NHWC' ? NCHW_TO_NHWC : undefined;
  const ref = await reference();
  const m = await compareTflite(conv.tflite, ref, evalData, labels, perm);
  const bytesPerElement = c.precision === 'int8' ? 1 : 4;
  const io = {
    inputs: conv.inputs.map((i) => ({ name: i.name, type: 'float32' as const, shape: i.shape })),
    outputs: conv.outputs.map((o) => ({ name: o.name, type: 'float32' as const, shape: o.shape })),
  };
  return {
    bytes: conv.tflite, io, layout: conv.inputLayout, ...(perm ? { tfliteInputPerm: perm } : {}),
    metrics: {
      sizeBytes: conv.tflite.length, sizeRatio: conv.tflite.length / original.length,
      // The model sits in flash on a microcontroller; RAM is the tensor arena: about two live activations.
      estimatedRamBytes: 2 * largest * bytesPerElement + 16 * 1024,
      samples: m.samples, data: dataKind, top1Agreement: m.agreement, maxAbsError: m.maxAbs, cosineMin: m.cosMin,
      ...(labels ? { referenceTop1: m.refTop1!, candidateTop1: m.candTop1!, top1DropPoints: (m.refTop1! - m.candTop1!) * 100 } : {}),
    },
  };
}

function inspectIo(bytes: Uint8Array): { inputs: TensorSpec[]; outputs: TensorSpec[] } {
  const i = inspectModel(bytes);
  const spec = (t: { name: string; type: string; shape: (number | string)[] }): TensorSpec => ({ name: t.name, type: t.type as TensorSpec['type'], shape: t.shape });
  return { inputs: i.inputs.map(spec), outputs: i.outputs.map(spec) };
}

/** ORT holds the weights (sometimes twice, pre-packed) plus a few live activations and its own arena. */
function onnxRam(modelBytes: number, largestActivation: number): number {
  return 2 * modelBytes + 3 * largestActivation * 4 + 24 * 2 ** 20;
}

function largestActivationElements(model: ModelProto): number {
  const shapes = inferShapes(model, { defaultSymbolValue: 1 });
  const weights = new Set(model.graph.initializer.map((t) => t.name));
  let max = 0;
  for (const [name, s] of shapes) {
    if (weights.has(name)) continue;
    const n = staticSize(s.shape);
    if (n !== undefined && n > max) max = n;
  }
  return max;
}

function syntheticDataset(spec: TensorSpec, count: number): Dataset {
  const feeds = goldenInputs([spec], count, 99);
  const dims = [count, ...(feeds[0]![spec.name]!.dims.slice(1) as number[])];
  const per = feeds[0]![spec.name]!.data.length;
  const data = new Float32Array(per * count);
  feeds.forEach((f, i) => data.set(f[spec.name]!.data as Float32Array, i * per));
  return { source: 'synthetic standard-normal inputs', shape: dims, data };
}

async function onnxOutputs(model: Uint8Array, ds: Dataset): Promise<Float32Array> {
  const s = await ort.InferenceSession.create(model, { intraOpNumThreads: 1 });
  try {
    const n = sampleCount(ds);
    const per = ds.data.length / n;
    const parts: Float32Array[] = [];
    for (let i = 0; i < n; i += 50) {
      const k = Math.min(50, n - i);
      const out = await s.run({ [s.inputNames[0]!]: new ort.Tensor('float32', ds.data.subarray(i * per, (i + k) * per), [k, ...ds.shape.slice(1)]) });
      parts.push(Float32Array.from(out[s.outputNames[0]!]!.data as Float32Array));
    }
    const all = new Float32Array(parts.reduce((a, p) => a + p.length, 0));
    let off = 0;
    for (const p of parts) { all.set(p, off); off += p.length; }
    return all;
  } finally {
    await s.release();
  }
}

async function compareTflite(tflite: Uint8Array, reference: Float32Array, ds: Dataset, labels: number[] | undefined, perm: number[] | undefined) {
  const session = await openLiteRtSession(tflite);
  try {
    const n = sampleCount(ds);
    const per = ds.data.length / n;
    const sampleShape = [1, ...ds.shape.slice(1)];
    const outPer = reference.length / n;
    let agree = 0, refOk = 0, candOk = 0, maxAbs = 0, cosMin = 1;
    for (let i = 0; i < n; i++) {
      let x = ds.data.slice(i * per, (i + 1) * per);
      let dims = sampleShape;
      if (perm) { x = transposeData(x, sampleShape, perm); dims = perm.map((p) => sampleShape[p]!); }
      const out = await session.run({ [session.inputs[0]!.name]: { data: x, dims } });
      const y = out[session.outputs[0]!.name]!.data as Float32Array;
      const r = reference.subarray(i * outPer, (i + 1) * outPer);
      let ra = 0, ca = 0, dot = 0, na = 0, nb = 0;
      for (let j = 0; j < outPer; j++) {
        if (r[j]! > r[ra]!) ra = j;
        if (y[j]! > y[ca]!) ca = j;
        maxAbs = Math.max(maxAbs, Math.abs(r[j]! - y[j]!));
        dot += r[j]! * y[j]!; na += r[j]! * r[j]!; nb += y[j]! * y[j]!;
      }
      if (ra === ca) agree++;
      if (labels) { if (ra === labels[i]) refOk++; if (ca === labels[i]) candOk++; }
      cosMin = Math.min(cosMin, na === 0 && nb === 0 ? 1 : dot / (Math.sqrt(na * nb) || 1));
    }
    return { samples: n, agreement: agree / n, maxAbs, cosMin, ...(labels ? { refTop1: refOk / n, candTop1: candOk / n } : {}) };
  } finally {
    session.close();
  }
}

/** Golden samples through LiteRT, the runtime the device uses; inputs in the model's own layout. */
async function computeTfliteGolden(tflite: Uint8Array, onnxInputs: TensorSpec[], perm: number[] | undefined, count = 3): Promise<GoldenFile> {
  const session = await openLiteRtSession(tflite);
  try {
    const samples: GoldenFile['samples'] = [];
    for (const feeds of goldenInputs(onnxInputs.slice(0, 1), count)) {
      const t = feeds[onnxInputs[0]!.name]!;
      let data = t.data as Float32Array;
      let dims = [...t.dims] as number[];
      if (perm) { data = transposeData(data, dims, perm); dims = perm.map((p) => (t.dims as number[])[p]!); }
      const name = session.inputs[0]!.name;
      const out = await session.run({ [name]: { data, dims } });
      samples.push({
        inputs: { [name]: encodeTensor('float32', dims, data) },
        outputs: Object.fromEntries(Object.entries(out).map(([k, v]) => [k, encodeTensor('float32', v.dims, v.data as Float32Array)])),
      });
    }
    return { samples };
  } finally {
    session.close();
  }
}

/** A .tflite upload is packaged as is for TFLite profiles it fits; ONNX profiles cannot take it. */
async function packageTfliteUpload(job: BuildJob, blobs: BlobStore, bytes: Uint8Array): Promise<ArtifactOutcome[]> {
  const out: ArtifactOutcome[] = [];
  let golden: { sha256: string; length: number; count: number } | undefined;
  for (const profile of job.profiles) {
    if (!profile.formats.includes('tflite')) {
      out.push({ profile: profile.id, status: 'skipped', reason: `profile ${profile.id} takes ${profile.formats.join('/')}; a TFLite upload is not converted back to ONNX`, decisions: [] });
      continue;
    }
    if (bytes.length > profile.budgets.maxModelBytes) {
      out.push({ profile: profile.id, status: 'skipped', reason: `model is ${bytes.length} bytes, over the profile's ${profile.budgets.maxModelBytes}-byte budget`, decisions: [] });
      continue;
    }
    if (!golden) {
      const g = await computeTfliteGolden(bytes, job.model.inputs, undefined);
      const put = await blobs.putBytes(Buffer.from(JSON.stringify(g)));
      golden = { sha256: put.sha256, length: put.sizeBytes, count: g.samples.length };
    }
    out.push({
      profile: profile.id, status: 'built', format: 'tflite', precision: job.model.precision ?? 'fp32', layout: 'as uploaded',
      modelFile: { sha256: job.model.sha256, length: bytes.length }, golden, io: { inputs: job.model.inputs, outputs: job.model.outputs }, decisions: [],
    });
  }
  return out;
}
