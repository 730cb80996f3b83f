/**
 * Commit packs over HTTP, under /api/v1/packs (docs/http-api.md "Packs"): a whole commit, or the
 * update between two commits, as one pack file instead of one request per object (6,130 for a
 * Debian sysroot).
 *
 *   GET /api/v1/packs/<to>            closure(to)
 *   GET /api/v1/packs/<from>..<to>    closure(to) less closure(from)
 *
 * A pack is generated into the store first (src/repo/packs.ts), then served as a stored file: an
 * object that turns out corrupt or missing is a JSON error, never a 200 cut short. It is the same
 * bytes forever, so it is cacheable forever, with a strong ETag made from its name.
 *
 * Statuses the error table does not give (docs/http-api.md): E_OBJECT_MISSING is 404 here (the pack
 * does not exist, nothing was sent wrong), and E_CORRUPT_OBJECT is 500 (the server's store is damaged;
 * the request was fine).
 */
import { type Context, Hono } from 'hono';
import { isRegistryError, type RegistryError } from '../src/errors.js';
import { assertChecksum, type Checksum } from '../src/objects/index.js';
import { DEFAULT_LEVEL, PACK_MAGIC } from '../src/pack/format.js';
import type { CommitPacks } from '../src/repo/packs.js';
import { type AppEnv, requireRead } from './auth.js';
import { errorResponse, storeCorruptResponse } from './errors.js';
import { notModified, type Validators } from './http-cache.js';
import type { KnownCorrupt } from './known-corrupt.js';
import type { Logger } from './logger.js';
import { IMMUTABLE, PRESIGN_SECONDS, REDIRECT_CACHE, respond, type Served } from './respond.js';

export const PACK_MEDIA_TYPE = 'application/vnd.sysroot.pack';

export interface PackRouteDeps {
  packs: CommitPacks;
  anonymousPull: boolean;
  logger: Logger;
  /** Redirect GETs to a presigned URL of the stored pack, when the store can make one (S3). */
  redirectObjects?: boolean;
  /** Where an object found corrupt while generating is remembered (no longer served by /repo/). */
  corrupt?: KnownCorrupt;
}

/** `<to>` or `<from>..<to>`, each 64 hex. */
function parseSpec(spec: string): { to: Checksum; from?: Checksum } {
  const dots = spec.indexOf('..');
  if (dots < 0) return { to: assertChecksum(spec, 'pack commit') };
  return {
    from: assertChecksum(spec.slice(0, dots), 'pack "from" commit'),
    to: assertChecksum(spec.slice(dots + 2), 'pack "to" commit'),
  };
}

/**
 * Strong: the name says what is in it, and the format and level say how it is written; a server
 * that ever wrote packs differently would write them under another tag.
 */
function packEtag(to: Checksum, from?: Checksum): string {
  const version = PACK_MAGIC.toString('latin1').toLowerCase();
  return `"${version}-z${DEFAULT_LEVEL}-${from === undefined ? to : `${from}-${to}`}"`;
}

/** Generation errors as JSON, with the statuses a pack needs (see the top of this file). */
function packError(e: unknown, logger: Logger, c: Context<AppEnv>, corrupt?: KnownCorrupt): Response {
  if (isRegistryError(e, 'E_CORRUPT_OBJECT') || isRegistryError(e, 'E_NOT_NORMAL_FORM')) {
    logger.error(`${c.req.method} ${c.req.path}: cannot generate the pack: ${(e as RegistryError).message}`);
    corrupt?.noteFrom(e);
    return storeCorruptResponse(e as RegistryError, logger, c);
  }
  const res = errorResponse(e, logger, c);
  if (isRegistryError(e, 'E_OBJECT_MISSING'))
    return new Response(res.body, { status: 404, headers: res.headers });
  return res;
}

export function packRoutes(deps: PackRouteDeps): Hono<AppEnv> {
  const { packs, logger } = deps;
  const blobs = packs.repo.blobs;
  const app = new Hono<AppEnv>();

  app.get('/:spec', async (c) => {
    requireRead(c, deps.anonymousPull);
    const { to, from } = parseSpec(c.req.param('spec'));
    let pack: Awaited<ReturnType<CommitPacks['get']>>;
    try {
      pack = await packs.get(to, from);
    } catch (e) {
      if (isRegistryError(e) && e.code !== 'E_INTERNAL') return packError(e, logger, c, deps.corrupt);
      throw e;
    }
    const validators: Validators = {
      etag: packEtag(to, from),
      lastModified: new Date(Math.floor(pack.stat.mtimeMs / 1000) * 1000),
    };
    const served: Served = {
      body: { stat: pack.stat, key: pack.key },
      validators,
      cacheControl: IMMUTABLE,
      contentType: PACK_MEDIA_TYPE,
    };
    const presign = deps.redirectObjects ? blobs.presignGet?.bind(blobs) : undefined;
    if (presign && c.req.method === 'GET' && !notModified(c.req.raw.headers, validators)) {
      const location = await presign(pack.key, PRESIGN_SECONDS);
      return new Response(null, {
        status: 307,
        headers: { location, 'cache-control': REDIRECT_CACHE, etag: validators.etag },
      });
    }
    return respond(c, blobs, served);
  });

  return app;
}

/**
 * Start generating the packs a pull of `to` will ask for (its own, and the update from its parent)
 * without waiting for them: called after a ref moved. Failures are logged, never thrown; so is the
 * end (on S3 a sysroot's warm-up reads ~6,100 objects back: a node stopped before it ends leaves the
 * first pull to generate the pack, and operators and the benchmarks want to know when it is done).
 */
export function warmPacks(packs: CommitPacks, to: Checksum, logger: Logger): void {
  const started = Date.now();
  packs.warm(to).then(
    (failures) => {
      if (failures.length === 0)
        logger.info(`packs of ${to} ready (${Date.now() - started} ms after the ref move)`);
      for (const f of failures) {
        const why = isRegistryError(f.error) ? `${f.error.code}: ${f.error.message}` : String(f.error);
        logger.warn(`pack ${f.key} not generated after the ref move: ${why}`);
      }
    },
    (e: unknown) => logger.error(`generating the packs of ${to}`, e),
  );
}
