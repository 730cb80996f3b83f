/**
 * Ref names. Ours are a subset of what OSTree accepts (its rule is `([-._\w\d]+/)*[-._\w\d]+`),
 * so every ref we create is a valid OSTree ref; we additionally refuse components that are
 * `.`/`..` or start with `-` or `.` (they would be confusing as paths and on command lines).
 */
import { RegistryError } from '../errors.js';

const COMPONENT = /^[A-Za-z0-9_][-._A-Za-z0-9]*$/;
/** Ref names become paths under refs/heads/ and S3 keys; 255 bytes keeps both safe. */
const MAX_REF_LENGTH = 255;

export function isValidRef(ref: string): boolean {
  return ref.length > 0 && ref.length <= MAX_REF_LENGTH && ref.split('/').every((c) => COMPONENT.test(c));
}

export function assertRef(ref: string): string {
  if (!isValidRef(ref)) {
    throw new RegistryError(
      'E_INVALID_REF',
      `invalid ref name ${JSON.stringify(ref)}`,
      { ref },
      'a ref is one or more "/"-separated components of letters, digits, "_", "-" and "."; ' +
        'each starts with a letter, digit or "_" (e.g. stage3-sysroot/x86_64)',
    );
  }
  return ref;
}

/**
 * OSTree stores refs as files, so `a` and `a/b` cannot both exist. Refs are never deleted, so
 * once one exists the other can never be created.
 */
export function refsClash(a: string, b: string): boolean {
  return a !== b && (a.startsWith(`${b}/`) || b.startsWith(`${a}/`));
}
