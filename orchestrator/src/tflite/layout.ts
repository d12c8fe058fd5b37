// ONNX is NCHW, TFLite NHWC. A 4-D activation kept in NHWC is the ONNX tensor permuted by
// NCHW_TO_NHWC; constants that meet it (weights, broadcast operands) get the same permutation.

/** TFLite dim i holds ONNX dim NCHW_TO_NHWC[i]. */
export const NCHW_TO_NHWC = [0, 2, 3, 1];
/** Inverse: TFLite dim i of an NCHW tensor restored from NHWC. */
export const NHWC_TO_NCHW = [0, 3, 1, 2];
/** ONNX axis of a 4-D tensor → its axis in the NHWC TFLite tensor. */
export const ONNX_AXIS_TO_NHWC = [0, 3, 1, 2];

export function permuteShape(shape: readonly number[], perm: readonly number[]): number[] {
  return perm.map((p) => shape[p]);
}

/** Row-major transpose: out dim i = in dim perm[i]. */
export function transposeData<T extends Float32Array | number[]>(data: T, shape: readonly number[], perm: readonly number[]): T {
  const rank = shape.length;
  const outShape = permuteShape(shape, perm);
  const inStrides = stridesOf(shape);
  const n = data.length;
  const out = (Array.isArray(data) ? new Array<number>(n) : new Float32Array(n)) as T;
  const idx = new Array<number>(rank).fill(0);
  const permStrides = perm.map((p) => inStrides[p]);
  let src = 0;
  for (let o = 0; o < n; o++) {
    out[o] = data[src];
    // Odometer over the output index, tracking the matching input offset.
    for (let d = rank - 1; d >= 0; d--) {
      idx[d]++;
      src += permStrides[d];
      if (idx[d] < outShape[d]) break;
      src -= permStrides[d] * idx[d];
      idx[d] = 0;
    }
  }
  return out;
}

export function stridesOf(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length);
  let acc = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    s[i] = acc;
    acc *= shape[i];
  }
  return s;
}

export function sizeOf(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** NumPy/ONNX multidirectional broadcast of two shapes, or undefined when incompatible. */
export function broadcastShapes(a: readonly number[], b: readonly number[]): number[] | undefined {
  const rank = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < rank; i++) {
    const x = a[a.length - rank + i] ?? 1;
    const y = b[b.length - rank + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) return undefined;
    out.push(x === 1 ? y : x);
  }
  return out;
}
