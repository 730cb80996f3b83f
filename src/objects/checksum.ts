/**
 * Object names. OSTree names every object by the lower-case hex SHA-256 of its canonical bytes
 * (for content objects: of the uncompressed header and payload, see file.ts).
 */
import { RegistryError } from '../errors.js';

/** 64 lower-case hex characters. */
export type Checksum = string;

export type ObjectType = 'file' | 'dirtree' | 'dirmeta' | 'commit' | 'commitmeta';

export const OBJECT_TYPES: readonly ObjectType[] = ['file', 'dirtree', 'dirmeta', 'commit', 'commitmeta'];

const HEX64 = /^[0-9a-f]{64}$/;

export function isChecksum(s: string): boolean {
  return HEX64.test(s);
}

/** Throws E_INVALID_CHECKSUM unless `s` is 64 lower-case hex characters. */
export function assertChecksum(s: string, what = 'checksum'): Checksum {
  if (!HEX64.test(s)) {
    throw new RegistryError(
      'E_INVALID_CHECKSUM',
      `${what} "${s}" is not a 64-character lower-case hex SHA-256`,
      {
        found: s,
      },
    );
  }
  return s;
}

export function checksumToBytes(c: Checksum): Buffer {
  return Buffer.from(assertChecksum(c), 'hex');
}

export function bytesToChecksum(b: Uint8Array, what = 'checksum'): Checksum {
  if (b.length !== 32) {
    throw new RegistryError('E_CORRUPT_OBJECT', `${what} is ${b.length} bytes, expected 32`, {
      expected: '32 bytes',
      found: `${b.length} bytes`,
    });
  }
  return Buffer.from(b).toString('hex');
}

/** The file extension of each object type in an archive repository (content is stored deflated). */
export const OBJECT_EXT: Record<ObjectType, string> = {
  file: 'filez',
  dirtree: 'dirtree',
  dirmeta: 'dirmeta',
  commit: 'commit',
  commitmeta: 'commitmeta',
};

const EXT_TYPE = new Map<string, ObjectType>(
  Object.entries(OBJECT_EXT).map(([t, e]) => [e, t as ObjectType]),
);

export function typeFromExt(ext: string): ObjectType | undefined {
  return EXT_TYPE.get(ext);
}

/** `objects/XX/<62 hex>.<ext>`, relative to the repository root. */
export function objectPath(checksum: Checksum, type: ObjectType): string {
  return `objects/${checksum.slice(0, 2)}/${checksum.slice(2)}.${OBJECT_EXT[type]}`;
}

/** A printable object id, `<checksum>.<type>`, used in every message that names an object. */
export function objectId(checksum: Checksum, type: ObjectType): string {
  return `${checksum}.${type}`;
}
