/**
 * Detached commit metadata (`<commit>.commitmeta`): an `a{sv}` named after the commit it belongs
 * to, not after its own hash. It holds signatures, which can be added after the commit exists,
 * so it is the one object that is not content-addressed (and not served as immutable).
 */
import { encode } from '../gvariant/index.js';
import type { Metadata } from './commit.js';
import { metadataToGv } from './commit.js';
import { decodeObject } from './metadata-object.js';

export function encodeCommitMeta(m: Metadata): Buffer {
  return encode('a{sv}', metadataToGv(m));
}

export function decodeCommitMeta(bytes: Uint8Array, id = 'commitmeta'): Metadata {
  return decodeObject('a{sv}', bytes, id, (v) => v as Metadata);
}
