/**
 * Shared decoding of metadata objects (dirtree, dirmeta, commit, commitmeta, summary): GVariant
 * in normal form, then object-specific checks, with every failure turned into one error that
 * names the object.
 */
import { createHash } from 'node:crypto';
import { RegistryError } from '../errors.js';
import { decode, GVariantError, type GvValue } from '../gvariant/index.js';
import type { Checksum } from './checksum.js';

export function decodeObject<T>(type: string, bytes: Uint8Array, id: string, build: (v: GvValue) => T): T {
  let v: GvValue;
  try {
    v = decode(type, bytes);
  } catch (e) {
    if (e instanceof GVariantError) {
      throw new RegistryError(
        'E_NOT_NORMAL_FORM',
        `${id}: not a valid ${type} in GVariant normal form: ${e.message}`,
        {
          object: id,
        },
      );
    }
    throw e;
  }
  try {
    return build(v);
  } catch (e) {
    if (e instanceof RegistryError) throw e;
    throw new RegistryError('E_CORRUPT_OBJECT', `${id}: ${(e as Error).message}`, { object: id });
  }
}

export function sha256(bytes: Uint8Array): Checksum {
  return createHash('sha256').update(bytes).digest('hex');
}
