/**
 * The one place where errors become HTTP answers (table in docs/http-api.md). Routes throw
 * RegistryError; this file picks the status and renders `{"error": {code, message, details}}`.
 * Anything else that escapes a route is a bug: the client gets 500 E_INTERNAL with a request id,
 * the log gets the stack.
 */
import { randomBytes } from 'node:crypto';
import type { Context } from 'hono';
import type { ContentfulStatusCode } from 'hono/utils/http-status';
import { type ErrorCode, isRegistryError, noSpaceError, RegistryError } from '../src/errors.js';
import type { Logger } from './logger.js';

const STATUS: Partial<Record<ErrorCode, ContentfulStatusCode>> = {
  E_USAGE: 400,
  E_INVALID_REF: 400,
  E_INVALID_CHECKSUM: 400,
  E_CORRUPT_OBJECT: 400,
  E_NOT_NORMAL_FORM: 400,
  E_BAD_PACK: 400,
  E_SIGNATURE: 400,
  E_BAD_NAME: 400,
  E_BAD_ARCHIVE: 400,
  // Raised on input trees; mapped all the same, so that one reaching a route from a request is a
  // 400 and not a 500 "bug" (the HTTP fuzzer found E_SPECIAL_FILE there once, now E_CORRUPT_OBJECT).
  E_SPECIAL_FILE: 400,
  E_UNSAFE_PATH: 400,
  E_UNAUTHORIZED: 401,
  E_FORBIDDEN: 403,
  E_NOT_FOUND: 404,
  E_REF_NOT_FOUND: 404,
  E_REF_CONFLICT: 409,
  E_NOT_FAST_FORWARD: 409,
  E_NOT_IN_HISTORY: 409,
  E_EXISTS: 409,
  E_OBJECT_MISSING: 422,
  E_LIMIT: 413,
  E_TIMEOUT: 408,
  // 507 Insufficient Storage (RFC 4918): the request was fine, the server cannot store it now.
  E_NO_SPACE: 507,
};

export function statusFor(code: ErrorCode): ContentfulStatusCode {
  return STATUS[code] ?? 500;
}

/** A JSON answer with its Content-Length set, so the access log can count it. */
export function jsonResponse(value: unknown, status: number, headers: Record<string, string> = {}): Response {
  const body = Buffer.from(JSON.stringify(value));
  return new Response(new Uint8Array(body), {
    status,
    headers: {
      'content-type': 'application/json; charset=utf-8',
      'content-length': String(body.length),
      'cache-control': 'no-store',
      ...headers,
    },
  });
}

export function errorResponse(thrown: unknown, logger: Logger, c?: Context): Response {
  // A write that hit a full disk anywhere below (a temp file, the index): 507, not a 500 "bug".
  const err = isRegistryError(thrown) ? thrown : (noSpaceError(thrown, 'the repository') ?? thrown);
  if (isRegistryError(err) && err.code !== 'E_INTERNAL') {
    const status = statusFor(err.code);
    if (status === 500) logger.error(`${describeRequest(c)}: ${err.code}: ${err.message}`, err.cause ?? err);
    const headers: Record<string, string> =
      err.code === 'E_UNAUTHORIZED' ? { 'www-authenticate': 'Bearer realm="sysroot-registry"' } : {};
    return jsonResponse(
      {
        error: {
          code: err.code,
          message: err.message,
          ...(err.hint ? { hint: err.hint } : {}),
          details: err.details,
        },
      },
      status,
      headers,
    );
  }
  const requestId = randomBytes(6).toString('hex');
  logger.error(`${describeRequest(c)}: internal error (request ${requestId})`, err);
  return jsonResponse(
    {
      error: {
        code: 'E_INTERNAL',
        message: 'internal server error; the server log has the details',
        details: { requestId },
      },
    },
    500,
  );
}

function describeRequest(c: Context | undefined): string {
  return c ? `${c.req.method} ${c.req.path}` : 'request';
}

/**
 * An object in the server's own store failed verification: the server's fault, not the request's,
 * so 500 (the table's 400 for E_CORRUPT_OBJECT is for uploaded bytes), with the JSON error naming it.
 */
export function storeCorruptResponse(err: RegistryError, logger: Logger, c?: Context): Response {
  const res = errorResponse(err, logger, c);
  return new Response(res.body, { status: 500, headers: res.headers });
}

export function notFound(what: string): RegistryError {
  return new RegistryError('E_NOT_FOUND', `${what} not found`, { path: what });
}
