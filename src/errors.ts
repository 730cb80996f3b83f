/**
 * Errors are values: a stable `code`, a message for people, and the evidence.
 *
 * Every failure that a user can cause or observe is a RegistryError with one of the codes below.
 * The CLI maps codes to exit codes in one place (cli/exit-codes.ts) and the server maps them to
 * HTTP statuses in one place (server/errors.ts). Anything else that escapes is a bug.
 */

export const ERROR_CODES = [
  // Input the user gave us is wrong (bad flag value, bad ref name, bad checksum syntax).
  'E_USAGE',
  'E_INVALID_REF',
  'E_INVALID_CHECKSUM',
  // A thing that was asked for does not exist.
  'E_NOT_FOUND',
  'E_REF_NOT_FOUND',
  'E_OBJECT_MISSING',
  // Bytes do not hash to their name, or are not in the canonical encoding.
  'E_CORRUPT_OBJECT',
  'E_NOT_NORMAL_FORM',
  'E_PIN_MISMATCH',
  // Authenticity: a commit, summary or ref log record lacks a signature by a trusted, unrevoked key,
  // or carries a malformed one (details: ref, commit, keys tried, keys found).
  'E_SIGNATURE',
  // A pack (src/pack/) is not well formed: bad magic, unknown kind, truncated, trailing bytes, bad end checksum.
  'E_BAD_PACK',
  // The repository refuses the change.
  'E_NOT_FAST_FORWARD',
  'E_NOT_IN_HISTORY',
  'E_REF_CONFLICT',
  'E_EXISTS',
  'E_DEST_NOT_EMPTY',
  // Input trees and archives.
  'E_SPECIAL_FILE',
  'E_UNSAFE_PATH',
  'E_BAD_NAME',
  'E_BAD_ARCHIVE',
  'E_LIMIT',
  // Repository on disk is not what we expect.
  'E_NOT_A_REPO',
  'E_FSCK',
  'E_IO',
  // A peer was too slow: a request body that stalls or trickles (server/body-stream.ts).
  'E_TIMEOUT',
  // The filesystem the repository (or a temp file) is on is full: ENOSPC, EDQUOT.
  'E_NO_SPACE',
  // Auth (server issue).
  'E_UNAUTHORIZED',
  'E_FORBIDDEN',
  // Something we did not anticipate: a bug.
  'E_INTERNAL',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The evidence attached to an error. Only plain, JSON-safe values; never secrets. */
export interface ErrorDetails {
  expected?: string;
  found?: string;
  path?: string;
  ref?: string;
  object?: string;
  paths?: string[];
  [key: string]: unknown;
}

export class RegistryError extends Error {
  readonly code: ErrorCode;
  readonly details: ErrorDetails;
  readonly hint: string | undefined;

  constructor(code: ErrorCode, message: string, details: ErrorDetails = {}, hint?: string, cause?: unknown) {
    super(message, cause === undefined ? undefined : { cause });
    this.name = 'RegistryError';
    this.code = code;
    this.details = details;
    this.hint = hint;
  }

  toJSON(): { code: ErrorCode; message: string; hint?: string; details: ErrorDetails } {
    return {
      code: this.code,
      message: this.message,
      ...(this.hint ? { hint: this.hint } : {}),
      details: this.details,
    };
  }
}

export function isRegistryError(e: unknown, code?: ErrorCode): e is RegistryError {
  return e instanceof RegistryError && (code === undefined || e.code === code);
}

/** errno codes that mean "the filesystem is full": the operator's to fix, not a bug, not transient. */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/**
 * E_NO_SPACE for a write that failed because its filesystem is full (`e` or `errno` ENOSPC/EDQUOT),
 * naming what was being written; undefined for any other failure.
 */
export function noSpaceError(e: unknown, what: string, errno = errnoCode(e)): RegistryError | undefined {
  if (errno === undefined || !NO_SPACE.has(errno)) return undefined;
  return new RegistryError(
    'E_NO_SPACE',
    `${what}: no space left on the device (${errno})`,
    { path: what, errno },
    'free space (or grow the filesystem) where the repository lives, then try again: what was stored is kept, and nothing partial is',
    e instanceof Error ? e : undefined,
  );
}

/** Narrow an unknown thrown value to a Node system error code (ENOENT, EEXIST, ...). */
export function errnoCode(e: unknown): string | undefined {
  return typeof e === 'object' && e !== null && 'code' in e && typeof e.code === 'string'
    ? e.code
    : undefined;
}
