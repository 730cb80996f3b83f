/**
 * S3 errors, translated at the adapter edge: s3-blob-store.ts asks these questions of whatever the
 * SDK threw and turns the rest into RegistryError('E_IO'). No SDK type leaves src/store/s3-*.ts:
 * callers see undefined / false for what the BlobStore interface defines, and E_IO for the rest.
 *
 * What the SDK throws, as seen with Ceph RGW (Pacific–Reef) and AWS:
 *   - an S3 error response: `name` is the XML <Code> (NoSuchKey, PreconditionFailed, SlowDown, …) and
 *     `$metadata.httpStatusCode` the status; a HEAD has no body, so a missing key is 404 'NotFound';
 *   - a lost connection: a Node system error (ECONNRESET, EPIPE, …) or TimeoutError, no status — the
 *     request may or may not have been applied;
 *   - RGW answers 500 (instead of 412) to a conditional PUT that lost a race with another one.
 */
import { RegistryError } from '../errors.js';

export interface S3Failure {
  /** The S3 error code (NoSuchKey, SlowDown, …), else the system error code (ECONNRESET), else a name. */
  code: string;
  /** HTTP status of the error response; undefined when no response arrived. */
  status: number | undefined;
  message: string;
  requestId: string | undefined;
  /** No response arrived: the connection failed or timed out (the request may have been applied). */
  network: boolean;
}

/**
 * Errors of a connection, not of the request: retried. ETRUNCATED is ours (a body shorter than its
 * Content-Length, s3-blob-store.ts). Anything else without an HTTP status is a bug, not retried.
 */
const NETWORK_CODES = new Set([
  'ECONNRESET',
  'ECONNREFUSED',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTCONN',
  'ERR_STREAM_PREMATURE_CLOSE',
  'ETRUNCATED',
  'TimeoutError',
  'RequestTimeout',
]);

function field(o: unknown, name: string): unknown {
  return typeof o === 'object' && o !== null ? (o as Record<string, unknown>)[name] : undefined;
}

/** Whatever was thrown, as plain data. */
export function describeS3Error(e: unknown): S3Failure {
  const metadata = field(e, '$metadata');
  const statusField = field(metadata, 'httpStatusCode');
  const status = typeof statusField === 'number' ? statusField : undefined;
  const requestIdField = field(metadata, 'requestId');
  const errno = field(e, 'code');
  const name = field(e, 'name');
  // An error response carries the S3 code in `name`; 'Unknown'/'UnknownError' is a body the SDK could
  // not parse (HEAD has none), so the status says more.
  let code: string;
  if (status !== undefined && typeof name === 'string' && !/^Unknown(Error)?$/.test(name)) code = name;
  else if (status !== undefined) code = `HTTP${status}`;
  else if (typeof errno === 'string') code = errno;
  else code = typeof name === 'string' ? name : 'Error';
  const messageField = field(e, 'message');
  return {
    code,
    status,
    // The SDK's placeholder for a body it could not parse says nothing: the code stands alone then.
    message:
      typeof messageField === 'string' && messageField && !/^Unknown(Error)?$/.test(messageField)
        ? messageField
        : code,
    requestId: typeof requestIdField === 'string' ? requestIdField : undefined,
    network: status === undefined && NETWORK_CODES.has(code),
  };
}

/** The key does not exist. NoSuchBucket is not that: it is a misconfiguration, reported as E_IO. */
export function isNotFound(f: S3Failure): boolean {
  return f.status === 404 && f.code !== 'NoSuchBucket';
}

/** A condition (If-Match / If-None-Match) did not hold: nothing was written. */
export function isPreconditionFailed(f: S3Failure): boolean {
  return f.status === 412 || f.code === 'PreconditionFailed';
}

/** The range starts past the end of the object. */
export function isInvalidRange(f: S3Failure): boolean {
  return f.status === 416;
}

/**
 * Worth another attempt: throttling (503 SlowDown), server errors (500, 502, 504), request timeouts,
 * AWS's 409 ConditionalRequestConflict (two conditional writes in flight), and lost connections.
 */
export function isTransient(f: S3Failure): boolean {
  if (f.status === undefined) return f.network;
  if (f.status >= 500) return true;
  return f.code === 'RequestTimeout' || f.code === 'ConditionalRequestConflict' || f.status === 429;
}

/** The failure as the one error the rest of the registry sees. */
export function s3IoError(
  f: S3Failure,
  op: string,
  location: string,
  key: string,
  attempts: number,
): RegistryError {
  const how = f.status === undefined ? f.code : `${f.code} (HTTP ${f.status})`;
  const tries = attempts > 1 ? ` after ${attempts} attempts` : '';
  return new RegistryError(
    'E_IO',
    `${location}: ${op} ${key} failed${tries}: ${how}${f.message !== f.code ? `: ${f.message}` : ''}`,
    {
      path: key,
      key,
      operation: op,
      s3Code: f.code,
      ...(f.status !== undefined ? { httpStatus: f.status } : {}),
      ...(f.requestId ? { requestId: f.requestId } : {}),
      attempts,
    },
    f.code === 'NoSuchBucket'
      ? 'create the bucket, or fix the s3:// URL'
      : f.status === 403
        ? 'check AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or the profile) and the bucket policy'
        : undefined,
  );
}
