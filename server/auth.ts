/**
 * Who is asking, and may they. The middleware turns the Authorization header into a Principal
 * (or none); routes then call one of the require* guards, which throw 401 (no valid token) or 403
 * (a valid token without the scope). Messages never contain the token.
 *
 * Accepted: `Authorization: Bearer <token>`, and Basic with the token as the password, because that
 * is what stock ostree can send (`http://x:<token>@host/repo` as the remote URL).
 */
import type { Context, MiddlewareHandler } from 'hono';
import { canPushRef, canRead, canUpload, isAdmin } from '../src/auth/scopes.js';
import type { Principal, TokenStore } from '../src/auth/tokens.js';
import { RegistryError } from '../src/errors.js';

export interface AppEnv {
  Variables: { principal: Principal | undefined };
}

function presentedToken(header: string): string | undefined {
  const m = /^(\w+)\s+(\S+)\s*$/.exec(header);
  if (!m) return undefined;
  const scheme = m[1]!.toLowerCase();
  if (scheme === 'bearer') return m[2];
  if (scheme === 'basic') {
    const decoded = Buffer.from(m[2]!, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    return colon >= 0 ? decoded.slice(colon + 1) : undefined;
  }
  return undefined;
}

function unauthorized(message: string): RegistryError {
  return new RegistryError(
    'E_UNAUTHORIZED',
    message,
    {},
    'send Authorization: Bearer <token>; tokens are made with `sysroot token create`',
  );
}

/**
 * Sets `principal`. A request that presents a token must present a good one: a wrong or revoked
 * token is refused even where anonymous access would do, so a misconfigured client learns at once.
 */
export function authenticate(tokens: TokenStore): MiddlewareHandler<AppEnv> {
  return async (c, next) => {
    const header = c.req.header('authorization');
    if (header === undefined) {
      c.set('principal', undefined);
      return next();
    }
    const token = presentedToken(header);
    const principal = token === undefined ? undefined : await tokens.verify(token);
    if (!principal) throw unauthorized('the token is not valid (malformed, unknown or revoked)');
    c.set('principal', principal);
    return next();
  };
}

function principalOf(c: Context<AppEnv>, needs: string): Principal {
  const p = c.get('principal');
  if (!p) throw unauthorized(`${needs} needs a token`);
  return p;
}

function forbidden(p: Principal, message: string, details: Record<string, unknown> = {}): RegistryError {
  return new RegistryError('E_FORBIDDEN', `token ${p.id} (${p.name}): ${message}`, {
    token: p.id,
    scopes: p.scopes,
    ...details,
  });
}

export function requireRead(c: Context<AppEnv>, anonymousPull: boolean): void {
  if (anonymousPull) return;
  const p = principalOf(c, 'reading from this registry');
  if (!canRead(p.scopes)) throw forbidden(p, 'has no scope that allows reading');
}

export function requireUpload(c: Context<AppEnv>): Principal {
  const p = principalOf(c, 'uploading objects');
  if (!canUpload(p.scopes)) throw forbidden(p, 'uploading objects needs a push or admin scope');
  return p;
}

export function requirePushRef(c: Context<AppEnv>, ref: string): Principal {
  const p = principalOf(c, `moving ref ${ref}`);
  if (!canPushRef(p.scopes, ref)) throw forbidden(p, `no push scope matches ref ${ref}`, { ref });
  return p;
}

export function requireAdmin(c: Context<AppEnv>, what: string): Principal {
  const p = principalOf(c, what);
  if (!isAdmin(p.scopes)) throw forbidden(p, `${what} needs the admin scope`);
  return p;
}

/**
 * Detached metadata (`<commit>.commitmeta`) is named by its commit, not by its bytes, is write-once,
 * and is served and packed with that commit: whoever writes it first decides what every puller of
 * the commit gets (ostree reads signatures from it). So it is only ever written together with a new
 * commit (Repository.storeCommit: the pusher's signatures merged with the server's), which any push
 * token may do in one pack (`sysroot push --sign-key`). On its own, for a commit that may belong to
 * another ref's release, it needs admin (and is still not written over an existing one).
 */
export function requireCommitmetaUpload(p: Principal, object: string): void {
  if (!isAdmin(p.scopes)) {
    throw forbidden(p, `uploading detached metadata (${object}) needs the admin scope`, { object });
  }
}

/** The name recorded in the ref log for a move made through the server. */
export function actorOf(p: Principal): string {
  return `token:${p.name}`;
}
