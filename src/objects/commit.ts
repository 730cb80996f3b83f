/**
 * Commits: `(a{sv}aya(say)sstayay)` — metadata, parent, related objects, subject, body,
 * timestamp (big-endian seconds), root dirtree checksum, root dirmeta checksum.
 * The checksum is the sha256 of these bytes, which are also the `.commit` file, so a commit is
 * never re-encoded once written: its bytes (timestamp included) are served as they are, forever.
 */
import { encode, type GvValue, type Variant } from '../gvariant/index.js';
import { bytesToChecksum, type Checksum, checksumToBytes } from './checksum.js';
import { bswap64 } from './endian.js';
import { decodeObject } from './metadata-object.js';

/** An `a{sv}` in insertion order: OSTree does not sort commit metadata, so order is part of the hash. */
export type Metadata = Array<[string, Variant]>;

export interface Commit {
  metadata: Metadata;
  parent: Checksum | null;
  /** Always empty in commits OSTree makes; kept so any commit round-trips. */
  related: Array<[string, Checksum]>;
  subject: string;
  body: string;
  /** Seconds since the epoch, UTC. */
  timestamp: number;
  rootTree: Checksum;
  rootMeta: Checksum;
}

const TYPE = '(a{sv}aya(say)sstayay)';

export function metadataToGv(m: Metadata): GvValue {
  return m.map(([k, v]) => [k, v]);
}

export function encodeCommit(c: Commit): Buffer {
  return encode(TYPE, [
    metadataToGv(c.metadata),
    c.parent ? checksumToBytes(c.parent) : Buffer.alloc(0),
    c.related.map(([name, csum]) => [name, checksumToBytes(csum)]),
    c.subject,
    c.body,
    bswap64(BigInt(c.timestamp)),
    checksumToBytes(c.rootTree),
    checksumToBytes(c.rootMeta),
  ]);
}

export function decodeCommit(bytes: Uint8Array, id = 'commit'): Commit {
  return decodeObject(TYPE, bytes, id, (v) => {
    const [metadata, parent, related, subject, body, ts, tree, meta] = v as [
      [string, Variant][],
      Buffer,
      [string, Buffer][],
      string,
      string,
      bigint,
      Buffer,
      Buffer,
    ];
    return {
      metadata: metadata.map(([k, val]) => [k, val] as [string, Variant]),
      parent: parent.length === 0 ? null : bytesToChecksum(parent, 'parent checksum'),
      related: related.map(([name, c]) => [name, bytesToChecksum(c, 'related object')] as [string, Checksum]),
      subject,
      body,
      timestamp: Number(bswap64(ts)),
      rootTree: bytesToChecksum(tree, 'root dirtree checksum'),
      rootMeta: bytesToChecksum(meta, 'root dirmeta checksum'),
    };
  });
}

/** Value of a metadata key, or undefined. */
export function metadataGet(m: Metadata, key: string): Variant | undefined {
  return m.find(([k]) => k === key)?.[1];
}

/** The refs a commit is bound to (`ostree.ref-binding`), or [] if it carries no binding. */
export function refBindings(c: Commit): string[] {
  const v = metadataGet(c.metadata, 'ostree.ref-binding');
  return v && v.type === 'as' ? (v.value as string[]) : [];
}
