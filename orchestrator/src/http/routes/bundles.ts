import type { FastifyInstance, FastifyRequest } from 'fastify';
import { Type, type Static } from '@sinclair/typebox';
import type { AppDeps } from '../app.js';
import { HttpError } from '../errors.js';

const BundleParams = Type.Object({ id: Type.String() });
const FileParams = Type.Object({ id: Type.String(), path: Type.String() });

/** Parses a single `bytes=a-b` range (RFC 9110 §14.1.2); multi-range requests get the whole file. */
export function parseRange(header: string | undefined, size: number): { start: number; end: number } | 'unsatisfiable' | null {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(0, size - suffix);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  }
  if (start >= size || start > end) return 'unsatisfiable';
  return { start, end };
}

export function registerBundleRoutes(app: FastifyInstance, deps: AppDeps): void {
  const { store, blobs } = deps;

  const loadBundle = (req: FastifyRequest, id: string) => {
    const bundle = store.getBundle(id);
    if (!bundle) throw new HttpError(404, 'BUNDLE_NOT_FOUND', `bundle ${id} not found`);
    if (!req.caller) throw new HttpError(401, 'UNAUTHORIZED', 'bundle access needs the admin token or a device credential');
    if (req.caller.kind === 'device' && !store.isBundleAssigned(req.caller.deviceId, id)) {
      throw new HttpError(403, 'FORBIDDEN', `bundle ${id} is not assigned to this device`);
    }
    return bundle;
  };

  app.get<{ Params: Static<typeof BundleParams> }>('/v1/bundles/:id', { schema: { params: BundleParams }, config: { deviceAccess: true } }, async (req) => {
    const b = loadBundle(req, req.params.id);
    return { bundle: { id: b.id, buildId: b.buildId, profile: b.profile, manifest: b.manifest, signature: b.signature, createdAt: b.createdAt } };
  });

  app.get<{ Params: Static<typeof FileParams> }>('/v1/bundles/:id/files/:path', { schema: { params: FileParams }, config: { deviceAccess: true } }, async (req, reply) => {
    const b = loadBundle(req, req.params.id);
    const file = b.manifest.files.find((f) => f.path === req.params.path);
    if (!file) throw new HttpError(404, 'NOT_FOUND', `bundle ${b.id} has no file ${req.params.path}`);
    const size = file.length;
    reply.header('Accept-Ranges', 'bytes').header('ETag', `"${file.sha256}"`).type('application/octet-stream');
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      reply.header('Content-Range', `bytes */${size}`);
      throw new HttpError(416, 'RANGE_NOT_SATISFIABLE', `range ${req.headers.range} is outside the ${size}-byte file`);
    }
    if (!range) return reply.header('Content-Length', size).send(blobs.stream(file.sha256));
    return reply.status(206)
      .header('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
      .header('Content-Length', range.end - range.start + 1)
      .send(blobs.stream(file.sha256, range));
  });
}
