/**
 * The repository summary: `(a(s(taya{sv}))a{sv})`, the list of refs that `ostree pull` reads first.
 *
 * - refs sorted by strcmp (the client binary-searches them);
 * - per ref: (commit size, commit checksum, {ostree.commit.version?, ostree.commit.timestamp});
 *   the size is written in host order (little-endian), the timestamp big-endian — that asymmetry
 *   is what ostree 2022.7 does, checked against the vectors;
 * - metadata: mode, last-modified (big-endian, now), tombstone-commits, indexed-deltas.
 */
import { encode, type GvValue, Variant } from '../gvariant/index.js';
import { bytesToChecksum, type Checksum, checksumToBytes } from './checksum.js';
import { compareNames } from './dirtree.js';
import { bswap64 } from './endian.js';
import { decodeObject } from './metadata-object.js';

export interface SummaryRef {
  name: string;
  checksum: Checksum;
  /** Size in bytes of the `.commit` object. */
  commitSize: number;
  timestamp: number;
  version?: string;
}

export interface Summary {
  refs: SummaryRef[];
  lastModified: number;
}

const TYPE = '(a(s(taya{sv}))a{sv})';

export function encodeSummary(s: Summary): Buffer {
  const refs = [...s.refs].sort((a, b) => compareNames(a.name, b.name));
  return encode(TYPE, [
    refs.map((r) => {
      const meta: GvValue[] = [];
      if (r.version !== undefined) meta.push(['ostree.commit.version', new Variant('s', r.version)]);
      meta.push(['ostree.commit.timestamp', new Variant('t', bswap64(BigInt(r.timestamp)))]);
      return [r.name, [BigInt(r.commitSize), checksumToBytes(r.checksum), meta]];
    }),
    [
      ['ostree.summary.mode', new Variant('s', 'archive-z2')],
      ['ostree.summary.last-modified', new Variant('t', bswap64(BigInt(s.lastModified)))],
      ['ostree.summary.tombstone-commits', new Variant('b', false)],
      ['ostree.summary.indexed-deltas', new Variant('b', true)],
    ],
  ]);
}

export function decodeSummary(bytes: Uint8Array): Summary {
  return decodeObject(TYPE, bytes, 'summary', (v) => {
    const [refs, meta] = v as [[string, [bigint, Buffer, [string, Variant][]]][], [string, Variant][]];
    const lm = meta.find(([k]) => k === 'ostree.summary.last-modified')?.[1];
    return {
      refs: refs.map(([name, [size, csum, m]]) => {
        const ts = m.find(([k]) => k === 'ostree.commit.timestamp')?.[1];
        const version = m.find(([k]) => k === 'ostree.commit.version')?.[1];
        const r: SummaryRef = {
          name,
          checksum: bytesToChecksum(csum, `summary checksum of ${name}`),
          commitSize: Number(size),
          timestamp: ts ? Number(bswap64(ts.value as bigint)) : 0,
        };
        if (version) r.version = version.value as string;
        return r;
      }),
      lastModified: lm ? Number(bswap64(lm.value as bigint)) : 0,
    };
  });
}
