import type { FastifyPluginAsyncTypebox } from '@fastify/type-provider-typebox';
import { Type, type Static } from '@sinclair/typebox';
import { EdgepackError } from '@edgepack/protocol';
import type { BundleRecord } from '../../records.js';
import { Access, type Caller } from '../access.js';
import type { RoutePluginOptions } from '../app-deps.js';
import { Id, IdParams, ManifestView, StrictObject, Timestamp } from '../schemas.js';

export const BundleView = Type.Object({
  id: Type.String(),
  buildId: Type.String(),
  profile: Type.String(),
  manifest: ManifestView,
  signature: Type.String({ description: 'ed25519 over the canonical JSON of the manifest, base64' }),
  createdAt: Timestamp,
}, { title: 'Bundle' });

/**
 * The manifest is a signed document: it goes out exactly as it was signed (its schema is
 * protocol's ManifestSchema, which names every field buildManifest writes), never rebuilt.
 */
export function bundleView(b: BundleRecord): Static<typeof BundleView> {
  return { id: b.id, buildId: b.buildId, profile: b.profile, manifest: b.manifest, signature: b.signature, createdAt: b.createdAt };
}

const BundleResponse = Type.Object({ bundle: BundleView }, { title: 'BundleResponse' });
const FileParams = StrictObject({ id: Id, path: Type.String({ minLength: 1, maxLength: 256, description: 'a file name from the manifest' }) });
const Binary = (description: string) => ({ description, content: { 'application/octet-stream': { schema: { type: 'string', format: 'binary' } } } });

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

export const bundleRoutes: FastifyPluginAsyncTypebox<RoutePluginOptions> = async (app, { deps }) => {
  const { store, blobs } = deps;

  /**
   * A device reads only bundles assigned to it, decided by our own record of assignments. It
   * learns nothing about other bundles, not even whether they exist: refused before the lookup.
   */
  const loadBundle = (caller: Caller | undefined, id: string) => {
    if (caller?.kind === 'device' && !store.isBundleAssigned(caller.deviceId, id)) {
      throw new EdgepackError('BUNDLE_NOT_ASSIGNED', `bundle ${id} is not assigned to this device`);
    }
    const bundle = store.getBundle(id);
    if (!bundle) throw new EdgepackError('BUNDLE_NOT_FOUND', `bundle ${id} not found`);
    return bundle;
  };

  app.get('/bundles/:id', {
    config: { access: Access.readOrDevice, errors: ['BUNDLE_NOT_FOUND', 'BUNDLE_NOT_ASSIGNED'] },
    schema: { summary: 'A bundle\'s signed manifest', tags: ['bundles'], params: IdParams, response: { 200: BundleResponse } },
  }, async (req) => ({ bundle: bundleView(loadBundle(req.caller, req.params.id)) }));

  app.get('/bundles/:id/files/:path', {
    config: { access: Access.readOrDevice, errors: ['BUNDLE_NOT_FOUND', 'BUNDLE_NOT_ASSIGNED', 'FILE_NOT_IN_BUNDLE', 'RANGE_NOT_SATISFIABLE', 'BLOB_MISSING'] },
    schema: {
      summary: 'A bundle file, whole or one byte range (Range: bytes=a-b)', tags: ['bundles'], params: FileParams,
      response: { 200: Binary('the whole file'), 206: Binary('the requested range, with Content-Range') },
    },
  }, async (req, reply) => {
    const b = loadBundle(req.caller, req.params.id);
    const file = b.manifest.files.find((f) => f.path === req.params.path);
    if (!file) throw new EdgepackError('FILE_NOT_IN_BUNDLE', `bundle ${b.id} has no file ${req.params.path}`);
    const size = file.length;
    reply.header('Accept-Ranges', 'bytes').header('ETag', `"${file.sha256}"`).type('application/octet-stream');
    const range = parseRange(req.headers.range, size);
    if (range === 'unsatisfiable') {
      reply.header('Content-Range', `bytes */${size}`);
      throw new EdgepackError('RANGE_NOT_SATISFIABLE', `range ${req.headers.range} is outside the ${size}-byte file`);
    }
    // Opened before the answer starts, so a missing blob is a logged 500 BLOB_MISSING in our shape.
    if (!range) return reply.header('Content-Length', size).send(await blobs.openStream(file.sha256));
    const body = await blobs.openStream(file.sha256, range);
    return reply.status(206)
      .header('Content-Range', `bytes ${range.start}-${range.end}/${size}`)
      .header('Content-Length', range.end - range.start + 1)
      .send(body);
  });
};
