/**
 * The registry's HTTP app: a value, callable in-process with `app.request(url)` (tests need no
 * socket) or served by `sysroot serve` through @hono/node-server. Everything it uses arrives in
 * `deps`; nothing is global.
 *
 *   /repo/…     the OSTree archive repository, read-only (ostree-routes.ts)
 *   /api/v1/…   the JSON API (api-routes.ts, docs/http-api.md)
 */
import { Hono } from 'hono';
import type { TokenStore } from '../src/auth/tokens.js';
import { CommitPacks } from '../src/repo/packs.js';
import type { Repository } from '../src/repo/repository.js';
import { accessLog } from './access-log.js';
import { type ApiLimits, apiRoutes } from './api-routes.js';
import { type AppEnv, authenticate } from './auth.js';
import { DEFAULT_BODY_PACE } from './body-stream.js';
import { errorResponse, notFound } from './errors.js';
import { KnownCorrupt } from './known-corrupt.js';
import { type Logger, silentLogger } from './logger.js';
import { ostreeRoutes } from './ostree-routes.js';
import { packRoutes, warmPacks } from './pack-routes.js';
import { packUploadRoutes } from './pack-upload.js';
import { DEFAULT_UPLOAD_LIMITS } from './upload.js';

export interface AppDeps {
  repo: Repository;
  tokens: TokenStore;
  /** Whether reads (GET /repo/…, GET /api/v1/…) need no token. */
  anonymousPull: boolean;
  logger?: Logger;
  limits?: Partial<ApiLimits>;
  /**
   * Answer GET /repo/objects/… for immutable objects with a redirect to a presigned URL of the store
   * (S3), so object bytes bypass this node; ignored (objects are streamed) when the store has none.
   */
  redirectObjects?: boolean;
}

export const DEFAULT_LIMITS: ApiLimits = {
  ...DEFAULT_UPLOAD_LIMITS,
  maxJsonBytes: 32 * 1024 ** 2,
  bodyPace: DEFAULT_BODY_PACE,
};

export function createApp(deps: AppDeps): Hono<AppEnv> {
  const logger = deps.logger ?? silentLogger;
  const limits: ApiLimits = { ...DEFAULT_LIMITS, ...deps.limits };
  const app = new Hono<AppEnv>();

  app.onError((err, c) => errorResponse(err, logger, c));
  app.notFound((c) => errorResponse(notFound(c.req.path), logger, c));
  app.use('*', accessLog(logger));
  app.use('*', authenticate(deps.tokens));

  // Objects found corrupt by any route that reads the store: /repo/ no longer serves them.
  const corrupt = new KnownCorrupt(logger);
  app.route(
    '/repo',
    ostreeRoutes({
      repo: deps.repo,
      anonymousPull: deps.anonymousPull,
      logger,
      redirectObjects: deps.redirectObjects ?? false,
      corrupt,
    }),
  );
  const packs = new CommitPacks(deps.repo);
  const { anonymousPull, redirectObjects } = deps;
  app.route('/api/v1/packs', packRoutes({ packs, anonymousPull, logger, redirectObjects, corrupt }));
  app.route(
    '/api/v1',
    apiRoutes({ repo: deps.repo, anonymousPull, limits, onRefMove: (to) => warmPacks(packs, to, logger) }),
  );
  app.route('/api/v1', packUploadRoutes({ repo: deps.repo, limits, logger }));
  return app;
}
