/**
 * The one place where error codes become exit codes. Scripts rely on these numbers; they are
 * listed in docs/cli.md and never change meaning.
 */
import type { ErrorCode } from '../src/errors.js';

export const EXIT = {
  OK: 0,
  /** A bug: an error we did not anticipate. */
  INTERNAL: 1,
  USAGE: 2,
  NOT_FOUND: 3,
  /** Bytes failed verification, an object is missing, or fsck found problems. */
  INTEGRITY: 4,
  /** The repository refused the change (not a fast-forward, conflict, not in history, DEST not empty). */
  REFUSED: 5,
  /** The input tree or archive is not acceptable (special files, unsafe paths, bad names, limits). */
  BAD_INPUT: 6,
  AUTH: 7,
  IO: 8,
  /** No valid signature by a trusted, unrevoked key (unsigned, wrongly signed, revoked, tampered log). */
  SIGNATURE: 9,
  /**
   * Whatever read stdout went away before everything was written (`sysroot ... | head`): 128 + 13,
   * what a shell reports for a command that SIGPIPE killed, which Node ignores.
   */
  PIPE: 141,
} as const;

const BY_CODE: Record<ErrorCode, number> = {
  E_USAGE: EXIT.USAGE,
  E_INVALID_REF: EXIT.USAGE,
  E_INVALID_CHECKSUM: EXIT.USAGE,
  E_NOT_FOUND: EXIT.NOT_FOUND,
  E_REF_NOT_FOUND: EXIT.NOT_FOUND,
  E_NOT_A_REPO: EXIT.NOT_FOUND,
  E_OBJECT_MISSING: EXIT.INTEGRITY,
  E_CORRUPT_OBJECT: EXIT.INTEGRITY,
  E_NOT_NORMAL_FORM: EXIT.INTEGRITY,
  E_BAD_PACK: EXIT.INTEGRITY,
  E_PIN_MISMATCH: EXIT.INTEGRITY,
  E_SIGNATURE: EXIT.SIGNATURE,
  E_FSCK: EXIT.INTEGRITY,
  E_NOT_FAST_FORWARD: EXIT.REFUSED,
  E_NOT_IN_HISTORY: EXIT.REFUSED,
  E_REF_CONFLICT: EXIT.REFUSED,
  E_EXISTS: EXIT.REFUSED,
  E_DEST_NOT_EMPTY: EXIT.REFUSED,
  E_SPECIAL_FILE: EXIT.BAD_INPUT,
  E_UNSAFE_PATH: EXIT.BAD_INPUT,
  E_BAD_NAME: EXIT.BAD_INPUT,
  E_BAD_ARCHIVE: EXIT.BAD_INPUT,
  E_LIMIT: EXIT.BAD_INPUT,
  E_UNAUTHORIZED: EXIT.AUTH,
  E_FORBIDDEN: EXIT.AUTH,
  E_IO: EXIT.IO,
  E_TIMEOUT: EXIT.IO,
  E_NO_SPACE: EXIT.IO,
  E_INTERNAL: EXIT.INTERNAL,
};

export function exitCodeFor(code: ErrorCode): number {
  return BY_CODE[code];
}
