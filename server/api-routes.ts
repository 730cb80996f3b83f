/**
 * The JSON API under /api/v1 (docs/http-api.md is the contract; openapi.ts describes it). Routes
 * validate every input, call the Repository, and return JSON; errors are thrown and rendered by
 * errors.ts.
 */
import { Hono } from 'hono';
import { RegistryError } from '../src/errors.js';
import { zod } from '../src/lazy-zod.js';
import {
  assertChecksum,
  type Checksum,
  OBJECT_TYPES,
  type ObjectType,
  variantToJson,
} from '../src/objects/index.js';
import { readRepoKeys } from '../src/repo/keys.js';
import { readLastRecord, readRefLog } from '../src/repo/reflog.js';
import { assertRef } from '../src/repo/refs.js';
import { type Repository, refNotFound } from '../src/repo/repository.js';
import {
  type AppEnv,
  actorOf,
  requireAdmin,
  requireCommitmetaUpload,
  requirePushRef,
  requireRead,
  requireUpload,
} from './auth.js';
import { type BodyPace, requestBody } from './body-stream.js';
import { jsonResponse } from './errors.js';
import { readJson } from './json-body.js';
import { OPENAPI } from './openapi.js';
import { receiveObject, type UploadLimits } from './upload.js';

const z = zod();

export interface ApiLimits extends UploadLimits {
  /** Largest JSON body; a missing-objects batch of 100,000 entries is ~9 MB. */
  maxJsonBytes: number;
  /** How fast every request body must arrive (body-stream.ts): a stalled or trickling body gets 408. */
  bodyPace: BodyPace;
}

export interface ApiRouteDeps {
  repo: Repository;
  anonymousPull: boolean;
  limits: ApiLimits;
  /** Called after a ref moved (push or reset), without waiting: the server starts generating packs. */
  onRefMove?: (to: Checksum) => void;
}

const MAX_MISSING_BATCH = 100_000;
/** Reasons end up in every `sysroot log`; a paragraph is plenty. */
const MAX_REASON = 4096;

const objectTypeSchema = z.enum(OBJECT_TYPES as [ObjectType, ...ObjectType[]]);

const MissingBody = z.object({
  objects: z
    .array(z.object({ checksum: z.string(), type: objectTypeSchema }))
    .max(MAX_MISSING_BATCH, `at most ${MAX_MISSING_BATCH} objects per request`),
});

const RefUpdateBody = z.object({
  from: z.string().nullable(),
  to: z.string(),
  reason: z.string().max(MAX_REASON).optional(),
});

const ResetBody = z.object({
  to: z.string(),
  reason: z.string().trim().min(1, 'a rollback needs a reason').max(MAX_REASON),
});

const OBJECT_NAME = /^([0-9a-f]{64})\.(commit|commitmeta|dirtree|dirmeta|file)$/;

function parseObjectName(name: string): { checksum: Checksum; type: ObjectType } {
  const m = OBJECT_NAME.exec(name);
  if (!m) {
    throw new RegistryError(
      'E_USAGE',
      `"${name.slice(0, 100)}" is not <64 hex>.<type>`,
      { found: name.slice(0, 100) },
      `type is one of ${OBJECT_TYPES.join(', ')} (.file for .filez bytes)`,
    );
  }
  return { checksum: m[1]!, type: m[2] as ObjectType };
}

export function apiRoutes(deps: ApiRouteDeps): Hono<AppEnv> {
  const { repo, limits } = deps;
  const app = new Hono<AppEnv>();
  const ok = (value: unknown, status = 200) => jsonResponse(value, status);

  app.get('/openapi.json', () => ok(OPENAPI));

  app.get('/refs', async (c) => {
    requireRead(c, deps.anonymousPull);
    const refs = await repo.listRefs();
    return ok({ refs: refs.map((r) => ({ ref: r.name, commit: r.head })) });
  });

  app.get('/refs/:ref{.+}', async (c) => {
    requireRead(c, deps.anonymousPull);
    const ref = assertRef(c.req.param('ref'));
    // The head a ref move is checked against is the newest ref log record; refs/heads follows it a
    // moment later (another node may be between the two writes). A pusher that lost a race asks here
    // for the head to rebase on, so it gets the log's, or it would rebase on the head it already had.
    const commit = (await readLastRecord(repo.blobs, ref))?.record.to ?? (await repo.readRef(ref));
    if (!commit) throw refNotFound(ref);
    return ok({ ref, commit });
  });

  app.get('/keys', async (c) => {
    requireRead(c, deps.anonymousPull);
    const { keys, revocations } = await readRepoKeys(repo.blobs);
    const revoked = new Map(revocations.map((r) => [r.id, r]));
    const signing = new Set(repo.signingKeys.map((k) => k.id));
    return ok({
      keys: keys.map((k) => ({
        ...k,
        signing: signing.has(k.id),
        revoked: revoked.get(k.id)
          ? { time: revoked.get(k.id)!.revoked, reason: revoked.get(k.id)!.reason }
          : null,
      })),
    });
  });

  app.get('/log/:ref{.+}', async (c) => {
    requireRead(c, deps.anonymousPull);
    const ref = assertRef(c.req.param('ref'));
    if (c.req.query('format') === 'jsonl') {
      // The records' stored bytes, oldest first, one per line: what `sysroot log --export` prints and
      // an outsider verifies (prev hashes are over exactly these bytes).
      const records = await readRefLog(repo.blobs, ref);
      if (records.length === 0) throw refNotFound(ref);
      const body = Buffer.concat(records.map((r) => r.bytes));
      return new Response(new Uint8Array(body), {
        headers: {
          'content-type': 'application/x-ndjson',
          'content-length': String(body.length),
          'cache-control': 'no-store',
        },
      });
    }
    const history = await repo.log(ref);
    return ok({ ref, history: history.map((r) => ({ ...r, pin: `${r.ref}@${r.to}` })) });
  });

  app.get('/commits/:sha', async (c) => {
    requireRead(c, deps.anonymousPull);
    const sha = assertChecksum(c.req.param('sha'), 'commit');
    if (!(await repo.objects.has(sha, 'commit'))) {
      throw new RegistryError('E_NOT_FOUND', `commit ${sha} not found`, { object: `${sha}.commit` });
    }
    const commit = await repo.readCommit(sha);
    const db = await repo.index();
    let row = db.getCommit(sha);
    if (!row) {
      // A commit no ref has pointed at reaches the index here, on first view; a partial commit has no
      // stats (nor one with a corrupt dirtree: fsck reports those). Subtrees the index knows complete
      // are not walked again.
      const stats = await repo.commitStats(sha).catch(() => undefined);
      if (stats) {
        row = {
          checksum: sha,
          parent: commit.parent,
          subject: commit.subject,
          body: commit.body,
          timestamp: commit.timestamp,
          rootTree: commit.rootTree,
          rootMeta: commit.rootMeta,
          metadata: Object.fromEntries(commit.metadata.map(([k, v]) => [k, variantToJson(v)])),
          ...stats,
        };
        db.putCommit(row);
      }
    }
    return ok({
      commit: sha,
      parent: commit.parent,
      subject: commit.subject,
      body: commit.body,
      timestamp: commit.timestamp,
      metadata: Object.fromEntries(commit.metadata.map(([k, v]) => [k, variantToJson(v)])),
      totalSize: row?.totalSize ?? null,
      fileCount: row?.fileCount ?? null,
      refs: db.refsOf(sha),
    });
  });

  // A read: anyone who may GET /repo/objects/… may ask which of them exist, in one request.
  app.post('/objects/missing', async (c) => {
    requireRead(c, deps.anonymousPull);
    const body = await readJson(c, MissingBody, limits);
    const seen = new Set<string>();
    const unique = body.objects.filter((o) => {
      assertChecksum(o.checksum, `object checksum`);
      const k = `${o.checksum}.${o.type}`;
      if (seen.has(k)) return false;
      seen.add(k);
      return true;
    });
    // Objects the index knows stored (verified uploads; nothing is ever deleted) need no stat: a push
    // of v2 on top of v1 asks about ~6,100 objects, 6,035 of them there (stats: ~135 ms). What the
    // index lacks, or all of it if it cannot be opened, is asked of the store, in one go.
    const db = await repo.index().catch(() => undefined);
    const unknown = db
      ? db.read(() => unique.filter((o) => db.storedObject(o.checksum, o.type) === undefined))
      : unique;
    const present = await repo.objects.hasMany(unknown);
    return ok({
      missing: unknown.filter((_, i) => !present[i]).map((o) => ({ checksum: o.checksum, type: o.type })),
    });
  });

  app.put('/objects/:name', async (c) => {
    const principal = requireUpload(c);
    const { checksum, type } = parseObjectName(c.req.param('name'));
    if (type === 'commitmeta') requireCommitmetaUpload(principal, `${checksum}.commitmeta`);
    const length = c.req.header('content-length');
    const declared = length === undefined ? undefined : Number(length);
    const created = await receiveObject(
      repo,
      checksum,
      type,
      requestBody(c, limits.bodyPace),
      declared,
      limits,
    );
    return ok({ checksum, type, created }, created ? 201 : 200);
  });

  app.put('/refs/:ref{.+}', async (c) => {
    const ref = assertRef(c.req.param('ref'));
    const principal = requirePushRef(c, ref);
    const body = await readJson(c, RefUpdateBody, limits);
    const from = body.from === null ? null : assertChecksum(body.from, '"from"');
    const to = assertChecksum(body.to, '"to"');
    // As a local commit does, the ref log says why with the commit's subject unless told otherwise.
    const reason =
      body.reason ?? ((await repo.objects.has(to, 'commit')) ? (await repo.readCommit(to)).subject : '');
    const rec = await repo.moveRef({
      ref,
      expected: from,
      to,
      action: 'push',
      reason,
      actor: actorOf(principal),
    });
    deps.onRefMove?.(rec.to);
    return ok({ ref, commit: rec.to, seq: rec.seq });
  });

  app.post('/reset/:ref{.+}', async (c) => {
    const ref = assertRef(c.req.param('ref'));
    const principal = requireAdmin(c, `rolling back ${ref}`);
    const body = await readJson(c, ResetBody, limits);
    const to = assertChecksum(body.to, '"to"');
    const rec = await repo.reset(ref, to, body.reason, actorOf(principal));
    deps.onRefMove?.(rec.to);
    return ok({ ref, commit: rec.to, seq: rec.seq });
  });

  return app;
}
