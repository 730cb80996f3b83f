/**
 * The OSTree archive repository, read-only, under /repo/ — what stock `ostree pull` fetches
 * (docs/format.md and ../shared/ostree/FORMAT.md §4):
 *
 *   config, summary, summary.sig     mutable, small   Cache-Control: no-cache, ETag + Last-Modified
 *   refs/heads/<ref>                 mutable, small   idem
 *   objects/XX/<62 hex>.commitmeta   may gain signatures later, so no-cache too
 *   objects/XX/<62 hex>.<ext>        content-addressed and write-once: cached for a year, immutable
 *
 * With `redirectObjects`, a GET of a write-once object (not .commitmeta) is answered 307 to a
 * presigned URL of the store (S3) when the store can make one, so object bytes go straight from the
 * bucket to the client; a store without presigned URLs (a directory) streams as usual.
 *
 * Anything else (delta-indexes/…, deltas/…, refs/remotes/…) is 404, which ostree treats as "none".
 * Every path is matched against these shapes, never joined onto a directory, so no request can
 * name a file outside them. GET and HEAD everywhere; HEAD never opens a stream.
 */
import { createHash } from 'node:crypto';
import { type Context, Hono } from 'hono';
import { RegistryError } from '../src/errors.js';
import { type ObjectType, objectId, sha256 } from '../src/objects/index.js';
import { CONFIG_KEY, refKey, SUMMARY_KEY, SUMMARY_SIG_KEY } from '../src/repo/layout.js';
import { isValidRef } from '../src/repo/refs.js';
import type { Repository } from '../src/repo/repository.js';
import type { BlobStat } from '../src/store/blob-store.js';
import { corrupt as corruptObject } from '../src/store/object-store.js';
import { type AppEnv, requireRead } from './auth.js';
import { ConsistentSummary } from './consistent-summary.js';
import { notFound, storeCorruptResponse } from './errors.js';
import { notModified, stableLastModified } from './http-cache.js';
import { KnownCorrupt } from './known-corrupt.js';
import type { Logger } from './logger.js';
import { IMMUTABLE, PRESIGN_SECONDS, REDIRECT_CACHE, respond, type Served } from './respond.js';

const REVALIDATE = 'no-cache';
const OCTETS = 'application/octet-stream';
const TEXT = 'text/plain; charset=utf-8';

const OBJECT_PATH = /^objects\/([0-9a-f]{2})\/([0-9a-f]{62})\.(filez|dirtree|dirmeta|commit|commitmeta)$/;

export interface OstreeRouteDeps {
  repo: Repository;
  anonymousPull: boolean;
  logger: Logger;
  /** Redirect GETs of immutable objects to presigned store URLs, when the store has them. */
  redirectObjects?: boolean;
  /** Objects found corrupt in the store: answered 500, never served (known-corrupt.ts). */
  corrupt?: KnownCorrupt;
}

/**
 * Paths ostree sends are plain: hex, ref characters, `/`, `.`, `+`, `_`. Percent-escapes, empty or
 * dot segments and backslashes only appear in attempts to reach something else, so they are refused
 * outright (400) rather than decoded. The raw request target is checked when the Node adapter
 * provides it (WHATWG URL parsing has already resolved `..` and `%2e%2e` in `c.req.url`).
 */
function assertPlainPath(c: Context<AppEnv>): string {
  const raw = (c.env as { incoming?: { url?: string } } | undefined)?.incoming?.url;
  const pathname = new URL(c.req.url).pathname;
  const candidates = raw?.startsWith('/') ? [raw.split('?')[0]!, pathname] : [pathname];
  for (const p of candidates) {
    const segments = p.split('/').slice(1);
    const last = segments.length - 1;
    if (/[%\\]/.test(p) || segments.some((s, i) => s === '.' || s === '..' || (s === '' && i < last))) {
      throw new RegistryError('E_USAGE', 'repository paths may not contain escapes, empty or dot segments', {
        path: p.slice(0, 200),
      });
    }
  }
  return pathname.slice('/repo/'.length);
}

function contentEtag(bytes: Buffer): string {
  // 128 bits of sha256 is plenty to tell versions of one small file apart.
  return `"${createHash('sha256').update(bytes).digest('hex').slice(0, 32)}"`;
}

/** A small mutable blob, read whole: its ETag then always describes exactly the bytes sent. */
async function small(repo: Repository, key: string, contentType: string): Promise<Served | undefined> {
  // stat before read: if the blob is replaced in between, Last-Modified is older than the bytes and
  // the client re-fetches next time, rather than being told "not modified" about newer bytes.
  const stat = await repo.blobs.stat(key);
  const bytes = stat && (await repo.blobs.read(key));
  if (!stat || !bytes) return undefined;
  return served(bytes, stat, contentType);
}

function served(bytes: Buffer, stat: BlobStat, contentType: string): Served {
  return {
    body: bytes,
    validators: { etag: contentEtag(bytes), lastModified: stableLastModified(stat.mtimeMs, Date.now()) },
    cacheControl: REVALIDATE,
    contentType,
  };
}

export function ostreeRoutes(deps: OstreeRouteDeps): Hono<AppEnv> {
  const { repo } = deps;
  const corrupt = deps.corrupt ?? new KnownCorrupt(deps.logger);
  const summary = new ConsistentSummary(repo, deps.logger);
  const app = new Hono<AppEnv>();

  app.get('/*', async (c) => {
    requireRead(c, deps.anonymousPull);
    const path = assertPlainPath(c);
    let s: Served | undefined;
    if (path === CONFIG_KEY) s = await small(repo, CONFIG_KEY, TEXT);
    else if (path === SUMMARY_KEY) {
      const snap = await summary.read();
      s = snap && served(snap.bytes, snap.stat, OCTETS);
    } else if (path === SUMMARY_SIG_KEY) {
      // The signature of the summary served now, not the top-level file (consistent-summary.ts).
      const snap = await summary.readSig();
      s = snap && served(snap.bytes, snap.stat, OCTETS);
    } else if (path.startsWith('refs/heads/')) {
      const ref = path.slice('refs/heads/'.length);
      if (isValidRef(ref)) s = await small(repo, refKey(ref), TEXT);
    } else {
      const m = OBJECT_PATH.exec(path);
      const checksum = m ? `${m[1]}${m[2]}` : '';
      const type = m?.[3] === 'filez' ? 'file' : (m?.[3] as ObjectType | undefined);
      if (m && corrupt.has(objectId(checksum, type!))) {
        return storeCorruptResponse(corrupt.refusal(objectId(checksum, type!)), deps.logger, c);
      }
      if (m && m[3] === 'commitmeta') s = await small(repo, path, OCTETS);
      else if (m && type !== 'file' && !(deps.redirectObjects && repo.blobs.presignGet)) {
        // commit, dirtree, dirmeta: small (OSTree caps them at 10 MiB; a sysroot's are ~1 KB), so
        // they are read whole and re-hashed before the first byte leaves; a mismatch is remembered.
        const stat = await repo.blobs.stat(path);
        const bytes = stat && (await repo.blobs.read(path));
        if (stat && bytes) {
          const found = sha256(bytes);
          if (found !== checksum) {
            const e = corruptObject(checksum, type!, found, 'checksum mismatch');
            corrupt.noteFrom(e);
            return storeCorruptResponse(e, deps.logger, c);
          }
          s = {
            body: bytes,
            validators: {
              etag: `"${checksum}.${m[3]}"`,
              lastModified: new Date(Math.floor(stat.mtimeMs / 1000) * 1000),
            },
            cacheControl: IMMUTABLE,
            contentType: OCTETS,
          };
        }
      } else if (m) {
        const etag = `"${m[1]}${m[2]}.${m[3]}"`;
        const presign = deps.redirectObjects ? repo.blobs.presignGet?.bind(repo.blobs) : undefined;
        if (presign && c.req.method === 'GET') {
          // No stat: the store answers 404 itself for a missing object. A client revalidating a copy
          // it got from us names our ETag, which the store does not know, so that is answered here.
          const headers = new Headers({ 'cache-control': REDIRECT_CACHE });
          if (notModified(c.req.raw.headers, { etag })) {
            headers.set('cache-control', IMMUTABLE);
            headers.set('etag', etag);
            return new Response(null, { status: 304, headers });
          }
          headers.set('location', await presign(path, PRESIGN_SECONDS));
          return new Response(null, { status: 307, headers });
        }
        const stat = await repo.blobs.stat(path);
        if (stat) {
          s = {
            body: { stat, key: path },
            // The name is the content (write-once): a strong tag needs no hashing.
            validators: {
              etag,
              lastModified: new Date(Math.floor(stat.mtimeMs / 1000) * 1000),
            },
            cacheControl: IMMUTABLE,
            contentType: OCTETS,
          };
        }
      }
    }
    if (!s) throw notFound(`/repo/${path}`);
    return respond(c, repo.blobs, s);
  });

  return app;
}
