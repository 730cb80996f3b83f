/**
 * The answer to GET/HEAD for one stored representation, shared by the OSTree routes (/repo/) and
 * the pack routes (/api/v1/packs/): 304 on a matching validator, 416 / 206 for ranges, 200 with
 * the body streamed from the store (never read whole unless the caller already holds it).
 */
import type { Context } from 'hono';
import type { BlobStat, BlobStore } from '../src/store/blob-store.js';
import type { AppEnv } from './auth.js';
import { toWebStream } from './body-stream.js';
import { notFound } from './errors.js';
import { chooseRange, notModified, type Validators } from './http-cache.js';

/** Content-addressed, write-once bytes: any cache may keep them for a year. */
export const IMMUTABLE = 'public, max-age=31536000, immutable';
/** How long a presigned store URL stays valid. */
export const PRESIGN_SECONDS = 3600;
/** A redirect is cacheable only well within the URL's lifetime, and only by the client itself. */
export const REDIRECT_CACHE = 'private, max-age=300';

export interface Served {
  /** Bytes in hand, or a blob to stream from the store. */
  body: Buffer | { stat: BlobStat; key: string };
  validators: Validators;
  cacheControl: string;
  contentType: string;
}

export async function respond(c: Context<AppEnv>, blobs: BlobStore, s: Served): Promise<Response> {
  const size = Buffer.isBuffer(s.body) ? s.body.length : s.body.stat.size;
  const headers = new Headers({
    'cache-control': s.cacheControl,
    etag: s.validators.etag,
    'accept-ranges': 'bytes',
    'content-type': s.contentType,
  });
  if (s.validators.lastModified) headers.set('last-modified', s.validators.lastModified.toUTCString());
  if (notModified(c.req.raw.headers, s.validators)) return new Response(null, { status: 304, headers });
  const range = chooseRange(c.req.raw.headers, size, s.validators);
  if (range.kind === 'unsatisfiable') {
    headers.set('content-range', `bytes */${size}`);
    headers.set('content-length', '0');
    headers.delete('content-type');
    return new Response(null, { status: 416, headers });
  }
  const [start, end] = range.kind === 'partial' ? [range.start, range.end] : [0, size];
  headers.set('content-length', String(end - start));
  if (range.kind === 'partial') headers.set('content-range', `bytes ${start}-${end - 1}/${size}`);
  const status = range.kind === 'partial' ? 206 : 200;
  if (c.req.method === 'HEAD') return new Response(null, { status, headers });
  if (Buffer.isBuffer(s.body))
    return new Response(new Uint8Array(s.body.subarray(start, end)), { status, headers });
  const stream = await blobs.readStream(s.body.key, range.kind === 'partial' ? { start, end } : undefined);
  if (!stream) throw notFound(s.body.key);
  return new Response(toWebStream(stream), { status, headers });
}
