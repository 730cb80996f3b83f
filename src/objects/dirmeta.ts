/**
 * Directory metadata: `(uuua(ayay))` — uid, gid, mode (big-endian, mode includes 040000), xattrs.
 * The checksum is the sha256 of exactly these bytes, which are also the `.dirmeta` file.
 */

import { encode } from '../gvariant/index.js';
import { bswap32 } from './endian.js';
import { S_IFDIR, S_IFMT } from './file.js';
import { decodeObject } from './metadata-object.js';
import { canonicalXattrs, isCanonicalXattrs, type Xattr, xattrsFromGv, xattrsToGv } from './xattrs.js';

export interface DirMeta {
  uid: number;
  gid: number;
  mode: number;
  xattrs: Xattr[];
}

const TYPE = '(uuua(ayay))';

export function encodeDirMeta(m: DirMeta): Buffer {
  return encode(TYPE, [
    bswap32(m.uid),
    bswap32(m.gid),
    bswap32(m.mode),
    xattrsToGv(canonicalXattrs(m.xattrs)),
  ]);
}

export function decodeDirMeta(bytes: Uint8Array, id = 'dirmeta'): DirMeta {
  return decodeObject(TYPE, bytes, id, (v) => {
    const [uid, gid, mode, xattrs] = v as [number, number, number, never];
    const m = { uid: bswap32(uid), gid: bswap32(gid), mode: bswap32(mode), xattrs: xattrsFromGv(xattrs) };
    if ((m.mode & S_IFMT) !== S_IFDIR) throw new Error(`mode 0${m.mode.toString(8)} is not a directory`);
    if (!isCanonicalXattrs(m.xattrs)) throw new Error('xattrs are not sorted or contain an empty value');
    return m;
  });
}
